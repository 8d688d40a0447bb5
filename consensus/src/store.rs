//! Where a validator commits the blocks its validators finalized: the relay's chain store, or
//! a ledger-lite store of its own (tests). Committed before the engine is told a block was
//! taken, so the store is never ahead of what the engine finalized.

use std::sync::Mutex;

use ledger_lite::{Block, BlockHash, State, StoreError};

/// A chain store finalized blocks are committed to.
pub trait ChainStore: Send + Sync {
    /// The last committed block's hash and height, and the state after it.
    fn last(&self) -> (BlockHash, u64, State);

    /// Commits a finalized block with its finality proof, when the engine has one. Only for
    /// blocks the engine applied on the same state (when it voted on, built or took the
    /// block): their signatures and state root are not checked again.
    /// Committing a block at or below the last committed height does nothing (blocks come at
    /// least once). An error stops the validator.
    fn commit(&self, block: &Block, proof: Option<&[u8]>) -> Result<(), StoreError>;

    /// The hash of the committed block at `height`, if there is one (and it reads).
    fn hash_at(&self, height: u64) -> Option<BlockHash>;
}

impl ChainStore for Mutex<ledger_lite::Ledger> {
    fn last(&self) -> (BlockHash, u64, State) {
        let ledger = self.lock().unwrap_or_else(|p| p.into_inner());
        (ledger.head(), ledger.height(), ledger.state().clone())
    }

    fn commit(&self, block: &Block, proof: Option<&[u8]>) -> Result<(), StoreError> {
        let mut ledger = self.lock().unwrap_or_else(|p| p.into_inner());
        ledger.commit_verified(block, proof).map(|_| ())
    }

    fn hash_at(&self, height: u64) -> Option<BlockHash> {
        let reader = self.lock().unwrap_or_else(|p| p.into_inner()).reader();
        Some(reader.block(height).ok()??.hash())
    }
}
