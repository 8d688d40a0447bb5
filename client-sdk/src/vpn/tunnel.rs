//! A tunnel to an exit relay, directly or through an entry relay: paid channels with each relay,
//! the Noise handshake and lease, then IP packets as datagrams ([`TunnelSender`],
//! [`TunnelReceiver`]) and proxied TCP connections ([`Tunnel::connect_tcp`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::net::dial::dial;
use top_proto::net::endpoint::client_endpoint;
use top_proto::net::path_mtu::MtuNudge;
use top_proto::vpn::cipher::{
    DatagramOpener, DatagramSealer, Lease, OVERHEAD, TunnelInitiator, VpnCryptoError,
};
use top_proto::vpn::{ConnectReply, ConnectRequest, VpnFrame};

use super::proof::{LatestCounts, ReceivedProof, read_received};
use crate::error::{ClientError, VpnError};
use crate::payment::{BillingOptions, BillingState, UsageCounter};
use crate::pipe::Pipe;

/// Largest control-stream frame.
const MAX_VPN_FRAME: usize = 4096;
/// Datagram arena allocated at once (datagrams are cut from it without a per-packet allocation).
const ARENA: usize = 256 * 1024;
/// Local byte counts are added to the shared usage counter in steps of this much.
const COUNT_STEP: u64 = 32 * 1024;

/// Where a tunnel goes and how it pays.
#[derive(Clone, Debug)]
pub struct TunnelOptions {
    /// The exit relay.
    pub exit: RelayAddr,
    /// An entry relay for a 2-hop route (it never sees the destination; the exit never sees
    /// the client's address).
    pub via: Option<RelayAddr>,
    /// Channel size and sponsor, for each relay that charges.
    pub billing: BillingOptions,
}

/// Bytes and packets through a tunnel, and drops by reason.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Datagram bytes sent.
    pub bytes_sent: AtomicU64,
    /// UDP bytes the exit received on the tunnel's connection (its latest signed count).
    pub bytes_acked: AtomicU64,
    /// Datagram bytes received.
    pub bytes_received: AtomicU64,
    /// Packets sent.
    pub packets_sent: AtomicU64,
    /// Packets received.
    pub packets_received: AtomicU64,
    /// Datagrams refused: replayed or stale nonces.
    pub dropped_replay: AtomicU64,
    /// Datagrams refused: failed authentication or malformed.
    pub dropped_invalid: AtomicU64,
    /// Packets too large for the path.
    pub dropped_too_large: AtomicU64,
}

/// An established tunnel.
pub struct Tunnel {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    identity: Identity,
    options: TunnelOptions,
    lease: Lease,
    mtu: u16,
    sealer: Option<DatagramSealer>,
    opener: Option<DatagramOpener>,
    /// Held open for the session's life (closing it ends the tunnel at the exit).
    _control: quinn::SendStream,
    ended: tokio_util::sync::CancellationToken,
    usage: Arc<UsageCounter>,
    stats: Arc<TunnelStats>,
    /// The entry of a 2-hop route.
    entry: Option<EntryHop>,
    exit_billing: Option<BillingState>,
}

/// The entry of a 2-hop route: its connection (billing, the forward stream) and what it may
/// claim.
struct EntryHop {
    control: quinn::Connection,
    /// What both ends acknowledged of what it forwarded ([`super::hop`]).
    usage: Arc<UsageCounter>,
    billing: Option<BillingState>,
    /// The forward stream, until the tunnel is up (then its reporter holds it).
    forwarding: Option<super::hop::Forwarding>,
}

