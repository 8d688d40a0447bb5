//! QUIC/TLS 1.3 configuration in which every certificate is bound to an ed25519 id.
//!
//! Each endpoint presents a self-signed certificate whose key *is* its identity key, so TLS's
//! CertificateVerify proves possession of the id's secret. No CA is involved: a client dialing
//! `<relay-id>@addr` accepts the connection only if the relay's certificate key equals that id, and
//! a relay learns each client's id from the client certificate it requires.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::ALPN;
use crate::id::{Id, IdKind, RelayId};
use crate::identity::Identity;
use crate::net::route_mtu::{ETHERNET_PAYLOAD, largest_payload_to};

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// Server name sent in the TLS handshake; identity comes from the certificate key, not the name.
pub const SERVER_NAME: &str = "top-relay";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// rustls or quinn refused the configuration.
    #[error("tls configuration: {0}")]
    Config(String),
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The ed25519 key in a certificate, if it is an ed25519 certificate.
pub fn ed25519_key_of(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = ee.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The id proven by the peer of an established connection.
pub fn peer_id<K: IdKind>(conn: &quinn::Connection) -> Option<Id<K>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let key = ed25519_key_of(certs.first()?)?;
    Id::from_bytes(key).ok()
}

/// A self-signed certificate whose key is `identity`'s key.
pub fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pkcs8 = identity
        .signing_key()
        .to_pkcs8_der()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key_der)))
}

/// ring's TLS 1.3 suites, AES-128-GCM first: every QUIC packet is sealed and opened with the
/// connection's suite, and 10 AES rounds instead of 14 make each hop cheaper per byte.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Bytes of datagrams quinn queues for sending on one connection (beyond, it drops the oldest).
/// Realtime senders keep their own, much smaller, limit inside it.
pub const DATAGRAM_SEND_BUFFER: usize = 4 << 20;

/// Longest a peer waits to acknowledge 16 packets or fewer (quinn's timer granularity).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(1);

/// How soon a connection probes its path's MTU again after loss made it fall back to 1200
/// bytes. Quinn's black-hole detector cannot tell congestion from a smaller path: a burst of
/// lost full-size packets (a realtime sender overrunning its path, a VPN in slow start) is
/// judged a black hole, and with quinn's default of a minute every full-size VPN packet and
/// realtime datagram is refused as too large for that minute. A probe a second later restores
/// the size when the path still carries it (a few probe packets where it really shrank).
pub const BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(1);
/// How often a connection searches its path's MTU again once a search ended below its bound:
/// one that ran while the path was congested loses its probes and settles low, which it must
/// not keep for quinn's default 10 minutes. Not shorter: on a path really smaller than the
/// bound (a tunnel, some mobile networks) every search loses 6–9 probes, which a relay pays per
/// such client (at 30 s, a few hundred bytes a second each). At the bound there is nothing to
/// search: no probes.
pub const MTU_SEARCH_INTERVAL: Duration = Duration::from_secs(30);

/// The largest UDP payload a connection sends once its path carries it, and the largest a
/// client's endpoint accepts (a relay's keeps quinn's 1,472, so links between relays stay at
/// Ethernet size). Searched for only toward a peer on this host
/// ([`route_mtu`](crate::net::route_mtu)); there larger packets cut the per-packet work of both
/// ends (a 256 MiB CDN fetch on loopback: 0.38–0.67 s with 1,452-byte packets, 0.26–0.30 s with
/// these and the client's larger receive buffer). Not larger: quinn sends up to 10 packets in one
/// GSO send, which must stay within one 64 KiB UDP datagram (past it every batch fails with
/// EMSGSIZE and the path is judged a black hole).
pub const MAX_UDP_PAYLOAD: u16 = 6_500;

/// Bytes a connection may have unacknowledged on all its streams together.
pub const SEND_WINDOW: u64 = 16 << 20;

/// QUIC transport settings shared by relays and clients, for a peer whose route carries no more
/// than Ethernet.
pub fn transport_config() -> quinn::TransportConfig {
    transport_config_up_to(ETHERNET_PAYLOAD)
}

/// QUIC transport settings for a connection to `peer`: [`transport_config`] searching for
/// packets as large as the route to `peer` carries.
pub fn transport_config_toward(peer: SocketAddr) -> quinn::TransportConfig {
    transport_config_up_to(largest_payload_to(peer))
}

