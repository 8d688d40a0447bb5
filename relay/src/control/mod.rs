//! The control plane: a libp2p swarm beside the QUIC endpoint, for finding things only (user
//! traffic never crosses it). Relays find each other through a DHT of signed announcements
//! checked against the chain's registry ([`records`]), find which relays hold a content through
//! provider records, and spread blocks with their finality proofs and transactions by gossip
//! with peer scoring ([`gossip`]). It starts once the relay's chain is open: without the
//! registry it could not tell a relay from a stranger.

// The event enum `#[derive(NetworkBehaviour)]` generates has no docs to give.
mod addrs;
mod ask;
#[allow(missing_docs)]
pub mod behaviour;
mod blocks;
mod checks;
pub mod config;
mod dht;
mod early;
mod gossip;
pub mod keys;
mod peering;
pub mod records;
mod task;
mod txs;

use std::collections::BTreeMap;
use std::sync::Mutex;

use ledger_lite::announce::Announcement;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use top_proto::cdn::Cid;
use top_proto::id::RelayId;

use crate::util::lock;

pub use task::start;

/// Commands queued for the control plane at most; more are dropped (they are hints).
const MAX_QUEUED: usize = 1024;
/// Addresses of ours others reported that are kept.
const MAX_OBSERVED: usize = 8;

/// What the control plane is asked to do.
pub(crate) enum Command {
    /// Tell the DHT this relay holds `Cid`'s content.
    Provide(Cid),
    /// Find relays that hold a content (registered relays only, this one excluded).
    FindProviders(Cid, oneshot::Sender<Vec<RelayId>>),
}

/// Whether other relays reach this one on the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// The control plane is not running (off, or no chain yet).
    #[default]
    Off,
    /// No peer has connected to this relay yet: if that lasts, it needs a public address.
    Unknown,
    /// Peers have connected to this relay: it is reachable.
    Public,
}

/// What the control plane knows now (for `toprelay status` and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlStatus {
    /// This relay's peer id (the same key as its relay id).
    pub peer_id: String,
    /// Where the control plane listens.
    pub listening: Vec<String>,
    /// Peers connected now.
    pub connected: usize,
    /// Registered relays whose current announcement this relay holds (itself included).
    pub discovered: usize,
    /// This relay's addresses as peers see them.
    pub observed: Vec<String>,
    /// Connections peers opened to this relay.
    pub inbound: u64,
    /// Whether others reach this relay.
    pub reachability: Reachability,
    /// Records refused (unregistered, expired, forged or malformed).
    pub refused_records: u64,
    /// Gossip messages refused as invalid.
    pub refused_gossip: u64,
    /// Blocks taken from gossip.
    pub gossiped_blocks: u64,
    /// Peers dropped for their gossip score.
    pub dropped_peers: u64,
    /// Connections refused (over the bounds, or from a blocked peer).
    pub refused_connections: u64,
}

/// The control plane's handle: commands in, what it learned out.
pub struct Control {
    /// Whether the plane runs (commands are answered).
    running: std::sync::atomic::AtomicBool,
    commands: mpsc::Sender<Command>,
    inbox: Mutex<Option<mpsc::Receiver<Command>>>,
    status: Mutex<ControlStatus>,
    discovered: Mutex<BTreeMap<RelayId, Announcement>>,
    changed: watch::Sender<u64>,
}

impl Default for Control {
    fn default() -> Self {
        let (commands, inbox) = mpsc::channel(MAX_QUEUED);
        Self {
            running: Default::default(),
            commands,
            inbox: Mutex::new(Some(inbox)),
            status: Mutex::default(),
            discovered: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl Control {
    /// What the control plane knows now.
    pub fn status(&self) -> ControlStatus {
        let mut status = lock(&self.status).clone();
        status.discovered = lock(&self.discovered).len();
        status
    }

    /// The current announcements of the relays discovered, by relay.
    pub fn discovered(&self) -> BTreeMap<RelayId, Announcement> {
        lock(&self.discovered).clone()
    }

    /// Relays whose held announcement is still valid at `ms`.
    fn valid_at(&self, ms: u64) -> std::collections::HashSet<RelayId> {
        lock(&self.discovered)
            .iter()
            .filter(|(_, a)| a.body.expires_ms > ms)
            .map(|(id, _)| *id)
            .collect()
    }

    /// When the held announcement of `relay` was issued.
    fn issued_ms(&self, relay: &RelayId) -> Option<u64> {
        lock(&self.discovered).get(relay).map(|a| a.body.issued_ms)
    }

    /// A watch bumped whenever a relay is discovered or the status changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Says in the DHT that this relay holds `cid`'s content (dropped if the plane is busy or
    /// not running).
    pub fn provide(&self, cid: Cid) {
        if self.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.commands.try_send(Command::Provide(cid)).ok();
        }
    }

    /// Registered relays that say they hold `cid`'s content (empty when the plane is off).
    pub async fn providers(&self, cid: Cid) -> Vec<RelayId> {
        if !self.running.load(std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .try_send(Command::FindProviders(cid, reply))
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    fn set_running(&self) {
        self.running
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn take_inbox(&self) -> Option<mpsc::Receiver<Command>> {
        lock(&self.inbox).take()
    }

    fn update(&self, f: impl FnOnce(&mut ControlStatus)) {
        f(&mut lock(&self.status));
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps `a` if it is newer than what is held for its relay; true if kept.
    fn note(&self, a: Announcement) -> bool {
        let mut discovered = lock(&self.discovered);
        let newer = discovered
            .get(&a.body.relay)
            .is_none_or(|held| a.supersedes(held));
        if newer {
            discovered.insert(a.body.relay, a);
            drop(discovered);
            self.bump();
        }
        newer
    }

    /// Forgets relays no longer registered and announcements expired by `now_ms`.
    fn prune(&self, keep: impl Fn(&RelayId) -> bool, now_ms: u64) {
        let mut discovered = lock(&self.discovered);
        let before = discovered.len();
        discovered.retain(|id, a| keep(id) && a.body.expires_ms > now_ms);
        if discovered.len() != before {
            drop(discovered);
            self.bump();
        }
    }
}
