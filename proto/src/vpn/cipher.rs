//! The tunnel's keys: a Noise `IK` handshake client → exit on a control stream, then IP packets
//! sealed one per QUIC datagram with an explicit nonce (snow's stateless transport), so packets
//! may be lost or reordered; the receiver's [`ReplayWindow`] drops replays.
//!
//! Datagram layout: `[KIND_PACKET][nonce: u64 LE][AES-256-GCM ciphertext + 16-byte tag]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use snow::{HandshakeState, StatelessTransportState};

use super::replay::{REJECT_AFTER, ReplayWindow};
use crate::id::AccountId;
use crate::identity::Identity;
use crate::seal::claimed_sender;

/// Noise protocol of VPN tunnels (AES-GCM: ~3× ChaCha20-Poly1305 on AES-NI servers).
pub const VPN_PATTERN: &str = "Noise_IK_25519_AESGCM_BLAKE2s";
/// First byte of a datagram carrying an IP packet.
pub const KIND_PACKET: u8 = 1;
/// Bytes before the ciphertext: kind and nonce.
const HEADER: usize = 1 + 8;
/// Bytes of the authentication tag after the ciphertext.
const TAG: usize = 16;
/// Bytes a datagram adds to the packet it carries.
pub const OVERHEAD: usize = HEADER + TAG;

/// Room in the output buffer with which [`DatagramOpener::open`] decrypts `datagram` in place
/// (the packet and its tag); with less (but at least the packet) it decrypts through a
/// buffer of its own and copies.
pub fn room_to_open(datagram: &[u8]) -> usize {
    datagram.len().saturating_sub(HEADER)
}
/// Largest handshake message.
pub const MAX_HANDSHAKE: usize = 1024;

/// A tunnel handshake failed or a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VpnCryptoError {
    /// The handshake was malformed, used the wrong key or an unproven identity.
    #[error("tunnel handshake failed: {0}")]
    Handshake(&'static str),
    /// Not a packet datagram, or too short to hold one.
    #[error("malformed datagram")]
    Malformed,
    /// The nonce was seen already or is older than the replay window.
    #[error("replayed or stale nonce")]
    Replay,
    /// Authentication failed (wrong key or altered bytes).
    #[error("datagram failed authentication")]
    Decrypt,
    /// The packet does not fit the output buffer.
    #[error("packet too large")]
    TooLarge,
    /// The sending side used up its nonces; the tunnel must be re-established.
    #[error("nonces exhausted")]
    Exhausted,
}

/// What the exit gives a client for the session, sent inside the handshake reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client's tunnel address.
    pub addr: [u8; 4],
    /// Prefix length of the exit's pool.
    pub prefix: u8,
    /// The exit's own tunnel address.
    pub gateway: [u8; 4],
    /// A DNS resolver the exit offers, reached through the tunnel.
    pub dns: Option<[u8; 4]>,
    /// Largest IP packet the exit accepts.
    pub mtu: u16,
    /// The client's IPv6 side, when the exit carries IPv6.
    pub v6: Option<Lease6>,
}

/// The IPv6 half of a [`Lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    /// The client's tunnel address.
    pub addr: [u8; 16],
    /// Prefix length of the exit's pool.
    pub prefix: u8,
    /// The exit's own tunnel address.
    pub gateway: [u8; 16],
}

fn noise_error(_: snow::Error) -> VpnCryptoError {
    VpnCryptoError::Handshake("noise setup")
}

/// Starts a Noise `IK` handshake (pattern [`VPN_PATTERN`], bound to `prologue`) with the static
/// key of `remote`; the first message carries the initiator's id, proven by its static key.
pub(crate) fn ik_initiator(
    identity: &Identity,
    remote: &AccountId,
    prologue: &[u8],
) -> Result<(HandshakeState, Vec<u8>), VpnCryptoError> {
    let secret = identity.x25519_secret();
    let remote = remote
        .x25519_public()
        .map_err(|_| VpnCryptoError::Handshake("peer id is not a valid key"))?;
    let mut hs = snow::Builder::new(VPN_PATTERN.parse().map_err(noise_error)?)
        .prologue(prologue)
        .and_then(|b| b.local_private_key(&secret[..]))
        .and_then(|b| b.remote_public_key(&remote))
        .and_then(|b| b.build_initiator())
        .map_err(noise_error)?;
    let mut msg = vec![0u8; MAX_HANDSHAKE];
    let n = hs
        .write_message(identity.account_id().as_bytes(), &mut msg)
        .map_err(|_| VpnCryptoError::Handshake("write"))?;
    msg.truncate(n);
    Ok((hs, msg))
}

