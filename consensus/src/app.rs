//! The application the engine drives: it proposes a ledger-lite block from the pending
//! transactions on top of the parent the engine names, verifies a proposed block by applying it
//! to the state after its parent, and takes finalized blocks in height order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use commonware_actor::Feedback;
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::{Application, Heightable, Reporter};
use commonware_cryptography::Digestible;
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::ed25519::PublicKey;
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::Acknowledgement;
use futures::StreamExt;
use ledger_lite::{SignedTx, State, TxHash};
use rand_core::Rng;
use top_proto::identity::Identity;

use crate::block::ChainBlock;
use crate::pending::{Held, Pending, cheap_checks, never_valid, plausible};
use crate::store::ChainStore;

/// Finalized blocks kept in memory, at most (the oldest go first).
pub const MAX_FINALIZED_KEPT: usize = 4096;
/// States after unfinalized blocks kept, at most (each a whole state: few blocks are in flight
/// above the finalized one while the chain runs).
pub const MAX_STATES_KEPT: usize = 32;
/// Pending transactions a proposal looks at, per transaction a block may hold.
pub const CANDIDATES_PER_SLOT: usize = 4;
/// How often a paced proposal looks for waiting transactions, in milliseconds.
const PACE_STEP_MS: u64 = 20;
/// How far ahead of this validator's clock a proposed block's time may be, in milliseconds.
pub const MAX_CLOCK_AHEAD_MS: u64 = 10_000;

/// What became of a transaction a validator's own relay handed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Waiting for a block (or already waiting: submission is idempotent).
    Queued,
    /// Beyond its sender's window: it waits here for the nonces before it to be used.
    Held,
    /// It can never go in (too large, too cheap, another chain's), or there is no room.
    Refused,
}

/// What a validator's application shares between the engine's calls and the node around it.
pub struct Ledger {
    /// The state after the last finalized block, and that block's digest and height: where
    /// every proposal and verification starts from, at the latest.
    finalized_state: Mutex<(Digest, u64, Arc<State>)>,
    /// States after blocks proposed or verified above the last finalized one, by digest, with
    /// their heights.
    states: Mutex<HashMap<Digest, (u64, Arc<State>)>>,
    /// Transactions waiting for a block.
    pending: Mutex<Pending>,
    /// This validator's own transactions beyond their sender's window in `pending`.
    held: Mutex<Held>,
    /// Recent finalized blocks, in height order.
    finalized: Mutex<Vec<Arc<ChainBlock>>>,
    /// Where finalized blocks are committed (none: kept in memory only, as in simulations).
    store: Option<Arc<dyn ChainStore>>,
    /// Signalled on each finalized block.
    on_finalized: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ledger {
    /// A ledger at `genesis`, whose state is `state`.
    pub fn new(genesis: &ChainBlock, state: State) -> Arc<Self> {
        Self::with((genesis.digest(), 0, Arc::new(state)), None)
    }

    /// A ledger over the chain `store` holds: finalized blocks are committed there (before
    /// the engine is told they were taken), and it goes on from its last committed block.
    pub fn open(store: Arc<dyn ChainStore>) -> Arc<Self> {
        let (head, height, state) = store.last();
        Self::with((Digest(head.0), height, Arc::new(state)), Some(store))
    }

    fn with(last: (Digest, u64, Arc<State>), store: Option<Arc<dyn ChainStore>>) -> Arc<Self> {
        Arc::new(Self {
            finalized_state: Mutex::new(last),
            states: Mutex::default(),
            pending: Mutex::default(),
            held: Mutex::default(),
            finalized: Mutex::default(),
            store,
            on_finalized: tokio::sync::Notify::new(),
        })
    }

    /// The height of the last finalized block taken.
    pub fn height(&self) -> u64 {
        lock(&self.finalized_state).1
    }

    /// The state after the last finalized block.
    pub fn finalized_state(&self) -> Arc<State> {
        lock(&self.finalized_state).2.clone()
    }

    /// The digest of the finalized block at `height`: the last one, one still kept, or one in
    /// the chain store.
    pub fn finalized_digest_at(&self, height: u64) -> Option<Digest> {
        {
            let last = lock(&self.finalized_state);
            if last.1 == height {
                return Some(last.0);
            }
        }
        let kept = lock(&self.finalized)
            .iter()
            .find(|b| b.block().header.height == height)
            .map(|b| b.digest());
        kept.or_else(|| Some(Digest(self.store.as_ref()?.hash_at(height)?.0)))
    }

    /// Waits until the finalized state is in `epoch` or a later one.
    pub async fn wait_epoch(&self, epoch: u64) {
        loop {
            let notified = self.on_finalized.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.finalized_state).2.epoch >= epoch {
                return;
            }
            notified.await;
        }
    }

