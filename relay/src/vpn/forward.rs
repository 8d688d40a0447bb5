//! The entry's UDP forwarder for 2-hop routes: one socket (the forwarding port) faces clients,
//! and each route has a socket of its own connected to its exit. A client's packets are known by
//! their source address (the address its control connection comes from, nothing else); an
//! exit's by the route socket they arrive on (the kernel drops any other source). The packets are
//! the client's own QUIC connection to the exit: the entry forwards them unread, a batch per
//! system call (GRO on receive, GSO on send), holding the client's credit for every byte
//! ([`super::held`]). Where the kernel can forward a route ([`super::kernel`]), it does, and
//! this forwarder sees only what the kernel leaves to it.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use top_proto::addr::RelayAddr;
use top_proto::id::RelayId;

use super::allowance::Allowance;
use super::held::HeldBudget;
use super::kernel::KernelPath;
use super::metrics::VpnMetrics;
use super::route_rules::Tuple;
use crate::node::core::Core;

/// Most routes for one IP address (an IPv6 /64: one host cannot take every route).
pub const ROUTES_PER_IP: usize = 64;
/// Exit checks remembered...
const CHECKS_KEPT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1024).unwrap();
/// ... for this long (routes to one exit cost the exit one handshake from here per period, not
/// one each).
const CHECK_FOR: Duration = Duration::from_secs(60);
/// Room for one receive (a GRO batch is at most 64 KiB).
const SLOT: usize = 64 * 1024;
/// Receives per system call on the client-facing socket...
const BATCH: usize = 8;
/// ... and on a route's socket (a route's buffers are its memory: kept small).
const ROUTE_BATCH: usize = 2;

/// Why a route could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// As many routes as configured are forwarded already.
    #[error("this entry forwards as many routes as it can")]
    Full,
    /// A route is forwarded for this address already.
    #[error("a route is forwarded for this address already")]
    Taken,
    /// [`ROUTES_PER_IP`] are forwarded for this IP address already.
    #[error("as many routes are forwarded for this IP address as one may have")]
    FullForIp,
    /// The route's socket could not be opened.
    #[error("opening the route's socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// A socket with quinn's batched UDP I/O.
struct BatchSocket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    fn new(io: UdpSocket) -> std::io::Result<Self> {
        let state = UdpSocketState::new((&io).into())?;
        Ok(Self { io, state })
    }

    /// Receives up to `slots.len() / SLOT` batches into `slots`; waits for the first.
    async fn recv(&self, slots: &mut [u8], meta: &mut [RecvMeta]) -> std::io::Result<usize> {
        let n = meta.len().min(slots.len() / SLOT).min(BATCH);
        self.io
            .async_io(Interest::READABLE, || {
                let mut chunks = slots.chunks_mut(SLOT).map(IoSliceMut::new);
                let mut iovs: [IoSliceMut; BATCH] = std::array::from_fn(|_| {
                    chunks.next().unwrap_or_else(|| IoSliceMut::new(&mut []))
                });
                self.state
                    .recv((&self.io).into(), &mut iovs[..n], &mut meta[..n])
            })
            .await
    }

    /// Sends `data` (segments of `stride` bytes, the last maybe shorter) to `to` (from
    /// `src_ip`, if given), as few system calls as GSO allows, waiting for room if `wait`;
    /// returns the packets the socket refused (dropped, as UDP does).
    async fn send(
        &self,
        to: SocketAddr,
        src_ip: Option<IpAddr>,
        (data, stride, ecn): (&[u8], usize, Option<quinn::udp::EcnCodepoint>),
        wait: bool,
    ) -> u64 {
        let stride = stride.max(1);
        let per_call = stride * self.state.max_gso_segments().max(1);
        let mut dropped = 0;
        for chunk in data.chunks(per_call) {
            let transmit = Transmit {
                destination: to,
                ecn,
                contents: chunk,
                segment_size: (chunk.len() > stride).then_some(stride),
                src_ip,
            };
            let send = || self.state.try_send((&self.io).into(), &transmit);
            let sent = if wait {
                self.io.async_io(Interest::WRITABLE, send).await
            } else {
                self.io.try_io(Interest::WRITABLE, send)
            };
            if sent.is_err() {
                dropped += chunk.len().div_ceil(stride) as u64;
            }
        }
        dropped
    }
}

