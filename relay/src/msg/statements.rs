//! The newest presence statement seen of each user: a statement older than it is not believed.

use std::num::NonZeroUsize;

use lru::LruCache;
use top_proto::id::AccountId;
use top_proto::presence::{Presence, PresenceBody};

/// How often believed statements are checked for age.
pub const EXPIRY_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// Users whose newest statement is remembered.
pub const REMEMBERED_USERS: usize = 100_000;

/// The newest presence statement seen of each user (bounded, least recently used out), kept
/// whole: a home relay hands it to relays that look for the user.
pub struct Statements(LruCache<AccountId, Presence>);

impl Default for Statements {
    fn default() -> Self {
        Self(LruCache::new(
            NonZeroUsize::new(REMEMBERED_USERS).unwrap_or(NonZeroUsize::MIN),
        ))
    }
}

impl Statements {
    /// Whether `p` is at least as new as every statement of its user seen so far.
    pub fn is_current(&self, p: &Presence) -> bool {
        self.0
            .peek(&p.body.client)
            .is_none_or(|latest| latest.body == p.body || p.newer_than(&latest.body))
    }

    /// Removes and returns the statements made before `time_ms`.
    pub fn take_older_than(&mut self, time_ms: u64) -> Vec<PresenceBody> {
        let old: Vec<PresenceBody> = self
            .0
            .iter()
            .filter(|(_, p)| p.body.time_ms < time_ms)
            .map(|(_, p)| p.body.clone())
            .collect();
        for body in &old {
            self.0.pop(&body.client);
        }
        old
    }

    /// Remembers `p` if it is the newest of its user.
    pub fn note(&mut self, p: &Presence) {
        if self.is_current(p) {
            self.0.put(p.body.client, p.clone());
        }
    }

    /// The newest statement of `client` seen here.
    pub fn get(&self, client: &AccountId) -> Option<Presence> {
        self.0.peek(client).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::identity::Identity;

    #[test]
    fn an_older_statement_loses_to_a_newer_one_and_a_repeat_is_fine() {
        let user = Identity::generate();
        let (x, y) = (
            Identity::generate().relay_id(),
            Identity::generate().relay_id(),
        );
        let old = Presence::sign(&user, x, 1_000);
        let new = Presence::sign(&user, y, 2_000);
        let mut s = Statements::default();
        assert!(s.is_current(&old));
        s.note(&old);
        s.note(&new);
        assert!(!s.is_current(&old), "x replays the user's old word");
        assert!(
            s.is_current(&new),
            "y announces again (after a payment, a new link)"
        );
    }
}
