//! Mailbox pushes: everything stored here for a client, handed to wherever it is connected,
//! waiting for queue room, one run per client at a time.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use top_proto::frame::{Envelope, LinkFrame, SessionFrame};
use top_proto::id::{AccountId, RelayId};

use super::driver::{LATE_SEND, Messaging, Refusal};
use super::handles::LinkOut;
use super::push_runs::RunEnd;
use crate::util::{lock, unix_now};

impl Messaging {
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

    /// Pushes the mail waiting here for the clients connected to `relay` (its link can carry
    /// it again: e.g. a fresh channel pays for it).
    pub fn push_to_relay(self: &Arc<Self>, relay: RelayId) {
        let clients = self.router().clients_at(&relay);
        if clients.is_empty() {
            return;
        }
        let msg = self.clone();
        self.tasks.spawn(async move {
            let mailbox = msg.mailbox.clone();
            let holding = tokio::task::spawn_blocking(move || mailbox.holding_mail(clients)).await;
            match holding {
                Ok(Ok(clients)) => {
                    for client in clients {
                        msg.request_push(client, None);
                    }
                }
                Ok(Err(e)) => tracing::error!("reading mailbox usage: {e}"),
                Err(_) => {}
            }
        });
    }

    /// Pushes everything stored here for `client` and returns once it was handed over (or could
    /// not be): `Synced` is sent after it and must not overtake a message.
    pub async fn push_mailbox(self: &Arc<Self>, client: AccountId) {
        let mut end = self.request_push(client, None);
        end.wait_for(Option::is_some).await.ok();
    }

    pub(super) async fn run_push(self: Arc<Self>, client: AccountId) {
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

    pub(super) async fn push_once(self: &Arc<Self>, client: AccountId) {
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
    pub(super) async fn offer_stored(self: &Arc<Self>, client: AccountId, env: Envelope) -> bool {
        loop {
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
            match self
                .drive_reporting(&mut r, now)
                .iter()
                .find(|(id, _)| *id == env.id)
            {
                None => return true,
                // Someone took the place first: wait for the next one.
                Some((_, Refusal::Full)) => continue,
            }
        }
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
