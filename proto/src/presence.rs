//! Presence statements: a user's signed word that it is connected to one relay, at one time.
//! Relays forward a user's messages and mailbox to another relay only on such a statement, so
//! no relay can claim a user it does not serve. Pure data and signatures, no I/O.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::id::{AccountId, RelayId};
use crate::identity::{Identity, verify};

/// How old a statement linked relays still believe: a client re-signs its statement every
/// [`PRESENCE_REFRESH_MS`] while connected, so a relay it left cannot go on claiming it.
pub const PRESENCE_MAX_AGE_MS: u64 = 10 * 60 * 1000;
/// How often a connected client re-signs its statement.
pub const PRESENCE_REFRESH_MS: u64 = 4 * 60 * 1000;

/// Domain tag of presence signatures.
const PRESENCE_DOMAIN: &[u8] = b"top/presence/v1";
/// How far a statement's time may be ahead of a relay's clock, or behind it when the session
/// opens: milliseconds.
pub const PRESENCE_SKEW_MS: u64 = 5 * 60 * 1000;

/// What a user signs: "I am connected to `relay`, as of `time_ms`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceBody {
    /// The user.
    pub client: AccountId,
    /// The relay the user is connected to.
    pub relay: RelayId,
    /// The user's clock, unix milliseconds.
    pub time_ms: u64,
    /// Makes each statement unique.
    pub nonce: [u8; 16],
}

/// A presence statement with the user's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// What is stated.
    pub body: PresenceBody,
    /// ed25519 by `body.client` over the domain tag and the body.
    pub signature: Signature,
}

/// Why a presence statement is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// It names another relay than the one it came from (or for).
    #[error("the statement names another relay")]
    WrongRelay,
    /// It names another user than the connection's.
    #[error("the statement names another user")]
    WrongClient,
    /// Its time is too far from the checker's clock.
    #[error("the statement's time is too far from now")]
    Stale,
    /// The signature is not the user's.
    #[error("bad presence signature")]
    BadSignature,
}

fn signing_bytes(body: &PresenceBody) -> Vec<u8> {
    let mut out = PRESENCE_DOMAIN.to_vec();
    // Encoding an in-memory value into a Vec cannot fail.
    postcard::to_io(body, &mut out).ok();
    out
}

impl Presence {
    /// `identity` states it is connected to `relay` now (`time_ms`), with a random nonce.
    pub fn sign(identity: &Identity, relay: RelayId, time_ms: u64) -> Self {
        Self::sign_with_nonce(identity, relay, time_ms, rand::random())
    }

    /// [`Presence::sign`] with a given nonce.
    pub fn sign_with_nonce(
        identity: &Identity,
        relay: RelayId,
        time_ms: u64,
        nonce: [u8; 16],
    ) -> Self {
        let body = PresenceBody {
            client: identity.account_id(),
            relay,
            time_ms,
            nonce,
        };
        let signature = identity.sign(&signing_bytes(&body));
        Self { body, signature }
    }

    /// Checks a statement that came from (or is for) `relay`, at `now_ms`: it names `relay`, is
    /// not from the future, is no older than `max_age_ms`, and the user signed it. The cheap
    /// checks come first.
    pub fn check(
        &self,
        relay: &RelayId,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<(), PresenceError> {
        if self.body.relay != *relay {
            return Err(PresenceError::WrongRelay);
        }
        let t = self.body.time_ms;
        if t > now_ms.saturating_add(PRESENCE_SKEW_MS) || t < now_ms.saturating_sub(max_age_ms) {
            return Err(PresenceError::Stale);
        }
        if !verify(
            &self.body.client,
            &signing_bytes(&self.body),
            &self.signature,
        ) {
            return Err(PresenceError::BadSignature);
        }
        Ok(())
    }

    /// Whether this statement is newer than `other` (by time, then nonce): the newest of a
    /// user's statements says where it is.
    pub fn newer_than(&self, other: &PresenceBody) -> bool {
        (self.body.time_ms, self.body.nonce) > (other.time_ms, other.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn only_the_users_fresh_statement_for_that_relay_counts() {
        let user = Identity::generate();
        let (relay, other) = (
            Identity::generate().relay_id(),
            Identity::generate().relay_id(),
        );
        let p = Presence::sign(&user, relay, NOW);
        assert_eq!(p.check(&relay, NOW, DAY), Ok(()));
        assert_eq!(p.check(&other, NOW, DAY), Err(PresenceError::WrongRelay));
        assert_eq!(
            p.check(&relay, NOW + DAY + 1, DAY),
            Err(PresenceError::Stale)
        );
        let future = Presence::sign(&user, relay, NOW + PRESENCE_SKEW_MS + 1);
        assert_eq!(future.check(&relay, NOW, DAY), Err(PresenceError::Stale));
        let mut forged = p.clone();
        forged.body.client = Identity::generate().account_id();
        assert_eq!(
            forged.check(&relay, NOW, DAY),
            Err(PresenceError::BadSignature)
        );
        let mut moved = p.clone();
        moved.body.relay = other;
        assert_eq!(
            moved.check(&other, NOW, DAY),
            Err(PresenceError::BadSignature)
        );
        let later = Presence::sign(&user, relay, NOW + 1);
        assert!(later.newer_than(&p.body) && !p.newer_than(&later.body));
    }
}
