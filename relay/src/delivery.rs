//! Routing a message: to a local session, over a link to the client's relay, or into mailboxes;
//! and reporting each outcome to whoever is waiting for it.

// A `Pending` (envelope, origin, timestamp) is just over clippy's size limit for `Err`; handing it
// back by value on failure is the point of these functions, and boxing it would cost an
// allocation per message.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use top_proto::frame::{Envelope, LinkFrame, Outcome, Reject, SessionFrame};
use top_proto::id::AccountId;

use crate::state::{Inflight, LinkHandle, Origin, Pending, SessionHandle, Shared, lock, unix_now};

/// How long a home relay may take to answer a store request.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a frame without waiting when the queue has room; otherwise waits in a task.
pub fn send_or_spawn<T: Send + 'static>(tx: &mpsc::Sender<T>, frame: T) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(frame).await.ok() });
    }
}

/// Routes a message from a local sender or mailbox towards its recipient.
pub fn route(shared: &Arc<Shared>, env: Envelope, origin: Origin) {
    let Err(pending) = to_local_session(shared, Pending::new(env, origin)) else {
        return;
    };
    let pending = match shared.link_for_client(&pending.env.to) {
        Some((_, link)) => match hand_to_link(&link, pending, true) {
            Ok(()) => return,
            Err(p) => p,
        },
        None => pending,
    };
    undelivered(shared, pending);
}

/// Delivers a message forwarded by another relay to a client connected here, or fails it.
pub fn deliver_forwarded(shared: &Arc<Shared>, env: Envelope, origin: Origin) {
    if let Err(pending) = to_local_session(shared, Pending::new(env, origin)) {
        undelivered(shared, pending);
    }
}

fn to_local_session(shared: &Shared, pending: Pending) -> Result<(), Pending> {
    match shared.session(&pending.env.to) {
        Some(_) if shared.delivered.contains(&pending.env) => {
            finish(shared, pending, Ok(Outcome::Delivered));
            Ok(())
        }
        Some(session) => hand_to_session(&session, pending),
        None => Err(pending),
    }
}

/// A queue of frames towards a client or relay, with the table of deliveries awaiting an answer.
struct Carrier<'a, F> {
    tx: &'a mpsc::Sender<F>,
    inflight: &'a Inflight,
}

impl<'a> Carrier<'a, SessionFrame> {
    fn session(session: &'a SessionHandle) -> Self {
        Self {
            tx: &session.tx,
            inflight: &session.inflight,
        }
    }
}

impl<'a> Carrier<'a, LinkFrame> {
    fn link(link: &'a LinkHandle) -> Self {
        Self {
            tx: &link.tx,
            inflight: &link.forwards,
        }
    }
}

impl<F> Carrier<'_, F> {
    /// Queues `frame` carrying `pending`; gives the message back if the queue is full.
    fn try_hand(&self, pending: Pending, frame: F) -> Result<(), Pending> {
        let id = pending.env.id;
        let mut inflight = lock(self.inflight);
        if let Some(waiting) = inflight.get_mut(&id) {
            // Already on its way (e.g. pushed by two home relays): one answer settles both.
            waiting.push(pending);
            return Ok(());
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                inflight.insert(id, vec![pending]);
                Ok(())
            }
            Err(_) => Err(pending),
        }
    }

    /// Like [`Carrier::try_hand`], but waits for room; fails only if the queue closed.
    async fn hand_waiting(&self, pending: Pending, frame: F) -> Result<(), Pending> {
        let Ok(permit) = self.tx.reserve().await else {
            return Err(pending);
        };
        let id = pending.env.id;
        let mut inflight = lock(self.inflight);
        match inflight.get_mut(&id) {
            Some(waiting) => waiting.push(pending),
            None => {
                permit.send(frame);
                inflight.insert(id, vec![pending]);
            }
        }
        Ok(())
    }
}

/// Queues a delivery on a client's session; gives the message back if the session is backed up.
pub fn hand_to_session(session: &SessionHandle, pending: Pending) -> Result<(), Pending> {
    if !bill_delivery(session, &pending) {
        return Err(pending);
    }
    let frame = SessionFrame::Deliver(pending.env.clone());
    Carrier::session(session).try_hand(pending, frame)
}

/// Bills a delivery to the recipient; false when its credit is used up (the message then waits
/// in the mailbox until the recipient pays).
fn bill_delivery(session: &SessionHandle, pending: &Pending) -> bool {
    session
        .meter
        .as_ref()
        .is_none_or(|m| m.try_deliver(pending.env.sealed.len() as u64))
}

/// Forwards a message over a link; gives it back if the link is backed up.
pub fn hand_to_link(
    link: &LinkHandle,
    pending: Pending,
    store_on_fail: bool,
) -> Result<(), Pending> {
    let frame = LinkFrame::Forward {
        env: pending.env.clone(),
        store_on_fail,
    };
    Carrier::link(link).try_hand(pending, frame)
}