impl Tunnel {
    /// Connects (through `via` if set), pays each relay that charges, and completes the
    /// handshake with the exit.
    pub async fn open(identity: Identity, options: TunnelOptions) -> Result<Self, ClientError> {
        let first = options.via.as_ref().unwrap_or(&options.exit);
        let endpoint = client_endpoint(&first.host_port)?;
        let latest: LatestCounts = Arc::default();
        let ended = tokio_util::sync::CancellationToken::new();
        // Until the tunnel is up, a failure closes what was opened (billing tasks would keep
        // the connections alive).
        let mut opened = CloseUnlessUp(Vec::new());
        let (conn, entry) = match &options.via {
            None => {
                let conn = dial(&endpoint, &identity, &options.exit).await?;
                opened.0.push(conn.clone());
                (conn, None)
            }
            Some(via) => {
                // The control connection to the entry and the tunnel's connection to the exit
                // leave from the same socket: the entry knows the tunnel's packets by it.
                let control = dial(&endpoint, &identity, via).await?;
                opened.0.push(control.clone());
                let usage = Arc::new(UsageCounter::default());
                let billing =
                    crate::payment::start(&control, &identity, &options.billing, usage.clone())
                        .await?;
                let forwarding = super::hop::request(&control, &options.exit).await?;
                let through = RelayAddr {
                    id: options.exit.id,
                    host_port: SocketAddr::new(control.remote_address().ip(), forwarding.port)
                        .to_string(),
                };
                let conn = dial(&endpoint, &identity, &through).await?;
                opened.0.push(conn.clone());
                let entry = EntryHop {
                    control,
                    usage,
                    billing,
                    forwarding: Some(forwarding),
                };
                (conn, Some(entry))
            }
        };
        let usage = Arc::new(UsageCounter::default());
        let exit_billing =
            crate::payment::start(&conn, &identity, &options.billing, usage.clone()).await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&encode_frame(&Open::Vpn)?).await?;
        let mut out = FramedWrite::new(send, FrameCodec::<VpnFrame>::new(MAX_VPN_FRAME));
        let mut frames = FramedRead::new(recv, FrameCodec::<VpnFrame>::new(MAX_VPN_FRAME));
        let exit_id = top_proto::id::AccountId::from_bytes(*options.exit.id.as_bytes())
            .map_err(|_| VpnError::BadExitId)?;
        let (initiator, hello) = TunnelInitiator::start(&identity, &exit_id).map_err(vpn)?;
        out.send(VpnFrame::Hello(hello)).await?;
        let reply = match frames.next().await {
            Some(Ok(VpnFrame::Welcome(reply))) => reply,
            Some(Ok(VpnFrame::Refused(why))) => {
                return Err(VpnError::Refused(why.to_string()).into());
            }
            Some(Ok(other)) => return Err(VpnError::Unexpected(format!("{other:?}")).into()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(VpnError::ExitClosed.into()),
        };
        let (lease, keys) = initiator.finish(&reply).map_err(vpn)?;
        let path = conn
            .max_datagram_size()
            .ok_or_else(|| ClientError::from(VpnError::NoDatagrams))?;
        let mtu = lease
            .mtu
            .min(u16::try_from(path.saturating_sub(OVERHEAD)).unwrap_or(u16::MAX));
        let stats: Arc<TunnelStats> = Arc::default();
        let proof = ReceivedProof::new(exit_id, keys.session());
        tokio::spawn(read_received(
            conn.clone(),
            proof,
            stats.clone(),
            latest.clone(),
        ));
        let (sealer, opener) = keys.split();
        // Up: the entry hears what it delivered from now on.
        opened.0.clear();
        let mut entry = entry;
        if let Some(e) = &mut entry
            && let Some(forwarding) = e.forwarding.take()
        {
            tokio::spawn(super::hop::report(
                forwarding,
                conn.clone(),
                latest.clone(),
                e.usage.clone(),
                ended.clone(),
            ));
        }
        // The exit sends nothing more on the control stream: its end means the session ended.
        let mut control_recv = frames.into_inner();
        let end = ended.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(Some(_)) = control_recv.read(&mut buf).await {}
            end.cancel();
        });
        Ok(Self {
            endpoint,
            conn,
            identity,
            options,
            lease,
            mtu,
            sealer: Some(sealer),
            opener: Some(opener),
            _control: out.into_inner(),
            ended,
            usage,
            stats,
            entry,
            exit_billing,
        })
    }

    /// The client's tunnel address.
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.lease.addr)
    }

    /// The client's IPv6 tunnel address, when the exit carries IPv6.
    pub fn address6(&self) -> Option<std::net::Ipv6Addr> {
        self.lease.v6.map(|v6| std::net::Ipv6Addr::from(v6.addr))
    }

    /// The lease the exit gave (address, DNS it offers, its MTU).
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// Largest IP packet the tunnel carries (the exit's MTU, within the path's datagram size).
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Where this tunnel's packets go, which must stay outside it: the exit (1 hop), or the
    /// entry's QUIC port and its forwarding port (2 hops).
    pub fn outside(&self) -> Vec<SocketAddr> {
        let mut addrs = vec![self.conn.remote_address()];
        if let Some(entry) = &self.entry {
            addrs.push(entry.control.remote_address());
        }
        addrs
    }

    /// QUIC's counts of the connection to the exit (UDP bytes each way, losses, path).
    pub fn quic_stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Arc<TunnelStats> {
        self.stats.clone()
    }

    /// Bytes this tunnel counted (what the exit, or a 1-hop relay, may bill).
    pub fn usage(&self) -> top_billing::Usage {
        self.usage.snapshot()
    }

    /// What the entry of a 2-hop route may bill: the bytes it forwarded that the far end
    /// acknowledged, each way (`None` for 1 hop).
    pub fn entry_usage(&self) -> Option<top_billing::Usage> {
        self.entry.as_ref().map(|e| e.usage.snapshot())
    }

    /// The entry's and the exit's channels, when they charge.
    pub fn billing(&self) -> (Option<&BillingState>, Option<&BillingState>) {
        (
            self.entry.as_ref().and_then(|e| e.billing.as_ref()),
            self.exit_billing.as_ref(),
        )
    }

    /// Resolves when the tunnel is gone (a connection lost, the exit ended the session or the
    /// entry the route).
    pub async fn closed(&self) {
        let entry = async {
            match &self.entry {
                Some(e) => {
                    e.control.closed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.conn.closed() => {}
            _ = self.ended.cancelled() => {}
            _ = entry => {}
        }
    }

    /// The packet-sending half (once; it works while the `Tunnel` lives: dropping the tunnel
    /// closes it).
    pub fn sender(&mut self) -> Option<TunnelSender> {
        Some(TunnelSender {
            conn: self.conn.clone(),
            sealer: self.sealer.take()?,
            arena: BytesMut::with_capacity(ARENA),
            usage: self.usage.clone(),
            stats: self.stats.clone(),
            uncounted: 0,
            nudge: MtuNudge::default(),
        })
    }

    /// The packet-receiving half (once; as the sending half, while the `Tunnel` lives).
    pub fn receiver(&mut self) -> Option<TunnelReceiver> {
        Some(TunnelReceiver {
            conn: self.conn.clone(),
            opener: self.opener.take()?,
            usage: self.usage.clone(),
            stats: self.stats.clone(),
            uncounted: 0,
        })
    }

    /// Opens a TCP connection from the exit to `host:port` (a name is resolved at the exit);
    /// returns the end-to-end encrypted pipe carrying its bytes.
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<Pipe, ClientError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        send.write_all(&encode_frame(&Open::Connect)?).await?;
        let exit = top_proto::id::AccountId::from_bytes(*self.options.exit.id.as_bytes())
            .map_err(|_| VpnError::BadExitId)?;
        let mut pipe = Pipe::open_on(send, recv, &self.identity, exit)
            .await?
            .metered_vpn(&self.usage);
        let request = postcard::to_allocvec(&ConnectRequest::Host(host.to_string(), port))
            .map_err(VpnError::Encode)?;
        pipe.send(&request).await?;
        let answer = pipe.recv().await?.ok_or(ClientError::Closed)?;
        match postcard::from_bytes::<ConnectReply>(&answer) {
            Ok(ConnectReply::Connected) => Ok(pipe),
            Ok(other) => Err(ClientError::Proxy(other)),
            Err(_) => Err(VpnError::MalformedReply.into()),
        }
    }

    /// Whether the tunnel is gone.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
            || self.ended.is_cancelled()
            || self
                .entry
                .as_ref()
                .is_some_and(|e| e.control.close_reason().is_some())
    }

    /// Closes the tunnel.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"tunnel closed");
        if let Some(entry) = &self.entry {
            entry.control.close(0u32.into(), b"tunnel closed");
        }
    }

    /// Closes the tunnel and waits (up to a second) until the relays were told, so they end
    /// the session (an entry its route) at once rather than when it idles out.
    pub async fn close_and_wait(&self) {
        self.close();
        tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle())
            .await
            .ok();
    }
}

