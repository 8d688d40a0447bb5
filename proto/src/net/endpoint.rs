//! QUIC endpoints: relays' keyed by their identity, so that they survive restarts.
//!
//! A relay's kernel socket buffers are left at their defaults: 8 MiB buffers removed the UDP
//! receive drops under a Gbit/s tunnel, but in interleaved runs of `scripts/bench-vpn.sh` they
//! cost 5–15% of throughput (more data in flight, more cache misses). A client's endpoint asks
//! for a larger receive buffer ([`CLIENT_RECEIVE_BUFFER`], up to `net.core.rmem_max`): a client
//! receives most of what it carries, in 64 KiB batches of large packets where the path allows
//! them, and the default (208 KiB) held three of them. (A relay's short-lived ledger calls to
//! its upstream use client endpoints too.)

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::identity::Identity;
use crate::tls::MAX_UDP_PAYLOAD;

/// The key of a relay's QUIC stateless resets, derived from its identity so that it survives
/// restarts: a relay that restarts answers its old connections' packets with a reset the
/// clients accept, and they reconnect at once instead of waiting out the idle timeout.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(32);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // blake3::Hash compares in constant time.
        let expected = blake3::keyed_hash(&self.0, data);
        match <[u8; 32]>::try_from(signature) {
            Ok(sig) if expected == blake3::Hash::from(sig) => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

fn endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    addr: SocketAddr,
    receive_buffer: Option<usize>,
) -> io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if let Some(bytes) = receive_buffer {
        // Best effort: the kernel caps it at net.core.rmem_max (the default there is 208 KiB),
        // and any size it grants is used.
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(bytes) {
            tracing::debug!("keeping the default receive buffer: {e}");
        }
    }
    let runtime =
        quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime found"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// A relay's QUIC endpoint accepting connections on `addr` (and dialling out from it), with
/// connection ids and stateless resets keyed by `identity`.
pub fn server_endpoint(
    config: quinn::ServerConfig,
    addr: SocketAddr,
    identity: &Identity,
) -> io::Result<quinn::Endpoint> {
    let key = blake3::derive_key(
        "top relay QUIC stateless reset v1",
        identity.signing_key().as_bytes(),
    );
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(ResetKey(key)));
    // Connection ids the relay can recognise after a restart (so that it answers them with
    // a reset rather than dropping them as forged).
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&blake3::derive_key("top relay QUIC connection ids v1", &key)[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    endpoint(endpoint_config, Some(config), addr, None)
}

/// Bytes of kernel receive buffer a client's endpoint asks for. With the default, a 256 MiB CDN
/// fetch on loopback lost 150–180 batches of packets to full buffers (retransmitted, and the
/// sender's window cut each time); with this, 0–26.
pub const CLIENT_RECEIVE_BUFFER: usize = 4 << 20;

/// A dial-only QUIC endpoint on an ephemeral port of the family that reaches `host_port`
/// (IPv4 unless it is an IPv6 literal).
pub fn client_endpoint(host_port: &str) -> io::Result<quinn::Endpoint> {
    let bind: SocketAddr = match host_port.parse::<SocketAddr>() {
        Ok(a) if a.is_ipv6() => (Ipv6Addr::UNSPECIFIED, 0).into(),
        _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    // Relays may send it packets as large as a relay sends (quinn's default accepts 1,472). A
    // relay's endpoint keeps the default: quinn sizes its receive buffer by it (64 packets of
    // it per batch slot), and a relay mostly receives Ethernet-sized traffic.
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| io::Error::other(e.to_string()))?;
    endpoint(config, None, bind, Some(CLIENT_RECEIVE_BUFFER))
}

#[cfg(test)]
mod tests {
    use quinn::crypto::HmacKey;

    use super::*;

    #[test]
    fn reset_tokens_verify_only_for_their_key_and_data() {
        let key = ResetKey([7; 32]);
        let mut token = [0u8; 32];
        key.sign(b"connection id", &mut token);
        assert!(key.verify(b"connection id", &token).is_ok());
        assert!(key.verify(b"connection id!", &token).is_err());
        assert!(ResetKey([8; 32]).verify(b"connection id", &token).is_err());
        assert!(key.verify(b"connection id", &token[..31]).is_err());
    }
}
