//! Users found (on their own word) at relays this one has no link to yet, believed to be there
//! once the link is up; and the questions this relay asked (a message relayed through a home, a
//! `Locate`): a `Located` is taken only as the answer to one. Both bounded.

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

/// Questions asked at most (then the oldest half is forgotten).
pub const MAX_ASKED: usize = 4096;
/// How long an answer to a question is taken.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Where this relay asked a home relay about a user: (the home, the user) → when.
#[derive(Default)]
pub struct Asked(HashMap<(RelayId, AccountId), Instant>);

impl Asked {
    /// Notes that `home` was asked about `client` at `now`.
    pub fn note(&mut self, home: RelayId, client: AccountId, now: Instant) {
        if self.0.len() >= MAX_ASKED && !self.0.contains_key(&(home, client)) {
            self.0
                .retain(|_, t| now.saturating_duration_since(*t) < ANSWER_WITHIN);
            if self.0.len() >= MAX_ASKED {
                // All still open: forgotten (their answers are not taken; the messages went
                // through the homes all the same).
                self.0.clear();
            }
        }
        self.0.insert((home, client), now);
    }

    /// Whether `home` was asked about `client` within [`ANSWER_WITHIN`] of `now` (the question
    /// is answered: taken once).
    pub fn answered(&mut self, home: RelayId, client: AccountId, now: Instant) -> bool {
        self.0
            .remove(&(home, client))
            .is_some_and(|t| now.saturating_duration_since(t) < ANSWER_WITHIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use top_proto::identity::Identity;

    #[test]
    fn an_answer_is_taken_once_in_time_and_questions_are_bounded() {
        let mut asked = Asked::default();
        let (home, other) = (
            Identity::generate().relay_id(),
            Identity::generate().relay_id(),
        );
        let user = Identity::generate().account_id();
        let now = Instant::now();
        assert!(!asked.answered(home, user, now), "never asked");
        asked.note(home, user, now);
        assert!(!asked.answered(other, user, now), "asked another relay");
        assert!(asked.answered(home, user, now));
        assert!(!asked.answered(home, user, now), "answered once");
        asked.note(home, user, now);
        assert!(!asked.answered(home, user, now + ANSWER_WITHIN), "too late");
        for i in 0..MAX_ASKED + 10 {
            let user = Identity::generate().account_id();
            asked.note(home, user, now + Duration::from_millis(i as u64));
        }
        assert!(asked.0.len() <= MAX_ASKED);
    }

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
