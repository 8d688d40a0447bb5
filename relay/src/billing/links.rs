//! Relay-to-relay billing, both sides. A relay that forwards a message to another for delivery,
//! or asks it to keep a copy, pays it through a channel and receipts, the same primitive clients
//! use: the receiving relay meters the link ([`Billing::link_up`]) and the sending relay
//! counts what it asked for ([`LinkCount`]) and signs only what its count covers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ledger_lite::ChannelId;
use top_proto::id::AccountId;

use super::Billing;
use super::link_count::LinkCount;
use super::meter::ClientMeter;
use crate::util::lock;

/// Per linked relay (by account), over all its links at once (two relays may hold two links
/// for a while): the meter of what it asks of this relay, the count of what this relay asks
/// of it (kept after its links end, so what was signed keeps counting against it; bounded:
/// members only), each with the number of links sharing it, and whether a payer runs for it.
pub struct LinkMeters {
    meters: Mutex<HashMap<AccountId, (Arc<ClientMeter>, usize)>>,
    counts: Mutex<HashMap<AccountId, (Arc<LinkCount>, usize)>>,
    payers: Mutex<std::collections::HashSet<AccountId>>,
    /// When this relay last opened a channel to each relay (bounded: members at most).
    opened: Mutex<HashMap<AccountId, std::time::Instant>>,
    /// When each relay's last link went down (bounded: members at most, pruned by
    /// [`Billing::unlinked_since`]).
    unlinked: Mutex<HashMap<AccountId, std::time::Instant>>,
    /// This relay's link channels spent on service, and to whom (bounded: closed once a fresh
    /// one pays, pruned once not open on chain).
    spent: Mutex<HashMap<ChannelId, AccountId>>,
    /// When this relay started (the last link of any relay was down before).
    started: std::time::Instant,
}

impl Default for LinkMeters {
    fn default() -> Self {
        Self {
            meters: Mutex::default(),
            counts: Mutex::default(),
            payers: Mutex::default(),
            opened: Mutex::default(),
            unlinked: Mutex::default(),
            spent: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// Holds the right to pay one linked relay (one payer per relay, whichever link it runs on).
pub struct PayerGuard<'a> {
    book: &'a LinkMeters,
    peer: AccountId,
}

impl LinkMeters {
    fn start_paying(&self, peer: AccountId) -> Option<PayerGuard<'_>> {
        // (The guard is made only when this call took the right, after the lock is released:
        // dropping one locks the set again.)
        let taken = lock(&self.payers).insert(peer);
        taken.then(|| PayerGuard { book: self, peer })
    }
}

impl Drop for PayerGuard<'_> {
    fn drop(&mut self) {
        lock(&self.book.payers).remove(&self.peer);
    }
}

impl Billing {
    /// A link with `peer` came up: the meter of what it asks of this relay (shared by its
    /// links; `None` when this relay does not bill), carried within the credit window until
    /// its channel is attached, and the count of what this relay asks of it.
    pub fn link_up(&self, peer: AccountId) -> (Option<Arc<ClientMeter>>, Arc<LinkCount>) {
        let meter = self.member_meter(peer, 1);
        let mut counts = lock(&self.link_meters.counts);
        let entry = counts.entry(peer).or_insert_with(|| (Arc::default(), 0));
        entry.1 += 1;
        (meter, entry.0.clone())
    }

    /// The meter of member relay `peer` (made if need be: its billing stream may come before
    /// its link), its link count raised by `links`.
    pub fn member_meter(&self, peer: AccountId, links: usize) -> Option<Arc<ClientMeter>> {
        let mut meters = lock(&self.link_meters.meters);
        if let Some((meter, n)) = meters.get_mut(&peer) {
            *n += links;
            return Some(meter.clone());
        }
        let meter = super::meter::new_meter(self, None)?;
        meter.for_member(peer);
        meters.insert(peer, (meter.clone(), links));
        Some(meter)
    }

