//! Announcements that came by gossip before this relay's chain registered the relay they name
//! (it is a block or two behind): held a while, a bounded number, and taken once the registry
//! lists the relay. Without them a relay catching up would learn of those relays only by DHT
//! lookups, seconds later.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use top_proto::id::RelayId;

/// Most announcements held at once (the oldest go first).
pub const MAX_EARLY: usize = 256;
/// How long one is held.
pub const HOLD_EARLY: Duration = Duration::from_secs(60);

/// Announcements of relays not registered yet, oldest first.
#[derive(Default)]
pub struct EarlyAnnouncements {
    held: VecDeque<(Instant, RelayId, Vec<u8>)>,
}

impl EarlyAnnouncements {
    /// Holds `data`, an announcement of `relay`, instead of the one held for it (the oldest
    /// goes if full).
    pub fn hold(&mut self, relay: RelayId, data: Vec<u8>, now: Instant) {
        self.held.retain(|(_, held, _)| *held != relay);
        if self.held.len() >= MAX_EARLY {
            self.held.pop_front();
        }
        self.held.push_back((now, relay, data));
    }

    /// The announcements of relays `registered` says are registered now (the others stay,
    /// until they are too old).
    pub fn take(&mut self, registered: impl Fn(&RelayId) -> bool, now: Instant) -> Vec<Vec<u8>> {
        let mut taken = Vec::new();
        self.held.retain_mut(|(at, relay, data)| {
            if now.duration_since(*at) > HOLD_EARLY {
                return false;
            }
            if registered(relay) {
                taken.push(std::mem::take(data));
                return false;
            }
            true
        });
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(i: u8) -> RelayId {
        top_proto::identity::Identity::from_seed(&[i; 32]).relay_id()
    }

    #[test]
    fn held_until_registered_bounded_and_not_for_long() {
        let now = Instant::now();
        let mut early = EarlyAnnouncements::default();
        // One per relay: a relay's second replaces its first.
        early.hold(relay(0), vec![1], now);
        early.hold(relay(0), vec![2], now);
        assert_eq!(early.held.len(), 1);
        let ids: Vec<RelayId> = (0..=MAX_EARLY as u16)
            .map(|i| {
                top_proto::identity::Identity::from_seed(&[
                    (i % 251) as u8,
                    (i / 251) as u8 + 1,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ])
                .relay_id()
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            early.hold(*id, vec![i as u8], now);
        }
        assert_eq!(early.held.len(), MAX_EARLY, "bounded");
        // The oldest went (relay 0's, then the first of the others).
        assert!(
            early
                .take(|r| *r == relay(0) || *r == ids[0], now)
                .is_empty()
        );
        let taken = early.take(|r| *r == ids[1], now);
        assert_eq!(taken, vec![vec![1]]);
        assert_eq!(early.held.len(), MAX_EARLY - 1);
        // Too old: dropped, registered or not.
        let taken = early.take(|_| true, now + HOLD_EARLY + Duration::from_secs(1));
        assert!(taken.is_empty() && early.held.is_empty());
    }
}
