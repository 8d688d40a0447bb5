//! The ledger node embedded in a relay: the validator that produces blocks, or a follower that
//! fetches and verifies them from an upstream relay; both answer queries and take transactions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ledger_lite::wire::{AccountView, LedgerRequest, LedgerResponse, Summary};
use ledger_lite::{
    Amount, Block, BlockReader, ChannelStatus, Genesis, Ledger, Mempool, SignedTx, State, Tx,
    TxHash, TxKind,
};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use top_proto::addr::RelayAddr;
use top_proto::id::AccountId;
use top_proto::identity::Identity;

use crate::ledger::forwarded::Forwarded;
use crate::ledger::upstream::Upstream;

/// Transactions waiting for a block, at most.
const MEMPOOL_CAPACITY: usize = 50_000;
/// Most TOP one faucet request hands out.
const FAUCET_MAX_TOP: u128 = 10_000;
/// How long a follower waits for its own state to reach a block its upstream committed.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// Committed transaction hashes remembered for idempotent submission.
const RECENT_COMMITS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(65_536) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// What this node does for the chain.
pub enum Role {
    /// Produces a block every `interval`.
    Validator {
        /// The validator key (the relay's own).
        identity: Identity,
        /// Block interval.
        interval: Duration,
    },
    /// Follows `upstream`, verifying every block; forwards transactions to it.
    Follower {
        /// The relay blocks come from.
        upstream: RelayAddr,
    },
    /// Runs the consensus engine of a chain of several validators, deciding blocks with the
    /// others in the epochs whose set names it; transactions go into its mempool and to the
    /// other validators, or (outside the set, with an upstream) to `upstream`.
    Consensus {
        /// Where transactions go while this relay is not one of the validators.
        upstream: Option<RelayAddr>,
    },
}

pub(super) struct Inner {
    pub(super) ledger: Ledger,
    pub(super) pool: Mempool,
    pub(super) waiters: HashMap<TxHash, Vec<oneshot::Sender<Result<u64, String>>>>,
    /// Follower: transactions forwarded upstream and not yet seen committed.
    pub(super) forwarded: Forwarded,
    /// Recently committed transactions and their heights: submitting one again answers where
    /// it landed (a client retrying after a lost answer must not see an error).
    pub(super) committed: lru::LruCache<TxHash, u64>,
}

/// A relay's view of the chain.
pub struct ChainNode {
    pub(super) inner: Mutex<Inner>,
    pub(super) height: watch::Sender<u64>,
    pub(super) role: Role,
    pub(super) faucet: Option<Identity>,
    /// The relay's own identity (for following and forwarding).
    pub(super) identity: Identity,
    /// Cancelled when the relay shuts down: every wait on the chain ends then.
    pub(super) stop: CancellationToken,
    /// Follower: the shared connection its forwarded requests go over.
    pub(super) upstream: Option<Upstream>,
    /// Reads committed blocks without the lock.
    pub(super) blocks: BlockReader,
    /// Submitted transactions whose signatures are being checked at once, at most.
    pub(super) verifying: tokio::sync::Semaphore,
    /// The summary of the latest block asked about: it scans the whole state, so once a block.
    pub(super) summary: Mutex<Option<Summary>>,
    /// A chain of several validators: checks the finality proofs of blocks a follower takes.
    pub(super) finality: Option<top_consensus::proof::FinalityCheck>,
    /// Blocks taken from gossip (a follower asks its upstream only when they stop).
    pub gossip: super::gossip_feed::GossipFeed,
    /// A validator of a chain of several: its consensus engine, once started (stopped when
    /// the relay stops).
    pub(super) consensus: Mutex<Option<top_consensus::service::ValidatorService>>,
    /// Where transactions go to be gossiped, once the control plane runs.
    pub(super) tx_gossip: Mutex<Option<super::gossip_out::TxGossipOut>>,
    /// The transaction gossiped first for each account and nonce lately.
    pub(super) seen_nonces: super::gossip_out::SeenNonces,
}

/// How long a validator of several waits for blocks that may bring a transaction's turn.
const NONCE_CATCH_UP: Duration = Duration::from_secs(2);