/// Closes its connections when dropped, unless emptied (the tunnel came up).
struct CloseUnlessUp(Vec<quinn::Connection>);

impl Drop for CloseUnlessUp {
    fn drop(&mut self) {
        for conn in &self.0 {
            conn.close(0u32.into(), b"tunnel not opened");
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.close();
    }
}

fn vpn(e: VpnCryptoError) -> ClientError {
    VpnError::Crypto(e).into()
}

/// Seals packets into datagrams.
pub struct TunnelSender {
    conn: quinn::Connection,
    sealer: DatagramSealer,
    arena: BytesMut,
    usage: Arc<UsageCounter>,
    stats: Arc<TunnelStats>,
    uncounted: u64,
    /// Wakes the connection while packets are refused as too large (see `path_mtu`).
    nudge: MtuNudge,
}

impl TunnelSender {
    /// Sends one IP packet. Packets too large for the path are dropped (and counted).
    pub fn send(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let len = packet.len() + OVERHEAD;
        if self.arena.capacity() < len {
            self.arena.reserve(ARENA);
        }
        self.arena.resize(len, 0);
        let n = self.sealer.seal(packet, &mut self.arena).map_err(vpn)?;
        self.arena.truncate(n);
        let datagram = self.arena.split().freeze();
        match self.conn.send_datagram(datagram) {
            Ok(()) => {}
            Err(quinn::SendDatagramError::TooLarge) => {
                self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
                self.nudge.refused(&self.conn);
                return Ok(());
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => return Err(e.into()),
            Err(_) => return Err(ClientError::Closed),
        }
        self.uncounted += n as u64;
        // Exact at once: the exit's acknowledgements are checked against it.
        self.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
        if self.uncounted >= COUNT_STEP {
            self.flush_counts();
        }
        Ok(())
    }

    fn flush_counts(&mut self) {
        self.usage.vpn(self.uncounted as usize);
        self.uncounted = 0;
    }
}

impl Drop for TunnelSender {
    fn drop(&mut self) {
        self.flush_counts();
    }
}

/// Opens datagrams into packets (drops replays and forgeries, counting them).
pub struct TunnelReceiver {
    conn: quinn::Connection,
    opener: DatagramOpener,
    usage: Arc<UsageCounter>,
    stats: Arc<TunnelStats>,
    uncounted: u64,
}

impl TunnelReceiver {
    /// Receives the next packet into `out`; returns its length. Errors only when the tunnel
    /// is gone.
    pub async fn recv(&mut self, out: &mut [u8]) -> Result<usize, ClientError> {
        loop {
            let datagram = self.next_datagram().await?;
            if let Some(n) = self.open(&datagram, out) {
                return Ok(n);
            }
        }
    }

