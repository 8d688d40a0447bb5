//! The exit role: one TUN device for all tunnels; each tunnel's datagrams are opened, checked
//! (nonce, key, IPv4 or IPv6, source address = the client's lease) and written to the TUN; one
//! router task reads the TUN and seals each packet for the tunnel holding its destination.
//!
//! The router owns its table (updates arrive on a channel), so the data path takes no lock;
//! datagrams are cut from a core arena (`BytesMut::split`), so it allocates once per arena,
//! not per packet.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use top_netconf::exit::ExitNet;
use top_netconf::tun::{AsyncDevice, TunReader, TunWriter, open_tun};
use top_proto::frame::{FrameCodec, FrameError, Open};
use top_proto::net::path_mtu::MtuNudge;
use top_proto::vpn::VpnFrame;
use top_proto::vpn::cipher::{
    DatagramOpener, DatagramSealer, Lease, Lease6, OVERHEAD, TunnelResponder, VpnCryptoError,
    room_to_open,
};
use top_proto::vpn::packet::ip_endpoints;
use tracing::{debug, info, warn};

use super::pool::{AddressPlan, Pool};
use super::received::send_received;
use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;
use crate::node::core::Core;
use crate::util::lock;
use top_billing::Service;

/// Largest control-stream frame.
pub const MAX_VPN_FRAME: usize = 4096;
/// How long a client may take to send its handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of datagram arena allocated at once.
const ARENA: usize = 256 * 1024;

/// Route changes queued for the TUN reader; each tunnel makes two, and tunnels are few (one per
/// leased address), so senders wait only if the reader falls far behind.
const ROUTE_CHANGES: usize = 4096;

enum RouteChange {
    Add(Ipv4Addr, Route),
    Remove(Ipv4Addr, usize),
}

struct Route {
    conn: quinn::Connection,
    sealer: DatagramSealer,
    budget: Budget,
    /// Wakes the connection while its packets are refused as too large (see `path_mtu`).
    nudge: MtuNudge,
}

/// A running exit: its TUN device, address pool and host setup.
pub struct Exit {
    tun: Arc<AsyncDevice>,
    pool: Mutex<Pool>,
    routes: mpsc::Sender<RouteChange>,
    template: Lease,
    plan: AddressPlan,
    net: Mutex<Option<ExitNet>>,
}

/// The DNS resolver to offer: the configured one, else the host's first non-loopback one.
fn offered_dns(configured: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    configured.or_else(|| {
        std::fs::read_to_string("/etc/resolv.conf")
            .ok()?
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
            .find(|a| !a.is_loopback())
    })
}

impl Exit {
    /// Opens the TUN device, sets up forwarding and NAT (when `vpn.nat`) and starts the router.
    pub fn start(core: &Arc<Core>) -> Result<Arc<Self>, top_netconf::NetError> {
        let c = &core.config.vpn;
        let pool = Pool::new(c.pool).map_err(top_netconf::NetError::Parse)?;
        let gateway = pool.gateway();
        // IPv6 only where this host can carry it on.
        let ipv6 = c.ipv6
            && match top_netconf::exit6::ipv6_usable() {
                Ok(()) => true,
                Err(why) => {
                    warn!("tunnels carry IPv4 only: {why}");
                    false
                }
            };
        let plan = AddressPlan::new(c.pool, ipv6.then_some(c.pool6))
            .map_err(top_netconf::NetError::Parse)?;
        let gateway6 = plan.gateway6(gateway);
        let v6_addr = gateway6.map(|g| (g, c.pool6.prefix_len()));
        let tun = Arc::new(open_tun(
            &c.tun,
            gateway,
            c.pool.prefix_len(),
            v6_addr,
            c.mtu,
        )?);
        let dns = offered_dns(c.dns);
        let net = if c.nat {
            let mut deny = top_netconf::exit::special_ranges();
            let mut deny6 = top_netconf::exit6::special_ranges6();
            if !c.allow_private {
                deny.extend(top_netconf::exit::private_ranges());
                deny6.extend(top_netconf::exit6::private_ranges6());
            }
            let v6 = ipv6.then_some(top_netconf::exit::Exit6Plan {
                pool: c.pool6,
                deny: deny6,
            });
            Some(ExitNet::setup(&c.tun, c.pool, &deny, dns, v6.as_ref())?)
        } else {
            None
        };
        let template = Lease {
            addr: [0; 4],
            prefix: c.pool.prefix_len(),
            gateway: gateway.octets(),
            dns: dns.map(|a| a.octets()),
            mtu: c.mtu,
            v6: gateway6.map(|g| Lease6 {
                addr: [0; 16],
                prefix: c.pool6.prefix_len(),
                gateway: g.octets(),
            }),
        };
        let (routes, changes) = mpsc::channel(ROUTE_CHANGES);
        let exit = Arc::new(Self {
            tun: tun.clone(),
            pool: Mutex::new(pool),
            routes,
            template,
            plan,
            net: Mutex::new(net),
        });
        core.tasks
            .spawn(route_from_tun(core.clone(), tun, c.mtu, plan, changes));
        info!(tun = %c.tun, pool = %c.pool, "VPN exit running");
        Ok(exit)
    }

