//! A follower's record of blocks taken from gossip: when it last took one (while gossip brings
//! them, its follow loop asks the upstream only when they stop), and a nudge for that loop when
//! a gossiped block showed it is behind; and how its users' transactions reached a block (by
//! gossip, or through the upstream).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long after the last block taken from gossip the follow loop goes on trusting gossip.
pub const GOSSIP_FRESH: Duration = Duration::from_secs(10);

/// A follower's record of gossip: when it last took a block from it, and a nudge for the
/// follow loop when a block showed it is behind.
#[derive(Default)]
pub struct GossipFeed {
    last_taken: Mutex<Option<Instant>>,
    /// Notified when a gossiped block is ahead of this node.
    pub behind: Notify,
    /// Transactions this node gossiped and saw committed.
    txs_by_gossip: AtomicU64,
    /// Transactions this node handed to its upstream.
    txs_upstream: AtomicU64,
}

impl GossipFeed {
    /// Whether a block came by gossip within [`GOSSIP_FRESH`].
    pub fn fresh(&self) -> bool {
        self.last_taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < GOSSIP_FRESH)
    }

    /// Notes a block taken from gossip now.
    pub fn took(&self) {
        *self.last_taken.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Notes a transaction gossiped and committed (`true`) or handed to the upstream.
    pub fn tx_sent(&self, by_gossip: bool) {
        let counter = match by_gossip {
            true => &self.txs_by_gossip,
            false => &self.txs_upstream,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Transactions gossiped and committed, and handed to the upstream, so far.
    pub fn txs_sent(&self) -> (u64, u64) {
        (
            self.txs_by_gossip.load(Ordering::Relaxed),
            self.txs_upstream.load(Ordering::Relaxed),
        )
    }
}
