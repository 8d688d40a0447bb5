//! Blocks as state transitions: checking and applying a block, and building one from a mempool.

use top_proto::id::AccountId;
use top_proto::identity::Identity;

use crate::apply::{Journal, SettledFee, TxError};
use crate::block::{Block, BlockHash, BlockHeader, txs_root};
use crate::state::{State, Touched};
use crate::tx::{SignedTx, TxHash};
use crate::verify::{verify_tx, verify_txs};

/// Why a block was refused. The state is unchanged whenever one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// For another chain.
    #[error("block is for another chain")]
    WrongChain,
    /// Not the next height.
    #[error("block height {got}, expected {expected}")]
    WrongHeight {
        /// The next height.
        expected: u64,
        /// The block's.
        got: u64,
    },
    /// Does not extend the current head.
    #[error("block does not extend the head {0}")]
    WrongPrev(BlockHash),
    /// Time earlier than the previous block's.
    #[error("block time goes backwards")]
    TimeWentBack,
    /// Not signed by the validator.
    #[error("block not signed by the validator")]
    BadValidatorSignature,
    /// More transactions than the chain allows.
    #[error("block has {0} transactions, more than the chain allows")]
    TooManyTxs(usize),
    /// The header's transaction root does not match the transactions.
    #[error("block transaction root mismatch")]
    TxsRoot,
    /// A transaction in it is invalid.
    #[error("transaction {index} in block: {error}")]
    Tx {
        /// Its position.
        index: usize,
        /// Why it is invalid.
        error: TxError,
    },
    /// Applying it gives another state than the header commits to.
    #[error("block state root mismatch")]
    StateRoot,
    /// A chain of several validators: a block is valid with its finality proof only.
    #[error("this chain's blocks need a finality proof")]
    NeedsFinality,
    /// A chain of several validators: its blocks carry no signature (the hash does not cover
    /// one, so every relay must store the same bytes).
    #[error("a block of this chain must not carry a signature")]
    UnexpectedSignature,
    /// A finality proof larger than [`crate::store::MAX_PROOF_BYTES`].
    #[error("finality proof of {0} bytes is too large")]
    ProofTooLarge(usize),
}

/// What applying a block changed.
#[derive(Clone, Debug, Default)]
pub struct BlockOutcome {
    /// Entries written, for the store.
    pub touched: Touched,
    /// Fees settled in it.
    pub fees: Vec<SettledFee>,
    /// What the block replaced, so the store can undo it in memory when the disk refuses it.
    pub(crate) undo: Journal,
}

/// The most bytes of transactions a block holds (a quarter of the largest ledger frame, so a
/// follower always gets at least one whole block per request).
pub const MAX_BLOCK_BYTES: usize = crate::wire::MAX_LEDGER_FRAME / 4;

/// A block the validator built, with what it left out and why.
pub struct Built {
    /// The signed block, already applied to the state.
    pub block: Block,
    /// What it changed.
    pub outcome: BlockOutcome,
    /// Transactions left out, with the reason.
    pub rejected: Vec<(TxHash, TxError)>,
}

impl State {
    /// Checks, verifies and applies one transaction (mempool path), the cheap checks before the
    /// signatures; on error nothing changes.
    pub fn apply_tx(&mut self, stx: &SignedTx) -> Result<Vec<SettledFee>, TxError> {
        self.precheck(stx)?;
        verify_tx(stx)?;
        self.apply_verified(None, stx)
    }

    /// Applies one transaction whose signatures the caller verified (with
    /// [`crate::verify::verify_tx`]); on error nothing changes.
    pub fn apply_verified_tx(&mut self, stx: &SignedTx) -> Result<Vec<SettledFee>, TxError> {
        if stx.tx.chain != self.chain {
            return Err(TxError::WrongChain);
        }
        self.apply_verified(None, stx)
    }

    /// The state transition: checks `block` against the head `prev` and the `validator`, applies
    /// it whole, or returns an error and leaves the state exactly as it was.
    pub fn apply_block(
        &mut self,
        block: &Block,
        prev: &BlockHash,
        validator: &AccountId,
    ) -> Result<BlockOutcome, BlockError> {
        if !block.signed_by(validator) {
            return Err(BlockError::BadValidatorSignature);
        }
        self.apply_agreed(block, prev)
    }

    /// The state transition for a block several validators agreed on (their finality proof
    /// stands for the single validator's signature, which is not checked): like
    /// [`State::apply_block`] otherwise.
    pub fn apply_agreed(
        &mut self,
        block: &Block,
        prev: &BlockHash,
    ) -> Result<BlockOutcome, BlockError> {
        self.apply_agreed_checking(block, prev, |_| true)
    }

    /// [`State::apply_agreed`], checking the signatures only of the transactions `unchecked`
    /// picks (the others' this node checked already: the same hash is the same signature).
    pub fn apply_agreed_checking(
        &mut self,
        block: &Block,
        prev: &BlockHash,
        unchecked: impl Fn(&SignedTx) -> bool,
    ) -> Result<BlockOutcome, BlockError> {
        self.apply_agreed_inner(block, prev, unchecked, true)
    }