/// One route: the client's address, its exit, and the socket connected to the exit.
struct Route {
    exit: SocketAddr,
    socket: BatchSocket,
    up: Mutex<HeldBudget>,
    /// The address replies leave from.
    reply_from: Option<IpAddr>,
}

/// The forwarding port and its routes.
pub struct Forwarder {
    socket: BatchSocket,
    port: u16,
    max_routes: usize,
    /// Exits lately checked by a handshake, by id and address as named: where they answered.
    checked: Mutex<lru::LruCache<(RelayId, String), (SocketAddr, Instant)>>,
    routes: RwLock<HashMap<SocketAddr, Arc<Route>>>,
    /// Kernel forwarding, if this host allows it.
    kernel: OnceLock<Arc<KernelPath>>,
}

/// Ends its route when dropped (the client's address is free for another route once the
/// route is out of the kernel too).
pub struct RouteGuard {
    stop: CancellationToken,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Forwarder {
    /// Binds the forwarding port at `addr` and forwards clients' packets until shutdown, for
    /// at most `max_routes` routes at once.
    pub fn start(
        core: &Arc<Core>,
        addr: SocketAddr,
        max_routes: usize,
    ) -> std::io::Result<Arc<Self>> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let port = std_socket.local_addr()?.port();
        let socket = BatchSocket::new(UdpSocket::from_std(std_socket)?)?;
        let forwarder = Arc::new(Self {
            socket,
            port,
            max_routes,
            checked: Mutex::new(lru::LruCache::new(CHECKS_KEPT)),
            routes: RwLock::default(),
            kernel: OnceLock::new(),
        });
        let (f, c) = (forwarder.clone(), core.clone());
        core.tasks.spawn(async move {
            tokio::select! {
                _ = f.forward_up(&c.metrics.vpn) => {}
                _ = c.shutdown.cancelled() => {}
            }
        });
        Ok(forwarder)
    }

    /// Forwards routes in the kernel from now on where it can (see [`super::kernel`]); says
    /// why not if this host does not allow it.
    pub async fn enable_kernel(
        self: &Arc<Self>,
        core: &Arc<Core>,
    ) -> Result<(), super::kernel::KernelError> {
        let kernel = match KernelPath::open(&core.id).await {
            Ok(kernel) => kernel,
            Err(e) => {
                KernelPath::clear(&core.id).await;
                return Err(e);
            }
        };
        if self.kernel.set(kernel.clone()).is_ok() {
            let c = core.clone();
            core.tasks.spawn(async move {
                kernel.run(&c.metrics.vpn, c.shutdown.clone()).await;
            });
        }
        Ok(())
    }

    /// The forwarding port clients send to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Routes forwarded now.
    pub fn routes(&self) -> usize {
        crate::util::read(&self.routes).len()
    }

    /// Where the exit `to` answered a check lately, if it did.
    pub fn checked_exit(&self, to: &RelayAddr) -> Option<SocketAddr> {
        let mut checked = crate::util::lock(&self.checked);
        let key = (to.id, to.host_port.clone());
        match checked.get(&key) {
            Some((addr, at)) if at.elapsed() < CHECK_FOR => Some(*addr),
            Some(_) => {
                checked.pop(&key);
                None
            }
            None => None,
        }
    }

    /// The exit `to` answered a check at `addr`.
    pub fn remember_exit(&self, to: &RelayAddr, addr: SocketAddr) {
        crate::util::lock(&self.checked).put((to.id, to.host_port.clone()), (addr, Instant::now()));
    }

