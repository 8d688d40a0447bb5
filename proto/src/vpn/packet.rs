//! The little of IP the tunnel needs: which addresses a packet goes from and to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a packet is not a well-formed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its IP header.
    #[error("packet too short")]
    Short,
    /// Neither IP version 4 nor 6.
    #[error("not an IP packet")]
    NotIp,
    /// Header or length fields disagree with the bytes.
    #[error("bad IP length fields")]
    BadLength,
}

/// IPv6's fixed header.
const IPV6_HEADER: usize = 40;

/// Source and destination of an IPv4 or IPv6 packet, after checking its length fields.
pub fn ip_endpoints(packet: &[u8]) -> Result<(IpAddr, IpAddr), PacketError> {
    match packet.first().map(|b| b >> 4) {
        None => Err(PacketError::Short),
        Some(4) => ipv4_endpoints(packet).map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        Some(6) => ipv6_endpoints(packet).map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
        Some(_) => Err(PacketError::NotIp),
    }
}

/// Source and destination of an IPv4 packet, after checking its header lengths.
pub fn ipv4_endpoints(packet: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), PacketError> {
    if packet.is_empty() {
        return Err(PacketError::Short);
    }
    if packet[0] >> 4 != 4 {
        return Err(PacketError::NotIp);
    }
    if packet.len() < 20 {
        return Err(PacketError::Short);
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header < 20 || header > total || total != packet.len() {
        return Err(PacketError::BadLength);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok((src, dst))
}

/// Source and destination of an IPv6 packet, after checking its payload length.
pub fn ipv6_endpoints(packet: &[u8]) -> Result<(Ipv6Addr, Ipv6Addr), PacketError> {
    if packet.first().map(|b| b >> 4) != Some(6) {
        return Err(PacketError::NotIp);
    }
    if packet.len() < IPV6_HEADER {
        return Err(PacketError::Short);
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    // A jumbogram (payload length 0) never fits a tunnel datagram: refused like a mismatch.
    if payload == 0 || IPV6_HEADER + payload != packet.len() {
        return Err(PacketError::BadLength);
    }
    let octets = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&packet[at..at + 16]);
        Ipv6Addr::from(a)
    };
    Ok((octets(8), octets(24)))
}

#[cfg(test)]
pub(crate) fn test_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(payload);
    p
}

#[cfg(test)]
pub(crate) fn test_packet6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; IPV6_HEADER + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_and_rejects_malformed_packets() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(1, 1, 1, 1));
        let p = test_packet(a, b, b"hello");
        assert_eq!(ipv4_endpoints(&p), Ok((a, b)));
        assert_eq!(ip_endpoints(&p), Ok((a.into(), b.into())));
        assert_eq!(ipv4_endpoints(&[]), Err(PacketError::Short));
        assert_eq!(ip_endpoints(&[]), Err(PacketError::Short));
        assert_eq!(ipv4_endpoints(&[0x60; 40]), Err(PacketError::NotIp));
        assert_eq!(ipv4_endpoints(&p[..10]), Err(PacketError::Short));
        assert_eq!(
            ipv4_endpoints(&p[..p.len() - 1]),
            Err(PacketError::BadLength)
        );
        let mut bad_ihl = p.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(ipv4_endpoints(&bad_ihl), Err(PacketError::BadLength));
        assert_eq!(ip_endpoints(&[0x50; 60]), Err(PacketError::NotIp));
    }

    #[test]
    fn reads_ipv6_addresses_and_rejects_malformed_ones() {
        let a: Ipv6Addr = "fd54:6f70:7670::2".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let p = test_packet6(a, b, b"hello");
        assert_eq!(ipv6_endpoints(&p), Ok((a, b)));
        assert_eq!(ip_endpoints(&p), Ok((a.into(), b.into())));
        assert_eq!(ip_endpoints(&p[..39]), Err(PacketError::Short));
        assert_eq!(ip_endpoints(&p[..p.len() - 1]), Err(PacketError::BadLength));
        let mut jumbo = p.clone();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(ip_endpoints(&jumbo), Err(PacketError::BadLength));
        let mut longer = p.clone();
        longer.push(0);
        assert_eq!(ip_endpoints(&longer), Err(PacketError::BadLength));
    }
}
