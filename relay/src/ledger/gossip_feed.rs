//! A follower's record of blocks taken from gossip: when it last took one (while gossip brings
//! them, its follow loop asks the upstream only when they stop), and a nudge for that loop when
//! a gossiped block showed it is behind.

use std::sync::Mutex;
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
}