/// Reads the first message of an `IK` handshake bound to `prologue`: the responder's state and
/// the initiator's proven id.
pub(crate) fn ik_responder(
    identity: &Identity,
    first: &[u8],
    prologue: &[u8],
) -> Result<(HandshakeState, AccountId), VpnCryptoError> {
    let secret = identity.x25519_secret();
    let mut hs = snow::Builder::new(VPN_PATTERN.parse().map_err(noise_error)?)
        .prologue(prologue)
        .and_then(|b| b.local_private_key(&secret[..]))
        .and_then(|b| b.build_responder())
        .map_err(noise_error)?;
    let mut payload = [0u8; 64];
    let n = hs
        .read_message(first, &mut payload)
        .map_err(|_| VpnCryptoError::Handshake("bad first message"))?;
    let initiator = claimed_sender(&payload[..n], hs.get_remote_static())
        .map_err(|_| VpnCryptoError::Handshake("initiator identity not proven"))?;
    Ok((hs, initiator))
}

/// The client's side of a tunnel handshake, waiting for the exit's reply.
pub struct TunnelInitiator {
    hs: HandshakeState,
}

impl TunnelInitiator {
    /// Starts a handshake with the exit whose id is `exit`; returns the first message to send.
    pub fn start(identity: &Identity, exit: &AccountId) -> Result<(Self, Vec<u8>), VpnCryptoError> {
        let (hs, msg) = ik_initiator(identity, exit, b"")?;
        Ok((Self { hs }, msg))
    }

    /// Reads the exit's reply: the lease and the tunnel keys.
    pub fn finish(mut self, reply: &[u8]) -> Result<(Lease, TunnelKeys), VpnCryptoError> {
        let mut payload = [0u8; MAX_HANDSHAKE];
        let n = self
            .hs
            .read_message(reply, &mut payload)
            .map_err(|_| VpnCryptoError::Handshake("reply rejected"))?;
        let lease: Lease = postcard::from_bytes(&payload[..n])
            .map_err(|_| VpnCryptoError::Handshake("malformed lease"))?;
        let session = session_of(&self.hs)?;
        let transport = self
            .hs
            .into_stateless_transport_mode()
            .map_err(|_| VpnCryptoError::Handshake("incomplete"))?;
        Ok((lease, TunnelKeys::new(transport, session)))
    }
}

/// The exit's side: authenticates the client from its first message, then replies with `lease`.
pub struct TunnelResponder {
    hs: HandshakeState,
    /// The authenticated client.
    pub client: AccountId,
}

impl TunnelResponder {
    /// Reads the client's first message.
    pub fn read(identity: &Identity, first: &[u8]) -> Result<Self, VpnCryptoError> {
        let (hs, client) = ik_responder(identity, first, b"")?;
        Ok(Self { hs, client })
    }

    /// Writes the reply carrying `lease`; returns it with the tunnel keys.
    pub fn reply(mut self, lease: &Lease) -> Result<(Vec<u8>, TunnelKeys), VpnCryptoError> {
        let payload =
            postcard::to_allocvec(lease).map_err(|_| VpnCryptoError::Handshake("lease"))?;
        let mut msg = vec![0u8; MAX_HANDSHAKE];
        let n = self
            .hs
            .write_message(&payload, &mut msg)
            .map_err(|_| VpnCryptoError::Handshake("write"))?;
        msg.truncate(n);
        let session = session_of(&self.hs)?;
        let transport = self
            .hs
            .into_stateless_transport_mode()
            .map_err(|_| VpnCryptoError::Handshake("incomplete"))?;
        Ok((msg, TunnelKeys::new(transport, session)))
    }
}

/// The Noise handshake hash of a finished handshake: the same at both ends and unique to the
/// session (it covers both ephemeral keys); it names the session in the exit's signed counts.
pub(crate) fn session_of(hs: &HandshakeState) -> Result<[u8; 32], VpnCryptoError> {
    hs.get_handshake_hash()
        .try_into()
        .map_err(|_| VpnCryptoError::Handshake("handshake hash"))
}

/// Established tunnel keys; split into one [`DatagramSealer`] and one [`DatagramOpener`].
pub struct TunnelKeys {
    transport: Arc<StatelessTransportState>,
    session: [u8; 32],
}

impl TunnelKeys {
    /// Keys from a finished handshake whose hash is `session`.
    pub(crate) fn new(transport: StatelessTransportState, session: [u8; 32]) -> Self {
        Self {
            transport: Arc::new(transport),
            session,
        }
    }