/// Transactions verified at once (each on a blocking thread).
const CONCURRENT_VERIFICATIONS: usize = 4;

pub use super::error::{ChainError, ChainResult};

impl ChainNode {
    /// Opens the chain store at `path` for `genesis`; waits on the chain end once `stop` is
    /// cancelled.
    pub fn open(
        path: &Path,
        genesis: Genesis,
        role: Role,
        faucet: Option<Identity>,
        identity: Identity,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, ledger_lite::StoreError> {
        let finality = match genesis.is_consensus() {
            true => Some(
                top_consensus::proof::FinalityCheck::new(&genesis)
                    .map_err(|e| ledger_lite::StoreError::Corrupt(e.to_string()))?,
            ),
            false => None,
        };
        let ledger = Ledger::open(path, genesis)?;
        let mut pool = Mempool::new(ledger.state(), MEMPOOL_CAPACITY);
        if let Some(faucet) = &faucet {
            pool.exempt(faucet.account_id());
        }
        let blocks = ledger.reader();
        let (height, _) = watch::channel(ledger.height());
        let upstream = match &role {
            Role::Follower { upstream }
            | Role::Consensus {
                upstream: Some(upstream),
            } => Some(Upstream::new(upstream.clone(), identity.clone())),
            Role::Validator { .. } | Role::Consensus { .. } => None,
        };
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                ledger,
                pool,
                waiters: HashMap::new(),
                forwarded: Forwarded::default(),
                committed: lru::LruCache::new(RECENT_COMMITS),
            }),
            height,
            role,
            faucet,
            identity,
            stop,
            upstream,
            blocks,
            verifying: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
            summary: Mutex::new(None),
            finality,
            gossip: Default::default(),
            consensus: Mutex::new(None),
            tx_gossip: Mutex::new(None),
            seen_nonces: Default::default(),
        }))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node is a validator (alone, or one of several).
    pub fn is_validator(&self) -> bool {
        matches!(self.role, Role::Validator { .. } | Role::Consensus { .. })
    }

    /// A validator of several: the consensus engine it runs.
    pub(super) fn set_consensus(&self, service: top_consensus::service::ValidatorService) {
        *self.consensus.lock().unwrap_or_else(|p| p.into_inner()) = Some(service);
    }

    /// Hands a checked transaction, queued here, to the consensus engine (a validator of
    /// several), which gossips it to the other validators. One the engine can never take
    /// leaves the mempool here too (with what its sender queued after it), and whoever waits
    /// for them is told.
    fn propose(&self, tx: &SignedTx) {
        use top_consensus::app::Admission;
        let admission = match self
            .consensus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(service) => service.submit(tx.clone()),
            None => return,
        };
        if admission != Admission::Refused {
            return;
        }
        let hash = tx.hash();
        let mut inner = self.lock();
        let Inner {
            ledger,
            pool,
            waiters,
            ..
        } = &mut *inner;
        let dropped = pool.rebase(ledger.state(), &std::collections::HashSet::from([hash]));
        for w in waiters.remove(&hash).unwrap_or_default() {
            w.send(Err("the validators' pool does not take it".into()))
                .ok();
        }
        for (hash, why) in dropped {
            for w in waiters.remove(&hash).unwrap_or_default() {
                w.send(Err(format!("dropped before its block: {why}"))).ok();
            }
        }
    }

    /// Height of the last committed block.
    pub fn height(&self) -> u64 {
        *self.height.borrow()
    }

    /// Notified on every new committed block.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.height.subscribe()
    }

    /// Reads the committed state.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(self.lock().ledger.state())
    }

    /// The genesis.
    pub fn genesis(&self) -> Genesis {
        self.lock().ledger.genesis().clone()
    }

    /// The chain at a glance, computed at most once per block (it scans the whole state).
    pub fn summary(&self) -> Summary {
        let mut cached = self.summary.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.lock().ledger.head();
        if let Some(summary) = cached.as_ref().filter(|s| s.head == head) {
            return summary.clone();
        }
        let summary = self.compute_summary();
        *cached = Some(summary.clone());
        summary
    }

    fn compute_summary(&self) -> Summary {
        let inner = self.lock();
        let state = inner.ledger.state();
        Summary {
            name: inner.ledger.genesis().name.clone(),
            chain: state.chain,
            height: state.height,
            head: inner.ledger.head(),
            time_ms: state.time_ms,
            genesis_supply: state.genesis_supply,
            total_supply: state.total_supply(),
            burned: state.burned,
            accounts: state.accounts().count() as u64,
            channels: state
                .channels()
                .filter(|(_, c)| c.status != ChannelStatus::Closed)
                .count() as u64,
            invariant_ok: state.check_invariant().is_ok(),
            // A follower forwards faucet requests to its validator.
            faucet: inner.ledger.genesis().faucet.is_some(),
            unbonding_blocks: state.params.unbonding_blocks,
            min_stake: state.params.min_stake,
            min_fee: state.params.min_fee,
            epoch: state.epoch,
            validators: state.validators.clone(),
            finalized: state.height,
        }
    }

    /// One account, with the next nonce counting waiting transactions (a follower: those it
    /// forwarded upstream).
    pub fn account(&self, id: &AccountId) -> AccountView {
        // Read before the lock (it takes it too).
        let local = self.submits_locally();
        let inner = self.lock();
        let state = inner.ledger.state();
        let pooled = inner.pool.pending().account(id).map_or(0, |a| a.nonce);
        let next_nonce = match local {
            true => pooled,
            // What went upstream counts too (a relay running the engine outside the set).
            false => inner.forwarded.next_nonce(state, id).max(pooled),
        };
        AccountView {
            account: state.account(id).cloned(),
            next_nonce,
            height: inner.ledger.height(),
        }
    }

    /// The committed block at `height` (read without the chain's lock).
    pub fn block(&self, height: u64) -> ChainResult<Option<Block>> {
        Ok(self.blocks.block(height)?)
    }

    /// Committed blocks from `from`, at most `max`, waiting up to `wait` for the first one.
    pub async fn blocks(&self, from: u64, max: u32, wait: Duration) -> ChainResult<Vec<Block>> {
        let top = self.wait_for_blocks(from, max, wait).await;
        if top < from {
            return Ok(Vec::new());
        }
        // Up to 1024 blocks from disk: off the async workers, and without the chain's lock.
        let reader = self.blocks.clone();
        // Bounded by bytes as well as count: the answer must fit one ledger frame.
        let budget = ledger_lite::wire::MAX_LEDGER_FRAME / 2;
        Ok(tokio::task::spawn_blocking(move || reader.blocks(from, top, budget)).await??)
    }

    /// Waits up to `wait` for a block at `from`; the last height of at most `max` (≤ 1024)
    /// blocks from `from` there are now (below `from`: none).
    pub(super) async fn wait_for_blocks(&self, from: u64, max: u32, wait: Duration) -> u64 {
        let mut rx = self.subscribe();
        if self.height() < from {
            tokio::select! {
                _ = tokio::time::timeout(wait, rx.wait_for(|h| *h >= from)) => {}
                _ = self.stop.cancelled() => {}
            }
        }
        self.height()
            .min(from.saturating_add(u64::from(max.clamp(1, 1024))) - 1)
    }

    /// Submits a transaction: into this validator's mempool, or upstream from a follower.
    /// With `wait`, returns the height of the block that committed it, once this node's own
    /// state holds that block (so what the caller reads here next already shows it).
    /// Submitting a transaction that is already waiting waits for it (submission is idempotent).
    pub async fn submit(&self, tx: SignedTx, wait: bool) -> ChainResult<(TxHash, Option<u64>)> {
        if !self.submits_locally() {
            return self.forward(tx, wait).await;
        }
        if matches!(self.role, Role::Consensus { .. }) {
            self.await_turn(&tx).await;
        }
        self.submit_now(tx, wait).await
    }

    /// Like [`ChainNode::submit`] on a node that submits locally, without waiting for a
    /// transaction's turn.
    pub(super) async fn submit_now(
        &self,
        tx: SignedTx,
        wait: bool,
    ) -> ChainResult<(TxHash, Option<u64>)> {
        // Cheap checks under the lock, signatures off it and off the async workers,
        // then the checked transaction into the mempool.
        let queued = {
            let mut inner = self.lock();
            let hash = tx.hash();
            if let Some(&height) = inner.committed.get(&hash) {
                return Ok((hash, Some(height)));
            }
            if inner.pool.contains(&hash) {
                // Already queued (and verified): submission is idempotent.
                let queued = enqueue(&mut inner, tx.clone(), wait, true)?;
                drop(inner);
                self.propose(&tx);
                Some(queued)
            } else if inner.pool.is_full() {
                return Err(ledger_lite::SubmitError::Full(inner.pool.capacity()).into());
            } else {
                inner
                    .pool
                    .pending()
                    .precheck(&tx)
                    .map_err(ledger_lite::SubmitError::Invalid)?;
                None
            }
        };
        if let Some(queued) = queued {
            return self.committed_height(queued).await;
        }
        // A bounded number of verifications at once, so a flood of valid-looking
        // transactions queues here instead of filling the blocking pool.
        let _turn = self
            .verifying
            .acquire()
            .await
            .map_err(|_| ChainError::Stopped)?;
        let tx =
            tokio::task::spawn_blocking(move || ledger_lite::verify::verify_tx(&tx).map(|()| tx))
                .await
                .map_err(|_| ChainError::Stopped)?
                .map_err(ledger_lite::SubmitError::Invalid)?;
        let queued = enqueue(&mut self.lock(), tx.clone(), wait, true)?;
        self.propose(&tx);
        self.committed_height(queued).await
    }

    /// Forwards `tx` to the upstream (a follower, or a relay running the engine outside the
    /// validator set); with `wait`, waits for this node's state to hold its block as well.
    async fn forward(&self, tx: SignedTx, wait: bool) -> ChainResult<(TxHash, Option<u64>)> {
        let (from, nonce) = (tx.tx.from, tx.tx.nonce);
        if wait {
            // By gossip first (the upstream only if no block takes it in time).
            if let Some(height) = self.submit_by_gossip(&tx).await? {
                self.gossip.tx_sent(true);
                return Ok((tx.hash(), Some(height)));
            }
        }
        self.gossip.tx_sent(false);
        let resp = self
            .upstream_call(LedgerRequest::Submit { tx, wait })
            .await?;
        let (hash, height) = match resp {
            LedgerResponse::Submitted { hash, height } => (hash, height),
            LedgerResponse::Error(e) => return Err(ChainError::Upstream(e)),
            other => return Err(ChainError::Unexpected(format!("{other:?}"))),
        };
        {
            let mut inner = self.lock();
            let local = inner.ledger.height();
            inner.forwarded.record(from, nonce, local);
        }
        if let Some(height) = height {
            self.wait_height(height).await;
        }
        Ok((hash, height))
    }

    /// Whether transactions go into this node's own mempool (a validator: alone, or of the
    /// current epoch's set, or running the engine with nowhere else to send them) rather than
    /// upstream.
    pub(super) fn submits_locally(&self) -> bool {
        match &self.role {
            Role::Validator { .. } | Role::Consensus { upstream: None } => true,
            Role::Consensus { upstream: Some(_) } => {
                let me = self.identity.account_id();
                self.with_state(|s| s.validators.contains(&me))
            }
            Role::Follower { .. } => false,
        }
    }

    /// A validator of several: a transaction whose nonce is ahead of what this node has seen
    /// may follow one just finalized through another validator, in a block this node is about
    /// to commit; it waits for that (at most [`NONCE_CATCH_UP`]) rather than refuse it.
    async fn await_turn(&self, tx: &SignedTx) {
        let deadline = tokio::time::Instant::now() + NONCE_CATCH_UP;
        let mut blocks = self.subscribe();
        loop {
            let next = {
                let inner = self.lock();
                inner
                    .pool
                    .pending()
                    .account(&tx.tx.from)
                    .map_or(0, |a| a.nonce)
            };
            if tx.tx.nonce <= next {
                return;
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, blocks.changed()) => {
                    if !matches!(changed, Ok(Ok(()))) {
                        return;
                    }
                }
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Validator: waits for the block that commits a queued transaction.
    async fn committed_height(&self, queued: Queued) -> ChainResult<(TxHash, Option<u64>)> {
        let (hash, rx) = match queued {
            Queued::Committed(hash, height) => return Ok((hash, Some(height))),
            Queued::Waiting(hash, None) => return Ok((hash, None)),
            Queued::Waiting(hash, Some(rx)) => (hash, rx),
        };
        let height = tokio::select! {
            r = rx => r.map_err(|_| ChainError::Stopped)?.map_err(ChainError::Dropped)?,
            _ = self.stop.cancelled() => return Err(ChainError::Stopped),
        };
        Ok((hash, Some(height)))
    }

    /// Waits until this node's state reaches `height` (bounded: a follower that cannot catch up
    /// answers from the state it has).
    async fn wait_height(&self, height: u64) {
        let mut rx = self.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|h| *h >= height)) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Signs `kind` as `identity` with its next nonce and submits it.
    pub async fn submit_own(
        &self,
        identity: &Identity,
        kind: TxKind,
        wait: bool,
    ) -> ChainResult<(TxHash, Option<u64>)> {
        self.submit_own_tx(identity, kind, wait)
            .await
            .map(|(_, hash, height)| (hash, height))
    }

    /// Like [`ChainNode::submit_own`], also returning the signed transaction (to show it to
    /// another relay, which may submit it again: a duplicate answers where it landed).
    pub async fn submit_own_tx(
        &self,
        identity: &Identity,
        kind: TxKind,
        wait: bool,
    ) -> ChainResult<(SignedTx, TxHash, Option<u64>)> {
        let from = identity.account_id();
        // Parameters are fixed at genesis: every node knows the minimum fee.
        let sign = |(chain, fee), nonce| {
            Tx {
                chain,
                from,
                nonce,
                fee,
                kind,
            }
            .sign(identity)
        };
        if self.submits_locally() {
            // Nonce, signature and queueing under one lock: concurrent calls get consecutive
            // nonces.
            let queued = {
                let mut inner = self.lock();
                let nonce = inner.pool.pending().account(&from).map_or(0, |a| a.nonce);
                let state = inner.ledger.state();
                let tx = sign((state.chain, state.params.min_fee), nonce);
                (tx.clone(), enqueue(&mut inner, tx, wait, false)?)
            };
            let (tx, queued) = queued;
            self.propose(&tx);
            let (hash, height) = self.committed_height(queued).await?;
            return Ok((tx, hash, height));
        }
        let nonce = match self.upstream_call(LedgerRequest::Account(from)).await? {
            LedgerResponse::Account(view) => view.next_nonce,
            other => return Err(ChainError::Unexpected(format!("{other:?}"))),
        };
        let tx = sign(self.with_state(|s| (s.chain, s.params.min_fee)), nonce);
        let (hash, height) = self.submit(tx.clone(), wait).await?;
        Ok((tx, hash, height))
    }

    /// Dev chains: sends `amount` from the faucet to `to`, once committed. A follower forwards
    /// the request to its validator (which holds the faucet key).
    pub async fn faucet(
        &self,
        to: AccountId,
        amount: Amount,
    ) -> ChainResult<(TxHash, Option<u64>)> {
        if self.faucet.is_none() && !self.submits_locally() {
            if self.lock().ledger.genesis().faucet.is_none() {
                return Err(ChainError::NoFaucet);
            }
            let resp = self
                .upstream_call(LedgerRequest::Faucet { to, amount })
                .await?;
            return match resp {
                LedgerResponse::Submitted { hash, height } => {
                    if let Some(height) = height {
                        self.wait_height(height).await;
                    }
                    Ok((hash, height))
                }
                LedgerResponse::Error(e) => Err(ChainError::Upstream(e)),
                other => Err(ChainError::Unexpected(format!("{other:?}"))),
            };
        }
        let Some(faucet) = &self.faucet else {
            return Err(ChainError::NoFaucet);
        };
        let max = Amount::from_top(FAUCET_MAX_TOP).unwrap_or(Amount::ZERO);
        if amount > max {
            return Err(ChainError::FaucetLimit(max));
        }
        self.submit_own(faucet, TxKind::Transfer { to, amount }, true)
            .await
    }

    /// A follower's request to its upstream (ends when the relay stops).
    async fn upstream_call(&self, req: LedgerRequest) -> ChainResult<LedgerResponse> {
        let Some(upstream) = &self.upstream else {
            return Err(ChainError::NoUpstream);
        };
        tokio::select! {
            resp = upstream.call(req) => resp,
            _ = self.stop.cancelled() => Err(ChainError::Stopped),
        }
    }

    /// Answers one request from a client or follower.
    pub async fn handle(&self, req: LedgerRequest) -> LedgerResponse {
        match req {
            LedgerRequest::Summary => LedgerResponse::Summary(self.summary()),
            LedgerRequest::Account(id) => LedgerResponse::Account(self.account(&id)),
            LedgerRequest::Channel(id) => {
                LedgerResponse::Channel(self.with_state(|s| s.channel(&id).cloned()))
            }
            LedgerRequest::Grant(app, user) => {
                LedgerResponse::Grant(self.with_state(|s| s.grant(&app, &user).cloned()))
            }
            LedgerRequest::Genesis => LedgerResponse::Genesis(self.genesis()),
            LedgerRequest::Relays { after } => LedgerResponse::Relays(self.with_state(|s| {
                s.relays_after(after.as_ref(), ledger_lite::wire::MAX_RELAYS_PER_PAGE)
                    .into_iter()
                    .map(|(id, stake, record)| ledger_lite::wire::RelayEntry { id, stake, record })
                    .collect()
            })),
            LedgerRequest::Blocks { from, max, wait_ms } => {
                let wait = Duration::from_millis(u64::from(wait_ms.min(30_000)));
                match self.blocks(from, max, wait).await {
                    Ok(blocks) => LedgerResponse::Blocks(blocks),
                    Err(e) => LedgerResponse::Error(e.to_string()),
                }
            }
            LedgerRequest::Finalized { from, max, wait_ms } => {
                let wait = Duration::from_millis(u64::from(wait_ms.min(30_000)));
                match self.finalized_blocks(from, max, wait).await {
                    Ok(blocks) => LedgerResponse::Finalized(blocks),
                    Err(e) => LedgerResponse::Error(e.to_string()),
                }
            }
            LedgerRequest::Submit { tx, wait } => match self.submit(tx, wait).await {
                Ok((hash, height)) => LedgerResponse::Submitted { hash, height },
                Err(e) => LedgerResponse::Error(e.to_string()),
            },
            LedgerRequest::Faucet { to, amount } => match self.faucet(to, amount).await {
                Ok((hash, height)) => LedgerResponse::Submitted { hash, height },
                Err(e) => LedgerResponse::Error(e.to_string()),
            },
        }
    }
}

/// Where a transaction handed to the validator stands.
enum Queued {
    /// Committed lately, at this height.
    Committed(TxHash, u64),
    /// In the mempool; with a receiver of its height if the caller waits for it.
    Waiting(TxHash, Option<oneshot::Receiver<Result<u64, String>>>),
}

/// Validator: queues `tx` (submitting one already queued or lately committed is no error).
fn enqueue(inner: &mut Inner, tx: SignedTx, wait: bool, verified: bool) -> ChainResult<Queued> {
    let hash = tx.hash();
    if let Some(&height) = inner.committed.get(&hash) {
        return Ok(Queued::Committed(hash, height));
    }
    let submitted = if verified {
        inner.pool.submit_verified(tx)
    } else {
        inner.pool.submit(tx)
    };
    let hash = match submitted {
        Ok(hash) | Err(ledger_lite::SubmitError::Duplicate(hash)) => hash,
        Err(e) => return Err(e.into()),
    };
    if !wait {
        return Ok(Queued::Waiting(hash, None));
    }
    let (tx, rx) = oneshot::channel();
    inner.waiters.entry(hash).or_default().push(tx);
    Ok(Queued::Waiting(hash, Some(rx)))
}
