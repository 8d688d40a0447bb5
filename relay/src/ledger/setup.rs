//! Where a relay's chain comes from: a dev genesis made by `toprelay init --dev`, or the genesis
//! of the upstream relay it follows.

use std::sync::Arc;
use std::time::Duration;

use ledger_lite::{Amount, Genesis, Params};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use tracing::{info, warn};

use super::ChainSlot;
use crate::ledger::chain::{ChainNode, Role};
use crate::ledger::upstream::fetch_genesis;
use crate::node::config::DataDir;
use crate::node::core::Core;
use crate::util::unix_now_ms;

/// TOP the dev faucet starts with.
pub const DEV_FAUCET_TOP: u128 = 1_000_000_000;
/// TOP the dev validator relay starts with (enough to stake).
pub const DEV_RELAY_TOP: u128 = 100_000;
/// Unbonding period of dev chains, in blocks.
pub const DEV_UNBONDING_BLOCKS: u64 = 10;
/// A dev chain's minimum transaction fee, in base units (0.001 TOP).
pub const DEV_MIN_FEE_UNITS: u128 = 1_000_000;
/// A dev chain's minimum relay stake, in TOP.
pub const DEV_MIN_STAKE_TOP: u128 = 100;

/// Writes a dev chain for `relay`: a faucet key and a genesis funding the faucet and the relay.
pub fn create_dev_chain(dir: &DataDir, relay: &Identity) -> std::io::Result<Genesis> {
    let faucet = Identity::generate();
    faucet
        .save(&dir.faucet_key())
        .map_err(std::io::Error::other)?;
    let top = |n| Amount::from_top(n).unwrap_or(Amount::ZERO);
    let genesis = Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: format!("top-dev-{}", relay.relay_id().short()),
        time_ms: unix_now_ms(),
        validator: relay.account_id(),
        validators: vec![],
        params: Params {
            unbonding_blocks: DEV_UNBONDING_BLOCKS,
            max_block_txs: 10_000,
            min_stake: Amount::from_top(DEV_MIN_STAKE_TOP).unwrap_or(Amount::ZERO),
            min_fee: Amount::from_units(DEV_MIN_FEE_UNITS),
        },
        faucet: Some(faucet.account_id()),
        allocations: vec![
            (faucet.account_id(), top(DEV_FAUCET_TOP)),
            (relay.account_id(), top(DEV_RELAY_TOP)),
        ],
    };
    save_genesis(dir, &genesis)?;
    Ok(genesis)
}

fn save_genesis(dir: &DataDir, genesis: &Genesis) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(genesis).map_err(std::io::Error::other)?;
    std::fs::write(dir.genesis(), text + "\n")
}

fn load_genesis(dir: &DataDir) -> std::io::Result<Option<Genesis>> {
    match std::fs::read_to_string(dir.genesis()) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.genesis().display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Called once the chain node is open (the node starts what needs the chain).
pub type OnOpen = Box<dyn FnOnce() + Send>;

/// Opens the relay's chain into `chain`, or starts fetching the genesis to open it later;
/// `on_open` runs once it is open. Returns whether a chain will open (a genesis, or an upstream
/// to fetch one from).
pub fn start_chain(
    core: &Arc<Core>,
    chain: &ChainSlot,
    dir: &DataDir,
    on_open: OnOpen,
) -> Result<bool, crate::RelayError> {
    let upstream = core
        .config
        .ledger
        .upstream
        .clone()
        .or_else(|| core.config.peers.first().cloned())
        .or_else(|| core.config.control.bootstrap.first().cloned());
    match load_genesis(dir)? {
        Some(genesis) => {
            // Given only a genesis: a bootstrap relay it lists is the upstream, a validator
            // first (followers of followers could end up following each other).
            let upstream = upstream.or_else(|| {
                let me = core.identity.relay_id();
                let relays = core.config.control.bootstrap_relays(&genesis, &me);
                let validators = genesis.validator_set();
                let validates =
                    |r: &RelayAddr| validators.iter().any(|v| v.as_bytes() == r.id.as_bytes());
                let validator = relays.iter().find(|r| validates(r)).cloned();
                validator.or_else(|| relays.into_iter().next())
            });
            open_chain(core, chain, dir, genesis, upstream, on_open).map(|()| true)
        }
        None => {
            let Some(upstream) = upstream else {
                info!("no genesis and no peer: running without a chain (no billing)");
                return Ok(false);
            };
            let (core2, dir2, chain2) = (core.clone(), dir.clone(), chain.clone());
            core.tasks.spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let fetched = tokio::select! {
                        g = fetch_genesis(&core2.identity, &upstream) => g,
                        _ = core2.shutdown.cancelled() => return,
                    };
                    match fetched {
                        Ok(genesis) if genesis.is_consensus() => {
                            // Its validators decide which blocks are final: taken from a peer,
                            // that peer would choose them.
                            warn!(
                                "{upstream} serves a chain of several validators: give this relay \
                                 its genesis with `toprelay genesis use`"
                            );
                            return;
                        }
                        Ok(genesis) => {
                            let opened = save_genesis(&dir2, &genesis)
                                .map_err(crate::RelayError::from)
                                .and_then(|()| {
                                    let upstream = Some(upstream.clone());
                                    open_chain(&core2, &chain2, &dir2, genesis, upstream, on_open)
                                });
                            if let Err(e) = opened {
                                warn!("cannot open the chain: {e}");
                            }
                            return;
                        }
                        Err(e) => warn!("fetching the genesis from {upstream}: {e}"),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
            Ok(true)
        }
    }
}

fn open_chain(
    core: &Arc<Core>,
    chain: &ChainSlot,
    dir: &DataDir,
    genesis: Genesis,
    upstream: Option<RelayAddr>,
    on_open: OnOpen,
) -> Result<(), crate::RelayError> {
    let me = core.identity.account_id();
    let role = if genesis.is_consensus() {
        // A genesis validator, or (where the set changes by stake) a relay offering to be one.
        let validates = genesis.epochs.is_some() && core.config.ledger.validate;
        if genesis.validators.contains(&me) || validates {
            Role::Consensus { upstream }
        } else {
            match upstream {
                Some(upstream) => Role::Follower { upstream },
                None => {
                    warn!("not a validator of this chain and no upstream is configured: no chain");
                    return Ok(());
                }
            }
        }
    } else if genesis.validator == me {
        Role::Validator {
            identity: core.identity.clone(),
            interval: Duration::from_millis(core.config.ledger.block_interval_ms),
        }
    } else {
        match upstream {
            Some(upstream) => Role::Follower { upstream },
            None => {
                warn!("genesis names another validator and no upstream is configured: no chain");
                return Ok(());
            }
        }
    };
    let faucet = match (&role, dir.faucet_key().exists()) {
        (Role::Validator { .. } | Role::Consensus { .. }, true) => {
            Some(Identity::load(&dir.faucet_key())?)
        }
        _ => None,
    };
    let consensus = matches!(role, Role::Consensus { .. });
    let node = ChainNode::open(
        &dir.chain(),
        genesis.clone(),
        role,
        faucet,
        core.identity.clone(),
        core.shutdown.clone(),
    )?;
    if consensus {
        let service = crate::ledger::consensus::start_validator(&node, core, dir, &genesis)?;
        node.set_consensus(service);
    }
    info!(
        validator = node.is_validator(),
        height = node.height(),
        "chain open"
    );
    if chain.set(node.clone()).is_ok() {
        core.tasks.spawn(node.run(core.shutdown.clone()));
        on_open();
    }
    Ok(())
}
