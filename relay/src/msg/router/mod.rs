//! The messaging core, without I/O: who is connected where, which deliveries await an answer and
//! until when, and what becomes of a message that cannot be handed over.
//!
//! Inputs are events (`on_send`, `on_ack`, `on_link_up`, `on_forward_result`, `on_tick`…); each
//! queues [`Action`]s that the driver takes with [`Router::poll_action`] and carries out (write a
//! frame, store a message, answer a sender). When carrying one out fails (a full queue, a closed
//! stream, a recipient out of credit) the driver says so with [`Router::on_handover_failed`], and
//! the router decides what happens next. Time is an argument: nothing here reads a clock.
//!
//! The router is generic over the driver's handles to a session (`S`) and a link (`L`), which it
//! only clones into actions; tests drive it with plain numbers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use top_proto::frame::{Envelope, MsgId, Outcome, Reject};
use top_proto::id::{AccountId, RelayId};

use super::delivered::Delivered;

mod types;
pub use types::{Action, Handover, Origin, Pending, RouterConfig, Serial};

/// Deliveries awaiting an answer, by message id (one id may come from several origins, such as
/// two home relays pushing the same message; one answer settles them all).
struct Inflight<S, L>(HashMap<MsgId, Vec<Pending<S, L>>>);

impl<S, L> Default for Inflight<S, L> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<S, L> Inflight<S, L> {
    /// Takes the deliveries handed over before `deadline` (before `relayed_deadline`, those
    /// relayed through a home).
    fn take_older_than(
        &mut self,
        deadline: Instant,
        relayed_deadline: Option<Instant>,
    ) -> Vec<Pending<S, L>> {
        let stale_at = |p: &Pending<S, L>| match (p.relayed, relayed_deadline) {
            (false, _) => p.since < deadline,
            (true, Some(d)) => p.since < d,
            (true, None) => false,
        };
        let stale: Vec<MsgId> = self
            .0
            .iter()
            .filter(|(_, p)| p.first().is_some_and(stale_at))
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .flat_map(|id| self.0.remove(&id).unwrap_or_default())
            .collect()
    }

    fn drain(&mut self) -> Vec<Pending<S, L>> {
        self.0.drain().flat_map(|(_, p)| p).collect()
    }
}

/// A client connected here: its newest session receives its messages.
struct ClientSlot<S, L> {
    serial: Serial,
    session: S,
    inflight: Inflight<S, L>,
}

/// A relay linked to this one.
struct LinkSlot<S, L> {
    serial: Serial,
    link: L,
    forwards: Inflight<S, L>,
    presence: usize,
}

/// The messaging core of one relay.
pub struct Router<S, L> {
    config: RouterConfig,
    clients: HashMap<AccountId, ClientSlot<S, L>>,
    links: HashMap<RelayId, LinkSlot<S, L>>,
    presence: HashMap<AccountId, RelayId>,
    pushing: HashSet<MsgId>,
    delivered: Delivered,
    actions: VecDeque<Action<S, L>>,
    /// Local senders' deliveries by the time a durable copy is due, oldest first.
    accept_due: VecDeque<(Instant, Handover, MsgId)>,
    /// Copies being stored.
    copying: HashSet<MsgId>,
    /// Deliveries that failed while their copy was being stored, waiting for it.
    held: HashMap<MsgId, Vec<Pending<S, L>>>,
    last_sweep: Option<Instant>,
}

impl<S: Clone, L: Clone> Router<S, L> {
    /// An empty router.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            clients: HashMap::new(),
            links: HashMap::new(),
            presence: HashMap::new(),
            pushing: HashSet::new(),
            delivered: Delivered::default(),
            actions: VecDeque::new(),
            accept_due: VecDeque::new(),
            copying: HashSet::new(),
            held: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action<S, L>> {
        self.actions.pop_front()
    }

    // --- who is where -------------------------------------------------------------------------

    /// A client opened a session. A session it already had stops receiving: what that one was
    /// offered and did not acknowledge is offered to the new one, before anything else. Linked
    /// relays are told, so they push what they hold for the client.
    pub fn on_session_open(&mut self, client: AccountId, serial: Serial, session: S) {
        let slot = self.clients.entry(client).or_insert_with(|| ClientSlot {
            serial,
            session: session.clone(),
            inflight: Inflight::default(),
        });
        slot.serial = serial;
        slot.session = session.clone();
        let offered: Vec<(MsgId, Envelope)> = slot
            .inflight
            .0
            .iter()
            .filter_map(|(id, p)| p.first().map(|p| (*id, p.env.clone())))
            .collect();
        for (_, env) in offered {
            self.actions.push_back(Action::Deliver {
                session: session.clone(),
                env,
            });
        }
        self.actions.push_back(Action::Announce {
            client,
            online: true,
            to: None,
        });
    }

