//! Sealed messages: one-way Noise `X` from a sender to a recipient's static key.
//!
//! A sender runs one `X` handshake per recipient and then encrypts each message with that
//! handshake's transport key and an explicit nonce. Every sealed message carries the handshake
//! bytes, so it can be opened on its own, in any order, after any time in a mailbox. The recipient
//! caches the transport key per handshake, so only the first message of a sender pays for the
//! Diffie-Hellman operations. Relays see only the recipient id and ciphertext.
//!
//! Layout: `u16 header_len | header (Noise X message 1) | u64 nonce | ciphertext+tag`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use snow::StatelessTransportState;

use crate::frame::{MAX_BODY_LEN, MAX_SEALED_LEN, MsgId};
use crate::id::AccountId;
use crate::identity::Identity;

/// Noise protocol name for sealed messages.
pub const SEAL_PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
const TAG_LEN: usize = 16;
/// Fresh handshake after this many messages to one recipient.
const REKEY_AFTER: u64 = 1 << 32;
/// Most sender sessions a recipient caches.
const OPEN_CACHE_LIMIT: usize = 16_384;

/// Why a sealed message could not be made or opened. Deliberately vague towards peers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sealed bytes are malformed, forged, or not for this identity.
    #[error("sealed message could not be opened")]
    Open,
    /// The message is larger than a sealed message may be.
    #[error("message body too large (limit {MAX_BODY_LEN} bytes)")]
    TooLarge,
    /// Noise failed while sealing (should not happen with valid keys).
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// What the sender seals: the message id (bound to the envelope's), a timestamp and the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContent {
    /// Must equal the envelope's id, or the message is treated as forged.
    pub id: MsgId,
    /// Sender's clock when sent, milliseconds since the Unix epoch.
    pub sent_ms: u64,
    /// The application's bytes.
    pub body: bytes::Bytes,
}

struct SendSession {
    header: Vec<u8>,
    transport: StatelessTransportState,
    next_nonce: u64,
}

/// Seals messages from one identity; keeps one Noise session per recipient.
pub struct Sealer {
    identity: Identity,
    sessions: HashMap<AccountId, SendSession>,
    scratch: Vec<u8>,
}

impl Sealer {
    /// A sealer for messages from `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            sessions: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Seals `content` for `to`.
    pub fn seal(&mut self, to: &AccountId, content: &SealedContent) -> Result<Vec<u8>, SealError> {
        if content.body.len() > MAX_BODY_LEN {
            return Err(SealError::TooLarge);
        }
        self.scratch.clear();
        postcard::to_io(content, &mut self.scratch).map_err(|e| SealError::Seal(e.to_string()))?;
        let fresh = match self.sessions.get(to) {
            Some(s) => s.next_nonce >= REKEY_AFTER,
            None => true,
        };
        if fresh {
            let session = handshake(&self.identity, to)?;
            self.sessions.insert(*to, session);
        }
        let session = self.sessions.get_mut(to).ok_or(SealError::Open)?;
        let nonce = session.next_nonce;
        session.next_nonce += 1;
        let header_len = session.header.len();
        let mut out = vec![0u8; 2 + header_len + 8 + self.scratch.len() + TAG_LEN];
        out[..2].copy_from_slice(&(header_len as u16).to_be_bytes());
        out[2..2 + header_len].copy_from_slice(&session.header);
        out[2 + header_len..10 + header_len].copy_from_slice(&nonce.to_be_bytes());
        let n = session
            .transport
            .write_message(nonce, &self.scratch, &mut out[10 + header_len..])
            .map_err(|e| SealError::Seal(e.to_string()))?;
        out.truncate(10 + header_len + n);
        Ok(out)
    }
}

fn handshake(identity: &Identity, to: &AccountId) -> Result<SendSession, SealError> {
    let secret = identity.x25519_secret();
    let err = |e: snow::Error| SealError::Seal(e.to_string());
    let remote = to
        .x25519_public()
        .map_err(|e| SealError::Seal(e.to_string()))?;
    let mut hs = snow::Builder::new(SEAL_PATTERN.parse().map_err(err)?)
        .local_private_key(&secret[..])
        .map_err(err)?
        .remote_public_key(&remote)
        .map_err(err)?
        .build_initiator()
        .map_err(err)?;
    let mut header = vec![0u8; 256];
    let n = hs
        .write_message(identity.account_id().as_bytes(), &mut header)
        .map_err(err)?;
    header.truncate(n);
    let transport = hs.into_stateless_transport_mode().map_err(err)?;
    Ok(SendSession {
        header,
        transport,
        next_nonce: 0,
    })
}

struct RecvSession {
    sender: AccountId,
    transport: StatelessTransportState,
}

/// Opens messages sealed to one identity; caches sender sessions by handshake.
pub struct Opener {
    identity: Identity,
    sessions: HashMap<blake3::Hash, RecvSession>,
}

