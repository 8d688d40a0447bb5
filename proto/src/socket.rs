//! UDP sockets for QUIC endpoints, with kernel buffers sized for Gbit/s bursts.
//!
//! The kernel's default receive buffer (about 200 KiB) holds under a millisecond of a
//! Gbit/s tunnel: a relay descheduled for longer drops datagrams before quinn reads them,
//! and every drop is a loss the tunnelled TCP backs off for.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::identity::Identity;

/// Kernel receive and send buffer asked for each QUIC socket.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Binds a UDP socket on `addr` with [`SOCKET_BUFFER`]-sized kernel buffers where allowed.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&addr.into())?;
    grow_buffers(&socket);
    Ok(socket.into())
}

/// Asks for [`SOCKET_BUFFER`]; past `net.core.{r,w}mem_max` only with `CAP_NET_ADMIN`, which
/// VPN clients and exits have. A smaller buffer still works, it only drops sooner.
fn grow_buffers(socket: &Socket) {
    if socket.set_recv_buffer_size(SOCKET_BUFFER).is_err()
        || socket.recv_buffer_size().is_ok_and(|n| n < SOCKET_BUFFER)
    {
        force_buffer(socket, libc::SO_RCVBUFFORCE);
    }
    if socket.set_send_buffer_size(SOCKET_BUFFER).is_err()
        || socket.send_buffer_size().is_ok_and(|n| n < SOCKET_BUFFER)
    {
        force_buffer(socket, libc::SO_SNDBUFFORCE);
    }
}

#[cfg(target_os = "linux")]
fn force_buffer(socket: &Socket, option: libc::c_int) {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int of the size given.
    // Failure (no CAP_NET_ADMIN) leaves the buffer as it was, which is fine.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn force_buffer(_socket: &Socket, _option: libc::c_int) {}

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
) -> io::Result<quinn::Endpoint> {
    let socket = bind_udp(addr)?;
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
    endpoint(endpoint_config, Some(config), addr)
}

/// A dial-only QUIC endpoint on an ephemeral port of the family that reaches `host_port`
/// (IPv4 unless it is an IPv6 literal).
pub fn client_endpoint(host_port: &str) -> io::Result<quinn::Endpoint> {
    let bind: SocketAddr = match host_port.parse::<SocketAddr>() {
        Ok(a) if a.is_ipv6() => (Ipv6Addr::UNSPECIFIED, 0).into(),
        _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    endpoint(quinn::EndpointConfig::default(), None, bind)
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

    #[test]
    fn privileged_sockets_get_the_full_buffers() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only CAP_NET_ADMIN may pass net.core.rmem_max");
            return;
        }
        let socket = Socket::from(bind_udp("127.0.0.1:0".parse().unwrap()).unwrap());
        assert!(socket.recv_buffer_size().unwrap() >= SOCKET_BUFFER);
        assert!(socket.send_buffer_size().unwrap() >= SOCKET_BUFFER);
    }
}
