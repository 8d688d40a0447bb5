//! Genesis, blocks and their hashes: what the validator signs and followers check.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;
use top_proto::identity::{Identity, verify};

use crate::amount::Amount;
use crate::state::{Params, State};
use crate::tx::{ChainId, SignedTx};

/// A block's hash: the hash of its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockHash(pub [u8; 32]);

impl std::fmt::Display for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The most validators a chain names.
pub const MAX_VALIDATORS: usize = 128;

/// How a chain starts: its parameters, its validator and who holds the first tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// A human name ("top-dev-…").
    pub name: String,
    /// Genesis time, unix milliseconds.
    pub time_ms: u64,
    /// The account whose signature makes a block valid (a single-validator chain; on a chain
    /// of several validators, the first of them, and no signature makes a block valid).
    pub validator: AccountId,
    /// The validators agreeing on blocks through consensus (a finality proof makes a block
    /// valid); empty: a single-validator chain.
    #[serde(default)]
    pub validators: Vec<AccountId>,
    /// Fixed parameters.
    pub params: Params,
    /// On dev chains, the account the validator hands out tokens from.
    pub faucet: Option<AccountId>,
    /// Opening balances; their sum is the genesis supply.
    pub allocations: Vec<(AccountId, Amount)>,
    /// On a chain of several validators, how the set changes by stake (none: `validators`
    /// stay the validators for good).
    #[serde(default)]
    pub epochs: Option<crate::epochs::EpochRule>,
    /// Relays to join the network through (`ID@HOST:PORT`): a relay or client given only the
    /// genesis finds the rest through them.
    #[serde(default)]
    pub bootstrap: Vec<top_proto::addr::RelayAddr>,
}

/// A genesis as stores made before bootstrap lists hold it (postcard has no defaults).
#[derive(Deserialize)]
struct GenesisWithoutBootstrap {
    name: String,
    time_ms: u64,
    validator: AccountId,
    validators: Vec<AccountId>,
    params: Params,
    faucet: Option<AccountId>,
    allocations: Vec<(AccountId, Amount)>,
    epochs: Option<crate::epochs::EpochRule>,
}

impl Genesis {
    /// Decodes a stored genesis, of this version or from before bootstrap lists.
    pub fn from_stored(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let old: GenesisWithoutBootstrap = postcard::from_bytes(bytes).map_err(|_| e)?;
            Ok(Self {
                name: old.name,
                time_ms: old.time_ms,
                validator: old.validator,
                validators: old.validators,
                params: old.params,
                faucet: old.faucet,
                allocations: old.allocations,
                epochs: old.epochs,
                bootstrap: Vec::new(),
            })
        })
    }
}

/// Why a genesis is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Allocations overflow.
    #[error("genesis allocations overflow")]
    Overflow,
    /// One account allocated twice.
    #[error("genesis allocates {0} twice")]
    Duplicate(AccountId),
    /// Parameters out of range.
    #[error("genesis parameters: {0}")]
    Params(&'static str),
}

/// Most bootstrap relays a genesis lists.
pub const MAX_BOOTSTRAP: usize = 64;

impl Genesis {
    /// The chain id: a hash of the whole genesis, so two different geneses never share one.
    pub fn chain_id(&self) -> ChainId {
        // The fields before `epochs` as they always were encoded; the rule only when there is
        // one (so chains without epochs keep their ids).
        let head = (
            &self.name,
            self.time_ms,
            &self.validator,
            &self.validators,
            &self.params,
            &self.faucet,
            &self.allocations,
        );
        let mut bytes = postcard::to_stdvec(&head).unwrap_or_default();
        if let Some(rule) = &self.epochs {
            bytes.extend(postcard::to_stdvec(rule).unwrap_or_default());
        }
        // Likewise the bootstrap relays (a list told by a peer is the chain's or no chain's).
        if !self.bootstrap.is_empty() {
            bytes.extend(postcard::to_stdvec(&self.bootstrap).unwrap_or_default());
        }
        ChainId(blake3::derive_key("top chain id v1", &bytes))
    }

    /// Whether several validators agree on blocks (rather than one signing them).
    pub fn is_consensus(&self) -> bool {
        !self.validators.is_empty()
    }

