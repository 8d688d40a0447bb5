//! The messaging role's driver: feeds events to the [`Router`] and carries out its actions on
//! real queues, the mailbox and links; runs mailbox pushes and stores.
//!
//! Every action is carried out without waiting while the router's lock is held: frames go out
//! with `try_send` into bounded queues, and a queue that is full fails the hand-over back into
//! the router (the message then falls back to the mailbox). Each session and link has two
//! queues: deliveries (with `Synced` and `MailboxDone`, which must follow them) and answers,
//! which its writer sends first, so a queue full of deliveries never holds an answer back.
//! Stores and pushes run in tracked tasks, bounded by a semaphore and one run per client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use top_proto::frame::{Envelope, LinkFrame, MsgId, Outcome, Reject, SessionFrame};
use top_proto::id::{AccountId, RelayId};

use super::handles::{LinkOut, SessionOut};
use super::mailbox::Mailbox;
use super::push_runs::PushRuns;
use super::router::{Action, Handover, Router, RouterConfig, Serial};
use crate::node::metrics::Metrics;
use crate::node::peers::Peers;
use crate::util::lock;

/// Deliveries queued towards one client before the rest wait in its mailbox.
pub const SESSION_QUEUE: usize = 2048;
/// Answers queued towards one client; a client that lets more pile up is not reading, and
/// further answers are dropped (and counted).
pub const SESSION_ANSWERS: usize = 4096;
/// Forwards, presence and store requests queued on one link.
pub const LINK_QUEUE: usize = 16_384;
/// Answers queued on one link.
pub const LINK_ANSWERS: usize = 16_384;
/// How long a push waits to tell a link it is done, or a late announcement to go out.
pub(super) const LATE_SEND: Duration = Duration::from_secs(5);
/// Stores (to the mailbox here or at home relays) in progress at once; beyond it a message is
/// refused as `Unavailable`.
const MAX_STORES: usize = 4096;
/// Local senders' messages waiting for a link to a home of their recipient, at most (the rest
/// are stored at once).
const MAX_FINDING: usize = 1024;
/// Messages being moved to their recipients' homes at once, at most (the rest stay here).
const MAX_REHOMING: usize = 1024;
/// How often the router's clock ticks (durable copies fall due within a tick of their time).
const TICK: Duration = Duration::from_millis(100);

/// Sessions waiting for linked relays' `MailboxDone`, by client and relay.
type SyncWaiters = HashMap<(AccountId, RelayId), Vec<oneshot::Sender<()>>>;

/// Why a hand-over did not go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The queue is full (or closed): worth waiting for room.
    Full,
}

/// The messaging role of a relay: sessions, links, mailboxes, and the router between them.
pub struct Messaging {
    pub(super) me: RelayId,
    pub(super) router: Mutex<Router<SessionOut, LinkOut>>,
    /// Durable mailboxes.
    pub mailbox: Mailbox,
    pub(super) peers: Arc<Peers>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) push_runs: Mutex<PushRuns<LinkOut>>,
    /// Sessions waiting for a linked relay's `MailboxDone` (several sessions of one client may).
    pub(super) sync_waiters: Mutex<SyncWaiters>,
    pub(super) stores: Arc<Semaphore>,
    pub(super) serials: AtomicU64,
    pub(super) links_changed: Notify,
    /// The newest presence statement seen of each user.
    pub(super) statements: Mutex<super::statements::Statements>,
    /// Every link running, by serial.
    pub(super) link_conns: Mutex<HashMap<Serial, (RelayId, quinn::Connection)>>,
    /// The relays this one wants links to.
    pub wants: Arc<super::wants::LinkWants>,
    /// The home relays each client connected here pinned links to, with its session's serial.
    pub(super) home_pins: Mutex<HashMap<AccountId, (Serial, Vec<RelayId>)>>,
    /// Clients found (on their own word) at relays not linked yet: believed there once linked.
    pub(super) located: Mutex<super::located::Located>,
    /// Which homes were asked about which users (their `Located` answers are taken).
    pub(super) asked: Mutex<super::located::Asked>,
    /// Slots for local senders' messages waiting for a link to a home of their recipient.
    pub(super) finding: Arc<Semaphore>,
    /// Slots for messages being moved to their recipients' homes.
    pub(super) rehoming: Arc<Semaphore>,
}