    /// Undoes the host setup (forwarding, NAT rules).
    pub fn stop(&self) {
        if let Some(net) = lock(&self.net).take() {
            net.teardown();
        }
    }
}

/// Reads the TUN device (a batch per read) and sends each packet down the tunnel that holds
/// its destination.
async fn route_from_tun(
    core: Arc<Core>,
    tun: Arc<AsyncDevice>,
    mtu: u16,
    plan: AddressPlan,
    mut changes: mpsc::Receiver<RouteChange>,
) {
    let mut routes: HashMap<Ipv4Addr, Route> = HashMap::new();
    let mut reader = TunReader::new(mtu);
    let mut arena = BytesMut::with_capacity(ARENA);
    loop {
        let read = tokio::select! {
            biased;
            change = changes.recv() => {
                match change {
                    Some(RouteChange::Add(addr, route)) => { routes.insert(addr, route); }
                    Some(RouteChange::Remove(addr, conn)) => {
                        if routes.get(&addr).is_some_and(|r| r.conn.stable_id() == conn) {
                            routes.remove(&addr);
                        }
                    }
                    None => return,
                }
                continue;
            }
            read = reader.read(&tun) => read,
            _ = core.shutdown.cancelled() => return,
        };
        if let Err(e) = read {
            warn!("reading the TUN device: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for packet in reader.packets() {
            route_packet(&core, &plan, &mut routes, &mut arena, packet);
        }
    }
}

/// Seals one packet from the TUN device for the tunnel holding its destination and sends it.
fn route_packet(
    core: &Core,
    plan: &AddressPlan,
    routes: &mut HashMap<Ipv4Addr, Route>,
    arena: &mut BytesMut,
    packet: &[u8],
) {
    let m = &core.metrics.vpn;
    // A tunnel is found by its IPv4 address; an IPv6 one maps back to it.
    let dst = match ip_endpoints(packet) {
        Ok((_, IpAddr::V4(dst))) => Some(dst),
        Ok((_, IpAddr::V6(dst))) => plan.v4_of(dst),
        Err(_) => None,
    };
    let Some(dst) = dst else {
        // The host's own chatter on the device (router solicitations, say): nowhere to go.
        m.dropped_no_route.inc();
        return;
    };
    let Some(route) = routes.get_mut(&dst) else {
        m.dropped_no_route.inc();
        return;
    };
    let len = packet.len() + OVERHEAD;
    if !super::spend(core, &mut route.budget, len) {
        return;
    }
    if arena.capacity() < len {
        arena.reserve(ARENA);
    }
    arena.resize(len, 0);
    if route.sealer.seal(packet, arena).is_err() {
        arena.clear();
        m.dropped_no_route.inc();
        return;
    }
    let datagram = arena.split().freeze();
    match route.conn.send_datagram(datagram) {
        Ok(()) => {
            m.packets_out.inc();
        }
        Err(quinn::SendDatagramError::TooLarge) => {
            m.dropped_too_large.inc();
            route.nudge.refused(&route.conn);
        }
        Err(_) => {
            routes.remove(&dst);
        }
    }
}

/// Serves a tunnel's control stream: handshake, lease, then the tunnel until either side ends it.
pub async fn serve_vpn(
    core: Arc<Core>,
    exit: Option<Arc<Exit>>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
    meter: Option<Arc<ClientMeter>>,
) -> Result<(), FrameError> {
    let mut frames = frames.map_decoder(|c| c.retype::<VpnFrame>(MAX_VPN_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<VpnFrame>::new(MAX_VPN_FRAME));
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(VpnFrame::Hello(h)))) => h,
        Ok(Some(Err(e))) => return Err(e),
        _ => return Err(FrameError::Unexpected("expected a tunnel hello")),
    };
    let refuse = |why: &str| VpnFrame::Refused(why.to_string());
    let Some(exit) = exit else {
        out.send(refuse("this relay is not a VPN exit")).await?;
        return Ok(());
    };
    if meter.as_ref().is_some_and(|m| !m.has_channel()) {
        out.send(refuse(
            "payment required: this exit charges for VPN traffic; open a billing channel \
             first (deposit with `top wallet deposit AMOUNT`)",
        ))
        .await?;
        return Ok(());
    }
    let responder = match TunnelResponder::read(&core.identity, &hello) {
        Ok(r) => r,
        Err(e) => {
            core.metrics.vpn.dropped_decrypt.inc();
            out.send(refuse(&e.to_string())).await?;
            return Ok(());
        }
    };
    let Some(addr) = lock(&exit.pool).take() else {
        out.send(refuse("the exit has no free tunnel address"))
            .await?;
        return Ok(());
    };
    let addr6 = exit.plan.v6_of(addr);
    let lease = Lease {
        addr: addr.octets(),
        v6: exit.template.v6.zip(addr6).map(|(v6, a)| Lease6 {
            addr: a.octets(),
            ..v6
        }),
        ..exit.template
    };
    let session = async {
        let (reply, keys) = responder
            .reply(&lease)
            .map_err(|_| FrameError::Unexpected("handshake reply"))?;
        let session = keys.session();
        let (sealer, opener) = keys.split();
        let route = Route {
            conn: conn.clone(),
            sealer,
            budget: Budget::new(meter.clone(), Service::Vpn),
            nudge: MtuNudge::default(),
        };
        exit.routes.send(RouteChange::Add(addr, route)).await.ok();
        out.send(VpnFrame::Welcome(reply)).await?;
        debug!(%addr, "tunnel up");
        let sources = (IpAddr::V4(addr), addr6.map(IpAddr::V6));
        let inbound = pump_to_tun(
            &core,
            &exit,
            &conn,
            opener,
            sources,
            Budget::new(meter, Service::Vpn),
        );
        let acks = async {
            send_received(&core, &conn, session).await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = inbound => {}
            _ = acks => {}
            _ = async { while let Some(Ok(_)) = frames.next().await {} } => {}
            _ = core.shutdown.cancelled() => {}
        }
        Ok::<(), FrameError>(())
    };
    core.metrics.vpn.sessions.inc();
    let result = session.await;
    core.metrics.vpn.sessions.dec();
    exit.routes
        .send(RouteChange::Remove(addr, conn.stable_id()))
        .await
        .ok();
    lock(&exit.pool).give_back(addr);
    debug!(%addr, "tunnel down");
    result
}