    /// The validators of the chain's first epoch: the consensus set, or the single validator.
    pub fn validator_set(&self) -> Vec<AccountId> {
        if self.is_consensus() {
            self.validators.clone()
        } else {
            vec![self.validator]
        }
    }

    /// The state before block 1.
    pub fn state(&self) -> Result<State, GenesisError> {
        if self.bootstrap.len() > MAX_BOOTSTRAP {
            return Err(GenesisError::Params("too many bootstrap relays"));
        }
        if self.is_consensus() {
            let mut ids = self.validators.clone();
            ids.sort();
            ids.dedup();
            if ids.len() != self.validators.len() {
                return Err(GenesisError::Params("a validator is named twice"));
            }
            if ids.len() > MAX_VALIDATORS {
                return Err(GenesisError::Params("too many validators"));
            }
            if ids.iter().any(|id| id.verifying_key().is_err()) {
                return Err(GenesisError::Params("a validator is not a valid key"));
            }
            if self.validators.first() != Some(&self.validator) {
                return Err(GenesisError::Params(
                    "validator must be the first of the validators",
                ));
            }
        }
        if let Some(rule) = &self.epochs {
            if !self.is_consensus() {
                return Err(GenesisError::Params(
                    "epochs need a chain of several validators",
                ));
            }
            if let Some(problem) = rule.problem() {
                return Err(GenesisError::Params(problem));
            }
            if (rule.max_validators as usize) < self.validators.len() {
                return Err(GenesisError::Params(
                    "max_validators is below the number of validators named",
                ));
            }
        }
        if self.params.max_block_txs == 0 {
            return Err(GenesisError::Params("max_block_txs must be at least 1"));
        }
        if self.params.min_fee.is_zero() {
            // Free transactions would let anyone fill every block.
            return Err(GenesisError::Params("min_fee must be above zero"));
        }
        let mut state = State::empty(self.chain_id(), self.params.clone(), self.time_ms);
        state.epochs = self.epochs;
        state.validators = self.validator_set();
        let mut supply = Amount::ZERO;
        for (id, amount) in &self.allocations {
            supply = supply
                .checked_add(*amount)
                .map_err(|_| GenesisError::Overflow)?;
            let account = state.accounts.entry(*id).or_default();
            if !account.balance.is_zero() {
                return Err(GenesisError::Duplicate(*id));
            }
            account.balance = *amount;
        }
        state.genesis_supply = supply;
        Ok(state)
    }
}

/// What the validator signs for each block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain.
    pub chain: ChainId,
    /// 1 for the first block after genesis.
    pub height: u64,
    /// The previous block's hash (all zeroes for block 1).
    pub prev: BlockHash,
    /// Block time, unix milliseconds; never less than the previous block's.
    pub time_ms: u64,
    /// Hash of the transactions' hashes, in order.
    pub txs_root: [u8; 32],
    /// [`State::root`] after applying this block.
    pub state_root: [u8; 32],
}

/// A block: header, transactions and the validator's signature over the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, applied in order.
    pub txs: Vec<SignedTx>,
    /// The validator's signature over the header.
    pub signature: Signature,
}

const HEADER_DOMAIN: &[u8] = b"top/block/v1";

impl BlockHeader {
    /// The header's hash, which is the block's hash.
    pub fn hash(&self) -> BlockHash {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        BlockHash(blake3::derive_key("top block hash v1", &bytes))
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = HEADER_DOMAIN.to_vec();
        out.extend_from_slice(&self.hash().0);
        out
    }
}

/// The hash committing to a block's transactions.
pub fn txs_root(txs: &[SignedTx]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("top txs root v1");
    for tx in txs {
        h.update(&tx.hash().0);
    }
    *h.finalize().as_bytes()
}

impl Block {
    /// Signs `header` over `txs` as the validator.
    pub fn sign(header: BlockHeader, txs: Vec<SignedTx>, validator: &Identity) -> Self {
        let signature = validator.sign(&header.signing_bytes());
        Self {
            header,
            txs,
            signature,
        }
    }

    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// Whether `validator` signed this header.
    pub fn signed_by(&self, validator: &AccountId) -> bool {
        verify(validator, &self.header.signing_bytes(), &self.signature)
    }
}
