//! Where blocks come from: the validator produces one from its mempool at every interval; a
//! follower fetches them from its upstream and verifies each before it commits it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ledger_lite::wire::{LedgerRequest, LedgerResponse};
use ledger_lite::{Block, TxError, TxHash};
use top_proto::addr::RelayAddr;
use tracing::{info, warn};

use super::chain::{ChainNode, Inner, Role};
use super::error::{ChainError, ChainResult};
use super::upstream::open_upstream;
use crate::util::unix_now_ms;

/// How long a follower waits before asking again for blocks none of which it could prove yet.
const UNPROVEN_WAIT: Duration = Duration::from_millis(250);
/// While gossip brings blocks: how long without one before the upstream is asked.
const CATCH_UP_AFTER: Duration = Duration::from_secs(3);

impl ChainNode {
    /// Validator: builds, commits and announces one block from the mempool.
    fn produce_block(&self) -> ChainResult<u64> {
        let Role::Validator { identity, .. } = &self.role else {
            return Err(ChainError::NotValidator);
        };
        let mut inner = self.lock();
        let max = inner.ledger.state().params.max_block_txs as usize;
        let candidates = inner.pool.candidates(max);
        let built = inner.ledger.produce(candidates, unix_now_ms(), identity)?;
        let height = built.block.header.height;
        took_block(&mut inner, &built.block, built.rejected);
        drop(inner);
        self.height.send_replace(height);
        Ok(height)
    }

    /// Follower: verifies and commits `block`.
    pub(super) fn apply_block(&self, block: &Block) -> ChainResult<()> {
        let mut inner = self.lock();
        if inner
            .ledger
            .apply(block)
            .map_err(ChainError::BadBlock)?
            .is_some()
        {
            took_block(&mut inner, block, Vec::new());
        }
        let height = inner.ledger.height();
        drop(inner);
        self.height.send_replace(height);
        Ok(())
    }

    /// Runs the validator's block loop or the follower's sync loop until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        match &self.role {
            Role::Validator { interval, .. } => {
                let mut every = tokio::time::interval(*interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    let node = self.clone();
                    match tokio::task::spawn_blocking(move || node.produce_block()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!("block production failed: {e}"),
                        Err(e) => warn!("block production panicked: {e}"),
                    }
                }
            }
            Role::Follower { upstream } => {
                let upstream = upstream.clone();
                tokio::select! {
                    _ = self.follow(upstream) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Role::Consensus { .. } => {
                stop.cancelled().await;
                let service = self
                    .consensus
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(service) = service {
                    // Joins the engine's threads: off the async workers.
                    tokio::task::spawn_blocking(move || service.stop())
                        .await
                        .ok();
                }
            }
        }
    }

    async fn follow(self: &Arc<Self>, upstream: RelayAddr) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.follow_once(&upstream).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    warn!("following the chain from {upstream}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn follow_once(self: &Arc<Self>, upstream: &RelayAddr) -> ChainResult<()> {
        let (_endpoint, _conn, mut rpc) = open_upstream(&self.identity, upstream).await?;
        info!(
            "following the chain from {upstream} at height {}",
            self.height()
        );
        loop {
            let mut wait_ms = 5_000;
            if self.gossip.fresh() {
                // Blocks come by gossip: the upstream is asked only when they stop coming or
                // one shows this node is behind.
                let mut heights = self.subscribe();
                tokio::select! {
                    _ = heights.changed() => continue,
                    _ = self.gossip.behind.notified() => {}
                    _ = tokio::time::sleep(CATCH_UP_AFTER) => {}
                }
                wait_ms = 0;
            }
            let (from, max) = (self.height() + 1, 256);
            if self.finality.is_some() {
                let run = match rpc
                    .call(LedgerRequest::Finalized { from, max, wait_ms })
                    .await?
                {
                    LedgerResponse::Finalized(run) => run,
                    LedgerResponse::Error(e) => return Err(ChainError::Upstream(e)),
                    other => return Err(ChainError::Unexpected(format!("{other:?}"))),
                };
                if run.is_empty() {
                    continue;
                }
                let node = self.clone();
                let applied =
                    tokio::task::spawn_blocking(move || node.apply_finalized_run(&run)).await??;
                if applied == 0 {
                    // Blocks whose proof is yet to come (a later block's will cover them): not
                    // asked for again at once.
                    tokio::time::sleep(UNPROVEN_WAIT).await;
                }
                continue;
            }
            let req = LedgerRequest::Blocks { from, max, wait_ms };
            let blocks = match rpc.call(req).await? {
                LedgerResponse::Blocks(blocks) => blocks,
                LedgerResponse::Error(e) => return Err(ChainError::Upstream(e)),
                other => return Err(ChainError::Unexpected(format!("{other:?}"))),
            };
            if blocks.is_empty() {
                continue;
            }
            let node = self.clone();
            tokio::task::spawn_blocking(move || {
                blocks.iter().try_for_each(|b| node.apply_block(b))
            })
            .await??;
        }
    }
}

/// After `block` is committed: its transactions are remembered as committed and answered,
/// the mempool goes on from the new state (answering what it drops, and what the block
/// builder `rejected`), and forwarded transactions now committed are forgotten.
pub(super) fn took_block(inner: &mut Inner, block: &Block, rejected: Vec<(TxHash, TxError)>) {
    let height = block.header.height;
    let done: HashSet<TxHash> = block.txs.iter().map(|t| t.hash()).collect();
    let Inner {
        ledger,
        pool,
        waiters,
        committed,
        forwarded,
    } = inner;
    for hash in &done {
        committed.put(*hash, height);
        for w in waiters.remove(hash).unwrap_or_default() {
            w.send(Ok(height)).ok();
        }
    }
    let dropped = pool.rebase(ledger.state(), &done);
    for (hash, why) in rejected.into_iter().chain(dropped) {
        for w in waiters.remove(&hash).unwrap_or_default() {
            w.send(Err(format!("dropped before its block: {why}"))).ok();
        }
    }
    forwarded.prune(ledger.state());
}
