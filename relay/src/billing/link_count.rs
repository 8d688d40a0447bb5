//! What this relay asked one linked relay to do (delivery and storage bytes), counted on its
//! own side, and what it signed for: over all its links and channels to that relay, what it
//! signs stays within what it counted (plus slack for traffic in flight, allowed once).

use std::sync::Mutex;

use top_billing::{Service, Usage};

use crate::util::lock;

/// Traffic in flight when a payment request is asked for: bytes of slack per counted service,
/// plus a sixteenth of that service's count. Services a link never uses get none.
const SLACK_BYTES: u64 = 64 * 1024;

/// One linked relay's count and what was signed for it (kept while this relay runs, whatever
/// its links and channels do, so a fresh link or channel brings no fresh slack).
#[derive(Debug, Default)]
pub struct LinkCount(Mutex<Totals>);

#[derive(Debug, Default)]
struct Totals {
    counted: Usage,
    signed: Usage,
}

impl LinkCount {
    /// A message of `bytes` was handed to the linked relay (forwarded, or sent to be kept).
    pub fn handed(&self, bytes: usize) {
        lock(&self.0).counted.add(Service::Msg, bytes as u64);
    }

    /// The linked relay answered that it stored a message of `bytes`.
    pub fn stored(&self, bytes: usize) {
        lock(&self.0).counted.add(Service::Mailbox, bytes as u64);
    }

    /// What was counted so far.
    pub fn counted(&self) -> Usage {
        lock(&self.0).counted
    }

    /// What was signed for so far, over every channel.
    pub fn signed(&self) -> Usage {
        lock(&self.0).signed
    }

    /// Whether signing for `total` in all (what was signed before and a new claim) stays
    /// within the count: deliveries and storage only, each within its count plus slack.
    pub fn covers(&self, total: &Usage) -> bool {
        fair(total, &lock(&self.0).counted)
    }

    /// Notes that `total` in all is signed for now (never lowers what was).
    pub fn signed_up_to(&self, total: Usage) {
        let mut t = lock(&self.0);
        t.signed.msg = t.signed.msg.max(total.msg);
        t.signed.mailbox = t.signed.mailbox.max(total.mailbox);
    }
}

/// `base` and `claim` together, per service.
pub fn plus(base: &Usage, claim: &Usage) -> Usage {
    Usage {
        msg: base.msg.saturating_add(claim.msg),
        mailbox: base.mailbox.saturating_add(claim.mailbox),
        pipe: base.pipe.saturating_add(claim.pipe),
        vpn: base.vpn.saturating_add(claim.vpn),
        cdn: base.cdn.saturating_add(claim.cdn),
    }
}

fn fair(claimed: &Usage, counted: &Usage) -> bool {
    let within = |claim: u64, count: u64| {
        claim <= count.saturating_add(SLACK_BYTES).saturating_add(count / 16)
    };
    claimed.pipe == 0
        && claimed.vpn == 0
        && claimed.cdn == 0
        && within(claimed.msg, counted.msg)
        && within(claimed.mailbox, counted.mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(items: &[(Service, u64)]) -> Usage {
        let mut u = Usage::default();
        for (service, bytes) in items {
            u.add(*service, *bytes);
        }
        u
    }

    #[test]
    fn a_linked_relay_is_paid_only_for_what_was_handed_to_it() {
        let counted = usage(&[(Service::Msg, 1 << 20), (Service::Mailbox, 4096)]);
        assert!(fair(&counted, &counted));
        // Services a link never carries: not even the slack.
        assert!(!fair(&usage(&[(Service::Pipe, 1)]), &counted));
        assert!(!fair(&usage(&[(Service::Cdn, 1)]), &counted));
        // Storage beyond what was stored, deliveries beyond what was handed over.
        let stored_more = usage(&[(Service::Mailbox, 4096 + 70 * 1024)]);
        assert!(!fair(&stored_more, &counted));
        let delivered_more = usage(&[(Service::Msg, (1 << 20) * 2)]);
        assert!(!fair(&delivered_more, &counted));
    }

    #[test]
    fn the_slack_is_allowed_once_over_every_channel() {
        let count = LinkCount::default();
        count.handed(1000);
        // One channel: the count and the slack for what is in flight.
        let first = usage(&[(Service::Msg, 1000 + SLACK_BYTES)]);
        assert!(count.covers(&first));
        count.signed_up_to(first);
        // A fresh channel claiming the slack again, with nothing more handed over: refused.
        let again = plus(&count.signed(), &usage(&[(Service::Msg, SLACK_BYTES)]));
        assert!(!count.covers(&again));
        // What is handed over later is paid for.
        count.handed(SLACK_BYTES as usize);
        assert!(count.covers(&again));
    }
}
