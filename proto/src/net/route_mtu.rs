//! How large a QUIC packet a connection may search for: past Ethernet's size only toward a peer
//! on this host (loopback), whose route carries 64 KiB.
//!
//! Not toward private addresses, though jumbo frames exist only there: a private source address
//! does not mean a private path. A relay behind source NAT (a load balancer, kube-proxy) sees
//! every client as a 10.x address, and on a cloud network whose routes carry 9,001 bytes it
//! would search toward clients whose real path is Ethernet-sized. Such a search loses its
//! probes every [`MTU_SEARCH_INTERVAL`], and after a black hole (the path falling back to 1,200
//! bytes) the binary search can end a few bytes below 1,452 on a path that carries exactly that
//! (IPv6 over Ethernet), leaving every full-size VPN or realtime datagram refused.
//!
//! [`MTU_SEARCH_INTERVAL`]: crate::tls::MTU_SEARCH_INTERVAL

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::tls::MAX_UDP_PAYLOAD;

/// The UDP payload of a full-size packet on an Ethernet path (1,500 bytes less IPv6 and UDP
/// headers; IPv4 leaves 1,472). Every connection starts at it.
pub const ETHERNET_PAYLOAD: u16 = 1452;

/// The largest UDP payload a connection to `peer` searches for.
pub fn largest_payload_to(peer: SocketAddr) -> u16 {
    // The cheap check first: only this host's own addresses.
    if !is_this_host(peer.ip()) {
        return ETHERNET_PAYLOAD;
    }
    let headers = match peer.ip().to_canonical() {
        IpAddr::V4(_) => 28,
        IpAddr::V6(_) => 48,
    };
    match route_mtu(peer) {
        Some(mtu) if mtu > ETHERNET_MTU => u16::try_from(mtu.saturating_sub(headers))
            .unwrap_or(u16::MAX)
            .clamp(ETHERNET_PAYLOAD, MAX_UDP_PAYLOAD),
        _ => ETHERNET_PAYLOAD,
    }
}

/// Ethernet's MTU: routes that carry no more keep [`ETHERNET_PAYLOAD`].
const ETHERNET_MTU: usize = 1500;

/// Whether `ip` is this host's loopback (IPv4-mapped included).
fn is_this_host(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The MTU the kernel's route to `peer` carries (its interface's, or a smaller one the kernel
/// learned for that path), from a UDP socket connected to it (no packet is sent).
#[cfg(target_os = "linux")]
fn route_mtu(peer: SocketAddr) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let (bind, level, option): (SocketAddr, _, _) = match peer {
        SocketAddr::V4(_) => (
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
        ),
        SocketAddr::V6(_) => (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU,
        ),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(peer).ok()?;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open for the call; `mtu` and `len` are valid for writes and `len`
    // holds the size of `mtu`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw mut mtu).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    usize::try_from(mtu).ok()
}

#[cfg(not(target_os = "linux"))]
fn route_mtu(_peer: SocketAddr) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_peers_stay_at_ethernet_size() {
        for peer in ["8.8.8.8:443", "[2001:db8::1]:443", "[::ffff:1.1.1.1]:443"] {
            assert_eq!(largest_payload_to(peer.parse().unwrap()), ETHERNET_PAYLOAD);
        }
    }

    #[test]
    fn loopback_searches_up_to_the_bound() {
        // Loopback's MTU is 64 KiB.
        assert_eq!(
            largest_payload_to("127.0.0.1:9".parse().unwrap()),
            MAX_UDP_PAYLOAD
        );
    }

    #[test]
    fn only_this_host_qualifies() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_this_host(ip.parse().unwrap()), "{ip}");
        }
        // Private addresses do not mean a private path (source NAT, cloud networks).
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "fd00::1",
            "fe80::1",
            "1.1.1.1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_this_host(ip.parse().unwrap()), "{ip}");
            assert_eq!(
                largest_payload_to(SocketAddr::new(ip.parse().unwrap(), 9)),
                ETHERNET_PAYLOAD
            );
        }
    }
}
