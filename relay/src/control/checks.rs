//! Gossip checks run off the swarm's task: how many at once, and what a finished one was of.

/// Block checks running at once.
pub const MAX_CHECKS: usize = 16;

/// Transaction checks running at once.
pub const MAX_TX_CHECKS: usize = 32;

/// What a finished gossip check was of.
#[derive(Debug, Clone, Copy)]
pub enum Checked {
    /// A block; whether this node took it.
    Block { taken: bool },
    /// A transaction.
    Tx,
}

/// Transactions one relay may publish that are checked here, per [`QUOTA_WINDOW`].
pub const TXS_PER_PUBLISHER: u32 = 600;
/// The window of [`TXS_PER_PUBLISHER`].
pub const QUOTA_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// How many gossiped transactions each publisher had checked here in its current window (one
/// entry per registered relay at most: only theirs are counted).
#[derive(Default)]
pub struct TxQuota {
    windows: std::collections::HashMap<libp2p::PeerId, (std::time::Instant, u32)>,
}

impl TxQuota {
    /// Counts one transaction of `publisher`; false once it is over its quota in this window.
    pub fn take(&mut self, publisher: libp2p::PeerId, now: std::time::Instant) -> bool {
        let (start, count) = self.windows.entry(publisher).or_insert((now, 0));
        if now.duration_since(*start) >= QUOTA_WINDOW {
            (*start, *count) = (now, 0);
        }
        *count = count.saturating_add(1);
        *count <= TXS_PER_PUBLISHER
    }

    /// Forgets publishers that are not `registered` any more.
    pub fn retain(&mut self, registered: impl Fn(&libp2p::PeerId) -> bool) {
        self.windows.retain(|p, _| registered(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_gets_its_quota_each_window() {
        let (mut quota, now) = (TxQuota::default(), std::time::Instant::now());
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        assert!((0..TXS_PER_PUBLISHER).all(|_| quota.take(a, now)));
        assert!(!quota.take(a, now), "over its quota");
        assert!(quota.take(b, now), "another publisher has its own");
        assert!(quota.take(a, now + QUOTA_WINDOW), "a new window");
        quota.retain(|p| *p == b);
        assert_eq!(quota.windows.len(), 1);
    }
}
