//! Blocks that come by gossip. A follower takes the next block only when it checks as any block
//! from its upstream would (its finality proof on a chain of several validators, the validator's
//! signature on a dev chain); a block ahead of it says it is behind (its follow loop then asks
//! the upstream at once); one it holds already is passed on only if it is the same block. While
//! gossip brings blocks, the follow loop asks its upstream only when they stop coming.

use ledger_lite::StoreError;
use ledger_lite::wire::FinalizedBlock;

use super::chain::{ChainNode, Role};
use super::error::ChainError;

/// What became of a gossiped block.
#[derive(Debug, PartialEq, Eq)]
pub enum Gossiped {
    /// Checked and committed: pass it on.
    Taken,
    /// The very block held at its height: pass it on.
    Known,
    /// Not the next block: this node is behind (the upstream is asked).
    Ahead,
    /// Not provable yet (no finality proof of its own).
    Unproven,
    /// Not this node's to take (a validator's blocks come from its engine).
    NotMine,
    /// It does not check (a bad block, a bad proof, another block at a height held): whoever
    /// sent it is at fault.
    Invalid(String),
    /// This node failed to check or store it (not the sender's fault).
    Failed(String),
}

impl ChainNode {
    /// Takes `entry` from gossip if it is the next block and checks (blocking: it may commit).
    pub fn take_gossiped(&self, entry: &FinalizedBlock) -> Gossiped {
        let at = entry.block.header.height;
        let height = self.height();
        if at <= height {
            return match self.block(at) {
                Ok(Some(held)) if held.hash() == entry.block.hash() => Gossiped::Known,
                Ok(Some(_)) => Gossiped::Invalid(format!("another block at height {at}")),
                Ok(None) => Gossiped::Failed(format!("no block held at height {at}")),
                Err(e) => Gossiped::Failed(e.to_string()),
            };
        }
        if !matches!(self.role, Role::Follower { .. }) {
            return Gossiped::NotMine;
        }
        if at > height.saturating_add(1) {
            self.gossip.behind.notify_one();
            return Gossiped::Ahead;
        }
        let taken = match self.finality {
            Some(_) => self
                .apply_finalized_run(std::slice::from_ref(entry))
                .map(|n| n > 0),
            None => self.apply_block(&entry.block).map(|()| true),
        };
        match taken {
            Ok(true) => {
                self.gossip.took();
                Gossiped::Taken
            }
            Ok(false) => Gossiped::Unproven,
            // The follow loop (or another copy) took this height meanwhile: the check ran
            // against a state that moved on, and says nothing of the sender.
            Err(_) if self.height() >= at => Gossiped::Known,
            Err(e @ (ChainError::BadProof(_) | ChainError::BadBlock(StoreError::Block(_)))) => {
                Gossiped::Invalid(e.to_string())
            }
            Err(e) => Gossiped::Failed(e.to_string()),
        }
    }
}
