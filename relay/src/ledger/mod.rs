//! The ledger role: the chain node embedded in the relay ([`chain`]: validator or follower), its
//! API on QUIC ([`api`]), where its genesis comes from ([`setup`]), a follower's connection to
//! its upstream ([`upstream`]), the transactions it forwarded there ([`forwarded`]), and
//! blocks and transactions by gossip ([`gossiped`], [`tx_gossip`]).

pub mod api;
pub mod block_times;
pub mod chain;
pub mod consensus;
pub mod error;
pub mod forwarded;
pub mod gossip_feed;
pub mod gossip_out;
pub mod gossiped;
pub mod network;
pub mod production;
pub mod setup;
pub mod tx_gossip;
pub mod upstream;

/// The chain node, once open (a follower opens it after fetching the genesis); roles that use
/// the chain hold this.
pub type ChainSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<chain::ChainNode>>>;