    /// The session's handshake hash (the same at both ends).
    pub fn session(&self) -> [u8; 32] {
        self.session
    }

    /// The sending half (shareable: nonces come from an atomic counter) and the receiving half.
    pub fn split(self) -> (DatagramSealer, DatagramOpener) {
        (
            DatagramSealer {
                transport: self.transport.clone(),
                next: AtomicU64::new(0),
            },
            DatagramOpener {
                transport: self.transport,
                window: ReplayWindow::new(),
                scratch: Vec::new(),
            },
        )
    }
}

/// Seals outgoing packets; `&self`, no lock: each call takes the next nonce atomically.
pub struct DatagramSealer {
    transport: Arc<StatelessTransportState>,
    next: AtomicU64,
}

impl DatagramSealer {
    /// Writes the datagram carrying `packet` into `out`; returns its length.
    pub fn seal(&self, packet: &[u8], out: &mut [u8]) -> Result<usize, VpnCryptoError> {
        let len = packet.len() + OVERHEAD;
        if out.len() < len {
            return Err(VpnCryptoError::TooLarge);
        }
        let nonce = self.next.fetch_add(1, Ordering::Relaxed);
        if nonce >= REJECT_AFTER {
            return Err(VpnCryptoError::Exhausted);
        }
        out[0] = KIND_PACKET;
        out[1..9].copy_from_slice(&nonce.to_le_bytes());
        let n = self
            .transport
            .write_message(nonce, packet, &mut out[9..len])
            .map_err(|_| VpnCryptoError::TooLarge)?;
        Ok(9 + n)
    }
}

/// Opens incoming datagrams and keeps the replay window (one per direction, owned by its reader).
pub struct DatagramOpener {
    transport: Arc<StatelessTransportState>,
    window: ReplayWindow,
    /// Where a datagram is decrypted when the caller's buffer has no room for the tag (the
    /// AEAD works in place): grown once to the largest datagram, never per packet.
    scratch: Vec<u8>,
}

