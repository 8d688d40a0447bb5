//! TOP chain consensus: ledger-lite blocks agreed by several validators through commonware's
//! simplex engine and its marshal. ledger-lite stays the pure state machine; this crate only
//! decides which block comes next.

#![warn(missing_docs)]

pub mod app;
pub mod block;
pub mod epochs;
pub mod finalizer;
pub mod membership;
pub mod misbehaviour;
pub mod node;
pub mod pending;
pub mod proof;
pub mod service;
pub mod store;

pub use block::ChainBlock;
