//! The ledger API on a relay's QUIC port: what clients and follower relays ask, and the answers.

use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;

use crate::amount::Amount;
use crate::block::{Block, BlockHash, Genesis};
use crate::registry::RelayRecord;
use crate::state::{Account, Channel, Grant};
use crate::tx::{ChainId, ChannelId, SignedTx, TxHash};

/// Largest ledger frame (a batch of blocks).
pub const MAX_LEDGER_FRAME: usize = 16 << 20;

/// A request on an `Open::Ledger` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRequest {
    /// Chain summary.
    Summary,
    /// One account, with its next nonce counting transactions not yet in a block.
    Account(AccountId),
    /// One channel.
    Channel(ChannelId),
    /// One grant, as (app, user).
    Grant(AccountId, AccountId),
    /// Submits a transaction; with `wait`, answers once it is in a committed block.
    Submit {
        /// The transaction.
        tx: SignedTx,
        /// Whether to wait for the block.
        wait: bool,
    },
    /// Dev chains: the faucet sends `amount` to `to` (answers once committed).
    Faucet {
        /// Recipient.
        to: AccountId,
        /// How much.
        amount: Amount,
    },
    /// Committed blocks from height `from`, at most `max`; waits up to `wait_ms` for one if none
    /// is there yet.
    Blocks {
        /// First height wanted.
        from: u64,
        /// Most blocks to return.
        max: u32,
        /// How long to wait for a new block.
        wait_ms: u32,
    },
    /// The genesis (followers fetch it once).
    Genesis,
    /// Registered relays, in id order, starting after `after` (at most [`MAX_RELAYS_PER_PAGE`]).
    Relays {
        /// The last id of the previous page.
        after: Option<AccountId>,
    },
    /// Like [`LedgerRequest::Blocks`], each block with its finality proof (chains of several
    /// validators: what a follower checks before it takes a block).
    Finalized {
        /// First height wanted.
        from: u64,
        /// Most blocks to return.
        max: u32,
        /// How long to wait for a new block.
        wait_ms: u32,
    },
}

/// A committed block and, when the node has one, the proof that the validators finalized it
/// (an encoded finalization certificate; a block without one is final through a later block
/// with one, whose parent hashes commit to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedBlock {
    /// The block.
    pub block: Block,
    /// Its finality proof.
    pub proof: Option<Vec<u8>>,
}

/// Most relays one [`LedgerRequest::Relays`] answer lists.
pub const MAX_RELAYS_PER_PAGE: usize = 1000;

/// A registered relay as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// Its id (the account that registered it).
    pub id: AccountId,
    /// Its stake.
    pub stake: Amount,
    /// What it published.
    pub record: RelayRecord,
}

/// The chain at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Chain name.
    pub name: String,
    /// Chain id.
    pub chain: ChainId,
    /// Height of the last committed block.
    pub height: u64,
    /// Its hash.
    pub head: BlockHash,
    /// Its time, unix milliseconds.
    pub time_ms: u64,
    /// Tokens created at genesis.
    pub genesis_supply: Amount,
    /// Tokens in existence now.
    pub total_supply: Amount,
    /// Burned so far.
    pub burned: Amount,
    /// Accounts that hold or held anything.
    pub accounts: u64,
    /// Open or closing channels.
    pub channels: u64,
    /// Whether the supply invariant holds on this node's state.
    pub invariant_ok: bool,
    /// Whether a faucet serves this chain (dev chains).
    pub faucet: bool,
    /// Blocks an unbonding waits.
    pub unbonding_blocks: u64,
    /// The least stake of a registered relay.
    pub min_stake: Amount,
    /// The least fee a transaction pays.
    pub min_fee: Amount,
    /// The validators' epoch (chains of several validators; 0 otherwise).
    pub epoch: u64,
    /// Who validates in this epoch.
    pub validators: Vec<AccountId>,
    /// Height of the last finalized block (every committed block is final: the same as
    /// `height`, named for those who ask).
    pub finalized: u64,
}

/// One account as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Committed state (`None`: never held anything).
    pub account: Option<Account>,
    /// The nonce the next transaction must carry (counting ones waiting for a block).
    pub next_nonce: u64,
    /// Height the view was taken at.
    pub height: u64,
}

/// An answer on a ledger stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerResponse {
    /// See [`LedgerRequest::Summary`].
    Summary(Summary),
    /// See [`LedgerRequest::Account`].
    Account(AccountView),
    /// See [`LedgerRequest::Channel`].
    Channel(Option<Channel>),
    /// See [`LedgerRequest::Grant`].
    Grant(Option<Grant>),
    /// The transaction was accepted; `height` is its block when the request waited.
    Submitted {
        /// Its hash.
        hash: TxHash,
        /// The block it landed in.
        height: Option<u64>,
    },
    /// See [`LedgerRequest::Blocks`].
    Blocks(Vec<Block>),
    /// See [`LedgerRequest::Genesis`].
    Genesis(Genesis),
    /// See [`LedgerRequest::Relays`]: one page (fewer than the page size: the last).
    Relays(Vec<RelayEntry>),
    /// The request failed; the text says why.
    Error(String),
    /// See [`LedgerRequest::Finalized`].
    Finalized(Vec<FinalizedBlock>),
}
