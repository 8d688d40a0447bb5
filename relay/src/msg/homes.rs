//! A client's home relays as this relay uses them: links to the homes of every client
//! connected here are kept (they hold its mail and are told where it is), a message for a
//! recipient not known here goes through one of its homes, and a durable copy that could not
//! be delivered moves to the homes (where the recipient's relay asks for mail).

use std::sync::Arc;
use std::time::{Duration, Instant};

use top_proto::frame::Envelope;
use top_proto::id::{AccountId, RelayId};

use super::driver::Messaging;
use super::handles::{LinkOut, SessionOut};
use super::router::{Pending, Router, Serial};
use crate::util::lock;

/// How long a message for a recipient not known here, or a store, waits for a link to one of
/// its recipient's homes to come up.
pub(super) const HOME_LINK_WAIT: Duration = Duration::from_secs(3);
/// When a message kept here is offered to its recipient's homes again (each wait after the
/// one before).
const REHOME_AFTER: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

impl Messaging {
    /// Pins links to the home relays of `client` (its session `serial` opened here), in place
    /// of an earlier session's pins; returns the homes, this relay left out.
    pub(super) fn pin_homes(&self, client: AccountId, serial: Serial) -> Vec<RelayId> {
        let homes: Vec<RelayId> = self
            .peers
            .home_relays(&client)
            .into_iter()
            .filter(|h| *h != self.me)
            .collect();
        self.wants.pin(&homes);
        let old = lock(&self.home_pins).insert(client, (serial, homes.clone()));
        if let Some((_, old)) = old {
            self.wants.unpin(&old);
        }
        homes
    }

    /// Takes back the pins of `client`'s session `serial`, if it is the newest.
    pub(super) fn unpin_homes(&self, client: AccountId, serial: Serial) {
        let mut pins = lock(&self.home_pins);
        if pins.get(&client).is_some_and(|(s, _)| *s == serial)
            && let Some((_, homes)) = pins.remove(&client)
        {
            self.wants.unpin(&homes);
        }
    }

    /// The home relays `client`'s session here pinned (none if it is not connected here).
    pub(super) fn pinned_homes(&self, client: &AccountId) -> Vec<RelayId> {
        lock(&self.home_pins)
            .get(client)
            .map(|(_, homes)| homes.clone())
            .unwrap_or_default()
    }

    /// Wants a link to `relay` for a while, if it is a member; returns whether it is.
    pub fn want_link(&self, relay: RelayId) -> bool {
        let member = self.peers.is_member(&relay);
        if member {
            self.wants.want(relay, Instant::now());
        }
        member
    }

    /// Whether the link to `relay` carries something that must not be cut: a forward awaiting
    /// its answer, or a stream (pipe, CDN fetch) running over it.
    pub fn link_busy(&self, relay: &RelayId) -> bool {
        self.wants.held(relay) || self.router().forwards_to(relay) > 0
    }

    /// A local sender's message for a recipient not known here goes through a linked home;
    /// with none linked yet, it waits a bounded while for the first link to one to come up.
    pub(super) fn find_homes(
        self: &Arc<Self>,
        r: &mut Router<SessionOut, LinkOut>,
        pending: Pending<SessionOut, LinkOut>,
        now: Instant,
    ) {
        let homes = self.peers.home_relays(&pending.env.to);
        if homes.contains(&self.me) {
            // A home that does not know where its user is: the user is away; stored.
            return r.on_homes(pending, &[], now);
        }
        let homes: Vec<RelayId> = homes
            .into_iter()
            .filter(|h| self.peers.is_member(h))
            .collect();
        for home in &homes {
            self.wants.want(*home, now);
        }
        if homes.is_empty() || homes.iter().any(|h| r.link(h).is_some()) {
            return r.on_homes(pending, &homes, now);
        }
        // Waiting holds a store slot: the message is stored if the wait comes to nothing.
        let Ok(slot) = self.stores.clone().try_acquire_owned() else {
            return r.on_homes(pending, &homes, now);
        };
        let msg = self.clone();
        self.tasks.spawn(async move {
            let links = homes.iter().map(|h| Box::pin(msg.wait_link(h)));
            let first = futures::future::select_all(links);
            tokio::time::timeout(HOME_LINK_WAIT, first).await.ok();
            drop(slot);
            let now = Instant::now();
            let mut r = msg.router();
            r.on_homes(pending, &homes, now);
            msg.drive(&mut r, now);
        });
    }

    /// A message whose durable copy is here could not be delivered: a home keeps it (and pushes
    /// it once its recipient is reachable); another relay moves it to the homes, trying again a
    /// few times, and keeps it only if none takes it.
    pub(super) fn rehome(self: &Arc<Self>, env: Envelope) {
        self.rehome_after(env, &REHOME_AFTER);
    }

    /// A message kept here because no home of its recipient took it: moved to the homes later.
    pub(super) fn rehome_later(self: &Arc<Self>, env: Envelope) {
        self.rehome_after(env, &REHOME_AFTER[1..]);
    }

    fn rehome_after(self: &Arc<Self>, env: Envelope, waits: &'static [Duration]) {
        let to = env.to;
        if self.peers.home_relays(&to).contains(&self.me) {
            self.request_push(to, None);
            return;
        }
        let Ok(slot) = self.rehoming.clone().try_acquire_owned() else {
            self.request_push(to, None);
            return;
        };
        let msg = self.clone();
        self.tasks.spawn(async move {
            for wait in waits {
                tokio::select! {
                    _ = tokio::time::sleep(*wait) => {}
                    _ = msg.shutdown.cancelled() => return,
                }
                // Delivered meanwhile (pushed from here): nothing to move.
                if !msg.still_here(&env).await {
                    return;
                }
                if msg.store_at_homes_only(env.clone()).await.is_ok() {
                    msg.mailbox.delete(env.id);
                    return;
                }
            }
            drop(slot);
            msg.request_push(to, None);
        });
    }

    /// Whether `env` is still in this relay's mailbox.
    async fn still_here(&self, env: &Envelope) -> bool {
        let (mailbox, to, id) = (self.mailbox.clone(), env.to, env.id);
        let pending =
            tokio::task::spawn_blocking(move || mailbox.pending_for(&to, crate::util::unix_now()));
        match pending.await {
            Ok(Ok(stored)) => stored.iter().any(|e| e.id == id),
            _ => false,
        }
    }
}