/// Takes every delivery of `id` out of an in-flight table.
pub fn take(inflight: &Inflight, id: &top_proto::frame::MsgId) -> Vec<Pending> {
    lock(inflight).remove(id).unwrap_or_default()
}

/// Takes deliveries older than `age` out of an in-flight table.
fn take_stale(inflight: &Inflight, age: Duration) -> Vec<Pending> {
    let now = Instant::now();
    let mut table = lock(inflight);
    let stale: Vec<_> = table
        .iter()
        .filter(|(_, p)| p.first().is_some_and(|p| now.duration_since(p.since) > age))
        .map(|(id, _)| *id)
        .collect();
    stale
        .into_iter()
        .flat_map(|id| table.remove(&id).unwrap_or_default())
        .collect()
}

/// Fails deliveries older than `age` (they fall back to the mailbox where their origin wants it).
pub fn fail_stale(shared: &Arc<Shared>, inflight: &Inflight, age: Duration) {
    for pending in take_stale(inflight, age) {
        undelivered(shared, pending);
    }
}

/// Fails every delivery of a closing session or link.
pub fn fail_all(shared: &Arc<Shared>, inflight: &Inflight) {
    let all: Vec<_> = lock(inflight).drain().flat_map(|(_, p)| p).collect();
    for pending in all {
        undelivered(shared, pending);
    }
}

/// Moves the deliveries a client's replaced session was offered and never acknowledged to its
/// new session: mailbox messages are released for the new session's push, the rest re-sent.
pub fn move_inflight(shared: &Arc<Shared>, old: &Inflight, new: &SessionHandle) {
    let all: Vec<_> = lock(old).drain().flat_map(|(_, p)| p).collect();
    for pending in all {
        if matches!(pending.origin, Origin::Mailbox) {
            shared.end_push(&pending.env.id);
        } else if let Err(pending) = hand_to_session(new, pending) {
            undelivered(shared, pending);
        }
    }
}

/// Reports a final result to a delivery's origin.
pub fn finish(shared: &Shared, pending: Pending, result: Result<Outcome, Reject>) {
    let id = pending.env.id;
    match (pending.origin, result) {
        (Origin::Sender(tx, meter), Ok(outcome)) => {
            if let (Some(meter), Outcome::Stored) = (meter, outcome) {
                let bytes = pending.env.sealed.len() as u64;
                meter.record(top_billing::Service::Mailbox, bytes);
                shared.metrics.billed_bytes.inc_by(bytes);
            }
            send_or_spawn(&tx, SessionFrame::Accepted { id, outcome })
        }
        (Origin::Sender(tx, _), Err(reason)) => {
            shared.metrics.messages_rejected.inc();
            send_or_spawn(&tx, SessionFrame::Rejected { id, reason })
        }
        (Origin::Link { tx, .. }, result) => send_or_spawn(
            &tx,
            LinkFrame::ForwardResult {
                id,
                outcome: result.ok(),
            },
        ),
        (Origin::Mailbox, result) => {
            if result == Ok(Outcome::Delivered) {
                shared.mailbox.delete(id);
            }
            shared.end_push(&id);
        }
    }
}

/// A delivery failed: store it in the recipient's mailboxes if its origin wants that.
pub fn undelivered(shared: &Arc<Shared>, pending: Pending) {
    let wants_store = match &pending.origin {
        Origin::Sender(..) => true,
        Origin::Link { store_on_fail, .. } => *store_on_fail,
        Origin::Mailbox => false,
    };
    tracing::debug!(id = ?pending.env.id, to = ?pending.env.to, wants_store, "not delivered");
    if !wants_store {
        finish(shared, pending, Err(Reject::Unavailable));
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = store_at_home(&shared, pending.env.clone()).await;
        finish(&shared, pending, result.map(|()| Outcome::Stored));
    });
}

/// Stores a message on its recipient's home relays; succeeds once at least one has it on disk.
pub async fn store_at_home(shared: &Arc<Shared>, env: Envelope) -> Result<(), Reject> {
    let homes = shared.home_relays(&env.to);
    let attempts = homes.iter().map(|home| {
        let env = env.clone();
        async move {
            if *home == shared.id {
                return store_here(shared, env).await;
            }
            match shared.link(home) {
                Some(link) => store_remote(&link, env).await,
                None => Err(Reject::Unavailable),
            }
        }
    });
    let results = join_all(attempts).await;
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    if results.contains(&Err(Reject::QuotaExceeded)) {
        return Err(Reject::QuotaExceeded);
    }
    if !homes.contains(&shared.id) {
        // No home relay reachable: keep it here; it is pushed when the recipient shows up.
        return store_here(shared, env).await;
    }
    Err(Reject::Unavailable)
}

