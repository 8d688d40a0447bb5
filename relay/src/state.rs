//! State shared by every task of a relay: who is connected where, links, pending deliveries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use top_proto::addr::RelayAddr;
use top_proto::frame::{Envelope, LinkFrame, MsgId, Reject, SessionFrame};
use top_proto::id::{AccountId, RelayId};
use top_proto::identity::Identity;

use crate::config::RelayConfig;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;

/// Where the result of a delivery must be reported.
pub enum Origin {
    /// A sender's session on this relay: answer `Accepted` / `Rejected`; bill mailbox storage
    /// to its meter.
    Sender(
        mpsc::Sender<SessionFrame>,
        Option<Arc<crate::billing::ClientMeter>>,
    ),
    /// Another relay that forwarded it: answer `ForwardResult`.
    Link {
        /// That link's writer.
        tx: mpsc::Sender<LinkFrame>,
        /// Whether to store the message if it cannot be delivered.
        store_on_fail: bool,
    },
    /// This relay's mailbox: delete once delivered.
    Mailbox,
}

/// A message handed to a session or link, awaiting its acknowledgement.
pub struct Pending {
    /// The message.
    pub env: Envelope,
    /// Who to tell.
    pub origin: Origin,
    /// When it was handed over.
    pub since: Instant,
}

impl Pending {
    /// A delivery handed over now.
    pub fn new(env: Envelope, origin: Origin) -> Self {
        Self {
            env,
            origin,
            since: Instant::now(),
        }
    }
}

/// Deliveries in flight, by message id (one id may come from several origins, e.g. two mailboxes).
pub type Inflight = Arc<Mutex<HashMap<MsgId, Vec<Pending>>>>;

/// A connected client's messaging session.
#[derive(Clone)]
pub struct SessionHandle {
    /// Distinguishes sessions of the same client.
    pub no: u64,
    /// The client's connection (for opening pipe streams to it).
    pub conn: quinn::Connection,
    /// Frames to write to the client.
    pub tx: mpsc::Sender<SessionFrame>,
    /// Deliveries awaiting the client's ack.
    pub inflight: Inflight,
    /// The client's meter, when this relay bills.
    pub meter: Option<Arc<crate::billing::ClientMeter>>,
}

/// A link to another relay.
#[derive(Clone)]
pub struct LinkHandle {
    /// Distinguishes links to the same relay.
    pub no: u64,
    /// The connection (for opening pipe streams over it).
    pub conn: quinn::Connection,
    /// Frames to write on the link's control stream.
    pub tx: mpsc::Sender<LinkFrame>,
    /// Forwards awaiting a `ForwardResult`.
    pub forwards: Inflight,
    /// Stores awaiting a `StoreResult`.
    pub stores: Arc<Mutex<HashMap<MsgId, oneshot::Sender<Option<Reject>>>>>,
}

/// Everything the relay's tasks share.
pub struct Shared {
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
    /// Durable mailboxes.
    pub mailbox: Mailbox,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Stops every task.
    pub shutdown: CancellationToken,
    /// Tracks every task, for a graceful drain.
    pub tasks: TaskTracker,
    /// When the relay started.
    pub started: Instant,
    /// Prices and payment terms.
    pub terms: crate::billing::Terms,
    /// Latest receipts by channel.
    pub receipts: crate::receipts::ReceiptStore,
    /// The chain, once opened (followers open it after fetching the genesis).
    pub chain: std::sync::OnceLock<Arc<crate::chain::ChainNode>>,
    /// CDN manifests and chunks on disk.
    pub cdn: Arc<crate::cdn::store::CdnStore>,
    /// Publishers' allowances for HTTP egress, and what was served under them.
    pub egress: crate::cdn::egress::EgressBook,
    /// The VPN exit, when this relay is one.
    pub vpn_exit: std::sync::OnceLock<Arc<crate::vpn::exit::Exit>>,
    /// Messages recipients acknowledged here lately (copies of them are not shown again).
    pub delivered: crate::delivered::Delivered,
    /// Mailbox pushes in progress.
    pub push_runs: crate::push_runs::PushRuns,
    sessions: Mutex<HashMap<AccountId, SessionHandle>>,
    presence: Mutex<HashMap<AccountId, RelayId>>,
    links: Mutex<HashMap<RelayId, LinkHandle>>,
    known: Mutex<BTreeMap<RelayId, RelayAddr>>,
    sync_waiters: Mutex<HashMap<(AccountId, RelayId), oneshot::Sender<()>>>,
    pushing: Mutex<HashSet<MsgId>>,
    next_no: AtomicU64,
    links_changed: tokio::sync::Notify,
}

