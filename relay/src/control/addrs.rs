//! Control-plane addresses: where the plane listens (TCP; by default the QUIC address's IP and
//! a port the system picks), and wildcards no peer can dial.

use std::net::SocketAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Swarm};

use super::behaviour::Behaviour;
use crate::node::core::Core;

/// Listens where the config says or, by default, on the QUIC address's IP and port number
/// (TCP), falling back to any port if that one is taken.
pub(super) fn listen(core: &Core, swarm: &mut Swarm<Behaviour>) -> Result<(), String> {
    // Not the QUIC port number: a validator's consensus transport listens there over TCP.
    let addr = core
        .config
        .control
        .listen
        .unwrap_or_else(|| SocketAddr::new(core.config.listen.ip(), 0));
    swarm
        .listen_on(tcp_multiaddr(addr))
        .map(|_| ())
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// `/ip4|ip6/…/tcp/port` of `addr`.
pub(super) fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

/// `addr` with a wildcard IP (0.0.0.0, ::) replaced by `ip`.
pub(super) fn with_ip(addr: &Multiaddr, ip: std::net::IpAddr) -> Multiaddr {
    addr.iter()
        .map(|p| match (p, ip) {
            (Protocol::Ip4(a), _) if a.is_unspecified() => Protocol::from(ip),
            (Protocol::Ip6(a), _) if a.is_unspecified() => Protocol::from(ip),
            (p, _) => p,
        })
        .collect()
}

/// Whether `addr` is a wildcard (0.0.0.0, ::), which no peer can dial.
pub(super) fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_becomes_the_address_dialed() {
        let wild: Multiaddr = "/ip4/0.0.0.0/tcp/7800".parse().unwrap();
        assert!(is_unspecified(&wild));
        let dialed = with_ip(&wild, "203.0.113.7".parse().unwrap());
        assert_eq!(dialed.to_string(), "/ip4/203.0.113.7/tcp/7800");
        assert!(!is_unspecified(&dialed));
    }
}