impl Opener {
    /// An opener for messages sealed to `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            sessions: HashMap::new(),
        }
    }

    /// The identity messages are opened for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Opens `sealed`, returning the authenticated sender and the content.
    pub fn open(&mut self, sealed: &[u8]) -> Result<(AccountId, SealedContent), SealError> {
        if sealed.len() > MAX_SEALED_LEN || sealed.len() < 2 {
            return Err(SealError::Open);
        }
        let header_len = u16::from_be_bytes([sealed[0], sealed[1]]) as usize;
        let rest = &sealed[2..];
        if rest.len() < header_len + 8 + TAG_LEN {
            return Err(SealError::Open);
        }
        let (header, rest) = rest.split_at(header_len);
        let (nonce, ciphertext) = rest.split_at(8);
        let nonce = u64::from_be_bytes(nonce.try_into().map_err(|_| SealError::Open)?);
        let key = blake3::hash(header);
        if !self.sessions.contains_key(&key) {
            let session = self.accept(header)?;
            if self.sessions.len() >= OPEN_CACHE_LIMIT {
                self.sessions.clear();
            }
            self.sessions.insert(key, session);
        }
        let session = self.sessions.get(&key).ok_or(SealError::Open)?;
        let mut plain = vec![0u8; ciphertext.len()];
        let n = session
            .transport
            .read_message(nonce, ciphertext, &mut plain)
            .map_err(|_| SealError::Open)?;
        let content: SealedContent =
            postcard::from_bytes(&plain[..n]).map_err(|_| SealError::Open)?;
        Ok((session.sender, content))
    }

    fn accept(&self, header: &[u8]) -> Result<RecvSession, SealError> {
        let secret = self.identity.x25519_secret();
        let pattern = SEAL_PATTERN.parse().map_err(|_| SealError::Open)?;
        let mut hs = snow::Builder::new(pattern)
            .local_private_key(&secret[..])
            .and_then(|b| b.build_responder())
            .map_err(|_| SealError::Open)?;
        let mut payload = [0u8; 64];
        let n = hs
            .read_message(header, &mut payload)
            .map_err(|_| SealError::Open)?;
        let sender = claimed_sender(&payload[..n], hs.get_remote_static())?;
        let transport = hs
            .into_stateless_transport_mode()
            .map_err(|_| SealError::Open)?;
        Ok(RecvSession { sender, transport })
    }
}

/// Checks that the ed25519 id claimed in a handshake payload owns the Noise static key used.
pub(crate) fn claimed_sender(
    payload: &[u8],
    remote_static: Option<&[u8]>,
) -> Result<AccountId, SealError> {
    let key: [u8; 32] = payload.try_into().map_err(|_| SealError::Open)?;
    let sender = AccountId::from_bytes(key).map_err(|_| SealError::Open)?;
    match remote_static {
        Some(s) if sender.x25519_public().is_ok_and(|x| x == s) => Ok(sender),
        _ => Err(SealError::Open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(body: &[u8]) -> SealedContent {
        SealedContent {
            id: MsgId::random(),
            sent_ms: 1,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn round_trip_in_any_order() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let mut sealer = Sealer::new(alice.clone());
        let a = sealer.seal(&bob.account_id(), &content(b"first")).unwrap();
        let b = sealer.seal(&bob.account_id(), &content(b"second")).unwrap();
        let mut opener = Opener::new(bob);
        let (from, second) = opener.open(&b).unwrap();
        assert_eq!(from, alice.account_id());
        assert_eq!(&second.body[..], b"second");
        assert_eq!(&opener.open(&a).unwrap().1.body[..], b"first");
    }

    #[test]
    fn ciphertext_hides_plaintext_and_others_cannot_open() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let eve = Identity::generate();
        let secret = b"attack at dawn, attack at dawn";
        let sealed = Sealer::new(alice)
            .seal(&bob.account_id(), &content(secret))
            .unwrap();
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        assert_eq!(Opener::new(eve).open(&sealed), Err(SealError::Open));
    }

    #[test]
    fn tampering_is_detected() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let sealed = Sealer::new(alice)
            .seal(&bob.account_id(), &content(b"x"))
            .unwrap();
        let mut opener = Opener::new(bob);
        for i in [0, 5, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(opener.open(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(opener.open(&sealed[..sealed.len() - 1]).is_err());
        assert!(opener.open(&[]).is_err());
    }

    #[test]
    fn impersonation_is_detected() {
        // Mallory seals with her own Noise key but claims Alice's id in the payload.
        let alice = Identity::generate();
        let mallory = Identity::generate();
        let bob = Identity::generate();
        let mut hs = snow::Builder::new(SEAL_PATTERN.parse().unwrap())
            .local_private_key(&mallory.x25519_secret()[..])
            .unwrap()
            .remote_public_key(&bob.account_id().x25519_public().unwrap())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut header = vec![0u8; 256];
        let n = hs
            .write_message(alice.account_id().as_bytes(), &mut header)
            .unwrap();
        header.truncate(n);
        let opener = Opener::new(bob);
        assert!(opener.accept(&header).is_err());
    }
}
