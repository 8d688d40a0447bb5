//! A client's home relays as this relay uses them: links to the homes of every client
//! connected here are kept (they hold its mail and are told where it is), a message for a
//! recipient not known here goes through one of its homes, and a durable copy that could not
//! be delivered moves to the homes (where the recipient's relay asks for mail).

use std::sync::Arc;
use std::time::{Duration, Instant};

use top_proto::frame::Envelope;
use top_proto::id::{AccountId, RelayId};

use super::driver::{Messaging, late_frame};
use super::handles::{LinkOut, SessionOut};
use super::router::{Pending, Router, Serial};
use crate::util::lock;

/// How long a message for a recipient not known here, or a store, waits for a link to one of
/// its recipient's homes to come up.
pub(super) const HOME_LINK_WAIT: Duration = Duration::from_secs(3);
/// How often mail kept here for users this relay is not a home of is moved to their homes.
const REHOME_SWEEP: Duration = Duration::from_secs(60);
/// The first such sweep after start.
const FIRST_SWEEP: Duration = Duration::from_secs(10);
/// Mail moves once it is this old (seconds): older than any delivery still in flight (a
/// relayed forward waits at most twice the forward timeout).
const SETTLED_SECS: u64 = 180;
/// Messages one sweep offers to homes at most.
const SWEEP_MAX_MESSAGES: usize = 1024;
/// Messages of one recipient one sweep offers at most.
const SWEEP_PER_RECIPIENT: usize = 64;

impl Messaging {
    /// The home relays of `client`, this relay left out.
    pub(super) fn other_homes(&self, client: &AccountId) -> Vec<RelayId> {
        self.peers
            .home_relays(client)
            .into_iter()
            .filter(|h| *h != self.me)
            .collect()
    }

    /// Pins links to the home relays of `client` (its session `serial` opened here), in place
    /// of an earlier session's pins; returns the homes, this relay left out.
    pub(super) fn pin_homes(&self, client: AccountId, serial: Serial) -> Vec<RelayId> {
        let homes = self.other_homes(&client);
        self.wants.pin(&homes);
        let old = lock(&self.home_pins).insert(client, (serial, homes.clone()));
        if let Some((_, old)) = old {
            self.wants.unpin(&old);
        }
        homes
    }

    /// Repins every client's homes after each change of the member set (off the async
    /// workers: it draws homes for every client connected here), until shutdown.
    pub(super) async fn run_repins(self: Arc<Self>) {
        let mut members = self.peers.subscribe();
        loop {
            tokio::select! {
                r = members.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
            members.mark_unchanged();
            let msg = self.clone();
            tokio::task::spawn_blocking(move || msg.repin_all())
                .await
                .ok();
        }
    }

    /// The member set changed: each client connected here pins its homes as drawn now, and
    /// homes it did not have before (and that are linked) are told it is here.
    pub(super) fn repin_all(&self) {
        let pinned: Vec<(AccountId, Serial, Vec<RelayId>)> = lock(&self.home_pins)
            .iter()
            .map(|(c, (serial, homes))| (*c, *serial, homes.clone()))
            .collect();
        let mut late = Vec::new();
        for (client, serial, old) in pinned {
            let homes = self.other_homes(&client);
            if homes == old {
                continue;
            }
            {
                let mut pins = lock(&self.home_pins);
                if pins.get(&client).is_none_or(|(s, _)| *s != serial) {
                    continue;
                }
                self.wants.pin(&homes);
                self.wants.unpin(&old);
                pins.insert(client, (serial, homes.clone()));
            }
            let r = self.router();
            if let Some(session) = r.session(&client) {
                let frame = session.online_frame();
                for (relay, link) in r.links() {
                    if homes.contains(relay) && !old.contains(relay) {
                        late.extend(late_frame(link, frame.clone()));
                    }
                }
            }
        }
        self.send_late(late);
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
    /// its answer, an answer owed to that relay, or a stream (pipe, CDN fetch) running over it.
    pub fn link_busy(&self, relay: &RelayId) -> bool {
        if self.wants.held(relay) {
            return true;
        }
        let r = self.router();
        r.forwards_to(relay) > 0 || r.answers_owed(|l| l.relay == *relay)
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
        // Waiting holds a slot (bounded); without one it is stored at once.
        let Ok(slot) = self.finding.clone().try_acquire_owned() else {
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
    /// it once its recipient is reachable); another relay moves it to the homes now, or, if
    /// none takes it, keeps it until the next sweep ([`Messaging::run_rehome_sweeps`]).
    pub(super) fn rehome(self: &Arc<Self>, env: Envelope) {
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
            if !msg.move_to_homes(env).await {
                msg.request_push(to, None);
            }
            drop(slot);
        });
    }

    /// Hands a message kept here to its recipient's other homes; deletes it here once one of
    /// them has it and this relay is still not a home. Returns whether it moved.
    async fn move_to_homes(self: &Arc<Self>, env: Envelope) -> bool {
        let (id, to) = (env.id, env.to);
        if self.store_at_homes_only(env, false).await.is_err() {
            return false;
        }
        // A home now (the member set changed meanwhile): its copy here stays.
        if self.peers.home_relays(&to).contains(&self.me) {
            return false;
        }
        self.mailbox.delete(id);
        true
    }

    /// From time to time (and once soon after start), moves mail kept here for users this
    /// relay is not a home of to their homes: their relays ask the homes for mail, not this
    /// one. Only mail that has settled (older than any delivery still in flight) moves; each
    /// sweep goes on where the last one stopped.
    pub(super) async fn run_rehome_sweeps(self: Arc<Self>) {
        let mut next = FIRST_SWEEP;
        let mut cursor = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.shutdown.cancelled() => return,
            }
            next = REHOME_SWEEP;
            let moved = self.rehome_sweep(&mut cursor).await;
            if moved > 0 {
                tracing::info!("moved {moved} messages to their recipients' home relays");
            }
        }
    }

    /// One sweep from `cursor` (the last recipient looked at; `None`: the first), at most
    /// [`SWEEP_MAX_MESSAGES`] messages; returns how many moved.
    async fn rehome_sweep(self: &Arc<Self>, cursor: &mut Option<AccountId>) -> usize {
        let (mut moved, mut looked) = (0, 0);
        while looked < SWEEP_MAX_MESSAGES && !self.shutdown.is_cancelled() {
            let mailbox = self.mailbox.clone();
            let after = *cursor;
            let page = tokio::task::spawn_blocking(move || mailbox.recipients(after, 256)).await;
            let Ok(Ok(page)) = page else { return moved };
            let Some(last) = page.last().copied() else {
                // The end: the next sweep starts over.
                *cursor = None;
                return moved;
            };
            *cursor = Some(last);
            for to in page {
                let reachable = {
                    let r = self.router();
                    r.session(&to).is_some() || r.link_for_client(&to).is_some()
                };
                // A home keeps its mail; one reachable from here is pushed from here.
                if reachable || self.peers.home_relays(&to).contains(&self.me) {
                    continue;
                }
                let mailbox = self.mailbox.clone();
                let now = crate::util::unix_now();
                let settled = tokio::task::spawn_blocking(move || {
                    mailbox.settled_for(&to, now, SETTLED_SECS, SWEEP_PER_RECIPIENT)
                })
                .await;
                let Ok(Ok(settled)) = settled else { continue };
                for env in settled {
                    looked += 1;
                    if !self.move_to_homes(env).await {
                        // Its homes are not taking mail now: the rest of it waits too.
                        break;
                    }
                    moved += 1;
                }
                if looked >= SWEEP_MAX_MESSAGES {
                    break;
                }
            }
        }
        moved
    }
}
