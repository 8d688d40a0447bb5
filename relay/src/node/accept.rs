//! Accepting QUIC connections and dispatching each stream by its first frame.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use top_proto::frame::{FrameCodec, FrameError, MAX_FRAME_LEN, Open, encode_frame};
use top_proto::id::{AccountId, RelayId};
use top_proto::presence::PRESENCE_SKEW_MS;
use top_proto::tls::peer_id;
use tracing::{Instrument, debug, info_span};

use crate::msg::link::run_link;
use crate::msg::pipe::serve_pipe;
use crate::msg::session::run_session;
use crate::node::peers::LINK_NOT_MEMBER;
use crate::node::state::Shared;
use crate::util::unix_now_ms;

/// How long a new stream may take to send its first frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `Open` frame.
const MAX_OPEN_LEN: usize = 64 * 1024;

/// Per-IP rate limiter (new connections here, gateway requests on the HTTP port).
pub type PerIpLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// A limiter of `per_sec` events per second per address, with bursts of twice that.
pub fn per_ip_limiter(per_sec: u32) -> PerIpLimiter {
    let rate = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

/// Connections open now per remote address.
#[derive(Default)]
struct OpenPerIp(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

impl OpenPerIp {
    /// Counts one more connection from `ip`, unless `max` are open: the count drops when the
    /// returned guard does.
    fn open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<OpenGuard> {
        let mut open = crate::util::lock(&self.0);
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(OpenGuard(self.clone(), ip))
    }
}

/// One open connection from an address.
struct OpenGuard(Arc<OpenPerIp>, IpAddr);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = crate::util::lock(&self.0.0);
        if let Some(n) = open.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Accepts connections until shutdown: at most `max_connections` at once and
/// `max_connections_per_ip` from one address, and at most `new_connections_per_ip` new ones per
/// second from one address (before any handshake work).
pub async fn accept_loop(shared: Arc<Shared>) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let open_per_ip = Arc::new(OpenPerIp::default());
    let per_ip = per_ip_limiter(shared.config.new_connections_per_ip);
    let mut forget = tokio::time::interval(Duration::from_secs(60));
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => incoming,
            _ = forget.tick() => {
                per_ip.retain_recent();
                continue;
            }
            _ = shared.shutdown.cancelled() => return,
        };
        let Some(incoming) = incoming else { return };
        if per_ip.check_key(&incoming.remote_address().ip()).is_err() {
            shared.metrics.connections_refused.inc();
            incoming.refuse();
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.connections_refused.inc();
            incoming.refuse();
            continue;
        };
        let ip = incoming.remote_address().ip();
        let Some(from_ip) = open_per_ip.open(ip, shared.config.max_connections_per_ip) else {
            shared.metrics.connections_refused.inc();
            incoming.refuse();
            continue;
        };
        // A connection from this host searches for larger packets.
        let toward =
            top_proto::tls::server_config_toward(&shared.server_config, incoming.remote_address());
        let connecting = match toward {
            Some(config) => incoming.accept_with(config),
            None => incoming.accept(),
        };
        let shared2 = shared.clone();
        shared.tasks.spawn(async move {
            let connecting = match connecting {
                Ok(connecting) => connecting,
                Err(e) => return debug!("accepting a connection from {ip} failed: {e}"),
            };
            let remote = connecting.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return debug!("handshake from {remote} failed: {e}"),
                Err(_) => return debug!("handshake from {remote} timed out"),
            };
            shared2.metrics.connections.inc();
            serve_streams(shared2, conn, Arc::new(AtomicBool::new(false))).await;
            drop((permit, from_ip));
        });
    }
}

/// Whether a stream comes from a link whose relay is a member now: a link's privileges hold
/// only while its relay is a member, checked per stream.
fn is_member_link(shared: &Shared, is_link: &AtomicBool, peer: &AccountId) -> bool {
    is_link.load(Ordering::SeqCst)
        && shared
            .peers
            .is_member(&RelayId::from_wire(*peer.as_bytes()))
}

/// What the streams of one connection share.
#[derive(Clone)]
struct ConnState {
    /// Whether the peer is a linked relay.
    is_link: Arc<AtomicBool>,
    /// Whether a messaging session is open (at most one per connection).
    session_open: Arc<AtomicBool>,
    /// The connection's meter, when this relay bills.
    meter: Option<Arc<crate::billing::meter::ClientMeter>>,
    /// Whether a VPN tunnel is open (at most one per connection: datagrams are per connection).
    vpn_open: Arc<AtomicBool>,
    /// Held while a forward request of this connection is checked (one at a time).
    forward_dialing: Arc<tokio::sync::Mutex<()>>,
}

