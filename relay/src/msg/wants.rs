//! Which relays this one wants a link to, and why: links are dialed on demand, not to every
//! member. A relay is wanted while it is a home of a client connected here (pinned, once per
//! client), or for a while after traffic needed it (a forward, a store, a located user, a CDN
//! fetch). The dialer keeps a link to every wanted relay and lets others go idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use top_proto::id::RelayId;

use crate::node::peers::MAX_MEMBERS;
use crate::util::lock;

/// How long a relay stays wanted after traffic last needed a link to it, by default.
pub const WANTED_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    /// Relays pinned, with the number of pins (homes of clients connected here).
    pins: HashMap<RelayId, usize>,
    /// Relays wanted until a time.
    until: HashMap<RelayId, Instant>,
    /// Streams running over links to each relay (pipes, CDN fetches): their links stay up.
    held: HashMap<RelayId, usize>,
}

/// The relays this one wants links to.
pub struct LinkWants {
    inner: Mutex<Inner>,
    /// How long a want lasts.
    wanted_for: Duration,
    /// Bumped whenever a relay becomes wanted.
    changed: watch::Sender<u64>,
}

impl Default for LinkWants {
    fn default() -> Self {
        Self::new(WANTED_FOR)
    }
}

impl LinkWants {
    /// No link wanted yet; a want lasts `wanted_for`.
    pub fn new(wanted_for: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            wanted_for,
            changed: watch::Sender::new(0),
        }
    }

    /// How long a want lasts (and a dialed link may sit unused before it is let go).
    pub fn wanted_for(&self) -> Duration {
        self.wanted_for
    }

    /// Wants a link to `relay` for a while from `now` (extending an earlier want).
    pub fn want(&self, relay: RelayId, now: Instant) {
        let fresh = {
            let mut inner = lock(&self.inner);
            let was = inner.pins.contains_key(&relay)
                || inner.until.get(&relay).is_some_and(|t| *t > now);
            if inner.until.len() >= MAX_MEMBERS && !inner.until.contains_key(&relay) {
                inner.until.retain(|_, t| *t > now);
                if inner.until.len() >= MAX_MEMBERS {
                    return;
                }
            }
            inner.until.insert(relay, now + self.wanted_for);
            !was
        };
        if fresh {
            self.bump();
        }
    }

    /// Pins each of `relays` (one pin each) until [`LinkWants::unpin`].
    pub fn pin(&self, relays: &[RelayId]) {
        let mut fresh = false;
        {
            let mut inner = lock(&self.inner);
            for relay in relays {
                let pins = inner.pins.entry(*relay).or_insert(0);
                fresh |= *pins == 0;
                *pins += 1;
            }
        }
        if fresh {
            self.bump();
        }
    }

    /// Takes back one pin of each of `relays`.
    pub fn unpin(&self, relays: &[RelayId]) {
        let mut inner = lock(&self.inner);
        for relay in relays {
            if let Some(pins) = inner.pins.get_mut(relay) {
                *pins = pins.saturating_sub(1);
                if *pins == 0 {
                    inner.pins.remove(relay);
                }
            }
        }
    }

    /// Whether a link to `relay` is wanted at `now`.
    pub fn wanted(&self, relay: &RelayId, now: Instant) -> bool {
        let inner = lock(&self.inner);
        inner.pins.contains_key(relay) || inner.until.get(relay).is_some_and(|t| *t > now)
    }

    /// Every relay wanted at `now` (expired wants are forgotten).
    pub fn all(&self, now: Instant) -> Vec<RelayId> {
        let mut inner = lock(&self.inner);
        inner.until.retain(|_, t| *t > now);
        let mut all: Vec<RelayId> = inner.pins.keys().copied().collect();
        all.extend(inner.until.keys().filter(|r| !inner.pins.contains_key(r)));
        all
    }

    /// Holds the link to `relay` up while the returned guard lives (a stream runs over it).
    pub fn hold(self: &Arc<Self>, relay: RelayId) -> LinkHold {
        *lock(&self.inner).held.entry(relay).or_insert(0) += 1;
        LinkHold {
            wants: self.clone(),
            relay,
        }
    }

    /// Whether a stream holds the link to `relay` up.
    pub fn held(&self, relay: &RelayId) -> bool {
        lock(&self.inner).held.contains_key(relay)
    }

    /// A watch that changes whenever a relay becomes wanted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Keeps a link up while it lives (see [`LinkWants::hold`]).
pub struct LinkHold {
    wants: Arc<LinkWants>,
    relay: RelayId,
}

impl Drop for LinkHold {
    fn drop(&mut self) {
        let mut inner = lock(&self.wants.inner);
        if let Some(n) = inner.held.get_mut(&self.relay) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.held.remove(&self.relay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::identity::Identity;

    fn relay() -> RelayId {
        Identity::generate().relay_id()
    }

    #[test]
    fn a_want_expires_and_a_pin_holds_until_taken_back() {
        let wants = LinkWants::default();
        let (a, b) = (relay(), relay());
        let now = Instant::now();
        wants.want(a, now);
        wants.pin(&[b, b]);
        assert!(wants.wanted(&a, now + WANTED_FOR / 2));
        assert!(!wants.wanted(&a, now + WANTED_FOR), "expired");
        wants.unpin(&[b]);
        assert!(wants.wanted(&b, now + WANTED_FOR * 2), "one pin left");
        wants.unpin(&[b]);
        assert!(!wants.wanted(&b, now));
        assert_eq!(wants.all(now + WANTED_FOR), Vec::<RelayId>::new());
    }

    #[test]
    fn a_hold_lasts_as_long_as_its_guard() {
        let wants = Arc::new(LinkWants::default());
        let a = relay();
        let (one, two) = (wants.hold(a), wants.hold(a));
        drop(one);
        assert!(wants.held(&a));
        drop(two);
        assert!(!wants.held(&a));
    }

    #[test]
    fn wants_are_bounded_and_announced_only_when_new() {
        let wants = LinkWants::default();
        let mut changed = wants.subscribe();
        let now = Instant::now();
        let a = relay();
        wants.want(a, now);
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        wants.want(a, now);
        assert!(!changed.has_changed().unwrap(), "already wanted");
        for _ in 0..MAX_MEMBERS + 10 {
            wants.want(relay(), now);
        }
        assert_eq!(wants.all(now).len(), MAX_MEMBERS);
        // Once the old wants expire, new ones take their place.
        let later = now + WANTED_FOR;
        let b = relay();
        wants.want(b, later);
        assert_eq!(wants.all(later), vec![b]);
    }
}
