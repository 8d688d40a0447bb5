//! The control plane's settings: `[control]` in a relay's `config.toml`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use top_proto::addr::RelayAddr;

/// How the relay takes part in the control plane (discovery, content providers, gossip).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Run the control plane (off: the relay links only with the relays it is told of).
    pub enabled: bool,
    /// TCP address of the control plane; by default the QUIC address's IP and a port the system
    /// picks (not the QUIC port number: a validator's consensus transport listens there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Relays to join the network through, `ID@HOST:PORT` (their QUIC addresses: each is asked
    /// there where its control plane listens).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<RelayAddr>,
    /// Most control-plane connections at once (each way).
    pub max_connections: u32,
}

impl ControlConfig {
    /// The relays to join through: those configured, then the genesis' own, `me` left out.
    pub fn bootstrap_relays(
        &self,
        genesis: &ledger_lite::Genesis,
        me: &top_proto::id::RelayId,
    ) -> Vec<RelayAddr> {
        let mut relays: Vec<RelayAddr> = Vec::new();
        for relay in self.bootstrap.iter().chain(&genesis.bootstrap) {
            if relay.id != *me && !relays.iter().any(|r| r.id == relay.id) {
                relays.push(relay.clone());
            }
        }
        relays
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            bootstrap: Vec::new(),
            max_connections: 128,
        }
    }
}