    /// Whether a route for `client` could be added now (checked again when it is).
    pub fn check(&self, client: SocketAddr) -> Result<(), ForwardError> {
        room(&crate::util::read(&self.routes), client, self.max_routes)
    }

    /// Forwards between `client` and `exit` until the guard is dropped: `up` holds credit for
    /// what goes to the exit, `down` for what comes back; replies leave from `reply_from` (the
    /// local address the client's control connection reached, on a host with several).
    pub fn add(
        self: &Arc<Self>,
        core: &Arc<Core>,
        (client, reply_from): (SocketAddr, Option<IpAddr>),
        exit: SocketAddr,
        up: HeldBudget,
        mut down: HeldBudget,
    ) -> Result<RouteGuard, ForwardError> {
        let bind: SocketAddr = match exit {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let std_socket = std::net::UdpSocket::bind(bind)?;
        std_socket.connect(exit)?;
        std_socket.set_nonblocking(true)?;
        let kernel = self.kernel.get().cloned();
        let in_kernel = kernel.as_ref().and_then(|_| {
            let back = std_socket.local_addr().ok()?;
            let tuple = Tuple::of(client, (reply_from, self.port), back, exit)?;
            let up = Allowance::new(up.meter(), up.log());
            let down = Allowance::new(down.meter(), down.log());
            Some((tuple, up, down))
        });
        let route = Arc::new(Route {
            exit,
            socket: BatchSocket::new(UdpSocket::from_std(std_socket)?)?,
            up: Mutex::new(up),
            reply_from,
        });
        {
            let mut routes = crate::util::write(&self.routes);
            room(&routes, client, self.max_routes)?;
            routes.insert(client, route.clone());
        }
        let stop = CancellationToken::new();
        let (f, c, s) = (self.clone(), core.clone(), stop.clone());
        core.tasks.spawn(async move {
            let m = &c.metrics.vpn;
            m.forwards.inc();
            let kernel_route = match (&kernel, in_kernel) {
                (Some(k), Some((tuple, up, down))) => match k.add(tuple, up, down).await {
                    Ok(id) => Some((id, tuple)),
                    Err(e) => {
                        debug!("route to {exit} stays in user space: {e}");
                        None
                    }
                },
                _ => None,
            };
            tokio::select! {
                _ = f.forward_down(&route, client, &mut down, m) => {}
                _ = s.cancelled() => {}
                _ = c.shutdown.cancelled() => {}
            }
            if let (Some(k), Some((id, tuple))) = (&kernel, kernel_route) {
                k.remove(id, tuple).await;
            }
            // (Only this route has the address: no other is added while it does.)
            crate::util::write(&f.routes).remove(&client);
            m.forwards.dec();
        });
        Ok(RouteGuard { stop })
    }

    /// Client → exit, for every route: a batch per receive, each packet's source looked up.
    async fn forward_up(&self, m: &VpnMetrics) {
        let mut slots = vec![0u8; SLOT * BATCH];
        let mut meta = [RecvMeta::default(); BATCH];
        loop {
            let n = match self.socket.recv(&mut slots, &mut meta).await {
                Ok(n) => n,
                Err(e) => {
                    debug!("forwarding port: {e}");
                    continue;
                }
            };
            for (meta, slot) in meta[..n].iter().zip(slots.chunks(SLOT)) {
                let route = crate::util::read(&self.routes).get(&meta.addr).cloned();
                let Some(route) = route else {
                    m.dropped_stranger.inc_by(segments(meta));
                    continue;
                };
                if !crate::util::lock(&route.up).allow(meta.len) {
                    m.dropped_unpaid.inc_by(segments(meta));
                    continue;
                }
                // The route's socket is connected: its address is its own.
                pass_on(&route.socket, (route.exit, None), meta, slot, false, m).await;
            }
        }
    }

    /// Exit → client, for one route.
    async fn forward_down(
        &self,
        route: &Route,
        client: SocketAddr,
        down: &mut HeldBudget,
        m: &VpnMetrics,
    ) {
        let mut slots = vec![0u8; SLOT * ROUTE_BATCH];
        let mut meta = [RecvMeta::default(); ROUTE_BATCH];
        loop {
            let n = match route.socket.recv(&mut slots, &mut meta).await {
                Ok(n) => n,
                Err(e) => {
                    // An ICMP error from the exit's host, reported once: go on.
                    debug!("route to {}: {e}", route.exit);
                    continue;
                }
            };
            for (meta, slot) in meta[..n].iter().zip(slots.chunks(SLOT)) {
                if !down.allow(meta.len) {
                    m.dropped_unpaid.inc_by(segments(meta));
                    continue;
                }
                pass_on(
                    &self.socket,
                    (client, route.reply_from),
                    meta,
                    slot,
                    true,
                    m,
                )
                .await;
            }
        }
    }
}

/// Whether `routes` has room for one more, for `client`.
fn room<V>(
    routes: &HashMap<SocketAddr, V>,
    client: SocketAddr,
    max: usize,
) -> Result<(), ForwardError> {
    if routes.contains_key(&client) {
        return Err(ForwardError::Taken);
    }
    if routes.len() >= max {
        return Err(ForwardError::Full);
    }
    let host = host_of(client.ip());
    if routes.keys().filter(|a| host_of(a.ip()) == host).count() >= ROUTES_PER_IP {
        return Err(ForwardError::FullForIp);
    }
    Ok(())
}

/// The host an address stands for: the IPv4 address, or an IPv6 address's /64 (one host
/// usually has a whole /64).
fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// Sends on one received batch (`meta` of `slot`) to `to`, from `from` if given, and counts
/// its packets as forwarded or dropped.
async fn pass_on(
    socket: &BatchSocket,
    (to, from): (SocketAddr, Option<IpAddr>),
    meta: &RecvMeta,
    slot: &[u8],
    wait: bool,
    m: &VpnMetrics,
) {
    let batch = (&slot[..meta.len], meta.stride, meta.ecn);
    let dropped = socket.send(to, from, batch, wait).await;
    m.forwarded.inc_by(segments(meta).saturating_sub(dropped));
    let dropped_bytes = (dropped as usize).saturating_mul(meta.stride.max(1));
    m.forwarded_bytes
        .inc_by(meta.len.saturating_sub(dropped_bytes) as u64);
    m.dropped_send_full.inc_by(dropped);
}

/// UDP packets in a received batch.
fn segments(meta: &RecvMeta) -> u64 {
    meta.len.div_ceil(meta.stride.max(1)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_cannot_take_every_route_nor_one_address_two() {
        let mut routes = HashMap::new();
        let at = |ip: u8, port: u16| SocketAddr::from(([10, 0, 0, ip], port));
        for port in 0..ROUTES_PER_IP as u16 {
            assert!(room(&routes, at(1, port), 1000).is_ok());
            routes.insert(at(1, port), ());
        }
        assert!(matches!(
            room(&routes, at(1, 9999), 1000),
            Err(ForwardError::FullForIp)
        ));
        assert!(matches!(
            room(&routes, at(1, 0), 1000),
            Err(ForwardError::Taken)
        ));
        assert!(room(&routes, at(2, 0), 1000).is_ok());
        // An IPv6 host's /64 is one host.
        let mut v6 = HashMap::new();
        for i in 0..ROUTES_PER_IP as u16 {
            let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, 1);
            v6.insert(SocketAddr::from((addr, 1000)), ());
        }
        let other = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 1, 2, 3);
        assert!(matches!(
            room(&v6, SocketAddr::from((other, 1)), 1000),
            Err(ForwardError::FullForIp)
        ));
        assert!(matches!(
            room(&routes, at(2, 0), ROUTES_PER_IP),
            Err(ForwardError::Full)
        ));
    }
}