/// Everything [`Messaging::new`] takes.
pub struct MessagingParts {
    /// This relay.
    pub me: RelayId,
    /// The mailbox store.
    pub mailbox: Mailbox,
    /// Known relays (for home relays).
    pub peers: Arc<Peers>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The node's tasks.
    pub tasks: TaskTracker,
    /// The node's shutdown.
    pub shutdown: CancellationToken,
    /// The router's limits.
    pub router: RouterConfig,
    /// How long a link stays wanted after traffic needed it.
    pub link_idle: Duration,
}

impl Messaging {
    /// The messaging role, with its clock task started.
    pub fn new(parts: MessagingParts) -> Arc<Self> {
        let msg = Arc::new(Self {
            me: parts.me,
            router: Mutex::new(Router::new(parts.router)),
            mailbox: parts.mailbox,
            peers: parts.peers,
            metrics: parts.metrics,
            tasks: parts.tasks,
            shutdown: parts.shutdown,
            push_runs: Mutex::default(),
            sync_waiters: Mutex::default(),
            stores: Arc::new(Semaphore::new(MAX_STORES)),
            serials: AtomicU64::new(1),
            links_changed: Notify::new(),
            statements: Mutex::default(),
            link_conns: Mutex::default(),
            wants: Arc::new(super::wants::LinkWants::new(parts.link_idle)),
            home_pins: Mutex::default(),
            located: Mutex::default(),
            asked: Mutex::default(),
            finding: Arc::new(Semaphore::new(MAX_FINDING)),
            rehoming: Arc::new(Semaphore::new(MAX_REHOMING)),
        });
        let ticker = msg.clone();
        msg.tasks.spawn(async move { ticker.run_clock().await });
        msg.tasks.spawn(msg.clone().run_rehome_sweeps());
        msg.tasks.spawn(msg.clone().run_repins());
        msg
    }

    /// A fresh serial number for a session or link.
    pub fn serial(&self) -> Serial {
        self.serials.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn router(&self) -> MutexGuard<'_, Router<SessionOut, LinkOut>> {
        lock(&self.router)
    }

    async fn run_clock(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        let mut expiry = tokio::time::interval(super::statements::EXPIRY_SWEEP);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut r = self.router();
                    r.on_tick(now);
                    self.drive(&mut r, now);
                }
                _ = expiry.tick() => self.expire_presence(),
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    // --- events from sessions -----------------------------------------------------------------

    /// A client's session opened; returns waits for each of its home relays' mailbox push.
    pub fn open_session(self: &Arc<Self>, session: SessionOut) -> Vec<oneshot::Receiver<()>> {
        self.metrics.sessions.inc();
        let client = session.client;
        let now = Instant::now();
        // Links to its homes are kept while it is here: they hold its mail and hear of it.
        let homes = self.pin_homes(client, session.serial);
        let waits = homes
            .iter()
            .map(|relay| self.wait_mailbox_done(client, *relay))
            .collect();
        let mut r = self.router();
        self.note_local_presence(&session);
        r.on_session_open(client, session.serial, session);
        self.drive(&mut r, now);
        waits
    }

    /// A client's session closed.
    pub fn close_session(self: &Arc<Self>, client: AccountId, serial: Serial) {
        self.metrics.sessions.dec();
        let now = Instant::now();
        let mut r = self.router();
        r.on_session_closed(client, serial, now);
        // (Its homes are told it left before their links stop being pinned.)
        self.drive(&mut r, now);
        drop(r);
        self.unpin_homes(client, serial);
    }

