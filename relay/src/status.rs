//! The relay's status report, served as `/api/status` and printed by `toprelay status`.

use serde::{Deserialize, Serialize};

use crate::mailbox::MailboxStats;
use crate::state::Shared;

/// A snapshot of what the relay is doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay's id.
    pub id: String,
    /// `<relay-id>@<host>:<port>` for users and peers.
    pub addr: String,
    /// The HTTP port.
    pub http: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Client sessions open.
    pub sessions: usize,
    /// Relays linked now.
    pub links: Vec<String>,
    /// Relays known (configured or learned).
    pub known_relays: Vec<String>,
    /// Mailbox totals.
    pub mailbox: MailboxStats,
    /// Messages received from clients.
    pub messages_received: u64,
    /// Messages acknowledged by recipients connected here.
    pub messages_delivered: u64,
    /// Messages committed to this relay's mailboxes.
    pub messages_stored: u64,
    /// Messages refused.
    pub messages_rejected: u64,
    /// Connections refused by the connection limit or the per-address rate.
    pub connections_refused: u64,
    /// Pipes opened through this relay.
    pub pipes_opened: u64,
    /// Bytes spliced through pipes.
    pub pipe_bytes: u64,
}

impl RelayStatus {
    /// Takes a snapshot of `shared`.
    pub fn of(shared: &Shared, http: &str) -> Self {
        let m = &shared.metrics;
        Self {
            id: shared.id.to_string(),
            addr: shared.addr.to_string(),
            http: http.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: shared.started.elapsed().as_secs(),
            sessions: shared.local_clients().len(),
            links: shared
                .linked()
                .iter()
                .map(|(id, _)| id.to_string())
                .collect(),
            known_relays: shared.known().iter().map(ToString::to_string).collect(),
            mailbox: shared.mailbox.stats().unwrap_or_default(),
            messages_received: m.messages_received.get(),
            messages_delivered: m.messages_delivered.get(),
            messages_stored: m.messages_stored.get(),
            messages_rejected: m.messages_rejected.get(),
            connections_refused: m.connections_refused.get(),
            pipes_opened: m.pipes_opened.get(),
            pipe_bytes: m.pipe_bytes.get(),
        }
    }
}