impl DatagramOpener {
    /// Decrypts `datagram` into `out`; returns the packet's length. Replays, stale nonces, forged
    /// or malformed datagrams are refused without changing the window.
    pub fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Result<usize, VpnCryptoError> {
        if datagram.len() < OVERHEAD || datagram[0] != KIND_PACKET {
            return Err(VpnCryptoError::Malformed);
        }
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&datagram[1..9]);
        let nonce = u64::from_le_bytes(nonce);
        if !self.window.check(nonce) {
            return Err(VpnCryptoError::Replay);
        }
        if out.len() < datagram.len() - OVERHEAD {
            return Err(VpnCryptoError::TooLarge);
        }
        let sealed = &datagram[HEADER..];
        let n = if out.len() >= sealed.len() {
            self.transport
                .read_message(nonce, sealed, out)
                .map_err(|_| VpnCryptoError::Decrypt)?
        } else {
            if self.scratch.len() < sealed.len() {
                self.scratch.resize(sealed.len(), 0);
            }
            let n = self
                .transport
                .read_message(nonce, sealed, &mut self.scratch)
                .map_err(|_| VpnCryptoError::Decrypt)?;
            out[..n].copy_from_slice(&self.scratch[..n]);
            n
        };
        if !self.window.update(nonce) {
            return Err(VpnCryptoError::Replay);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            addr: [10, 77, 0, 2],
            prefix: 24,
            gateway: [10, 77, 0, 1],
            dns: Some([10, 0, 3, 2]),
            mtu: 1380,
            v6: Some(Lease6 {
                addr: [
                    0xfd, 0x54, 0x6f, 0x70, 0x76, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                ],
                prefix: 64,
                gateway: [
                    0xfd, 0x54, 0x6f, 0x70, 0x76, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ],
            }),
        }
    }

    fn pair() -> (
        (DatagramSealer, DatagramOpener),
        (DatagramSealer, DatagramOpener),
        AccountId,
    ) {
        let (client, exit) = (Identity::generate(), Identity::generate());
        let (init, first) = TunnelInitiator::start(&client, &exit.account_id()).unwrap();
        let resp = TunnelResponder::read(&exit, &first).unwrap();
        let who = resp.client;
        let (reply, exit_keys) = resp.reply(&lease()).unwrap();
        let (got, client_keys) = init.finish(&reply).unwrap();
        assert_eq!(got, lease());
        (client_keys.split(), exit_keys.split(), who)
    }

    #[test]
    fn both_ends_name_the_session_alike_and_sealing_and_opening_allocate_nothing() {
        let (client, exit) = (Identity::generate(), Identity::generate());
        let (init, first) = TunnelInitiator::start(&client, &exit.account_id()).unwrap();
        let (reply, exit_keys) = TunnelResponder::read(&exit, &first)
            .unwrap()
            .reply(&lease())
            .unwrap();
        let (_, client_keys) = init.finish(&reply).unwrap();
        assert_eq!(client_keys.session(), exit_keys.session());
        let ((seal, _), (_, mut open)) = (client_keys.split(), exit_keys.split());
        let (mut out, mut plain) = ([0u8; 1500], [0u8; 1500]);
        let packet = [5u8; 1380];
        // Into a buffer with room for the tag (in place), or of exactly the packet's size
        // (through the opener's own buffer, grown once: the first open may allocate).
        let n = seal.seal(&packet, &mut out).unwrap();
        assert_eq!(open.open(&out[..n], &mut plain[..1380]), Ok(1380));
        let before = crate::alloc_count::allocations();
        for i in 0..1000 {
            let n = seal.seal(&packet, &mut out).unwrap();
            let room = if i % 2 == 0 {
                room_to_open(&out[..n])
            } else {
                1380
            };
            assert_eq!(open.open(&out[..n], &mut plain[..room]), Ok(1380));
            assert_eq!(plain[..1380], packet);
        }
        assert_eq!(crate::alloc_count::allocations() - before, 0);
    }

    #[test]
    fn packets_cross_in_any_order_once() {
        let ((c_seal, _c_open), (_e_seal, mut e_open), who) = pair();
        assert_ne!(who.as_bytes(), &[0u8; 32]);
        let mut dgrams = Vec::new();
        for i in 0..5u8 {
            let mut out = [0u8; 256];
            let n = c_seal.seal(&[i; 100], &mut out).unwrap();
            assert_eq!(n, 100 + OVERHEAD);
            dgrams.push(out[..n].to_vec());
        }
        let mut plain = [0u8; 256];
        for i in [3usize, 0, 4, 1, 2] {
            let n = e_open.open(&dgrams[i], &mut plain).unwrap();
            assert_eq!(&plain[..n], &[i as u8; 100][..]);
        }
        assert_eq!(
            e_open.open(&dgrams[2], &mut plain),
            Err(VpnCryptoError::Replay)
        );
    }

    #[test]
    fn forged_short_foreign_and_wrong_direction_datagrams_are_refused() {
        let ((c_seal, mut c_open), (_e_seal, mut e_open), _) = pair();
        let ((other_seal, _), _, _) = pair();
        let mut out = [0u8; 256];
        let mut plain = [0u8; 256];
        let n = c_seal.seal(b"hello", &mut out).unwrap();
        let mut flipped = out[..n].to_vec();
        flipped[12] ^= 1;
        assert_eq!(
            e_open.open(&flipped, &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        // The forged copy did not burn the nonce: the real one still opens.
        assert!(e_open.open(&out[..n], &mut plain).is_ok());
        assert_eq!(
            e_open.open(&out[..5], &mut plain),
            Err(VpnCryptoError::Malformed)
        );
        let mut wrong_kind = out[..n].to_vec();
        wrong_kind[0] = 9;
        assert_eq!(
            e_open.open(&wrong_kind, &mut plain),
            Err(VpnCryptoError::Malformed)
        );
        // A foreign key's datagram (with a fresh nonce) fails authentication.
        other_seal.seal(b"skip nonce 0", &mut out).unwrap();
        let n = other_seal.seal(b"hello", &mut out).unwrap();
        assert_eq!(
            e_open.open(&out[..n], &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        // A packet the client sealed does not open as one from the exit.
        let n = c_seal.seal(b"hello", &mut out).unwrap();
        assert_eq!(
            c_open.open(&out[..n], &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        assert_eq!(
            c_seal.seal(&[0u8; 300], &mut out),
            Err(VpnCryptoError::TooLarge)
        );
    }

    #[test]
    fn handshake_with_the_wrong_exit_key_fails() {
        let (client, exit, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (_, first) = TunnelInitiator::start(&client, &other.account_id()).unwrap();
        assert!(TunnelResponder::read(&exit, &first).is_err());
        assert!(TunnelResponder::read(&exit, b"garbage").is_err());
        let (init, first) = TunnelInitiator::start(&client, &exit.account_id()).unwrap();
        assert!(TunnelResponder::read(&exit, &first).is_ok());
        assert!(init.finish(b"not a reply").is_err());
    }
}
