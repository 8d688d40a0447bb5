//! Control-plane addresses: where the plane listens (by default the QUIC address's IP and
//! port number, over TCP), multiaddrs of `host:port`, and wildcards no peer can dial.

use std::net::SocketAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Swarm};
use tracing::debug;

use super::behaviour::Behaviour;
use crate::node::core::Core;

/// Listens where the config says or, by default, on the QUIC address's IP and port number
/// (TCP), falling back to any port if that one is taken.
pub(super) fn listen(core: &Core, swarm: &mut Swarm<Behaviour>) -> Result<(), String> {
    let quic = core.endpoint.local_addr().map_err(|e| e.to_string())?;
    let (addr, explicit) = match core.config.control.listen {
        Some(addr) => (addr, true),
        None => (quic, false),
    };
    match swarm.listen_on(tcp_multiaddr(addr)) {
        Ok(_) => Ok(()),
        Err(e) if !explicit => {
            debug!("control plane: port {} taken ({e}); any port", addr.port());
            swarm
                .listen_on(tcp_multiaddr(SocketAddr::new(addr.ip(), 0)))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// `/ip4|ip6/…/tcp/port` of `addr`.
pub(super) fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

/// The multiaddr of a `host:port` (an IP address or a DNS name), TCP.
pub fn host_port_multiaddr(host_port: &str) -> Option<Multiaddr> {
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Some(tcp_multiaddr(addr));
    }
    let (host, port) = host_port.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(
        Multiaddr::empty()
            .with(Protocol::Dns(host.to_owned().into()))
            .with(Protocol::Tcp(port)),
    )
}

/// Whether `addr` is a wildcard (0.0.0.0, ::), which no peer can dial.
pub(super) fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