    /// Waits for the next datagram from the exit (still sealed). Errors only when the tunnel
    /// is gone.
    pub async fn next_datagram(&mut self) -> Result<Bytes, ClientError> {
        Ok(self.conn.read_datagram().await?)
    }

    /// The next datagram if one is already waiting (for reading in batches).
    pub fn waiting_datagram(&mut self) -> Option<Bytes> {
        self.conn.read_datagram().now_or_never()?.ok()
    }

    /// Opens a datagram into `out` (at least `datagram.len() - OVERHEAD` bytes); returns the
    /// packet's length, or `None` when it was dropped (replayed, forged: counted).
    pub fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Option<usize> {
        match self.opener.open(datagram, out) {
            Ok(n) => {
                self.uncounted += datagram.len() as u64;
                self.stats.packets_received.fetch_add(1, Ordering::Relaxed);
                if self.uncounted >= COUNT_STEP {
                    self.flush_counts();
                }
                Some(n)
            }
            Err(VpnCryptoError::Replay) => {
                self.stats.dropped_replay.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl TunnelReceiver {
    fn flush_counts(&mut self) {
        self.usage.vpn(self.uncounted as usize);
        self.stats
            .bytes_received
            .fetch_add(self.uncounted, Ordering::Relaxed);
        self.uncounted = 0;
    }
}

impl Drop for TunnelReceiver {
    fn drop(&mut self) {
        self.flush_counts();
    }
}