    /// A local client sent a message (checked and paid for).
    pub fn send(self: &Arc<Self>, env: Envelope, from: &SessionOut) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_send(env, from.clone(), now);
        self.drive(&mut r, now);
    }

    /// A client acknowledged a message.
    pub fn ack(self: &Arc<Self>, client: AccountId, id: MsgId) {
        let now = Instant::now();
        let mut r = self.router();
        if let Some(since) = r.on_ack(client, id) {
            self.metrics.messages_delivered.inc();
            let took = now.saturating_duration_since(since);
            crate::node::latency::observe(&self.metrics.latency.delivery, took);
        }
        self.drive(&mut r, now);
    }

    /// Answers a sender directly (a message refused before routing).
    pub fn refuse(&self, session: &SessionOut, id: MsgId, reason: Reject) {
        self.metrics.messages_rejected.inc();
        self.answer(&session.answers, SessionFrame::Rejected { id, reason });
    }

    // --- events from links --------------------------------------------------------------------

    /// A link came up.
    pub fn link_up(self: &Arc<Self>, link: LinkOut) {
        self.metrics.links.inc();
        lock(&self.link_conns).insert(link.serial, (link.relay, link.conn.clone()));
        let now = Instant::now();
        let relay = link.relay;
        let mut r = self.router();
        r.on_link_up(relay, link.serial, link);
        self.believe_located(&mut r, relay);
        self.drive(&mut r, now);
        drop(r);
        self.links_changed.notify_waiters();
    }

    /// A link went down.
    pub fn link_down(self: &Arc<Self>, link: &LinkOut) {
        self.metrics.links.dec();
        lock(&self.link_conns).remove(&link.serial);
        lock(&link.stores).clear();
        let now = Instant::now();
        let mut r = self.router();
        r.on_link_down(link.relay, link.serial, now);
        self.drive(&mut r, now);
    }

    /// A linked relay forwarded a message.
    pub fn forwarded(self: &Arc<Self>, env: Envelope, link: &LinkOut, store_on_fail: bool) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_forwarded(env, link.clone(), store_on_fail, now);
        self.drive(&mut r, now);
    }

    /// A linked relay sent a message through this one, a home of its recipient.
    pub fn relayed(self: &Arc<Self>, env: Envelope, link: &LinkOut) {
        self.metrics.messages_relayed.inc();
        let now = Instant::now();
        let mut r = self.router();
        r.on_relayed(env, link.clone(), link.relay, now);
        self.drive(&mut r, now);
    }

    /// A linked relay answered a forward.
    pub fn forward_result(self: &Arc<Self>, relay: RelayId, id: MsgId, outcome: Option<Outcome>) {
        let now = Instant::now();
        let mut r = self.router();
        if outcome == Some(Outcome::Stored)
            && let (Some(bytes), Some(link)) = (r.forwarded_bytes(&relay, &id), r.link(&relay))
        {
            link.count.stored(bytes);
        }
        r.on_forward_result(relay, id, outcome, now);
        self.drive(&mut r, now);
    }

    /// A linked relay finished pushing what it holds for `client`.
    pub fn mailbox_done(&self, client: AccountId, relay: RelayId) {
        for tx in lock(&self.sync_waiters)
            .remove(&(client, relay))
            .unwrap_or_default()
        {
            tx.send(()).ok();
        }
    }

    /// A session stopped waiting for linked relays' pushes: forget waits nobody holds any more.
    pub fn forget_sync(&self) {
        lock(&self.sync_waiters).retain(|_, waiters| {
            waiters.retain(|w| !w.is_closed());
            !waiters.is_empty()
        });
    }

    pub(super) fn wait_mailbox_done(
        &self,
        client: AccountId,
        relay: RelayId,
    ) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.sync_waiters)
            .entry((client, relay))
            .or_default()
            .push(tx);
        rx
    }

    /// Sends frames a full link queue refused, waiting for room in one tracked task.
    pub(super) fn send_late(&self, late: Vec<(mpsc::Sender<LinkFrame>, LinkFrame)>) {
        if late.is_empty() {
            return;
        }
        self.tasks.spawn(async move {
            for (tx, frame) in late {
                tokio::time::timeout(LATE_SEND, tx.send(frame)).await.ok();
            }
        });
    }

    // --- what other roles ask -----------------------------------------------------------------

    /// The session of a client connected here.
    pub fn session(&self, client: &AccountId) -> Option<SessionOut> {
        self.router().session(client).cloned()
    }

    /// The link to the relay a client is connected to, if known and up.
    pub fn link_for_client(&self, client: &AccountId) -> Option<LinkOut> {
        self.router().link_for_client(client).cloned()
    }

    /// The link to `relay`, if up.
    pub fn link(&self, relay: &RelayId) -> Option<LinkOut> {
        self.router().link(relay).cloned()
    }

    /// The connection of every link running, the router's current ones and any older link
    /// to the same relay still winding down.
    pub fn link_connections(&self) -> Vec<(RelayId, quinn::Connection)> {
        lock(&self.link_conns).values().cloned().collect()
    }

    /// Every link up.
    pub fn linked(&self) -> Vec<LinkOut> {
        self.router().links().map(|(_, l)| l.clone()).collect()
    }

    /// How many clients are connected here.
    pub fn clients(&self) -> usize {
        self.router().clients().count()
    }

    /// Waits (at most `limit`, none with a zero limit) until the queue of `client`'s session
    /// here has room; false if it still has none.
    pub async fn wait_for_room(&self, client: &AccountId, limit: Duration) -> bool {
        let Some(session) = self.session(client) else {
            return true;
        };
        if session.tx.capacity() > 0 {
            return true;
        }
        tokio::time::timeout(limit, session.tx.reserve())
            .await
            .is_ok_and(|permit| permit.is_ok())
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

    // --- carrying out actions -----------------------------------------------------------------

    /// Carries out every action the router queued.
    pub(super) fn drive(self: &Arc<Self>, r: &mut Router<SessionOut, LinkOut>, now: Instant) {
        self.drive_reporting(r, now);
    }

    /// Like [`Messaging::drive`]; returns the messages whose hand-over failed (the router
    /// already knows; a push uses it to wait for room and try again).
    pub(super) fn drive_reporting(
        self: &Arc<Self>,
        r: &mut Router<SessionOut, LinkOut>,
        now: Instant,
    ) -> Vec<(MsgId, Refusal)> {
        let mut failed = Vec::new();
        while let Some(action) = r.poll_action() {
            match action {
                Action::Deliver { session, env } => {
                    let id = env.id;
                    if let Err(why) = self.deliver(&session, env) {
                        failed.push((id, why));
                        r.on_handover_failed(Handover::Session(session.client), id, now);
                    }
                }
                Action::Forward {
                    link,
                    env,
                    store_on_fail,
                    relayed,
                } => {
                    let id = env.id;
                    let bytes = env.sealed.len();
                    // Traffic keeps the link wanted a while.
                    self.wants.want(link.relay, now);
                    // A relayed message pays two hops: the home forwards it on.
                    let bytes = if relayed { bytes * 2 } else { bytes };
                    let frame = if relayed {
                        lock(&self.asked).note(link.relay, env.to, now);
                        LinkFrame::Relay { env }
                    } else {
                        LinkFrame::Forward { env, store_on_fail }
                    };
                    if link.tx.try_send(frame).is_err() {
                        failed.push((id, Refusal::Full));
                        r.on_handover_failed(Handover::Link(link.relay), id, now);
                    } else {
                        link.count.handed(bytes);
                    }
                }
                Action::AnswerSender {
                    session,
                    id,
                    bytes,
                    result,
                } => self.answer_sender(&session, id, bytes, result),
                Action::AnswerLink {
                    link,
                    id,
                    bytes,
                    outcome,
                } => {
                    // Storage is charged only when the other relay is told of it (what it
                    // counts), and before it can be: its next forward is checked against it.
                    if let Some(slot) = self.answer_slot(&link.answers) {
                        if outcome == Some(Outcome::Stored) {
                            link.charge_storage(bytes);
                        }
                        slot.send(LinkFrame::ForwardResult { id, outcome });
                    }
                }
                Action::Store(pending) => self.spawn_store(r, pending),
                Action::StoreCopy { env, to } => self.spawn_copy(r, env, to),
                Action::DeleteStored(id) => self.mailbox.delete(id),
                Action::FindHomes(pending) => self.find_homes(r, pending, now),
                Action::Located { link, client } => self.tell_located(&link, &client),
                Action::StoredElsewhere(env) => {
                    if !self.peers.home_relays(&env.to).contains(&self.me) {
                        self.mailbox.delete(env.id);
                    }
                }
                Action::Stranded(env) => self.rehome(env),
                Action::Announce { client, online, to } => {
                    // Only its homes hear of a client (others ask them); coming with the
                    // client's own statement, leaving without.
                    let frame = if online {
                        let Some(session) = r.session(&client) else {
                            continue;
                        };
                        session.online_frame()
                    } else {
                        LinkFrame::Offline { client }
                    };
                    let homes = self.pinned_homes(&client);
                    let links: Vec<LinkOut> = match to {
                        // A relay that forwarded to a client gone from here hears it left.
                        Some(link) if !online => vec![link],
                        Some(link) => homes
                            .contains(&link.relay)
                            .then_some(link)
                            .into_iter()
                            .collect(),
                        None => r
                            .links()
                            .filter(|(relay, _)| homes.contains(relay))
                            .map(|(_, l)| l.clone())
                            .collect(),
                    };
                    let late = links
                        .iter()
                        .filter_map(|link| late_frame(link, frame.clone()))
                        .collect();
                    self.send_late(late);
                }
                Action::PushMailbox { client, done_to } => {
                    self.request_push(client, done_to);
                }
            }
        }
        failed
    }

    /// Queues a delivery, only if there is room. The recipient pays nothing: its sender paid
    /// for the delivery when it sent the message.
    fn deliver(&self, session: &SessionOut, env: Envelope) -> Result<(), Refusal> {
        let Ok(permit) = session.tx.try_reserve() else {
            return Err(Refusal::Full);
        };
        permit.send(SessionFrame::Deliver(env));
        Ok(())
    }

    fn answer_sender(
        &self,
        s: &SessionOut,
        id: MsgId,
        bytes: usize,
        result: Result<Outcome, Reject>,
    ) {
        let frame = match result {
            Ok(outcome) => SessionFrame::Accepted { id, outcome },
            Err(reason) => {
                self.metrics.messages_rejected.inc();
                SessionFrame::Rejected { id, reason }
            }
        };
        // The answer's place in the queue first: storage is billed only when the client is
        // told of it (that is what it counts), and before the answer can reach it, so that its
        // next message is checked against the credit this one used. It pays for every copy the
        // network keeps, and each copy's later delivery.
        let slot = self.answer_slot(&s.answers);
        let told = slot.is_some();
        if let (true, Some(meter), Ok(Outcome::Stored)) = (told, &s.meter, result) {
            let stored = top_billing::stored_message_usage(bytes);
            meter.record(top_billing::Service::Msg, stored.msg);
            meter.record(top_billing::Service::Mailbox, stored.mailbox);
        }
        if let Some(slot) = slot {
            slot.send(frame);
        }
        if !told && result.is_ok_and(Outcome::is_final) {
            // A client that lets thousands of answers pile up is not reading: end its
            // connection rather than leave a sender without its final answer (its SDK then
            // fails what is still waiting).
            s.conn.close(4u32.into(), b"answers not read");
        }
    }

    /// A place in a peer's answer queue; `None` when it is closed, or full (counted as a
    /// dropped frame).
    fn answer_slot<'a, T>(&self, tx: &'a mpsc::Sender<T>) -> Option<mpsc::Permit<'a, T>> {
        match tx.try_reserve() {
            Ok(slot) => Some(slot),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.metrics.frames_dropped.inc();
                None
            }
            Err(mpsc::error::TrySendError::Closed(())) => None,
        }
    }

    /// Queues an answer; a peer that lets its answers pile up has stopped reading, and the
    /// answer is dropped (and counted). Returns whether it was queued.
    pub(super) fn answer<T>(&self, tx: &mpsc::Sender<T>, frame: T) -> bool {
        let slot = self.answer_slot(tx);
        let told = slot.is_some();
        if let Some(slot) = slot {
            slot.send(frame);
        }
        told
    }
}

/// A presence frame for `link`, or the frame back with the queue to wait on if it is full.
pub(super) fn late_frame(
    link: &LinkOut,
    frame: LinkFrame,
) -> Option<(mpsc::Sender<LinkFrame>, LinkFrame)> {
    match link.tx.try_send(frame) {
        Err(mpsc::error::TrySendError::Full(frame)) => Some((link.tx.clone(), frame)),
        _ => None,
    }
}