    /// A session closed. If it was the client's newest, the client is gone: what it was offered
    /// and did not acknowledge falls back to the mailbox.
    pub fn on_session_closed(&mut self, client: AccountId, serial: Serial, _now: Instant) {
        if self.clients.get(&client).is_none_or(|c| c.serial != serial) {
            return;
        }
        let Some(mut slot) = self.clients.remove(&client) else {
            return;
        };
        self.actions.push_back(Action::Announce {
            client,
            online: false,
            to: None,
        });
        for pending in slot.inflight.drain() {
            self.undelivered(pending);
        }
    }

    /// The session a client receives on, if it is connected here.
    pub fn session(&self, client: &AccountId) -> Option<&S> {
        self.clients.get(client).map(|c| &c.session)
    }

    /// Clients connected here.
    pub fn clients(&self) -> impl Iterator<Item = &AccountId> {
        self.clients.keys()
    }

    /// A link to `relay` is up (the newest link to a relay carries new traffic); it is told which
    /// clients are connected here.
    pub fn on_link_up(&mut self, relay: RelayId, serial: Serial, link: L) {
        for client in self.clients.keys() {
            self.actions.push_back(Action::Announce {
                client: *client,
                online: true,
                to: Some(link.clone()),
            });
        }
        let slot = self.links.entry(relay).or_insert_with(|| LinkSlot {
            serial,
            link: link.clone(),
            forwards: Inflight::default(),
            presence: 0,
        });
        slot.serial = serial;
        slot.link = link;
    }

    /// A link went down: what it carried unanswered fails, and the clients it announced are gone.
    pub fn on_link_down(&mut self, relay: RelayId, serial: Serial, _now: Instant) {
        if self.links.get(&relay).is_none_or(|l| l.serial != serial) {
            return;
        }
        let Some(mut slot) = self.links.remove(&relay) else {
            return;
        };
        self.presence.retain(|_, r| *r != relay);
        for pending in slot.forwards.drain() {
            self.undelivered(pending);
        }
    }

    /// The link to `relay`, if up.
    pub fn link(&self, relay: &RelayId) -> Option<&L> {
        self.links.get(relay).map(|l| &l.link)
    }

    /// Every link up.
    pub fn links(&self) -> impl Iterator<Item = (&RelayId, &L)> {
        self.links.iter().map(|(r, l)| (r, &l.link))
    }

    /// The link to the relay `client` is connected to, if known and up.
    pub fn link_for_client(&self, client: &AccountId) -> Option<&L> {
        self.presence.get(client).and_then(|r| self.link(r))
    }

    /// The clients a linked relay says are connected to it.
    pub fn clients_at(&self, relay: &RelayId) -> Vec<AccountId> {
        self.presence
            .iter()
            .filter(|(_, r)| *r == relay)
            .map(|(c, _)| *c)
            .collect()
    }

    /// A linked relay says `client` connected to it (or left it). A relay that claims more
    /// clients than the limit is not believed for the rest.
    pub fn on_presence(&mut self, relay: RelayId, client: AccountId, online: bool) {
        let Some(slot) = self.links.get_mut(&relay) else {
            return;
        };
        if online {
            match self.presence.get(&client) {
                Some(r) if *r == relay => {}
                _ if slot.presence >= self.config.max_presence_per_link => return,
                previous => {
                    if let Some(other) = previous.copied().and_then(|p| self.links.get_mut(&p)) {
                        other.presence = other.presence.saturating_sub(1);
                    }
                    if let Some(slot) = self.links.get_mut(&relay) {
                        slot.presence += 1;
                    }
                    self.presence.insert(client, relay);
                }
            }
            let link = self.links.get(&relay).map(|l| l.link.clone());
            self.actions.push_back(Action::PushMailbox {
                client,
                done_to: link,
            });
        } else if self.presence.get(&client) == Some(&relay) {
            self.presence.remove(&client);
            slot.presence = slot.presence.saturating_sub(1);
        }
    }

    // --- messages -----------------------------------------------------------------------------

