//! The little of IP the tunnel needs: which addresses a packet goes from and to.

use std::net::Ipv4Addr;

/// Why a packet is not a well-formed IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than an IPv4 header.
    #[error("packet too short")]
    Short,
    /// Not IP version 4 (IPv6 is not carried yet).
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Header or total length disagree with the bytes.
    #[error("bad IPv4 length fields")]
    BadLength,
}

/// Source and destination of an IPv4 packet, after checking its header lengths.
pub fn ipv4_endpoints(packet: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), PacketError> {
    if packet.is_empty() {
        return Err(PacketError::Short);
    }
    if packet[0] >> 4 != 4 {
        return Err(PacketError::NotIpv4);
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
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_and_rejects_malformed_packets() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(1, 1, 1, 1));
        let p = test_packet(a, b, b"hello");
        assert_eq!(ipv4_endpoints(&p), Ok((a, b)));
        assert_eq!(ipv4_endpoints(&[]), Err(PacketError::Short));
        assert_eq!(ipv4_endpoints(&[0x60; 40]), Err(PacketError::NotIpv4));
        assert_eq!(ipv4_endpoints(&p[..10]), Err(PacketError::Short));
        assert_eq!(
            ipv4_endpoints(&p[..p.len() - 1]),
            Err(PacketError::BadLength)
        );
        let mut bad_ihl = p.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(ipv4_endpoints(&bad_ihl), Err(PacketError::BadLength));
    }
}
