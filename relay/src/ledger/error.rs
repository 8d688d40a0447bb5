//! Why a request to the relay's chain node failed.

use ledger_lite::{Amount, StoreError, SubmitError};
use top_proto::net::dial::DialError;
use top_proto::net::rpc::RpcError;

/// Why a ledger request failed. Its text is what clients read (`LedgerResponse::Error`).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The mempool refused the transaction.
    #[error(transparent)]
    Refused(#[from] SubmitError),
    /// The chain store failed.
    #[error("ledger store: {0}")]
    Store(#[from] StoreError),
    /// The upstream relay answered with an error (its words).
    #[error("{0}")]
    Upstream(String),
    /// The upstream relay could not be reached.
    #[error("cannot reach the upstream relay: {0}")]
    Dial(#[from] DialError),
    /// The call to the upstream relay failed.
    #[error("upstream call failed: {0}")]
    Call(#[from] RpcError),
    /// The upstream relay answered out of protocol.
    #[error("unexpected answer from upstream: {0}")]
    Unexpected(String),
    /// A block from the upstream relay does not verify.
    #[error("refused a block from upstream: {0}")]
    BadBlock(StoreError),
    /// A block's finality proof from the upstream relay does not verify (forged, or for
    /// another block or validator set).
    #[error("refused a block from upstream: {0}")]
    BadProof(#[from] top_consensus::proof::ProofError),
    /// No QUIC socket could be opened.
    #[error("cannot open a QUIC socket: {0}")]
    Socket(std::io::Error),
    /// The chain has no faucet.
    #[error("this chain has no faucet (only dev chains have one)")]
    NoFaucet,
    /// More than the faucet gives at once.
    #[error("the faucet gives at most {0} TOP per request")]
    FaucetLimit(Amount),
    /// A follower-only request on a relay that follows nobody.
    #[error("this relay has no upstream")]
    NoUpstream,
    /// A validator-only operation on a follower.
    #[error("not the validator")]
    NotValidator,
    /// The transaction left the mempool without being committed.
    #[error("dropped before its block: {0}")]
    Dropped(String),
    /// The relay is shutting down.
    #[error("the relay is shutting down")]
    Stopped,
    /// A blocking task failed.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The result of a ledger request.
pub type ChainResult<T> = Result<T, ChainError>;
