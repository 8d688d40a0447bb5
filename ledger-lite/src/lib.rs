//! Ledger-lite: the TOP chain's money rules as a pure state machine.
//!
//! Work in progress for the "Ledger-lite and billing" issue: exact amounts so far; transactions,
//! the state transition and block storage follow.

#![warn(missing_docs)]

pub mod amount;
pub mod tx;

pub use amount::{Amount, AmountError, UNITS_PER_TOP};