    /// A local client sent a message (already checked and paid for).
    pub fn on_send(&mut self, env: Envelope, from: S, now: Instant) {
        self.route(env, Origin::Sender(from), now);
    }

    /// A linked relay forwarded a message for a client it believes is connected here.
    pub fn on_forwarded(&mut self, env: Envelope, link: L, store_on_fail: bool, now: Instant) {
        if !self.clients.contains_key(&env.to) {
            // That relay believes the client is here: it is not (any more).
            self.actions.push_back(Action::Announce {
                client: env.to,
                online: false,
                to: Some(link.clone()),
            });
        }
        let pending = self.pending(
            env,
            Origin::Link {
                link,
                store_on_fail,
            },
            now,
        );
        if let Err(pending) = self.offer_to_session(pending) {
            self.undelivered(pending);
        }
    }

    /// A linked relay sent a message through this one, a home of its recipient (it does not
    /// know where the recipient is): it is delivered here, forwarded on once to the relay the
    /// recipient is believed to be on (and the sender told where that is, to go there
    /// directly next time), or stored.
    pub fn on_relayed(&mut self, env: Envelope, link: L, from: RelayId, now: Instant) {
        let client = env.to;
        let origin = Origin::Link {
            link: link.clone(),
            store_on_fail: true,
        };
        let pending = self.pending(env, origin, now);
        let pending = match self.offer_to_session(pending) {
            Ok(()) => {
                self.actions.push_back(Action::Located { link, client });
                return;
            }
            Err(pending) => pending,
        };
        let pending = match self.presence.get(&client).copied() {
            // Never back to the relay it came from: that one does not know where it is.
            Some(relay) if relay != from => match self.offer_to_link(relay, pending, true, false) {
                Ok(()) => {
                    self.actions.push_back(Action::Located { link, client });
                    return;
                }
                Err(pending) => pending,
            },
            _ => pending,
        };
        self.undelivered(pending);
    }

    /// The home relays of the recipient of a message [`Action::FindHomes`] asked about, this
    /// relay left out (none if it is one of them): it goes through the first one linked, or is
    /// stored.
    pub fn on_homes(&mut self, pending: Pending<S, L>, homes: &[RelayId], _now: Instant) {
        let mut pending = pending;
        for home in homes {
            if !self.links.contains_key(home) {
                continue;
            }
            match self.offer_to_link(*home, pending, true, true) {
                Ok(()) => return,
                Err(p) => pending = p,
            }
        }
        self.undelivered(pending);
    }

    /// Messages forwarded over the link to `relay` and not yet answered.
    pub fn forwards_to(&self, relay: &RelayId) -> usize {
        self.links.get(relay).map_or(0, |l| l.forwards.0.len())
    }

    /// Whether a message some link (`from` picks which) forwarded or relayed here still awaits
    /// its outcome, owed to that link.
    pub fn answers_owed(&self, from: impl Fn(&L) -> bool) -> bool {
        let owed = |p: &Pending<S, L>| matches!(&p.origin, Origin::Link { link, .. } if from(link));
        let delivering = self.clients.values().flat_map(|c| c.inflight.0.values());
        let forwarding = self.links.values().flat_map(|l| l.forwards.0.values());
        delivering.chain(forwarding).flatten().any(owed) || self.held.values().flatten().any(owed)
    }

    /// A message from this relay's mailbox, for a push to wherever its recipient is now.
    /// Returns where it went, or `None` if the recipient is not reachable (the push should stop);
    /// a message some other push is already handing over counts as handed.
    pub fn on_stored_message(&mut self, env: Envelope, now: Instant) -> Option<Handover> {
        let to = env.to;
        if self.pushing.contains(&env.id) {
            return self.handover_target(&to);
        }
        let target = self.handover_target(&to)?;
        self.pushing.insert(env.id);
        let pending = self.pending(env, Origin::Mailbox, now);
        let handed = match target {
            Handover::Session(_) => self.offer_to_session(pending),
            Handover::Link(relay) => self.offer_to_link(relay, pending, false, false),
        };
        match handed {
            Ok(()) => Some(target),
            Err(pending) => {
                self.pushing.remove(&pending.env.id);
                None
            }
        }
    }

    fn handover_target(&self, to: &AccountId) -> Option<Handover> {
        if self.clients.contains_key(to) {
            return Some(Handover::Session(*to));
        }
        let relay = self.presence.get(to)?;
        self.links
            .contains_key(relay)
            .then_some(Handover::Link(*relay))
    }

