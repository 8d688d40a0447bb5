//! Transactions waiting for a block, checked against the state they will land on.

use std::collections::{HashMap, HashSet, VecDeque};

use top_proto::id::AccountId;

use crate::apply::TxError;
use crate::state::State;
use crate::tx::{SignedTx, TxHash};

/// Why the mempool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Invalid against the pending state.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// Already waiting (its hash).
    #[error("transaction already submitted")]
    Duplicate(TxHash),
    /// Too many waiting.
    #[error("mempool full ({0} transactions); try again after the next block")]
    Full(usize),
    /// Too many waiting from this account.
    #[error(
        "{0} transactions from this account are waiting already; try again after the next block"
    )]
    AccountFull(usize),
}

/// Transactions one account may have waiting at once.
pub const MAX_PENDING_PER_ACCOUNT: usize = 64;

/// Valid transactions in arrival order, and the state they lead to.
pub struct Mempool {
    pending: State,
    /// Each with its hash (computed once: rebasing after every block would hash them all).
    queue: VecDeque<(TxHash, SignedTx)>,
    hashes: HashSet<TxHash>,
    capacity: usize,
    /// Queued transactions per sender.
    per_account: HashMap<AccountId, usize>,
    /// An account without the per-account limit (a dev chain's faucet).
    exempt: Option<AccountId>,
}

impl Mempool {
    /// An empty mempool on top of `committed`, holding at most `capacity` transactions.
    pub fn new(committed: &State, capacity: usize) -> Self {
        Self {
            pending: committed.clone(),
            queue: VecDeque::new(),
            hashes: HashSet::new(),
            capacity,
            per_account: HashMap::new(),
            exempt: None,
        }
    }

    /// Checks `stx` (signatures included) against the pending state and queues it.
    pub fn submit(&mut self, stx: SignedTx) -> Result<TxHash, SubmitError> {
        self.admit(stx, |state, stx| state.apply_tx(stx))
    }

    /// Like [`Mempool::submit`] for a transaction whose signatures the caller verified (off
    /// the lock that guards this mempool, after [`State::precheck`] on [`Mempool::pending`]).
    pub fn submit_verified(&mut self, stx: SignedTx) -> Result<TxHash, SubmitError> {
        self.admit(stx, |state, stx| state.apply_verified_tx(stx))
    }

    fn admit(
        &mut self,
        stx: SignedTx,
        apply: impl FnOnce(&mut State, &SignedTx) -> Result<Vec<crate::SettledFee>, TxError>,
    ) -> Result<TxHash, SubmitError> {
        let hash = stx.hash();
        if self.hashes.contains(&hash) {
            return Err(SubmitError::Duplicate(hash));
        }
        if self.queue.len() >= self.capacity {
            return Err(SubmitError::Full(self.capacity));
        }
        // One account cannot crowd out the others (its own transactions are free to it).
        let mine = self.per_account.get(&stx.tx.from).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_ACCOUNT && self.exempt != Some(stx.tx.from) {
            return Err(SubmitError::AccountFull(MAX_PENDING_PER_ACCOUNT));
        }
        apply(&mut self.pending, &stx)?;
        self.hashes.insert(hash);
        *self.per_account.entry(stx.tx.from).or_default() += 1;
        self.queue.push_back((hash, stx));
        Ok(hash)
    }

    /// Lifts the per-account limit for `account` (a dev chain's faucet serves everyone).
    pub fn exempt(&mut self, account: AccountId) {
        self.exempt = Some(account);
    }

    /// The state with every queued transaction applied (for next nonces and balances).
    pub fn pending(&self) -> &State {
        &self.pending
    }

    /// Whether no more transactions fit.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// The most transactions it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the transaction with this hash is queued.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.hashes.contains(hash)
    }

    /// Queued transactions.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Up to `max` transactions for the next block, oldest first (they stay queued until
    /// [`Mempool::rebase`] sees them committed).
    pub fn candidates(&self, max: usize) -> Vec<SignedTx> {
        self.queue
            .iter()
            .take(max)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// After a block: drops committed transactions (`done`), re-checks the rest on the new
    /// state and drops those no longer valid. Returns the dropped ones that were not committed.
    pub fn rebase(&mut self, committed: &State, done: &HashSet<TxHash>) -> Vec<(TxHash, TxError)> {
        self.pending = committed.clone();
        let mut dropped = Vec::new();
        let queue = std::mem::take(&mut self.queue);
        self.hashes.clear();
        self.per_account.clear();
        for (hash, stx) in queue {
            if done.contains(&hash) {
                continue;
            }
            // Its signatures were verified when it was admitted.
            match self.pending.apply_verified_tx(&stx) {
                Ok(_) => {
                    self.hashes.insert(hash);
                    *self.per_account.entry(stx.tx.from).or_default() += 1;
                    self.queue.push_back((hash, stx));
                }
                Err(e) => dropped.push((hash, e)),
            }
        }
        dropped
    }
}
