//! Users found (on their own word) at relays this one has no link to yet: believed to be
//! there once the link is up. Bounded.

use std::collections::HashMap;
use std::time::Instant;

use top_proto::id::{AccountId, RelayId};

/// Users found at relays not linked yet, at most (then the oldest half is forgotten).
pub const MAX_LOCATED: usize = 4096;

/// Users found (on their own word) at relays not linked yet, with when they were found.
#[derive(Default)]
pub struct Located(HashMap<AccountId, (RelayId, Instant)>);

impl Located {
    /// Notes that `client` is at `relay`.
    pub fn note(&mut self, client: AccountId, relay: RelayId, now: Instant) {
        if self.0.len() >= MAX_LOCATED && !self.0.contains_key(&client) {
            let mut ages: Vec<Instant> = self.0.values().map(|(_, t)| *t).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.0.retain(|_, (_, t)| *t > cut);
        }
        self.0.insert(client, (relay, now));
    }

    /// Takes the users found at `relay`.
    pub fn take(&mut self, relay: &RelayId) -> Vec<AccountId> {
        let found: Vec<AccountId> = self
            .0
            .iter()
            .filter(|(_, (r, _))| r == relay)
            .map(|(c, _)| *c)
            .collect();
        for c in &found {
            self.0.remove(c);
        }
        found
    }

    /// How many users wait for their relay's link.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use top_proto::identity::Identity;

    #[test]
    fn located_users_are_bounded_and_taken_by_relay() {
        let mut located = Located::default();
        let (a, b) = (
            Identity::generate().relay_id(),
            Identity::generate().relay_id(),
        );
        let start = Instant::now();
        for i in 0..MAX_LOCATED + 100 {
            let user = Identity::generate().account_id();
            let relay = if i % 2 == 0 { a } else { b };
            located.note(user, relay, start + Duration::from_millis(i as u64));
        }
        assert!(located.len() <= MAX_LOCATED);
        let at_a = located.take(&a).len();
        assert!(at_a > 0);
        assert!(located.take(&a).is_empty(), "taken once");
        assert_eq!(located.len(), located.take(&b).len());
        assert!(located.is_empty());
    }
}