    /// The client acknowledged a message (on any of its sessions).
    /// Returns when the message reached this relay, if it was in flight to `client`.
    pub fn on_ack(&mut self, client: AccountId, id: MsgId) -> Option<Instant> {
        let acked = self
            .clients
            .get_mut(&client)
            .and_then(|c| c.inflight.0.remove(&id))
            .unwrap_or_default();
        let first = acked.first()?;
        let since = first.since;
        self.delivered.record(&first.env);
        self.drop_copy(&acked);
        for pending in acked {
            self.finish(pending, Ok(Outcome::Delivered));
        }
        Some(since)
    }

    /// The sealed size of the message forwarded to `relay` as `id`, while its answer is awaited.
    pub fn forwarded_bytes(&self, relay: &RelayId, id: &MsgId) -> Option<usize> {
        let pending = self.links.get(relay)?.forwards.0.get(id)?;
        pending.first().map(|p| p.env.sealed.len())
    }

    /// A linked relay answered a forward.
    pub fn on_forward_result(
        &mut self,
        relay: RelayId,
        id: MsgId,
        outcome: Option<Outcome>,
        _now: Instant,
    ) {
        let answered = self
            .links
            .get_mut(&relay)
            .and_then(|l| l.forwards.0.remove(&id))
            .unwrap_or_default();
        // Delivered elsewhere: a copy here (done or still being written) goes. Not on `Stored`:
        // the copy may be the very row that answer counts on (one id is stored once).
        if outcome == Some(Outcome::Delivered) {
            if let Some(first) = answered.first() {
                self.delivered.record(&first.env);
            }
            self.drop_copy(&answered);
        }
        // Stored by the other relay (at its recipient's homes): a copy here is not needed,
        // unless it is the very row stored (this relay being a home).
        if outcome == Some(Outcome::Stored)
            && let Some(copied) = answered.iter().find(|p| p.durable)
        {
            self.actions
                .push_back(Action::StoredElsewhere(copied.env.clone()));
        }
        for pending in answered {
            match outcome {
                Some(outcome @ (Outcome::Delivered | Outcome::Stored)) => {
                    self.finish(pending, Ok(outcome))
                }
                // `Durable` is not final and never comes over a link: no answer.
                Some(Outcome::Durable) | None => self.undelivered(pending),
            }
        }
    }

    /// A [`Action::Deliver`] or [`Action::Forward`] could not be carried out: the deliveries it
    /// carried fail (and fall back to the mailbox where their origin wants it).
    pub fn on_handover_failed(&mut self, to: Handover, id: MsgId, _now: Instant) {
        let failed = match to {
            Handover::Session(client) => self
                .clients
                .get_mut(&client)
                .and_then(|c| c.inflight.0.remove(&id)),
            Handover::Link(relay) => self
                .links
                .get_mut(&relay)
                .and_then(|l| l.forwards.0.remove(&id)),
        };
        for pending in failed.unwrap_or_default() {
            self.undelivered(pending);
        }
    }

    /// A [`Action::Store`] ended.
    pub fn on_stored(&mut self, pending: Pending<S, L>, result: Result<(), Reject>) {
        self.finish(pending, result.map(|()| Outcome::Stored));
    }

    /// A [`Action::StoreCopy`] ended: on success the senders waiting are told `Durable`.
    pub fn on_copy_stored(&mut self, to: Handover, env: &Envelope, result: Result<(), Reject>) {
        let id = env.id;
        self.copying.remove(&id);
        // Deliveries that failed while the copy was being written waited for it.
        let held = self.held.remove(&id).unwrap_or_default();
        if result.is_err() {
            // The sender waits for the acknowledgement (or the store after the ack timeout);
            // what failed meanwhile is stored the usual way.
            for pending in held {
                self.undelivered(pending);
            }
            return;
        }
        if !held.is_empty() {
            // The copy is where they wait now.
            for mut pending in held {
                pending.durable = true;
                self.undelivered(pending);
            }
            return;
        }
        let entry = match to {
            Handover::Session(client) => self
                .clients
                .get_mut(&client)
                .and_then(|c| c.inflight.0.get_mut(&id)),
            Handover::Link(relay) => self
                .links
                .get_mut(&relay)
                .and_then(|l| l.forwards.0.get_mut(&id)),
        };
        let Some(entry) = entry else {
            // Answered meanwhile: a copy of a delivered message goes at once (one that failed
            // over to the mailbox stays: that is where it waits).
            if self.delivered.contains(env) {
                self.actions.push_back(Action::DeleteStored(id));
            }
            return;
        };
        for pending in entry.iter_mut().filter(|p| !p.durable) {
            if let Origin::Sender(session) = &pending.origin {
                pending.durable = true;
                self.actions.push_back(Action::AnswerSender {
                    session: session.clone(),
                    id,
                    bytes: pending.env.sealed.len(),
                    result: Ok(Outcome::Durable),
                });
            }
        }
    }