async fn store_remote(link: &LinkHandle, env: Envelope) -> Result<(), Reject> {
    let id = env.id;
    let (tx, rx) = oneshot::channel();
    lock(&link.stores).insert(id, tx);
    if link.tx.send(LinkFrame::Store(env)).await.is_err() {
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

/// Commits a message to this relay's mailbox, then pushes it if its recipient is reachable.
pub async fn store_here(shared: &Arc<Shared>, env: Envelope) -> Result<(), Reject> {
    let to = env.to;
    shared.mailbox.insert(env, unix_now()).await?;
    shared.metrics.messages_stored.inc();
    if shared.session(&to).is_some() || shared.link_for_client(&to).is_some() {
        request_push(shared, to);
    }
    Ok(())
}

/// Starts a push of `client`'s mailbox without waiting for it: if one runs, it just runs once
/// more (so a burst of stores leaves no task behind per message).
pub fn request_push(shared: &Arc<Shared>, client: AccountId) {
    if shared.push_runs.claim(client).is_ok() {
        let run = shared.clone();
        shared
            .tasks
            .spawn(async move { run_claimed(&run, client).await });
    }
}

/// Pushes every stored message for `client` to wherever it is connected now.
///
/// At most one push runs per client; a push requested meanwhile makes it run once more, so a burst
/// of stores for one client costs a few mailbox scans, not one per message. Either way this returns
/// only once everything stored for `client` before the call was handed over (or could not be):
/// `Synced` and `MailboxDone` are sent after it and must not overtake a message.
pub async fn push_mailbox(shared: &Arc<Shared>, client: AccountId) {
    loop {
        match shared.push_runs.claim(client) {
            Ok(()) => break,
            Err(mut running) => match running.wait_for(Option::is_some).await.map(|e| *e) {
                Ok(Some(true)) => return,
                // Abandoned half way: run it here.
                _ => continue,
            },
        }
    }
    run_claimed(shared, client).await;
}

/// Runs a push this task claimed, pass after pass while more are asked for.
async fn run_claimed(shared: &Arc<Shared>, client: AccountId) {
    let mut run = RunGuard {
        shared,
        client,
        finished: false,
    };
    loop {
        push_once(shared, client).await;
        if !shared.push_runs.finish(&client) {
            run.finished = true;
            return;
        }
    }
}

/// Releases a push run whose task is cancelled half way (a session closing during its sync).
struct RunGuard<'a> {
    shared: &'a Shared,
    client: AccountId,
    finished: bool,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.push_runs.abandon(&self.client);
        }
    }
}

async fn push_once(shared: &Arc<Shared>, client: AccountId) {
    let mailbox = shared.mailbox.clone();
    let now = unix_now();
    let stored = match tokio::task::spawn_blocking(move || mailbox.pending_for(&client, now)).await
    {
        Ok(Ok(stored)) => stored,
        Ok(Err(e)) => {
            tracing::error!("reading mailbox of {client:?}: {e}");
            return;
        }
        Err(_) => return,
    };
    for env in stored {
        if !shared.start_push(env.id) {
            continue;
        }
        // Until the message is handed over, this push owns its mark; if the task is cancelled
        // while it waits for queue room the mark must go, or the message is never pushed again.
        let mut marked = PushMark {
            shared,
            id: env.id,
            handed: false,
        };
        let pending = Pending::new(env, Origin::Mailbox);
        match hand_over_waiting(shared, &client, pending).await {
            // Whoever answers for it now ends the push (see `finish`).
            Ok(()) => marked.handed = true,
            Err(_) => break,
        }
    }
}

/// A mailbox message marked as being pushed and not yet handed over.
struct PushMark<'a> {
    shared: &'a Shared,
    id: top_proto::frame::MsgId,
    handed: bool,
}

impl Drop for PushMark<'_> {
    fn drop(&mut self) {
        if !self.handed {
            self.shared.end_push(&self.id);
        }
    }
}

/// Hands a mailbox message to wherever `client` is, waiting for queue room.
async fn hand_over_waiting(
    shared: &Shared,
    client: &AccountId,
    pending: Pending,
) -> Result<(), Pending> {
    if let Some(session) = shared.session(client) {
        if shared.delivered.contains(&pending.env) {
            finish(shared, pending, Ok(Outcome::Delivered));
            return Ok(());
        }
        if !bill_delivery(&session, &pending) {
            return Err(pending);
        }
        let frame = SessionFrame::Deliver(pending.env.clone());
        return Carrier::session(&session)
            .hand_waiting(pending, frame)
            .await;
    }
    if let Some((_, link)) = shared.link_for_client(client) {
        let frame = LinkFrame::Forward {
            env: pending.env.clone(),
            store_on_fail: false,
        };
        return Carrier::link(&link).hand_waiting(pending, frame).await;
    }
    Err(pending)
}
