//! Storing messages: at the recipient's home relays when a delivery fails, a durable copy of a
//! message in flight, and a linked relay's store requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use top_proto::frame::{Envelope, LinkFrame, MsgId, Reject};
use top_proto::id::RelayId;

use super::driver::Messaging;
use super::handles::{LinkOut, SessionOut};
use super::homes::HOME_LINK_WAIT;
use super::router::{Handover, Pending, Router};
use crate::util::{lock, unix_now};

/// How long a home relay may take to answer a store request.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

impl Messaging {
    /// A linked relay asks this one to keep a message in its mailbox.
    pub fn store_for_peer(self: &Arc<Self>, link: &LinkOut, env: Envelope) {
        let id = env.id;
        let reply = |error| {
            self.answer(&link.answers, LinkFrame::StoreResult { id, error });
        };
        if env.check().is_err() {
            return reply(Some(Reject::TooLarge));
        }
        let Ok(slot) = link.peer_stores.clone().try_acquire_owned() else {
            return reply(Some(Reject::Unavailable));
        };
        // The asking relay pays for the later delivery now, and for the storage once kept.
        let bytes = env.sealed.len();
        if !link.charge_delivery(bytes) {
            return reply(Some(Reject::PaymentRequired));
        }
        let (msg, link) = (self.clone(), link.clone());
        self.tasks.spawn(async move {
            let error = msg.store_here(env).await.err();
            if error.is_none() {
                link.charge_storage(bytes);
            }
            msg.answer(&link.answers, LinkFrame::StoreResult { id, error });
            drop(slot);
        });
    }

    /// A linked relay answered a store request.
    pub fn store_result(&self, link: &LinkOut, id: MsgId, error: Option<Reject>) {
        if let Some(waiter) = lock(&link.stores).remove(&id) {
            waiter.send(error).ok();
        }
    }

    pub(super) fn spawn_store(
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
    pub(super) fn spawn_copy(
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
    /// disk. With no home relay reachable, this relay keeps it (and a sweep moves it to the
    /// homes later).
    pub(super) async fn store_at_home(self: &Arc<Self>, env: Envelope) -> Result<(), Reject> {
        match self.store_at_homes_only(env.clone(), true).await {
            Err(Reject::Unavailable) if !self.peers.home_relays(&env.to).contains(&self.me) => {
                // Its recipient's relay asks the homes for mail, not this relay: moved there
                // by a later sweep, once a home takes it.
                self.store_here(env).await
            }
            result => result,
        }
    }

    /// Stores a message on its recipient's home relays (linking to those not linked yet;
    /// this relay counts only if `here_counts`); succeeds once at least one has it on disk.
    pub(super) async fn store_at_homes_only(
        self: &Arc<Self>,
        env: Envelope,
        here_counts: bool,
    ) -> Result<(), Reject> {
        let homes: Vec<RelayId> = self
            .peers
            .home_relays(&env.to)
            .into_iter()
            .filter(|h| here_counts || *h != self.me)
            .collect();
        let attempts = homes.iter().map(|home| {
            let env = env.clone();
            async move {
                if *home == self.me {
                    return self.store_here(env).await;
                }
                match self.home_link(home).await {
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
        Err(Reject::Unavailable)
    }

    /// The link to `home`, wanted and waited for a while if it is not up.
    async fn home_link(&self, home: &RelayId) -> Option<LinkOut> {
        if let Some(link) = self.link(home) {
            self.wants.want(*home, Instant::now());
            return Some(link);
        }
        if !self.peers.is_member(home) {
            return None;
        }
        self.wants.want(*home, Instant::now());
        tokio::time::timeout(HOME_LINK_WAIT, self.wait_link(home))
            .await
            .ok()?;
        self.link(home)
    }

    /// Commits a message to this relay's mailbox, then pushes it if its recipient is reachable.
    pub(super) async fn store_here(self: &Arc<Self>, env: Envelope) -> Result<(), Reject> {
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
}

async fn store_remote(link: &LinkOut, env: Envelope) -> Result<(), Reject> {
    let id = env.id;
    let bytes = env.sealed.len();
    let (tx, rx) = oneshot::channel();
    lock(&link.stores).insert(id, tx);
    if link.tx.try_send(LinkFrame::Store(env)).is_err() {
        lock(&link.stores).remove(&id);
        return Err(Reject::Unavailable);
    }
    // The other relay charges for keeping it and delivering it later: counted here too.
    link.count.handed(bytes);
    match tokio::time::timeout(STORE_TIMEOUT, rx).await {
        Ok(Ok(None)) => {
            link.count.stored(bytes);
            Ok(())
        }
        Ok(Ok(Some(reject))) => Err(reject),
        _ => {
            lock(&link.stores).remove(&id);
            Err(Reject::Unavailable)
        }
    }
}