    /// Queues a transaction for the next proposals when it is plausible on the last finalized
    /// state (see [`crate::pending::plausible`]) and has room; returns whether it was queued.
    pub fn submit(&self, tx: SignedTx) -> bool {
        let state = lock(&self.finalized_state).2.clone();
        plausible(&tx, &state) && lock(&self.pending).insert(tx)
    }

    /// Queues a batch of transactions gossiped by another validator: the cheap checks first,
    /// then the signatures of those left, checked as one batch (one by one only when the batch
    /// fails: a forged transaction never waits here, so nothing a peer forges takes an
    /// account's places). Returns how many were queued, and how many were forged.
    pub fn submit_gossiped(&self, txs: Vec<SignedTx>) -> (usize, usize) {
        let state = lock(&self.finalized_state).2.clone();
        let txs: Vec<SignedTx> = txs
            .into_iter()
            .filter(|t| cheap_checks(t, &state))
            .collect();
        let checked = txs.len();
        let verified: Vec<SignedTx> = match ledger_lite::verify::verify_txs(&txs) {
            Ok(()) => txs,
            Err(_) => txs
                .into_iter()
                .filter(|t| ledger_lite::verify::verify_tx(t).is_ok())
                .collect(),
        };
        let forged = checked - verified.len();
        let mut pending = lock(&self.pending);
        let queued = verified
            .into_iter()
            .filter(|t| pending.insert(t.clone()))
            .count();
        (queued, forged)
    }

    /// Queues this node's own transaction (its signature checked already) like
    /// [`Ledger::submit`]; one beyond its sender's window is held until blocks move the window
    /// to it. Says which.
    pub fn submit_own(&self, tx: SignedTx) -> Admission {
        let state = lock(&self.finalized_state).2.clone();
        if cheap_checks(&tx, &state) {
            let mut pending = lock(&self.pending);
            if pending.contains(&tx.hash()) || pending.has_room_for(&tx.tx.from) {
                pending.insert(tx);
                return Admission::Queued;
            }
        }
        // Beyond its window, its share taken, or its account not funded yet: it waits here,
        // unless it never can go in.
        match lock(&self.held).hold(tx, &state) {
            true => Admission::Held,
            false => Admission::Refused,
        }
    }

    /// Transactions waiting for a block.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// The finalized blocks kept, in height order (from height 0 until more than
    /// [`MAX_FINALIZED_KEPT`] were finalized).
    pub fn finalized(&self) -> Vec<Arc<ChainBlock>> {
        lock(&self.finalized).clone()
    }

    /// Waits until a block at `height` or above is finalized.
    pub async fn wait_finalized(&self, height: u64) {
        loop {
            let notified = self.on_finalized.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.height() >= height {
                return;
            }
            notified.await;
        }
    }

    /// The state after the block with `digest`, if known.
    fn state_after(&self, digest: &Digest) -> Option<Arc<State>> {
        {
            let finalized = lock(&self.finalized_state);
            if finalized.0 == *digest {
                return Some(finalized.2.clone());
            }
        }
        lock(&self.states).get(digest).map(|(_, s)| s.clone())
    }

    fn remember(&self, block: &ChainBlock, state: State) {
        self.remember_at(block.digest(), block.block().header.height, state);
    }

    /// Keeps the state after a block above the finalized one (while finality stalls, at most
    /// [`MAX_STATES_KEPT`]: beyond them, states are computed again when needed).
    fn remember_at(&self, digest: Digest, height: u64, state: State) {
        let mut states = lock(&self.states);
        if states.len() < MAX_STATES_KEPT || states.contains_key(&digest) {
            states.insert(digest, (height, Arc::new(state)));
        }
    }

    /// The state after `parent`, replaying the blocks below it from the nearest known state.
    async fn state_at(
        &self,
        parent: &ChainBlock,
        ancestry: &mut impl Ancestry<ChainBlock>,
    ) -> Option<State> {
        if let Some(state) = self.state_after(&parent.digest()) {
            return Some((*state).clone());
        }
        if parent.block().header.height <= lock(&self.finalized_state).1 {
            return None;
        }
        // Walk down to a block whose state is known, then apply upwards.
        let mut missing = vec![parent.block().clone()];
        let (base_digest, base) = loop {
            let block = ancestry.next().await?;
            if let Some(state) = self.state_after(&block.digest()) {
                break (block.digest(), state);
            }
            // At or below the last finalized height and not that block: off the finalized
            // chain, so never valid. (Read afresh: finality may move on meanwhile.)
            if block.block().header.height <= self.height() {
                return None;
            }
            missing.push(block.block().clone());
        };
        let mut state = (*base).clone();
        let mut prev = ledger_lite::BlockHash(base_digest.0);
        for block in missing.iter().rev() {
            state.apply_agreed(block, &prev).ok()?;
            prev = block.hash();
            // Kept, so the next proposal or vote on this branch does not replay it all again.
            self.remember_at(Digest(prev.0), block.header.height, state.clone());
        }
        Some(state)
    }

