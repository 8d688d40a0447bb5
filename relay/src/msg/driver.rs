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

use super::mailbox::Mailbox;
use super::push_runs::{PushRuns, RunEnd};
use super::router::{Action, Handover, Pending, Router, RouterConfig, Serial};
use crate::billing::meter::ClientMeter;
use crate::node::metrics::Metrics;
use crate::node::peers::Peers;
use crate::util::{lock, unix_now};

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
const LATE_SEND: Duration = Duration::from_secs(5);
/// Stores (to the mailbox here or at home relays) in progress at once; beyond it a message is
/// refused as `Unavailable`.
const MAX_STORES: usize = 4096;
/// How long a home relay may take to answer a store request.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the router's clock ticks (durable copies fall due within a tick of their time).
const TICK: Duration = Duration::from_millis(100);

/// A client's session, as the router and other roles see it.
#[derive(Clone)]
pub struct SessionOut {
    /// The client.
    pub client: AccountId,
    /// Distinguishes this session from the client's others.
    pub serial: Serial,
    /// The client's connection (for opening pipe streams to it).
    pub conn: quinn::Connection,
    /// Deliveries (and `Synced`) to write to the client, in order.
    pub tx: mpsc::Sender<SessionFrame>,
    /// Answers to the client's messages, written first.
    pub answers: mpsc::Sender<SessionFrame>,
    /// The client's meter, when this relay bills.
    pub meter: Option<Arc<ClientMeter>>,
}

/// Store requests sent over a link and awaiting the other relay's answer.
type StoreWaiters = Arc<Mutex<HashMap<MsgId, oneshot::Sender<Option<Reject>>>>>;

/// A link to another relay, as the router and other roles see it.
#[derive(Clone)]
pub struct LinkOut {
    /// The relay at the other end.
    pub relay: RelayId,
    /// Distinguishes this link from others to the same relay.
    pub serial: Serial,
    /// The connection (for pipes and CDN fetches over it).
    pub conn: quinn::Connection,
    /// Forwards, presence, store requests and `MailboxDone` for the link, in order.
    pub tx: mpsc::Sender<LinkFrame>,
    /// Answers to the other relay's forwards and store requests, written first.
    pub answers: mpsc::Sender<LinkFrame>,
    stores: StoreWaiters,
}

impl PartialEq for LinkOut {
    fn eq(&self, other: &Self) -> bool {
        self.relay == other.relay && self.serial == other.serial
    }
}

impl LinkOut {
    /// A link about to run.
    pub fn new(
        relay: RelayId,
        serial: Serial,
        conn: quinn::Connection,
        (tx, answers): (mpsc::Sender<LinkFrame>, mpsc::Sender<LinkFrame>),
    ) -> Self {
        Self {
            relay,
            serial,
            conn,
            tx,
            answers,
            stores: Arc::default(),
        }
    }
}

