//! Ledger-lite: the TOP chain's money rules as a pure state machine, its blocks and its store.
//!
//! [`State::apply_block`] is the state transition, a pure function of (state, block): it applies
//! a block whole or refuses it and leaves the state as it was. [`Ledger`] keeps the chain on
//! redb, one write transaction per block. [`Mempool`] holds checked transactions for the next
//! block.

#![warn(missing_docs)]

pub mod amount;
pub mod announce;
pub mod apply;
pub mod block;
pub mod chain;
pub mod epochs;
mod fees;
pub mod mempool;
pub mod registry;
pub mod state;
pub mod store;
pub mod tx;
pub mod verify;
pub mod wire;

pub use amount::{Amount, AmountError, UNITS_PER_TOP};
pub use apply::{SettledFee, TxError};
pub use block::{Block, BlockHash, BlockHeader, Genesis};
pub use chain::{BlockError, BlockOutcome, Built};
pub use epochs::EpochRule;
pub use mempool::{Mempool, SubmitError};
pub use state::{Account, Channel, ChannelStatus, Grant, Params, SettleKind, State};
pub use store::{BlockReader, Ledger, StoreError};
pub use tx::{
    Allowance, AllowanceBody, ChainId, ChannelId, EgressClaim, Receipt, ReceiptBody, SignedTx, Tx,
    TxHash, TxKind,
};
