//! Relay announcements: a registered relay's signed, short-lived word on where it can be reached
//! now (its QUIC addresses for user traffic and its control-plane addresses), for a discovery
//! network to spread. Anyone can store and pass one on; it counts only if the relay it names is
//! registered on the chain at the time it is checked, it is the relay's own signature, and it
//! has not expired. Pure data and signatures, no I/O.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use top_proto::id::{AccountId, RelayId};
use top_proto::identity::{Identity, verify};

use crate::registry::{MAX_ADDR_LEN, MAX_ADDRS, well_formed_addr};
use crate::state::State;
use crate::tx::{ChainId, signing_bytes};

/// Domain tag of announcement signatures.
const ANNOUNCE_DOMAIN: &[u8] = b"top/announce/v1";
/// Longest an announcement may be valid for: a relay re-announces well before.
pub const MAX_ANNOUNCE_TTL_MS: u64 = 2 * 60 * 60 * 1000;
/// How far an announcement's issue time may be ahead of the checker's clock.
pub const ANNOUNCE_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most control-plane addresses an announcement may list.
pub const MAX_CONTROL_ADDRS: usize = 4;
/// Largest encoded announcement taken (checked before decoding).
pub const MAX_ANNOUNCE_BYTES: usize = 4096;

/// What a relay signs: "on `chain`, I am reached at these addresses from `issued_ms` until
/// `expires_ms`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementBody {
    /// The chain whose registry vouches for the relay.
    pub chain: ChainId,
    /// The relay (its key signs).
    pub relay: RelayId,
    /// QUIC addresses for user traffic, `host:port`, best first.
    pub addrs: Vec<String>,
    /// Control-plane addresses (multiaddr text), best first; may be empty.
    pub control: Vec<String>,
    /// The relay's clock when it signed, unix milliseconds (a later one supersedes).
    pub issued_ms: u64,
    /// When it stops counting, unix milliseconds.
    pub expires_ms: u64,
}

/// An announcement with the relay's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// What is announced.
    pub body: AnnouncementBody,
    /// The relay's signature over the domain tag and the encoded body.
    pub signature: Signature,
}

/// Why an announcement does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Larger than [`MAX_ANNOUNCE_BYTES`].
    #[error("announcement of {0} bytes (at most {MAX_ANNOUNCE_BYTES})")]
    TooLarge(usize),
    /// Not an announcement's encoding.
    #[error("malformed announcement")]
    Malformed,
    /// For another chain.
    #[error("announcement for another chain")]
    WrongChain,
    /// Issued further ahead of this clock than [`ANNOUNCE_SKEW_MS`].
    #[error("announcement issued in the future")]
    FromTheFuture,
    /// Past its expiry.
    #[error("announcement expired")]
    Expired,
    /// Valid for longer than [`MAX_ANNOUNCE_TTL_MS`] (or expiring before it was issued).
    #[error("announcement valid for too long")]
    BadLifetime,
    /// No address, too many, or one not `host:port`.
    #[error("bad addresses in an announcement")]
    BadAddresses,
    /// The relay is not registered on the chain.
    #[error("announcement from a relay that is not registered")]
    NotRegistered,
    /// Not the relay's signature over this body.
    #[error("bad announcement signature")]
    BadSignature,
}

impl AnnouncementBody {
    /// Signs the body with `relay`'s key (which must be the body's relay to count).
    pub fn sign(self, relay: &Identity) -> Announcement {
        let signature = relay.sign(&signing_bytes(ANNOUNCE_DOMAIN, &self));
        Announcement {
            body: self,
            signature,
        }
    }
}

impl Announcement {
    /// The announcement's encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding an in-memory value cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes an announcement, refusing oversized input before reading it.
    pub fn decode(bytes: &[u8]) -> Result<Self, AnnounceError> {
        if bytes.len() > MAX_ANNOUNCE_BYTES {
            return Err(AnnounceError::TooLarge(bytes.len()));
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((announcement, [])) => Ok(announcement),
            _ => Err(AnnounceError::Malformed),
        }
    }

    /// Whether it counts on `state`'s chain at `now_ms`: for this chain, within its lifetime,
    /// well-formed, from a relay the registry holds, and signed by it. The cheap checks come
    /// first; the signature last.
    pub fn check(&self, state: &State, now_ms: u64) -> Result<(), AnnounceError> {
        self.check_form(&state.chain, now_ms)?;
        let account = AccountId::from_wire(*self.body.relay.as_bytes());
        if state.relay(&account).is_none() {
            return Err(AnnounceError::NotRegistered);
        }
        self.check_signature()
    }

    /// The checks that need neither the registry nor a signature: for `chain`, within its
    /// lifetime at `now_ms`, well-formed.
    pub fn check_form(&self, chain: &ChainId, now_ms: u64) -> Result<(), AnnounceError> {
        let body = &self.body;
        if body.chain != *chain {
            return Err(AnnounceError::WrongChain);
        }
        if body.expires_ms < body.issued_ms
            || body.expires_ms - body.issued_ms > MAX_ANNOUNCE_TTL_MS
        {
            return Err(AnnounceError::BadLifetime);
        }
        if body.issued_ms > now_ms.saturating_add(ANNOUNCE_SKEW_MS) {
            return Err(AnnounceError::FromTheFuture);
        }
        if body.expires_ms <= now_ms {
            return Err(AnnounceError::Expired);
        }
        let addrs_ok = (1..=MAX_ADDRS).contains(&body.addrs.len())
            && body.addrs.iter().all(|a| well_formed_addr(a))
            && body.control.len() <= MAX_CONTROL_ADDRS
            && body.control.iter().all(|a| well_formed_control(a));
        if !addrs_ok {
            return Err(AnnounceError::BadAddresses);
        }
        Ok(())
    }

    /// Whether the relay it names signed it (the costly check: do it last).
    pub fn check_signature(&self) -> Result<(), AnnounceError> {
        let body = &self.body;
        if !verify(
            &body.relay,
            &signing_bytes(ANNOUNCE_DOMAIN, body),
            &self.signature,
        ) {
            return Err(AnnounceError::BadSignature);
        }
        Ok(())
    }

    /// Whether this one replaces `other` (the same relay's, issued later).
    pub fn supersedes(&self, other: &Announcement) -> bool {
        self.body.relay == other.body.relay && self.body.issued_ms > other.body.issued_ms
    }
}

/// A control-plane address: printable ASCII without spaces, bounded.
fn well_formed_control(addr: &str) -> bool {
    !addr.is_empty() && addr.len() <= MAX_ADDR_LEN && addr.bytes().all(|b| b.is_ascii_graphic())
}
