//! A network of several validators: `toprelay genesis new` writes its genesis (and, asked, a
//! faucet key beside it); `toprelay genesis use` (or `toprelay init --genesis`) puts it in a
//! relay's data directory. Every relay whose id the genesis names validates; the others follow.

use std::path::Path;

use ledger_lite::{Amount, Genesis, Params};
use top_proto::id::{AccountId, RelayId};
use top_proto::identity::Identity;

use crate::ledger::setup::{DEV_MIN_FEE_UNITS, DEV_MIN_STAKE_TOP};
use crate::node::config::DataDir;
use crate::util::unix_now_ms;

/// TOP each validator starts with (it stakes part of it when it registers).
pub const VALIDATOR_TOP: u128 = 100_000;
/// TOP a network's faucet starts with.
pub const FAUCET_TOP: u128 = 1_000_000_000;
/// Unbonding period of a network's stakes, in blocks, unless chosen.
pub const UNBONDING_BLOCKS: u64 = 1_000;

/// What `toprelay genesis new` is asked for.
#[derive(Debug, Clone)]
pub struct GenesisOptions {
    /// The chain's name (part of what makes its id).
    pub chain_id: String,
    /// Its validators, in order.
    pub validators: Vec<RelayId>,
    /// Whether a faucet hands out test TOP.
    pub faucet: bool,
    /// Blocks a stake takes to unbond.
    pub unbonding_blocks: u64,
    /// How the validator set changes by stake (none: it never does).
    pub epochs: Option<ledger_lite::EpochRule>,
    /// Relays a relay or client given only the genesis joins through.
    pub bootstrap: Vec<top_proto::addr::RelayAddr>,
}

/// Why a genesis cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No validator named.
    #[error("name at least one validator (--validator RELAY_ID)")]
    NoValidator,
    /// The genesis does not make a chain.
    #[error("the genesis is unusable: {0}")]
    Genesis(#[from] ledger_lite::block::GenesisError),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The genesis file does not parse.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        error: serde_json::Error,
    },
    /// The faucet key given is not the genesis's faucet.
    #[error("that key is not this genesis's faucet")]
    NotTheFaucet,
    /// The relay already has another chain.
    #[error("{0} already holds a chain's genesis: a relay belongs to one chain")]
    AlreadyOnChain(String),
}

/// A new genesis for `opts`, with the faucet's key when one is asked for.
pub fn new_genesis(opts: &GenesisOptions) -> Result<(Genesis, Option<Identity>), NetworkError> {
    let validators: Vec<AccountId> = opts
        .validators
        .iter()
        .map(|id| AccountId::from_wire(*id.as_bytes()))
        .collect();
    let first = *validators.first().ok_or(NetworkError::NoValidator)?;
    let faucet = opts.faucet.then(Identity::generate);
    let top = |n| Amount::from_top(n).unwrap_or(Amount::ZERO);
    let mut allocations: Vec<(AccountId, Amount)> = validators
        .iter()
        .map(|v| (*v, top(VALIDATOR_TOP)))
        .collect();
    if let Some(faucet) = &faucet {
        allocations.push((faucet.account_id(), top(FAUCET_TOP)));
    }
    let genesis = Genesis {
        bootstrap: opts.bootstrap.clone(),
        epochs: opts.epochs,
        name: opts.chain_id.clone(),
        time_ms: unix_now_ms(),
        validator: first,
        validators,
        params: Params {
            unbonding_blocks: opts.unbonding_blocks,
            max_block_txs: 10_000,
            min_stake: top(DEV_MIN_STAKE_TOP),
            min_fee: Amount::from_units(DEV_MIN_FEE_UNITS),
        },
        faucet: faucet.as_ref().map(Identity::account_id),
        allocations,
    };
    // Checked now, not at every relay's start.
    genesis.state()?;
    Ok((genesis, faucet))
}

/// Reads and checks a genesis file.
pub fn read_genesis(path: &Path) -> Result<Genesis, NetworkError> {
    let text = std::fs::read_to_string(path)?;
    let genesis: Genesis = serde_json::from_str(&text).map_err(|error| NetworkError::Parse {
        path: path.display().to_string(),
        error,
    })?;
    genesis.state()?;
    Ok(genesis)
}

/// Writes `genesis` to `path` (never over an existing file).
pub fn write_genesis(path: &Path, genesis: &Genesis) -> Result<(), NetworkError> {
    let text = serde_json::to_string_pretty(genesis).map_err(std::io::Error::other)? + "\n";
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(())
}

/// Puts `genesis` in the relay's data directory, with the faucet's key when given (one relay
/// of the network holds it and serves the faucet; others forward faucet requests to their
/// upstream). A relay already on another chain is refused; on this one, nothing changes.
pub fn use_genesis(
    dir: &DataDir,
    genesis: &Genesis,
    faucet_key: Option<&Path>,
) -> Result<(), NetworkError> {
    if dir.genesis().exists() {
        let current = read_genesis(&dir.genesis())?;
        if current.chain_id() != genesis.chain_id() {
            return Err(NetworkError::AlreadyOnChain(dir.0.display().to_string()));
        }
    } else {
        write_genesis(&dir.genesis(), genesis)?;
    }
    if let Some(key) = faucet_key {
        let faucet = Identity::load(key).map_err(std::io::Error::other)?;
        if genesis.faucet != Some(faucet.account_id()) {
            return Err(NetworkError::NotTheFaucet);
        }
        let installed = Identity::load(&dir.faucet_key()).ok();
        if installed.map(|k| k.account_id()) != Some(faucet.account_id()) {
            faucet
                .save(&dir.faucet_key())
                .map_err(std::io::Error::other)?;
        }
    }
    Ok(())
}