    /// Time passed: durable copies fall due, and deliveries and forwards unanswered for too
    /// long fail.
    pub fn on_tick(&mut self, now: Instant) {
        self.copies_due(now);
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.sweep_every)
        {
            return;
        }
        self.last_sweep = Some(now);
        let mut stale = Vec::new();
        if let Some(deadline) = now.checked_sub(self.config.ack_timeout) {
            for client in self.clients.values_mut() {
                stale.extend(client.inflight.take_older_than(deadline, None));
            }
        }
        if let Some(deadline) = now.checked_sub(self.config.forward_timeout) {
            let relayed = now.checked_sub(self.config.forward_timeout * 2);
            for link in self.links.values_mut() {
                stale.extend(link.forwards.take_older_than(deadline, relayed));
            }
        }
        for pending in stale {
            self.undelivered(pending);
        }
    }

    /// Messages handed to sessions or links and not yet answered.
    pub fn inflight(&self) -> usize {
        let sessions: usize = self.clients.values().map(|c| c.inflight.0.len()).sum();
        let links: usize = self.links.values().map(|l| l.forwards.0.len()).sum();
        sessions + links
    }

    // --- internals ----------------------------------------------------------------------------

    /// Asks for a durable copy of each local sender's delivery still unanswered at its time.
    fn copies_due(&mut self, now: Instant) {
        while let Some(&(due, to, id)) = self.accept_due.front() {
            if due > now {
                return;
            }
            self.accept_due.pop_front();
            if self.copying.contains(&id) {
                continue;
            }
            let entry = match to {
                Handover::Session(client) => self
                    .clients
                    .get(&client)
                    .and_then(|c| c.inflight.0.get(&id)),
                Handover::Link(relay) => self.links.get(&relay).and_then(|l| l.forwards.0.get(&id)),
            };
            let Some(entry) = entry else { continue };
            let waiting = entry
                .iter()
                .any(|p| matches!(p.origin, Origin::Sender(_)) && !p.durable);
            if let (true, Some(first)) = (waiting, entry.first()) {
                let env = first.env.clone();
                self.copying.insert(id);
                self.actions.push_back(Action::StoreCopy { env, to });
            }
        }
    }

    /// A delivery with a durable copy here ended elsewhere (acknowledged, or stored by the
    /// relay it was forwarded to): the copy goes.
    fn drop_copy(&mut self, answered: &[Pending<S, L>]) {
        if let Some(copied) = answered.iter().find(|p| p.durable) {
            self.actions.push_back(Action::DeleteStored(copied.env.id));
        }
    }

    /// Remembers when a local sender's delivery is due a durable copy.
    fn track_accept(&mut self, pending: &Pending<S, L>, to: Handover) {
        if matches!(pending.origin, Origin::Sender(_)) {
            let due = pending.since + self.config.accept_after;
            self.accept_due.push_back((due, to, pending.env.id));
        }
    }

    fn pending(&self, env: Envelope, origin: Origin<S, L>, now: Instant) -> Pending<S, L> {
        Pending {
            env,
            origin,
            since: now,
            durable: false,
            relayed: false,
        }
    }

    fn route(&mut self, env: Envelope, origin: Origin<S, L>, now: Instant) {
        let pending = self.pending(env, origin, now);
        let Err(pending) = self.offer_to_session(pending) else {
            return;
        };
        let pending = match self.presence.get(&pending.env.to).copied() {
            Some(relay) => match self.offer_to_link(relay, pending, true, false) {
                Ok(()) => return,
                Err(pending) => pending,
            },
            None if matches!(pending.origin, Origin::Sender(_)) => {
                // Not known here: its home relays know where it is.
                self.actions.push_back(Action::FindHomes(pending));
                return;
            }
            None => pending,
        };
        self.undelivered(pending);
    }

    /// Offers a message to its recipient's session here; gives it back if there is none.
    fn offer_to_session(&mut self, pending: Pending<S, L>) -> Result<(), Pending<S, L>> {
        if !self.clients.contains_key(&pending.env.to) {
            return Err(pending);
        }
        if self.delivered.contains(&pending.env) {
            self.finish(pending, Ok(Outcome::Delivered));
            return Ok(());
        }
        let limit = self.config.max_inflight_per_client;
        let pushed_limit = self.config.max_pushed_per_client;
        self.track_accept(&pending, Handover::Session(pending.env.to));
        let Some(client) = self.clients.get_mut(&pending.env.to) else {
            return Err(pending);
        };
        if let Some(waiting) = client.inflight.0.get_mut(&pending.env.id) {
            // Already offered: one acknowledgement settles both, if it is the same message (a
            // forged envelope reusing a real id must not ride on the real one's ack).
            if waiting.first().is_some_and(|w| w.env != pending.env) {
                return Err(pending);
            }
            waiting.push(pending);
            return Ok(());
        }
        // Mailbox pushes (this relay's or another's) must offer everything before `Synced`:
        // they have their own, larger bound (several home relays' quotas), live traffic this one.
        let pushed = matches!(
            pending.origin,
            Origin::Mailbox
                | Origin::Link {
                    store_on_fail: false,
                    ..
                }
        );
        let limit = if pushed { pushed_limit } else { limit };
        if client.inflight.0.len() >= limit {
            return Err(pending);
        }
        self.actions.push_back(Action::Deliver {
            session: client.session.clone(),
            env: pending.env.clone(),
        });
        client.inflight.0.insert(pending.env.id, vec![pending]);
        Ok(())
    }

    /// Forwards a message to the relay its recipient is on; gives it back if that link is gone
    /// or has too much unanswered.
    fn offer_to_link(
        &mut self,
        relay: RelayId,
        mut pending: Pending<S, L>,
        store_on_fail: bool,
        relayed: bool,
    ) -> Result<(), Pending<S, L>> {
        let limit = self.config.max_forwards_per_link;
        pending.relayed = relayed;
        self.track_accept(&pending, Handover::Link(relay));
        let Some(link) = self.links.get_mut(&relay) else {
            return Err(pending);
        };
        if let Some(waiting) = link.forwards.0.get_mut(&pending.env.id) {
            if waiting.first().is_some_and(|w| w.env != pending.env) {
                return Err(pending);
            }
            waiting.push(pending);
            return Ok(());
        }
        let live = !matches!(pending.origin, Origin::Mailbox);
        if live && link.forwards.0.len() >= limit {
            return Err(pending);
        }
        self.actions.push_back(Action::Forward {
            link: link.link.clone(),
            env: pending.env.clone(),
            store_on_fail,
            relayed,
        });
        link.forwards.0.insert(pending.env.id, vec![pending]);
        Ok(())
    }

    /// A delivery failed: store the message if its origin wants that, else say it failed.
    fn undelivered(&mut self, pending: Pending<S, L>) {
        if pending.durable {
            // Its copy is on disk here already: that is where it waits, and it is pushed to
            // the recipient like any stored message.
            let env = pending.env.clone();
            self.finish(pending, Ok(Outcome::Stored));
            self.actions.push_back(Action::Stranded(env));
            return;
        }
        if matches!(pending.origin, Origin::Sender(_)) && self.copying.contains(&pending.env.id) {
            // Its copy is being written: wait for it rather than store it twice.
            self.held.entry(pending.env.id).or_default().push(pending);
            return;
        }
        let wants_store = match &pending.origin {
            Origin::Sender(_) => true,
            Origin::Link { store_on_fail, .. } => *store_on_fail,
            Origin::Mailbox => false,
        };
        if wants_store {
            self.actions.push_back(Action::Store(pending));
        } else {
            self.finish(pending, Err(Reject::Unavailable));
        }
    }

    /// Reports a final result to a delivery's origin.
    fn finish(&mut self, pending: Pending<S, L>, result: Result<Outcome, Reject>) {
        let id = pending.env.id;
        let action = match pending.origin {
            Origin::Sender(session) => Action::AnswerSender {
                session,
                id,
                bytes: pending.env.sealed.len(),
                result,
            },
            Origin::Link { link, .. } => Action::AnswerLink {
                link,
                id,
                bytes: pending.env.sealed.len(),
                outcome: result.ok(),
            },
            Origin::Mailbox => {
                self.pushing.remove(&id);
                if result != Ok(Outcome::Delivered) {
                    return;
                }
                Action::DeleteStored(id)
            }
        };
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod homes_tests;
#[cfg(test)]
mod tests;