    /// One link with `peer` is down: the last one takes its meter and count along.
    pub fn link_down(&self, peer: &AccountId) {
        let mut meters = lock(&self.link_meters.meters);
        if let Some((_, links)) = meters.get_mut(peer) {
            *links = links.saturating_sub(1);
            if *links == 0 {
                meters.remove(peer);
            }
        }
        drop(meters);
        // The count stays (what was signed must keep counting against it on the next link).
        let mut counts = lock(&self.link_meters.counts);
        if let Some((_, links)) = counts.get_mut(peer) {
            *links = links.saturating_sub(1);
            if *links == 0 {
                let mut unlinked = lock(&self.link_meters.unlinked);
                unlinked.retain(|_, at| at.elapsed() < super::link_close::IDLE_CLOSE);
                unlinked.insert(*peer, std::time::Instant::now());
            }
        }
    }

    /// Whether no link with `peer` is up and none was for `idle`. Forgets relays whose links
    /// went down more than `idle` ago (the answer for them stays yes).
    pub fn unlinked_since(&self, peer: &AccountId, idle: std::time::Duration) -> bool {
        if lock(&self.link_meters.counts)
            .get(peer)
            .is_some_and(|(_, links)| *links > 0)
        {
            return false;
        }
        let book = &self.link_meters;
        let mut unlinked = lock(&book.unlinked);
        unlinked.retain(|_, at| at.elapsed() < idle);
        book.started.elapsed() >= idle && !unlinked.contains_key(peer)
    }

    /// The meter of what linked relay `peer` asks of this relay now.
    pub fn link_meter(&self, peer: &AccountId) -> Option<Arc<ClientMeter>> {
        lock(&self.link_meters.meters)
            .get(peer)
            .map(|(m, _)| m.clone())
    }

    /// Whether this relay opened a channel to `peer` within `interval`.
    pub fn opened_link_channel_within(
        &self,
        peer: &AccountId,
        interval: std::time::Duration,
    ) -> bool {
        let now = std::time::Instant::now();
        let mut opened = lock(&self.link_meters.opened);
        opened.retain(|_, at| now.duration_since(*at) < interval);
        opened.contains_key(peer)
    }

    /// Notes that this relay opened a channel to `peer` now.
    pub fn opened_link_channel(&self, peer: AccountId) {
        lock(&self.link_meters.opened).insert(peer, std::time::Instant::now());
    }

    /// This relay's `channel` to `peer` is spent on service it was paid for: the next one
    /// need not wait, and this one is not resumed.
    pub fn spent_link_channel(&self, peer: &AccountId, channel: ChannelId) {
        lock(&self.link_meters.opened).remove(peer);
        lock(&self.link_meters.spent).insert(channel, *peer);
    }

    /// Whether this relay's link channel `channel` is known to be spent.
    pub fn is_spent_link_channel(&self, channel: &ChannelId) -> bool {
        lock(&self.link_meters.spent).contains_key(channel)
    }

    /// Takes the spent link channels to `peer` (to close them).
    pub fn take_spent_link_channels(&self, peer: &AccountId) -> Vec<ChannelId> {
        let mut spent = lock(&self.link_meters.spent);
        let ours: Vec<ChannelId> = spent
            .iter()
            .filter(|(_, p)| *p == peer)
            .map(|(c, _)| *c)
            .collect();
        for channel in &ours {
            spent.remove(channel);
        }
        ours
    }

    /// Forgets spent link channels that `still_open` no longer says are open.
    pub fn forget_spent_link_channels(&self, still_open: impl Fn(&ChannelId) -> bool) {
        lock(&self.link_meters.spent).retain(|c, _| still_open(c));
    }

    /// The right to pay `peer`, unless a payer for it runs already (on another link).
    pub fn start_paying(&self, peer: AccountId) -> Option<PayerGuard<'_>> {
        self.link_meters.start_paying(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_payer_per_relay_and_the_right_passes_on() {
        let book = LinkMeters::default();
        let peer = AccountId::from_wire([1; 32]);
        let first = book.start_paying(peer).expect("the first payer");
        assert!(book.start_paying(peer).is_none(), "a second payer waits");
        assert!(book.start_paying(peer).is_none(), "and keeps waiting");
        drop(first);
        assert!(book.start_paying(peer).is_some(), "the next one takes over");
    }
}