/// Locks a mutex, recovering the data if a task panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    /// Shared state for a relay that is about to start.
    pub fn new(
        identity: Identity,
        addr: RelayAddr,
        config: RelayConfig,
        endpoint: quinn::Endpoint,
        mailbox: Mailbox,
        receipts: crate::receipts::ReceiptStore,
        (cdn, egress): (crate::cdn::store::CdnStore, crate::cdn::egress::EgressBook),
    ) -> Self {
        let known = config.peers.iter().map(|p| (p.id, p.clone())).collect();
        Self {
            id: identity.relay_id(),
            identity,
            addr,
            terms: crate::billing::Terms::from_config(&config.billing),
            receipts,
            config,
            endpoint,
            mailbox,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            chain: std::sync::OnceLock::new(),
            cdn: Arc::new(cdn),
            egress,
            vpn_exit: std::sync::OnceLock::new(),
            delivered: Default::default(),
            push_runs: Default::default(),
            sessions: Mutex::default(),
            presence: Mutex::default(),
            links: Mutex::default(),
            known: Mutex::new(known),
            sync_waiters: Mutex::default(),
            pushing: Mutex::default(),
            next_no: AtomicU64::new(1),
            links_changed: tokio::sync::Notify::new(),
        }
    }

    /// A fresh number for a session or link.
    pub fn next_no(&self) -> u64 {
        self.next_no.fetch_add(1, Ordering::Relaxed)
    }

    /// The session of a client connected here.
    pub fn session(&self, client: &AccountId) -> Option<SessionHandle> {
        lock(&self.sessions).get(client).cloned()
    }

    /// Records a client's session (the newest session of a client receives its messages);
    /// returns the session it replaces.
    pub fn add_session(&self, client: AccountId, handle: SessionHandle) -> Option<SessionHandle> {
        self.metrics.sessions.inc();
        lock(&self.sessions).insert(client, handle)
    }

    /// Forgets a session; returns whether the client has no session here any more.
    pub fn remove_session(&self, client: &AccountId, no: u64) -> bool {
        self.metrics.sessions.dec();
        let mut sessions = lock(&self.sessions);
        if sessions.get(client).is_some_and(|s| s.no == no) {
            sessions.remove(client);
            true
        } else {
            false
        }
    }

    /// Clients connected here now.
    pub fn local_clients(&self) -> Vec<AccountId> {
        lock(&self.sessions).keys().copied().collect()
    }

    /// The link to the relay a client is connected to, if known and up.
    pub fn link_for_client(&self, client: &AccountId) -> Option<(RelayId, LinkHandle)> {
        let relay = *lock(&self.presence).get(client)?;
        Some((relay, self.link(&relay)?))
    }

    /// Records where a client is (or that it left `relay`).
    pub fn set_presence(&self, client: AccountId, relay: RelayId, online: bool) {
        let mut presence = lock(&self.presence);
        if online {
            presence.insert(client, relay);
        } else if presence.get(&client) == Some(&relay) {
            presence.remove(&client);
        }
    }

    /// The link to `relay`, if up.
    pub fn link(&self, relay: &RelayId) -> Option<LinkHandle> {
        lock(&self.links).get(relay).cloned()
    }

    /// Ids of relays linked now.
    pub fn linked(&self) -> Vec<(RelayId, LinkHandle)> {
        lock(&self.links)
            .iter()
            .map(|(id, l)| (*id, l.clone()))
            .collect()
    }

    /// Records a link (the newest link to a relay carries new traffic).
    pub fn add_link(&self, relay: RelayId, handle: LinkHandle) {
        lock(&self.links).insert(relay, handle);
        self.metrics.links.inc();
        self.links_changed.notify_waiters();
    }

    /// Waits until a link to `relay` is up.
    pub async fn wait_link(&self, relay: &RelayId) {
        loop {
            let changed = self.links_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.link(relay).is_some() {
                return;
            }
            changed.await;
        }
    }

    /// Forgets a link and every client presence learned through it.
    pub fn remove_link(&self, relay: &RelayId, no: u64) {
        self.metrics.links.dec();
        let mut links = lock(&self.links);
        if links.get(relay).is_some_and(|l| l.no == no) {
            links.remove(relay);
            lock(&self.presence).retain(|_, r| r != relay);
        }
    }

    /// Adds relays to the known set; returns those that were new.
    pub fn learn(&self, relays: impl IntoIterator<Item = RelayAddr>) -> Vec<RelayAddr> {
        let mut known = lock(&self.known);
        let mut new = Vec::new();
        for r in relays {
            if r.id != self.id && !known.contains_key(&r.id) {
                known.insert(r.id, r.clone());
                new.push(r);
            }
        }
        new
    }

    /// Every relay known, this one excluded.
    pub fn known(&self) -> Vec<RelayAddr> {
        lock(&self.known).values().cloned().collect()
    }

    /// The relays that keep `client`'s mailbox: the closest by XOR among all known relays.
    pub fn home_relays(&self, client: &AccountId) -> Vec<RelayId> {
        let mut all: Vec<RelayId> = lock(&self.known).keys().copied().collect();
        all.push(self.id);
        all.sort_by_key(|r| r.xor_distance(client));
        all.truncate(self.config.mailbox.home_replicas);
        all
    }

    /// Registers interest in `relay` finishing its mailbox push for `client`.
    pub fn wait_mailbox_done(&self, client: AccountId, relay: RelayId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.sync_waiters).insert((client, relay), tx);
        rx
    }

    /// `relay` finished pushing `client`'s mailbox.
    pub fn mailbox_done(&self, client: AccountId, relay: RelayId) {
        if let Some(tx) = lock(&self.sync_waiters).remove(&(client, relay)) {
            tx.send(()).ok();
        }
    }

    /// Marks a mailbox message as being pushed; false if it already is.
    pub fn start_push(&self, id: MsgId) -> bool {
        lock(&self.pushing).insert(id)
    }

    /// A mailbox push ended (delivered or not).
    pub fn end_push(&self, id: &MsgId) {
        lock(&self.pushing).remove(id);
    }
}