/// Serves every stream the peer of `conn` opens, until the connection closes.
pub async fn serve_streams(shared: Arc<Shared>, conn: quinn::Connection, is_link: Arc<AtomicBool>) {
    let Some(peer) = peer_id::<top_proto::id::Account>(&conn) else {
        conn.close(2u32.into(), b"no identity");
        return;
    };
    let span = info_span!("conn", peer = %peer.short(), remote = %conn.remote_address());
    let conn_state = ConnState {
        is_link,
        session_open: Arc::new(AtomicBool::new(false)),
        // A member relay (an entry carrying many users) is not bounded by its address.
        meter: crate::billing::meter::new_meter(
            &shared.billing,
            (!shared
                .peers
                .is_member(&RelayId::from_wire(*peer.as_bytes())))
            .then(|| conn.remote_address().ip()),
        ),
        vpn_open: Arc::new(AtomicBool::new(false)),
        forward_dialing: Arc::default(),
    };
    async move {
        loop {
            let stream = tokio::select! {
                stream = conn.accept_bi() => stream,
                _ = shared.shutdown.cancelled() => {
                    conn.close(0u32.into(), b"relay shutting down");
                    return;
                }
            };
            let Ok((send, recv)) = stream else { return };
            let (shared, conn) = (shared.clone(), conn.clone());
            let state = conn_state.clone();
            shared.tasks.clone().spawn(
                async move {
                    match serve_stream(shared.clone(), conn, peer, send, recv, state).await {
                        Err(e) if e.is_bad_input() => {
                            shared.metrics.bad_frames.inc();
                            debug!("stream closed for a bad frame: {e}");
                        }
                        Err(e) => debug!("stream ended: {e}"),
                        Ok(()) => {}
                    }
                }
                .in_current_span(),
            );
        }
    }
    .instrument(span)
    .await
}

