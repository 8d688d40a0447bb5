//! End-to-end encryption of pipes: Noise `IK` between the two peers, then transport messages.
//!
//! The initiator knows the responder's id (hence its static key); both sides prove their ids.
//! Relays in between splice bytes they cannot read. Sans-IO: the caller moves the bytes.

use snow::{HandshakeState, TransportState};

use crate::id::AccountId;
use crate::identity::Identity;
use crate::seal::claimed_sender;

/// Noise protocol name for pipes (AES-GCM, as the VPN: the pipe bench moved from 0.77 to 0.87
/// of a raw stream through a forwarder when it left ChaCha20-Poly1305).
pub const PIPE_PATTERN: &str = "Noise_IK_25519_AESGCM_BLAKE2s";
/// Largest Noise message.
pub const MAX_NOISE_MSG: usize = 65_535;
/// Largest plaintext per encrypted pipe frame.
pub const MAX_PIPE_CHUNK: usize = MAX_NOISE_MSG - 16;

/// A pipe handshake or record failed: wrong key, forged identity or corrupted bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipe encryption failed: {0}")]
pub struct PipeCryptoError(&'static str);

fn builder_error(_: snow::Error) -> PipeCryptoError {
    PipeCryptoError("noise setup")
}

/// The initiator's side of a pipe handshake, waiting for the responder's reply.
pub struct PipeInitiator {
    hs: HandshakeState,
    peer: AccountId,
}

impl PipeInitiator {
    /// Starts a handshake with `peer`; returns the state and the first message to send.
    pub fn start(
        identity: &Identity,
        peer: &AccountId,
    ) -> Result<(Self, Vec<u8>), PipeCryptoError> {
        let secret = identity.x25519_secret();
        let remote = peer
            .x25519_public()
            .map_err(|_| PipeCryptoError("peer id is not a valid key"))?;
        let pattern = PIPE_PATTERN.parse().map_err(builder_error)?;
        let mut hs = snow::Builder::new(pattern)
            .local_private_key(&secret[..])
            .and_then(|b| b.remote_public_key(&remote))
            .and_then(|b| b.build_initiator())
            .map_err(builder_error)?;
        let mut msg = vec![0u8; 256];
        let n = hs
            .write_message(identity.account_id().as_bytes(), &mut msg)
            .map_err(|_| PipeCryptoError("handshake write"))?;
        msg.truncate(n);
        Ok((Self { hs, peer: *peer }, msg))
    }

    /// Reads the responder's reply; the pipe is then ready.
    pub fn finish(mut self, reply: &[u8]) -> Result<PipeCipher, PipeCryptoError> {
        let mut payload = [0u8; 64];
        self.hs
            .read_message(reply, &mut payload)
            .map_err(|_| PipeCryptoError("handshake reply rejected"))?;
        let transport = self
            .hs
            .into_transport_mode()
            .map_err(|_| PipeCryptoError("handshake incomplete"))?;
        Ok(PipeCipher {
            transport,
            peer: self.peer,
        })
    }
}

/// Answers a pipe handshake: returns the authenticated initiator, the reply to send and the cipher.
pub fn respond(
    identity: &Identity,
    first: &[u8],
) -> Result<(Vec<u8>, PipeCipher), PipeCryptoError> {
    let secret = identity.x25519_secret();
    let pattern = PIPE_PATTERN.parse().map_err(builder_error)?;
    let mut hs = snow::Builder::new(pattern)
        .local_private_key(&secret[..])
        .and_then(|b| b.build_responder())
        .map_err(builder_error)?;
    let mut payload = [0u8; 64];
    let n = hs
        .read_message(first, &mut payload)
        .map_err(|_| PipeCryptoError("bad handshake"))?;
    let peer = claimed_sender(&payload[..n], hs.get_remote_static())
        .map_err(|_| PipeCryptoError("initiator identity not proven"))?;
    let mut reply = vec![0u8; 256];
    let n = hs
        .write_message(&[], &mut reply)
        .map_err(|_| PipeCryptoError("handshake write"))?;
    reply.truncate(n);
    let transport = hs
        .into_transport_mode()
        .map_err(|_| PipeCryptoError("handshake incomplete"))?;
    Ok((reply, PipeCipher { transport, peer }))
}

/// An established pipe's transport keys, in order (pipes run over reliable QUIC streams).
pub struct PipeCipher {
    transport: TransportState,
    peer: AccountId,
}

impl PipeCipher {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.peer
    }

    /// Encrypts `plain` (at most [`MAX_PIPE_CHUNK`] bytes) into `out`; returns the length.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, PipeCryptoError> {
        self.transport
            .write_message(plain, out)
            .map_err(|_| PipeCryptoError("encrypt"))
    }

    /// Decrypts one record into `out`; returns the plaintext length.
    pub fn decrypt(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, PipeCryptoError> {
        self.transport
            .read_message(record, out)
            .map_err(|_| PipeCryptoError("decrypt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_authenticate() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let (init, m1) = PipeInitiator::start(&alice, &bob.account_id()).unwrap();
        let (m2, mut b) = respond(&bob, &m1).unwrap();
        let mut a = init.finish(&m2).unwrap();
        assert_eq!(b.peer(), alice.account_id());
        assert_eq!(a.peer(), bob.account_id());
        let mut rec = vec![0u8; MAX_NOISE_MSG];
        let mut out = vec![0u8; MAX_NOISE_MSG];
        let n = a.encrypt(b"ping", &mut rec).unwrap();
        assert!(!rec[..n].windows(4).any(|w| w == b"ping"));
        let m = b.decrypt(&rec[..n], &mut out).unwrap();
        assert_eq!(&out[..m], b"ping");
        let n = b.encrypt(b"pong", &mut rec).unwrap();
        let m = a.decrypt(&rec[..n], &mut out).unwrap();
        assert_eq!(&out[..m], b"pong");
    }

    #[test]
    fn wrong_responder_fails() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let eve = Identity::generate();
        let (_, m1) = PipeInitiator::start(&alice, &bob.account_id()).unwrap();
        assert!(respond(&eve, &m1).is_err());
    }
}