/// Opens a tunnel's datagrams and writes the packets to the TUN device, a batch at a time:
/// whatever datagrams are already waiting when one arrives go in the same write.
async fn pump_to_tun(
    core: &Core,
    exit: &Exit,
    conn: &quinn::Connection,
    mut opener: DatagramOpener,
    sources: (IpAddr, Option<IpAddr>),
    mut budget: Budget,
) {
    let mut writer = TunWriter::default();
    while let Ok(datagram) = conn.read_datagram().await {
        let mut next = Some(datagram);
        while let Some(datagram) = next.take() {
            // Room for the tag too: the datagram is decrypted in place.
            let max = room_to_open(&datagram);
            writer.push_with(max, |out| {
                let n = open_checked(core, &mut opener, sources, &datagram, out)?;
                super::spend(core, &mut budget, datagram.len()).then_some(n)
            });
            if !writer.is_full()
                && let Some(Ok(d)) = conn.read_datagram().now_or_never()
            {
                next = Some(d);
            }
        }
        match writer.flush(&exit.tun).await {
            Ok(n) => {
                core.metrics.vpn.packets_in.inc_by(n as u64);
            }
            Err(e) => debug!("writing the TUN device: {e}"),
        }
    }
}

/// Opens a datagram into `out` and checks it is an IPv4 or IPv6 packet from one of the client's
/// own addresses; counts what it drops.
fn open_checked(
    core: &Core,
    opener: &mut DatagramOpener,
    (addr, addr6): (IpAddr, Option<IpAddr>),
    datagram: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let m = &core.metrics.vpn;
    let n = match opener.open(datagram, out) {
        Ok(n) => n,
        Err(VpnCryptoError::Replay) => {
            m.dropped_replay.inc();
            return None;
        }
        Err(VpnCryptoError::Decrypt) => {
            m.dropped_decrypt.inc();
            return None;
        }
        Err(_) => {
            m.dropped_malformed.inc();
            return None;
        }
    };
    match ip_endpoints(&out[..n]) {
        Ok((src, _)) if src == addr || Some(src) == addr6 => Some(n),
        _ => {
            m.dropped_bad_packet.inc();
            None
        }
    }
}