async fn serve_stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    peer: AccountId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    state: ConnState,
) -> Result<(), FrameError> {
    let ConnState {
        is_link,
        session_open,
        meter,
        vpn_open,
        forward_dialing,
    } = state;
    let mut frames = FramedRead::new(recv, FrameCodec::<Open>::new(MAX_OPEN_LEN));
    let first = match tokio::time::timeout(OPEN_TIMEOUT, frames.next()).await {
        Ok(Some(first)) => first,
        Ok(None) => return Ok(()),
        Err(_) => {
            frames.get_mut().stop(3u32.into()).ok();
            return Err(FrameError::Unexpected("no open frame in time"));
        }
    };
    let reject = |mut frames: FramedRead<quinn::RecvStream, _>, why| {
        frames.get_mut().stop(1u32.into()).ok();
        Err(FrameError::Unexpected(why))
    };
    match first {
        Err(e) => {
            frames.get_mut().stop(1u32.into()).ok();
            Err(e)
        }
        Ok(Open::Session(presence)) => {
            // The client's own word that it is here, fresh: what links forward to other relays.
            // Checked before the connection's one session is taken, so a client whose clock
            // was off can retry on the same connection.
            if presence.body.client != peer {
                return reject(frames, "the presence statement names another user");
            }
            if presence
                .check(&shared.id, unix_now_ms(), PRESENCE_SKEW_MS)
                .is_err()
            {
                return reject(frames, "bad presence statement (is the clock right?)");
            }
            if !shared.msg.is_current_presence(&presence) {
                return reject(frames, "an older presence statement than one already seen");
            }
            if session_open.swap(true, Ordering::SeqCst) {
                return reject(frames, "second session stream on one connection");
            }
            let frames = frames.map_decoder(|c| c.retype(MAX_FRAME_LEN));
            let presence = Arc::new(presence);
            run_session(
                shared.session_context(),
                conn,
                presence,
                send,
                frames,
                meter,
            )
            .await;
            Ok(())
        }
        Ok(Open::Pipe { to }) => {
            let from_link = is_member_link(&shared, &is_link, &peer);
            let meter = meter.filter(|_| !from_link);
            // A pipe from a linked relay keeps the link up while it runs.
            let _hold = from_link.then(|| {
                let relay = RelayId::from_wire(*peer.as_bytes());
                shared.msg.wants.hold(relay)
            });
            serve_pipe(
                &shared.msg,
                &shared.metrics,
                from_link,
                to,
                send,
                frames,
                meter,
            )
            .await;
            Ok(())
        }
        Ok(Open::Link) => {
            // The id is the one TLS proved; whether it is a relay is the registry's word.
            let relay = RelayId::from_wire(*peer.as_bytes());
            if !shared.peers.is_member(&relay) {
                // Not bad input: a relay that is not registered (yet) is told so plainly.
                shared.metrics.links_refused.inc();
                debug!(peer = %relay.short(), "link refused: not a registered relay");
                conn.close(LINK_NOT_MEMBER, b"not a registered relay");
                return Ok(());
            }
            is_link.store(true, Ordering::SeqCst);
            let frames = frames.map_decoder(|c| c.retype(MAX_FRAME_LEN));
            run_link(shared.link_context(), relay, conn, send, frames).await;
            Ok(())
        }
        Ok(Open::IncomingPipe) => reject(frames, "IncomingPipe is relay-to-client only"),
        Ok(Open::IncomingRealtime { .. }) => {
            reject(frames, "IncomingRealtime is relay-to-client only")
        }
        Ok(Open::Realtime { to, flow }) => {
            let from_link = is_member_link(&shared, &is_link, &peer);
            let _hold = from_link.then(|| {
                let relay = RelayId::from_wire(*peer.as_bytes());
                shared.msg.wants.hold(relay)
            });
            let opener = crate::realtime::serve::Opener {
                conn,
                from_link,
                meter: meter.filter(|_| !from_link),
            };
            crate::realtime::serve::serve_realtime(
                &shared.msg,
                &shared.realtime,
                opener,
                (to, flow),
                send,
                frames,
            )
            .await
        }
        Ok(Open::Control) => {
            let addrs = top_proto::frame::ControlAddrs {
                addrs: shared.control.status().listening,
            };
            let mut send = send;
            send.write_all(&encode_frame(&addrs)?).await.ok();
            send.finish().ok();
            Ok(())
        }
        Ok(Open::Ledger) => {
            crate::ledger::api::serve_ledger(
                shared.chain.clone(),
                shared.shutdown.clone(),
                send,
                frames,
            )
            .await
        }
        Ok(Open::LinkBilling) => {
            // A member relay pays for what it asks of this one through its links' meter (its
            // billing stream may come before its link does).
            if !shared
                .peers
                .is_member(&RelayId::from_wire(*peer.as_bytes()))
            {
                return reject(frames, "link billing is for member relays");
            }
            crate::billing::stream::serve_billing(
                shared.billing.clone(),
                conn,
                peer,
                shared.billing.member_meter(peer, 0),
                send,
                frames,
            )
            .await
        }
        Ok(Open::Billing) => {
            crate::billing::stream::serve_billing(
                shared.billing.clone(),
                conn,
                peer,
                meter,
                send,
                frames,
            )
            .await
        }
        Ok(Open::Vpn) => {
            // A connection's datagrams belong to one use: a tunnel or realtime pipes.
            let Some(_claim) = shared.realtime.claim_for_vpn(&conn) else {
                return reject(frames, "this connection's datagrams carry realtime pipes");
            };
            if vpn_open.swap(true, Ordering::SeqCst) {
                return reject(frames, "second tunnel on one connection");
            }
            let result = crate::vpn::exit::serve_vpn(
                shared.core.clone(),
                shared.vpn_exit.get().cloned(),
                conn,
                send,
                frames,
                meter,
            )
            .await;
            vpn_open.store(false, Ordering::SeqCst);
            result
        }
        Ok(Open::Connect) => {
            let is_exit = shared.vpn_exit.get().is_some();
            crate::vpn::connect::serve_connect(shared.core.clone(), is_exit, meter, send, frames)
                .await
        }
        Ok(Open::RetiredVia | Open::RetiredBillingAs) => {
            reject(frames, "retired: 2-hop routes use Forward")
        }
        Ok(Open::Forward { to }) => {
            let ctx = crate::vpn::hop::ForwardContext {
                core: shared.core.clone(),
                forwarder: shared.forwarder.get().cloned(),
                exit_is_member: shared.peers.is_member(&to.id),
                dialing: forward_dialing,
            };
            crate::vpn::hop::serve_forward(ctx, conn, to, meter, send, frames).await
        }
        Ok(Open::Cdn) => {
            let from_link = is_member_link(&shared, &is_link, &peer);
            let _hold = from_link.then(|| {
                let relay = RelayId::from_wire(*peer.as_bytes());
                shared.msg.wants.hold(relay)
            });
            crate::cdn::serve::serve_cdn(shared.cdn.clone(), peer, from_link, meter, send, frames)
                .await
        }
    }
}
