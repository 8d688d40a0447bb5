//! How large a QUIC packet a connection may search for: past Ethernet's size only toward peers on
//! this host or on a private network whose route carries larger frames (jumbo frames exist
//! only there).
//!
//! Everywhere else the search stays at [`ETHERNET_PAYLOAD`], as before: a search toward a larger
//! bound on an Ethernet-sized path loses its probes every [`MTU_SEARCH_INTERVAL`], and after a
//! black hole (the path falling back to 1,200 bytes) the binary search can end a few bytes below
//! 1,452 on a path that carries exactly that (IPv6 over Ethernet), leaving every full-size VPN
//! or realtime datagram refused.
//!
//! [`MTU_SEARCH_INTERVAL`]: crate::tls::MTU_SEARCH_INTERVAL

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::tls::MAX_UDP_PAYLOAD;

/// The UDP payload of a full-size packet on an Ethernet path (1,500 bytes less IPv6 and UDP
/// headers; IPv4 leaves 1,472). Every connection starts at it.
pub const ETHERNET_PAYLOAD: u16 = 1452;

/// The largest UDP payload a connection to `peer` searches for.
pub fn largest_payload_to(peer: SocketAddr) -> u16 {
    // The cheap check first: public addresses never carry more than Ethernet.
    if !may_carry_jumbo_frames(peer.ip()) {
        return ETHERNET_PAYLOAD;
    }
    let headers = match peer {
        SocketAddr::V4(_) => 28,
        SocketAddr::V6(_) => 48,
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

/// Whether `ip` is on this host or a private network (the only places jumbo frames exist).
fn may_carry_jumbo_frames(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => may_carry_jumbo_frames(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
        },
    }
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
    fn only_local_and_private_addresses_may_carry_jumbo_frames() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(may_carry_jumbo_frames(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!may_carry_jumbo_frames(ip.parse().unwrap()), "{ip}");
        }
    }
}