/// The messaging role of a relay: sessions, links, mailboxes, and the router between them.
pub struct Messaging {
    me: RelayId,
    router: Mutex<Router<SessionOut, LinkOut>>,
    /// Durable mailboxes.
    pub mailbox: Mailbox,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    push_runs: Mutex<PushRuns<LinkOut>>,
    sync_waiters: Mutex<HashMap<(AccountId, RelayId), oneshot::Sender<()>>>,
    stores: Arc<Semaphore>,
    serials: AtomicU64,
    links_changed: Notify,
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
        });
        let ticker = msg.clone();
        msg.tasks.spawn(async move { ticker.run_clock().await });
        msg
    }

    /// A fresh serial number for a session or link.
    pub fn serial(&self) -> Serial {
        self.serials.fetch_add(1, Ordering::Relaxed)
    }

    fn router(&self) -> MutexGuard<'_, Router<SessionOut, LinkOut>> {
        lock(&self.router)
    }

    async fn run_clock(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut r = self.router();
                    r.on_tick(now);
                    self.drive(&mut r, now);
                }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    // --- events from sessions -----------------------------------------------------------------

    /// A client's session opened; returns waits for each linked relay's mailbox push.
    pub fn open_session(self: &Arc<Self>, session: SessionOut) -> Vec<oneshot::Receiver<()>> {
        self.metrics.sessions.inc();
        let client = session.client;
        let now = Instant::now();
        let mut r = self.router();
        let waits = r
            .links()
            .map(|(relay, _)| self.wait_mailbox_done(client, *relay))
            .collect();
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
        self.drive(&mut r, now);
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
        if r.on_ack(client, id) {
            self.metrics.messages_delivered.inc();
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
        let now = Instant::now();
        let mut r = self.router();
        r.on_link_up(link.relay, link.serial, link);
        self.drive(&mut r, now);
        drop(r);
        self.links_changed.notify_waiters();
    }

    /// A link went down.
    pub fn link_down(self: &Arc<Self>, link: &LinkOut) {
        self.metrics.links.dec();
        lock(&link.stores).clear();
        let now = Instant::now();
        let mut r = self.router();
        r.on_link_down(link.relay, link.serial, now);
        self.drive(&mut r, now);
    }

    /// A linked relay says where a client is.
    pub fn presence(self: &Arc<Self>, relay: RelayId, client: AccountId, online: bool) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_presence(relay, client, online);
        self.drive(&mut r, now);
    }

    /// A linked relay forwarded a message.
    pub fn forwarded(self: &Arc<Self>, env: Envelope, link: &LinkOut, store_on_fail: bool) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_forwarded(env, link.clone(), store_on_fail, now);
        self.drive(&mut r, now);
    }

    /// A linked relay answered a forward.
    pub fn forward_result(self: &Arc<Self>, relay: RelayId, id: MsgId, outcome: Option<Outcome>) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_forward_result(relay, id, outcome, now);
        self.drive(&mut r, now);
    }

    /// A linked relay asks this one to keep a message in its mailbox.
    pub fn store_for_peer(self: &Arc<Self>, link: &LinkOut, env: Envelope) {
        let id = env.id;
        let reply = |error| {
            self.answer(&link.answers, LinkFrame::StoreResult { id, error });
        };
        if env.check().is_err() {
            return reply(Some(Reject::TooLarge));
        }
        let Ok(slot) = self.stores.clone().try_acquire_owned() else {
            return reply(Some(Reject::Unavailable));
        };
        let (msg, tx) = (self.clone(), link.answers.clone());
        self.tasks.spawn(async move {
            let error = msg.store_here(env).await.err();
            msg.answer(&tx, LinkFrame::StoreResult { id, error });
            drop(slot);
        });
    }

    /// A linked relay answered a store request.
    pub fn store_result(&self, link: &LinkOut, id: MsgId, error: Option<Reject>) {
        if let Some(waiter) = lock(&link.stores).remove(&id) {
            waiter.send(error).ok();
        }
    }

    /// A linked relay finished pushing what it holds for `client`.
    pub fn mailbox_done(&self, client: AccountId, relay: RelayId) {
        if let Some(tx) = lock(&self.sync_waiters).remove(&(client, relay)) {
            tx.send(()).ok();
        }
    }

    /// A session stopped waiting for linked relays' pushes: forget waits nobody holds any more.
    pub fn forget_sync(&self) {
        lock(&self.sync_waiters).retain(|_, waiter| !waiter.is_closed());
    }

    fn wait_mailbox_done(&self, client: AccountId, relay: RelayId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.sync_waiters).insert((client, relay), tx);
        rx
    }

    /// A client paid for deliveries held back: push again, here and on linked relays.
    pub fn resume(self: &Arc<Self>, client: AccountId) {
        let presence = LinkFrame::Presence {
            client,
            online: true,
        };
        let late: Vec<_> = self
            .linked()
            .into_iter()
            .filter_map(|link| late_frame(&link, presence.clone()))
            .collect();
        self.send_late(late);
        self.request_push(client, None);
    }

    /// Sends frames a full link queue refused, waiting for room in one tracked task.
    fn send_late(&self, late: Vec<(mpsc::Sender<LinkFrame>, LinkFrame)>) {
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

    /// Every link up.
    pub fn linked(&self) -> Vec<LinkOut> {
        self.router().links().map(|(_, l)| l.clone()).collect()
    }

    /// How many clients are connected here.
    pub fn clients(&self) -> usize {
        self.router().clients().count()
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
    fn drive(self: &Arc<Self>, r: &mut Router<SessionOut, LinkOut>, now: Instant) {
        self.drive_reporting(r, now);
    }

    /// Like [`Messaging::drive`]; returns the messages whose hand-over failed (the router
    /// already knows; a push uses it to wait for room and try again).
    fn drive_reporting(
        self: &Arc<Self>,
        r: &mut Router<SessionOut, LinkOut>,
        now: Instant,
    ) -> Vec<MsgId> {
        let mut failed = Vec::new();
        while let Some(action) = r.poll_action() {
            match action {
                Action::Deliver { session, env } => {
                    let id = env.id;
                    if !self.deliver(&session, env) {
                        failed.push(id);
                        r.on_handover_failed(Handover::Session(session.client), id, now);
                    }
                }
                Action::Forward {
                    link,
                    env,
                    store_on_fail,
                } => {
                    let id = env.id;
                    let frame = LinkFrame::Forward { env, store_on_fail };
                    if link.tx.try_send(frame).is_err() {
                        failed.push(id);
                        r.on_handover_failed(Handover::Link(link.relay), id, now);
                    }
                }
                Action::AnswerSender {
                    session,
                    id,
                    bytes,
                    result,
                } => self.answer_sender(&session, id, bytes, result),
                Action::AnswerLink { link, id, outcome } => {
                    self.answer(&link.answers, LinkFrame::ForwardResult { id, outcome });
                }
                Action::Store(pending) => self.spawn_store(r, pending),
                Action::StoreCopy { env, to } => self.spawn_copy(r, env, to),
                Action::DeleteStored(id) => self.mailbox.delete(id),
                Action::Announce { client, online, to } => {
                    let frame = LinkFrame::Presence { client, online };
                    let late = match to {
                        Some(link) => late_frame(&link, frame).into_iter().collect(),
                        None => r
                            .links()
                            .filter_map(|(_, link)| late_frame(link, frame.clone()))
                            .collect(),
                    };
                    self.send_late(late);
                }
                Action::PushMailbox { client, done_to } => {
                    self.request_push(client, done_to);
                }
            }
        }
        failed
    }

    /// Queues a delivery and bills it to the recipient, only if there is room: a recipient is
    /// never charged for a delivery that did not go out.
    fn deliver(&self, session: &SessionOut, env: Envelope) -> bool {
        let Ok(permit) = session.tx.try_reserve() else {
            return false;
        };
        let paid = session
            .meter
            .as_ref()
            .is_none_or(|m| m.try_deliver(env.sealed.len() as u64));
        if paid {
            permit.send(SessionFrame::Deliver(env));
        }
        paid
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
        let told = self.answer(&s.answers, frame);
        // Storage is billed only when the client is told of it: that is what it counts.
        if let (true, Some(meter), Ok(Outcome::Stored)) = (told, &s.meter, result) {
            meter.record(top_billing::Service::Mailbox, bytes as u64);
            self.metrics.billed_bytes.inc_by(bytes as u64);
        }
    }

    /// Queues an answer; a peer that lets its answers pile up has stopped reading, and the
    /// answer is dropped (and counted). Returns whether it was queued.
    fn answer<T>(&self, tx: &mpsc::Sender<T>, frame: T) -> bool {
        match tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.frames_dropped.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn spawn_store(
        self: &Arc<Self>,
        r: &mut Router<SessionOut, LinkOut>,
        pending: Pending<SessionOut, LinkOut>,
    ) {
        let Ok(slot) = self.stores.clone().try_acquire_owned() else {
            r.on_stored(pending, Err(Reject::Unavailable));
            return;
        };
        let msg = self.clone();
        self.tasks.spawn(async move {
            let result = msg.store_at_home(pending.env.clone()).await;
            drop(slot);
            let now = Instant::now();
            let mut r = msg.router();
            r.on_stored(pending, result);
            msg.drive(&mut r, now);
        });
    }

    /// Stores a copy of a message in flight in this relay's mailbox (not pushed: it is being
    /// delivered; if that fails, this copy is where it waits).
    fn spawn_copy(
        self: &Arc<Self>,
        r: &mut Router<SessionOut, LinkOut>,
        env: Envelope,
        to: Handover,
    ) {
        let Ok(slot) = self.stores.clone().try_acquire_owned() else {
            r.on_copy_stored(to, &env, Err(Reject::Unavailable));
            return;
        };
        let msg = self.clone();
        self.tasks.spawn(async move {
            let result = msg.mailbox.insert(env.clone(), unix_now()).await;
            drop(slot);
            if result.is_ok() {
                msg.metrics.messages_stored.inc();
            }
            let now = Instant::now();
            let mut r = msg.router();
            r.on_copy_stored(to, &env, result);
            msg.drive(&mut r, now);
        });
    }

    /// Stores a message on its recipient's home relays; succeeds once at least one has it on
    /// disk. With no home relay reachable, this relay keeps it.
    async fn store_at_home(self: &Arc<Self>, env: Envelope) -> Result<(), Reject> {
        let homes = self.peers.home_relays(&env.to);
        let attempts = homes.iter().map(|home| {
            let env = env.clone();
            async move {
                if *home == self.me {
                    return self.store_here(env).await;
                }
                match self.link(home) {
                    Some(link) => store_remote(&link, env).await,
                    None => Err(Reject::Unavailable),
                }
            }
        });
        let results = futures::future::join_all(attempts).await;
        if results.iter().any(Result::is_ok) {
            return Ok(());
        }
        if results.contains(&Err(Reject::QuotaExceeded)) {
            return Err(Reject::QuotaExceeded);
        }
        if !homes.contains(&self.me) {
            return self.store_here(env).await;
        }
        Err(Reject::Unavailable)
    }

    /// Commits a message to this relay's mailbox, then pushes it if its recipient is reachable.
    async fn store_here(self: &Arc<Self>, env: Envelope) -> Result<(), Reject> {
        let to = env.to;
        self.mailbox.insert(env, unix_now()).await?;
        self.metrics.messages_stored.inc();
        let reachable = {
            let r = self.router();
            r.session(&to).is_some() || r.link_for_client(&to).is_some()
        };
        if reachable {
            self.request_push(to, None);
        }
        Ok(())
    }

    // --- mailbox pushes -----------------------------------------------------------------------

    /// Starts a push of `client`'s mailbox unless one runs (then it runs once more); `done_to`
    /// is told `MailboxDone` when it ends. Returns a watch on the end of the run.
    pub fn request_push(self: &Arc<Self>, client: AccountId, done_to: Option<LinkOut>) -> RunEnd {
        let requested = lock(&self.push_runs).request(client, done_to);
        if requested.start {
            let msg = self.clone();
            self.tasks.spawn(async move { msg.run_push(client).await });
        }
        requested.end
    }

    /// Pushes everything stored here for `client` and returns once it was handed over (or could
    /// not be): `Synced` is sent after it and must not overtake a message.
    pub async fn push_mailbox(self: &Arc<Self>, client: AccountId) {
        let mut end = self.request_push(client, None);
        end.wait_for(Option::is_some).await.ok();
    }

    async fn run_push(self: Arc<Self>, client: AccountId) {
        loop {
            tokio::select! {
                () = self.push_once(client) => {}
                () = self.shutdown.cancelled() => {
                    lock(&self.push_runs).abandon(&client);
                    return;
                }
            }
            let told = lock(&self.push_runs).finish(&client);
            if let Some(links) = told {
                // After the pushed forwards, on the same queue.
                for link in links {
                    let done = link.tx.send(LinkFrame::MailboxDone { client });
                    tokio::time::timeout(LATE_SEND, done).await.ok();
                }
                return;
            }
        }
    }

    async fn push_once(self: &Arc<Self>, client: AccountId) {
        let mailbox = self.mailbox.clone();
        let now = unix_now();
        let stored =
            match tokio::task::spawn_blocking(move || mailbox.pending_for(&client, now)).await {
                Ok(Ok(stored)) => stored,
                Ok(Err(e)) => return tracing::error!("reading mailbox of {client:?}: {e}"),
                Err(_) => return,
            };
        for env in stored {
            if !self.offer_stored(client, env).await {
                return;
            }
        }
    }

    /// Hands one stored message over, waiting for queue room; false if the client is not
    /// reachable (or not taking deliveries) and the push should stop.
    async fn offer_stored(self: &Arc<Self>, client: AccountId, env: Envelope) -> bool {
        for _ in 0..2 {
            let target = {
                let r = self.router();
                match (r.session(&client), r.link_for_client(&client)) {
                    (Some(s), _) => Room::Session(s.tx.clone()),
                    (None, Some(l)) => Room::Link(l.tx.clone()),
                    (None, None) => return false,
                }
            };
            if !target.wait().await {
                return false;
            }
            let now = Instant::now();
            let mut r = self.router();
            if r.on_stored_message(env.clone(), now).is_none() {
                return false;
            }
            if !self.drive_reporting(&mut r, now).contains(&env.id) {
                return true;
            }
        }
        false
    }
}

/// A presence frame for `link`, or the frame back with the queue to wait on if it is full.
fn late_frame(link: &LinkOut, frame: LinkFrame) -> Option<(mpsc::Sender<LinkFrame>, LinkFrame)> {
    match link.tx.try_send(frame) {
        Err(mpsc::error::TrySendError::Full(frame)) => Some((link.tx.clone(), frame)),
        _ => None,
    }
}

/// A queue a push waits on for room.
enum Room {
    Session(mpsc::Sender<SessionFrame>),
    Link(mpsc::Sender<LinkFrame>),
}

impl Room {
    /// Waits until the queue has room for a delivery; false if it closed.
    async fn wait(&self) -> bool {
        match self {
            // One place, released at once: the hand-over that follows takes it.
            Room::Session(tx) => tx.reserve().await.is_ok(),
            Room::Link(tx) => tx.reserve().await.is_ok(),
        }
    }
}

async fn store_remote(link: &LinkOut, env: Envelope) -> Result<(), Reject> {
    let id = env.id;
    let (tx, rx) = oneshot::channel();
    lock(&link.stores).insert(id, tx);
    if link.tx.try_send(LinkFrame::Store(env)).is_err() {
        lock(&link.stores).remove(&id);
        return Err(Reject::Unavailable);
    }
    match tokio::time::timeout(STORE_TIMEOUT, rx).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(reject))) => Err(reject),
        _ => {
            lock(&link.stores).remove(&id);
            Err(Reject::Unavailable)
        }
    }
}
