//! Messages recipients acknowledged on this relay lately, so that a second copy of one (a
//! mailbox replica on another home relay, a sender retrying) is answered as delivered instead of
//! being shown to the recipient again. Only exact copies count: the digest covers the recipient,
//! the message id and the sealed bytes.
//!
//! The set is shared by all recipients and bounded: under heavy traffic an old entry is evicted
//! and its second copy is shown after all, which clients absorb by keeping one copy per sender
//! and id. It is a courtesy against duplicates, never the reason a message is dropped.

use lru::LruCache;
use std::num::NonZeroUsize;
use top_proto::frame::{Envelope, MsgId};
use top_proto::id::AccountId;

/// Acknowledged messages remembered (32 bytes each, plus the table's overhead).
pub const REMEMBERED: usize = 65_536;

/// A bounded, least-recently-used set of acknowledged messages: by recipient and id, with the
/// digest that tells an exact copy from another message reusing the id. Looking one up hashes
/// nothing unless the id was acknowledged here.
pub struct Delivered {
    seen: LruCache<(AccountId, MsgId), [u8; 32]>,
}

impl Default for Delivered {
    fn default() -> Self {
        Self::new(REMEMBERED)
    }
}

fn digest(env: &Envelope) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(env.to.as_bytes());
    h.update(&env.id.0);
    h.update(&env.sealed);
    *h.finalize().as_bytes()
}

impl Delivered {
    /// Remembers at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            seen: LruCache::new(capacity),
        }
    }

    /// The recipient acknowledged `env`.
    pub fn record(&mut self, env: &Envelope) {
        self.seen.put((env.to, env.id), digest(env));
    }

    /// Whether the recipient already acknowledged this exact message here.
    pub fn contains(&self, env: &Envelope) -> bool {
        self.seen
            .peek(&(env.to, env.id))
            .is_some_and(|d| *d == digest(env))
    }
}

#[cfg(test)]
mod tests {
    use top_proto::frame::MsgId;
    use top_proto::id::AccountId;

    use super::*;

    fn env(id: u8, body: &[u8]) -> Envelope {
        Envelope {
            id: MsgId([id; 16]),
            to: AccountId::from_wire([7; 32]),
            ttl_secs: 60,
            sealed: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn only_exact_copies_count_and_the_set_is_bounded() {
        let mut d = Delivered::new(2);
        d.record(&env(1, b"a"));
        assert!(d.contains(&env(1, b"a")));
        assert!(
            !d.contains(&env(1, b"b")),
            "same id, other bytes: not a copy"
        );
        assert!(!d.contains(&env(2, b"a")));
        d.record(&env(2, b"a"));
        d.record(&env(3, b"a"));
        assert!(!d.contains(&env(1, b"a")), "the oldest is forgotten");
        assert!(d.contains(&env(3, b"a")));
    }
}
