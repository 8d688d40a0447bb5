//! What every role of a relay may use: its identity, configuration, QUIC endpoint, metrics, and
//! the shutdown signal and task tracker of the node. Roles take this and each other's handles,
//! never the node's table of roles ([`super::state::Shared`]).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use top_proto::addr::RelayAddr;
use top_proto::id::RelayId;
use top_proto::identity::Identity;

use super::config::RelayConfig;
use super::metrics::Metrics;

/// The node's own parts, shared by every role.
pub struct Core {
    /// The relay's key.
    pub identity: Identity,
    /// The relay's id.
    pub id: RelayId,
    /// Where users and peers reach this relay.
    pub addr: RelayAddr,
    /// The configuration in force.
    pub config: RelayConfig,
    /// The QUIC endpoint (accepting and dialing).
    pub endpoint: quinn::Endpoint,
    /// The endpoint's server config, the base of a connection that gets its own transport.
    pub server_config: quinn::ServerConfig,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Stops every task.
    pub shutdown: CancellationToken,
    /// Tracks every task, for a graceful drain.
    pub tasks: TaskTracker,
    /// When the relay started.
    pub started: Instant,
}
