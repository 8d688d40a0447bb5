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