fn transport_config_up_to(largest_payload: u16) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .unwrap_or_else(|_| unreachable!()),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(16u32.into());
    t.stream_receive_window((4u32 << 20).into());
    t.receive_window((16u32 << 20).into());
    t.send_window(SEND_WINDOW);
    // Assume an Ethernet-sized path (as WireGuard does) so VPN datagrams carry full packets;
    // quinn's black-hole detection falls back to 1200 bytes where the path is smaller. Paths
    // that carry more are found by probing, up to `largest_payload`.
    t.initial_mtu(ETHERNET_PAYLOAD);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.black_hole_cooldown(BLACK_HOLE_COOLDOWN)
        .interval(MTU_SEARCH_INTERVAL)
        .upper_bound(largest_payload);
    t.mtu_discovery_config(Some(mtu));
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    // Bulk datagram traffic needs few ACKs: ask the peer to acknowledge once more than 16
    // packets arrived instead of every 2nd, halving the packets a VPN tunnel carries back. A
    // congestion window of 16 packets or fewer (early in slow start: 10; after a loss on a slow
    // path) would then wait out the peer's ACK delay each round trip, so the delay is the
    // timer's granularity, not the 10 ms that stalled every new connection twice. The price:
    // flows under 1,000 packets/s get an ACK per packet (the default: every 2nd).
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(16u32.into())
        .max_ack_delay(Some(MAX_ACK_DELAY));
    t.ack_frequency_config(Some(acks));
    t
}

/// The relay side: presents `identity`, requires and records each client's certificate.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let (cert, key) = certificate(identity)?;
    let provider = provider();
    let verifier = Arc::new(AnyIdClientVerifier {
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// `config` for a connection from `peer`, when `peer` may get larger packets than Ethernet's
/// (see [`transport_config_toward`]); `None` where `config` serves as it is.
pub fn server_config_toward(
    config: &quinn::ServerConfig,
    peer: SocketAddr,
) -> Option<Arc<quinn::ServerConfig>> {
    let largest = largest_payload_to(peer);
    if largest <= ETHERNET_PAYLOAD {
        return None;
    }
    let mut toward = config.clone();
    toward.transport_config(Arc::new(transport_config_up_to(largest)));
    Some(Arc::new(toward))
}

/// What a client saw of the relay's certificate, to name both ids when they differ.
#[derive(Debug, Default)]
pub struct ObservedId(Mutex<Option<[u8; 32]>>);

impl ObservedId {
    /// The relay id the server proved, if it presented an ed25519 certificate.
    pub fn get(&self) -> Option<RelayId> {
        let key = (*self.0.lock().ok()?)?;
        RelayId::from_bytes(key).ok()
    }
}

/// The client side: presents `identity`, accepts only a relay proving `expected`.
pub fn client_config(
    identity: &Identity,
    expected: RelayId,
) -> Result<(quinn::ClientConfig, Arc<ObservedId>), TlsError> {
    let (cert, key) = certificate(identity)?;
    let provider = provider();
    let observed = Arc::new(ObservedId::default());
    let verifier = Arc::new(ExpectedRelayVerifier {
        expected,
        observed: observed.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok((config, observed))
}

fn bad_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

#[derive(Debug)]
struct ExpectedRelayVerifier {
    expected: RelayId,
    observed: Arc<ObservedId>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectedRelayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or_else(bad_cert)?;
        if let Ok(mut slot) = self.observed.0.lock() {
            *slot = Some(key);
        }
        if &key != self.expected.as_bytes() {
            return Err(bad_cert());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[derive(Debug)]
struct AnyIdClientVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyIdClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Any ed25519 key is a valid client id; TLS 1.3 CertificateVerify proves possession.
        ed25519_key_of(end_entity).ok_or_else(bad_cert)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let id = Identity::generate();
        let (cert, _) = certificate(&id).unwrap();
        assert_eq!(ed25519_key_of(&cert), Some(*id.relay_id().as_bytes()));
        assert_eq!(
            ed25519_key_of(&CertificateDer::from(vec![0x30, 0x00])),
            None
        );
    }
}
