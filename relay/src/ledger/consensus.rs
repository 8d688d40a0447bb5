//! A chain of several validators in a relay. A validator runs the consensus engine
//! ([`top_consensus::service::ValidatorService`]) and commits what the validators finalize into
//! its chain store, with each block's finality proof beside it; a follower takes a block only
//! with a proof that the chain's validators finalized it (or a later block that has one).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ledger_lite::wire::FinalizedBlock;
use ledger_lite::{Block, BlockHash, Genesis, State, StoreError};
use top_consensus::misbehaviour::{Misbehaviour, Report};
use top_consensus::service::{ServiceConfig, ValidatorService};
use top_consensus::store::ChainStore;
use top_proto::id::AccountId;
use tracing::warn;

use super::chain::ChainNode;
use super::error::{ChainError, ChainResult};
use super::production::took_block;
use crate::node::config::DataDir;
use crate::node::core::Core;

impl ChainStore for ChainNode {
    fn last(&self) -> (BlockHash, u64, State) {
        let inner = self.lock();
        (
            inner.ledger.head(),
            inner.ledger.height(),
            inner.ledger.state().clone(),
        )
    }

    fn commit(&self, block: &Block, proof: Option<&[u8]>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.ledger.commit_verified(block, proof)?.is_some() {
            took_block(&mut inner, block, Vec::new());
        }
        let height = inner.ledger.height();
        drop(inner);
        self.height.send_replace(height);
        Ok(())
    }

    fn hash_at(&self, height: u64) -> Option<BlockHash> {
        Some(self.block(height).ok()??.hash())
    }
}

impl ChainNode {
    /// Follower of a chain of several validators: checks and commits a run of blocks from its
    /// upstream. Each block needs its own finality proof, or a later block in the run with one
    /// (whose parent hashes commit to it); blocks after the last proven one wait for the next
    /// fetch. A proof that does not verify refuses the whole run.
    pub fn apply_finalized_run(&self, run: &[FinalizedBlock]) -> ChainResult<usize> {
        let Some(check) = &self.finality else {
            return Err(ChainError::NotValidator);
        };
        // Cheap checks first: the run must be a chain of parent hashes.
        for pair in run.windows(2) {
            if pair[1].block.header.prev != pair[0].block.hash() {
                return Err(ChainError::BadBlock(StoreError::Block(
                    ledger_lite::BlockError::WrongPrev(pair[0].block.hash()),
                )));
            }
        }
        // A proof is checked against the validators of its block's epoch: those the state
        // before the block names. Taken one epoch at a time, that is this node's state: blocks
        // past its epoch's last one wait until that one is in.
        let (epoch, validators, epoch_end) = self.with_state(|s| {
            let end = s.epochs.and_then(|rule| rule.last_of(s.epoch));
            (s.epoch, s.validators.clone(), end)
        });
        let run = match epoch_end {
            Some(last) => &run[..run.partition_point(|e| e.block.header.height <= last)],
            None => run,
        };
        let mut proven = None;
        for (i, entry) in run.iter().enumerate().rev() {
            if let Some(proof) = &entry.proof {
                check.check((epoch, &validators), &entry.block, proof)?;
                proven = Some(i);
                break;
            }
        }
        let Some(last) = proven else {
            return Ok(0);
        };
        let mut applied = 0;
        for (i, entry) in run[..=last].iter().enumerate() {
            // Only the proof checked is kept (and served on): the others were not.
            let proof = if i == last {
                entry.proof.as_deref()
            } else {
                None
            };
            // The lock is taken block by block: queries and submissions go on meanwhile.
            let mut inner = self.lock();
            let taken = inner
                .ledger
                .apply_finalized(&entry.block, proof)
                .map_err(ChainError::BadBlock)?;
            if taken.is_some() {
                took_block(&mut inner, &entry.block, Vec::new());
                applied += 1;
            }
            let height = inner.ledger.height();
            drop(inner);
            self.height.send_replace(height);
        }
        Ok(applied)
    }

    /// Committed blocks from `from` with their finality proofs, at most `max`, waiting up to
    /// `wait` for the first one.
    pub async fn finalized_blocks(
        &self,
        from: u64,
        max: u32,
        wait: Duration,
    ) -> ChainResult<Vec<FinalizedBlock>> {
        let top = self.wait_for_blocks(from, max, wait).await;
        if top < from {
            return Ok(Vec::new());
        }
        let reader = self.blocks.clone();
        let budget = ledger_lite::wire::MAX_LEDGER_FRAME / 2;
        Ok(tokio::task::spawn_blocking(move || reader.finalized(from, top, budget)).await??)
    }
}

/// How long a leader has to propose, beyond the block interval it may wait for
/// transactions.
const LEADER_GRACE: Duration = Duration::from_secs(2);

/// Starts this relay's validator of a chain of several, committing into `node`.
pub(super) fn start_validator(
    node: &Arc<ChainNode>,
    core: &Core,
    dir: &DataDir,
    genesis: &Genesis,
) -> Result<ValidatorService, crate::RelayError> {
    let port = core.endpoint.local_addr()?.port();
    let listen = SocketAddr::new(core.config.listen.ip(), port);
    let interval = Duration::from_millis(core.config.ledger.block_interval_ms);
    let config = ServiceConfig {
        identity: core.identity.clone(),
        validators: validator_addrs(core, genesis),
        listen,
        genesis: genesis.clone(),
        storage: dir.consensus(),
        chain: Some(node.clone() as Arc<dyn ChainStore>),
        leader_timeout: interval + LEADER_GRACE,
        block_interval: interval,
        report: misbehaviour_counter(core.metrics.clone()),
    };
    ValidatorService::start(config)
        .map_err(|e| crate::RelayError::Io(std::io::Error::other(e.to_string())))
}

/// Where the consensus transports this relay knows of listen: its own, and its configured
/// peers' (on the port number of a relay's QUIC address, over TCP). Validators not among them
/// are found in the registry when their epoch comes; a genesis validator known nowhere is
/// warned about (it cannot vote with this relay until it registers).
fn validator_addrs(core: &Core, genesis: &Genesis) -> Vec<(AccountId, SocketAddr)> {
    let me = core.identity.account_id();
    let port = core.endpoint.local_addr().map_or(0, |a| a.port());
    let mut known = vec![(me, SocketAddr::new(core.config.listen.ip(), port))];
    for peer in core
        .config
        .peers
        .iter()
        .chain(core.config.ledger.upstream.iter())
    {
        let id = AccountId::from_wire(*peer.id.as_bytes());
        let addr = peer
            .host_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        if let Some(addr) = addr
            && !known.iter().any(|(k, _)| *k == id)
        {
            known.push((id, addr));
        }
    }
    for id in &genesis.validators {
        if !known.iter().any(|(k, _)| k == id) {
            warn!(validator = %id, "no configured address for a validator (the registry's is used)");
        }
    }
    known
}

/// Counts other validators' bad messages on `/metrics`.
fn misbehaviour_counter(metrics: Arc<crate::node::metrics::Metrics>) -> Report {
    Arc::new(move |seen| {
        let counter = match seen {
            Misbehaviour::PeerBlocked => &metrics.consensus_peers_blocked,
            Misbehaviour::MalformedBatch | Misbehaviour::ForgedTx => &metrics.consensus_bad_gossip,
        };
        counter.inc();
    })
}