    /// [`State::apply_agreed`] for a block this node's consensus engine already applied on the
    /// same parent state (voting on it, building it, or taking it once finalized), where its
    /// signatures and state root were checked: neither is computed again (the root of the
    /// whole state is the dearest part of a block). Every other rule is checked.
    pub fn apply_agreed_checked(
        &mut self,
        block: &Block,
        prev: &BlockHash,
    ) -> Result<BlockOutcome, BlockError> {
        self.apply_agreed_inner(block, prev, |_| false, false)
    }

    fn apply_agreed_inner(
        &mut self,
        block: &Block,
        prev: &BlockHash,
        unchecked: impl Fn(&SignedTx) -> bool,
        check_root: bool,
    ) -> Result<BlockOutcome, BlockError> {
        let h = &block.header;
        if h.chain != self.chain {
            return Err(BlockError::WrongChain);
        }
        let expected = self.height + 1;
        if h.height != expected {
            return Err(BlockError::WrongHeight {
                expected,
                got: h.height,
            });
        }
        if h.prev != *prev {
            return Err(BlockError::WrongPrev(*prev));
        }
        if h.time_ms < self.time_ms {
            return Err(BlockError::TimeWentBack);
        }
        if block.txs.len() > self.params.max_block_txs as usize {
            return Err(BlockError::TooManyTxs(block.txs.len()));
        }
        // (Checked by the engine with the state root; a block's identity is its header's hash.)
        if check_root && txs_root(&block.txs) != h.txs_root {
            return Err(BlockError::TxsRoot);
        }
        let indexes: Vec<usize> = (0..block.txs.len())
            .filter(|i| unchecked(&block.txs[*i]))
            .collect();
        if indexes.len() == block.txs.len() {
            verify_txs(&block.txs).map_err(|(index, error)| BlockError::Tx { index, error })?;
        } else if !indexes.is_empty() {
            let to_check: Vec<SignedTx> = indexes.iter().map(|i| block.txs[*i].clone()).collect();
            verify_txs(&to_check).map_err(|(i, error)| BlockError::Tx {
                index: indexes[i],
                error,
            })?;
        }
        let mut journal = self.begin_journal();
        self.begin_block(Some(&mut journal), h.height, h.time_ms);
        let mut fees = Vec::new();
        for (index, stx) in block.txs.iter().enumerate() {
            match self.apply_verified(Some(&mut journal), stx) {
                Ok(f) => fees.extend(f),
                Err(error) => {
                    self.rollback(journal);
                    return Err(BlockError::Tx { index, error });
                }
            }
        }
        self.end_block();
        if check_root && self.root() != h.state_root {
            self.rollback(journal);
            return Err(BlockError::StateRoot);
        }
        Ok(BlockOutcome {
            touched: journal.touched(),
            fees,
            undo: journal,
        })
    }

    /// Builds, signs and applies the next block from `candidates` (in order), leaving out any
    /// that are invalid at this point, up to the chain's block size.
    pub fn build_block(
        &mut self,
        candidates: Vec<SignedTx>,
        time_ms: u64,
        prev: BlockHash,
        validator: &Identity,
    ) -> Built {
        self.build_block_checking(candidates, time_ms, prev, validator, |_| true)
    }

    /// [`State::build_block`], checking the signatures only of the candidates `unchecked`
    /// picks (the others' were checked by this node when they came).
    pub fn build_block_checking(
        &mut self,
        candidates: Vec<SignedTx>,
        time_ms: u64,
        prev: BlockHash,
        validator: &Identity,
        unchecked: impl Fn(&SignedTx) -> bool,
    ) -> Built {
        let time_ms = time_ms.max(self.time_ms);
        let mut journal = self.begin_journal();
        self.begin_block(Some(&mut journal), self.height + 1, time_ms);
        let mut txs = Vec::new();
        let mut fees = Vec::new();
        let mut rejected = Vec::new();
        let max = self.params.max_block_txs as usize;
        let mut bytes = 0usize;
        for stx in candidates {
            if txs.len() == max {
                break;
            }
            // Blocks stay small enough to travel in one ledger frame with room to spare: a
            // transaction that would overflow this one waits for the next.
            let size = postcard::to_allocvec(&stx).map_or(usize::MAX, |v| v.len());
            if bytes.saturating_add(size) > MAX_BLOCK_BYTES {
                if txs.is_empty() {
                    rejected.push((stx.hash(), TxError::TooLarge));
                    continue;
                }
                break;
            }
            let checked = match unchecked(&stx) {
                true => verify_tx(&stx),
                false => Ok(()),
            };
            let result = checked.and_then(|()| self.apply_verified(Some(&mut journal), &stx));
            match result {
                Ok(f) => {
                    fees.extend(f);
                    bytes += size;
                    txs.push(stx);
                }
                Err(e) => rejected.push((stx.hash(), e)),
            }
        }
        self.end_block();
        let header = BlockHeader {
            chain: self.chain,
            height: self.height,
            prev,
            time_ms,
            txs_root: txs_root(&txs),
            state_root: self.root(),
        };
        Built {
            block: Block::sign(header, txs, validator),
            outcome: BlockOutcome {
                touched: journal.touched(),
                fees,
                undo: journal,
            },
            rejected,
        }
    }
}