    /// A finalized block (they come in height order): its state becomes the one everything
    /// starts from, its transactions are no longer pending, older states are forgotten. An error
    /// when it does not apply on the last finalized state: the validators agreed on a block
    /// this node's ledger refuses, and it must stop rather than go on with another state.
    pub(crate) fn finalize(
        &self,
        block: Arc<ChainBlock>,
        proof: Option<&[u8]>,
    ) -> Result<(), ledger_lite::StoreError> {
        let height = block.block().header.height;
        // Held throughout: one block is finalized at a time. The last finalized state is
        // locked only to read and to replace it, never across the store's commit (submissions
        // read it on the relay's async workers).
        let mut finalized = lock(&self.finalized);
        let (last_digest, last_height, last_state) = lock(&self.finalized_state).clone();
        // At least once: a block delivered again (after a restart, say) is taken once.
        if height <= last_height {
            return Ok(());
        }
        // The state after it: known when this validator voted on or built it; else (a block
        // fetched after the fact) applied here, its signatures checked, before the store
        // takes it without checking them again.
        let known = lock(&self.states)
            .get(&block.digest())
            .map(|(_, s)| s.clone());
        let state = match known {
            Some(state) => state,
            None => {
                let mut state = (*last_state).clone();
                state.apply_agreed(block.block(), &ledger_lite::BlockHash(last_digest.0))?;
                Arc::new(state)
            }
        };
        if let Some(store) = &self.store {
            store.commit(block.block(), proof)?;
        }
        *lock(&self.finalized_state) = (block.digest(), height, state);
        let included: std::collections::HashSet<TxHash> =
            block.block().txs.iter().map(SignedTx::hash).collect();
        let state = lock(&self.finalized_state).2.clone();
        // Gone: what went in, and what a nonce already used shuts out for good.
        let mut pending = lock(&self.pending);
        pending.retain(|hash, tx| {
            let next = state.account(&tx.tx.from).map_or(0, |a| a.nonce);
            !included.contains(hash) && tx.tx.nonce >= next
        });
        lock(&self.held).release(&state, &mut pending);
        drop(pending);
        lock(&self.states).retain(|_, (h, _)| *h > height);
        if finalized.len() >= MAX_FINALIZED_KEPT {
            finalized.remove(0);
        }
        finalized.push(block);
        drop(finalized);
        self.on_finalized.notify_waiters();
        Ok(())
    }
}

/// A validator's application: proposes and verifies ledger-lite blocks.
#[derive(Clone)]
pub struct LedgerApp {
    ledger: Arc<Ledger>,
    proposer: Arc<Identity>,
    /// How long after its parent a block is proposed (half of it when transactions
    /// wait); zero: at once.
    interval: std::time::Duration,
    /// Where finalized blocks go to be committed (none: taken at once, in memory).
    finalizer: Option<Arc<crate::finalizer::Finalizer>>,
}

impl LedgerApp {
    /// The application of the validator `proposer` over `ledger`, taking finalized blocks at
    /// once (an in-memory ledger: simulations).
    pub fn new(ledger: Arc<Ledger>, proposer: Identity) -> Self {
        Self {
            ledger,
            proposer: Arc::new(proposer),
            interval: std::time::Duration::ZERO,
            finalizer: None,
        }
    }

    /// Paces proposals: a block comes `interval` after its parent.
    pub fn with_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Waits until a block on `parent` is due: an interval after it, loaded or not (blocks
    /// cost every validator a whole-state root and copies, so under load fewer, fuller blocks
    /// settle more: half the interval made 2.5 times the blocks at 0.65 times the rate).
    async fn pace(&self, clock: &impl Clock, parent: &ChainBlock) {
        let interval = self.interval.as_millis() as u64;
        if interval == 0 {
            return;
        }
        let parent_ms = parent.block().header.time_ms;
        // Never more than an interval from now: a parent stamped ahead (a leader's clock may
        // run up to MAX_CLOCK_AHEAD_MS fast) must not hold the next leader past its timeout.
        let cap = now_ms(clock).saturating_add(interval);
        let due = parent_ms.saturating_add(interval).min(cap);
        loop {
            let now = now_ms(clock);
            if now >= due {
                return;
            }
            let step = (due - now).min(PACE_STEP_MS);
            clock.sleep(std::time::Duration::from_millis(step)).await;
        }
    }

    /// Like [`LedgerApp::new`], committing finalized blocks through `finalizer` (to the
    /// ledger's store, on a thread of their own, off the engine's workers).
    pub fn committing(
        ledger: Arc<Ledger>,
        proposer: Identity,
        finalizer: crate::finalizer::Finalizer,
    ) -> Self {
        Self {
            finalizer: Some(Arc::new(finalizer)),
            ..Self::new(ledger, proposer)
        }
    }
}

impl LedgerApp {
    /// Lets the finalizer read finality proofs from marshal.
    pub(crate) fn attach(&self, marshal: crate::finalizer::Marshal) {
        if let Some(finalizer) = &self.finalizer {
            finalizer.attach(marshal);
        }
    }

    /// The height of the last finalized block its ledger took.
    pub fn height(&self) -> u64 {
        self.ledger.height()
    }

    /// Its ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }
}

fn now_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<E> Application<E> for LedgerApp
where
    E: Rng + Spawner + Metrics + Clock,
{
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = ChainBlock;

    async fn propose(
        &mut self,
        (clock, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<ChainBlock>,
    ) -> Option<ChainBlock> {
        let parent = ancestry.next().await?;
        self.pace(&clock, &parent).await;
        let mut state = self.ledger.state_at(&parent, &mut ancestry).await?;
        let scan = (state.params.max_block_txs as usize).saturating_mul(CANDIDATES_PER_SLOT);
        let candidates = lock(&self.ledger.pending).candidates(scan);
        // Every pending transaction's signature was checked as it came.
        let built = state.build_block_checking(
            candidates,
            now_ms(&clock),
            parent.hash(),
            &self.proposer,
            |_| false,
        );
        // What can never go in goes (a nonce ahead of its turn, or funds, may yet come).
        let never: std::collections::HashSet<TxHash> = built
            .rejected
            .iter()
            .filter(|(_, e)| never_valid(e))
            .map(|(hash, _)| *hash)
            .collect();
        if !never.is_empty() {
            lock(&self.ledger.pending).retain(|hash, _| !never.contains(hash));
        }
        let block = ChainBlock::new(crate::block::unsigned(built.block));
        self.ledger.remember(&block, state);
        Some(block)
    }

    async fn verify(
        &mut self,
        (clock, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<ChainBlock>,
    ) -> bool {
        let me = self.proposer.account_id().short();
        let Some(block) = ancestry.next().await else {
            tracing::debug!(%me, "verify: no block");
            return false;
        };
        let Some(parent) = ancestry.next().await else {
            tracing::debug!(%me, "verify: no parent");
            return false;
        };
        // A block ahead of this clock waits until it is not (a clock may lag; refusing would
        // be for good).
        let ahead = block
            .block()
            .header
            .time_ms
            .saturating_sub(MAX_CLOCK_AHEAD_MS);
        if ahead > now_ms(&clock) {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ahead);
            clock.sleep_until(at).await;
        }
        let Some(mut state) = self.ledger.state_at(&parent, &mut ancestry).await else {
            tracing::debug!(%me, "verify: not on the finalized chain");
            return false;
        };
        // What waits here had its signature checked on arrival: only the rest is checked.
        let known: std::collections::HashSet<TxHash> = {
            let pending = lock(&self.ledger.pending);
            block
                .block()
                .txs
                .iter()
                .map(SignedTx::hash)
                .filter(|h| pending.contains(h))
                .collect()
        };
        let checked = state.apply_agreed_checking(block.block(), &parent.hash(), |t| {
            !known.contains(&t.hash())
        });
        if let Err(e) = checked {
            tracing::debug!(%me, "verify: {e}");
            return false;
        }
        self.ledger.remember(&block, state);
        true
    }
}

impl Reporter for LedgerApp {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Update::Block(block, ack) = activity {
            let height = block.height();
            tracing::debug!(height = height.get(), "finalized");
            if let Some(finalizer) = &self.finalizer {
                if !finalizer.send(block, ack) {
                    tracing::error!(height = height.get(), "the finalizer is gone");
                }
                return Feedback::Ok;
            }
            match self.ledger.finalize(block, None) {
                Ok(()) => ack.acknowledge(),
                // Not acknowledged: marshal stops, and so does this validator.
                Err(e) => tracing::error!(
                    height = height.get(),
                    "a finalized block does not apply: {e}"
                ),
            }
        }
        Feedback::Ok
    }
}
