//! The control plane's DHT work: the registry deciding who counts as a relay, this relay's own
//! announcement, lookups of the others', records peers ask this relay to store (checked before
//! stored), and provider lookups for content.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ledger_lite::announce::{AnnounceError, Announcement, AnnouncementBody};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, Record};
use libp2p::{Multiaddr, PeerId};
use top_proto::id::{AccountId, RelayId};
use tracing::debug;

use super::addrs::is_unspecified;
use super::task::{
    ANNOUNCE_RETRY, ANNOUNCE_SECOND, ANNOUNCE_SETTLE, ANNOUNCE_TTL, LOOKUP_AGAIN,
    LOOKUP_AGAIN_AT_MOST, LOOKUP_SOON_AT_MOST, LOOKUPS_SOON, MAX_LOOKUPS, MAX_PROVIDERS,
    REANNOUNCE, RENEW_BEFORE, Task,
};

/// Least time between two announcements of one relay that gossip passes on.
const MIN_REANNOUNCE: Duration = Duration::from_secs(60);
/// Most addresses added for one relay to the routing table.
const MAX_ROUTED_ADDRS: usize = 8;
/// Most content keys one relay may say it provides here (until the counts reset).
const PROVIDER_QUOTA: usize = 4096;
use super::{keys, records};
use crate::util::unix_now_ms;

impl Task {
    /// Takes the registry as of the last block: who counts as a relay, who leaves the routing
    /// table and which announcements are forgotten.
    pub(super) fn on_registry(&mut self) {
        let (ids, validators): (Vec<RelayId>, Vec<AccountId>) = self.chain.with_state(|s| {
            let relays = s
                .relays()
                .filter_map(|(id, _, _)| RelayId::from_bytes(*id.as_bytes()).ok())
                .take(crate::node::peers::MAX_MEMBERS)
                .collect();
            (relays, s.validators.clone())
        });
        // Who may publish blocks: this epoch's validators (a dev chain's one validator).
        self.validators = validators
            .iter()
            .chain(std::iter::once(&self.genesis_validator))
            .filter_map(|a| RelayId::from_bytes(*a.as_bytes()).ok())
            .filter_map(|r| keys::peer_id(&r))
            .collect();
        let mut fresh = HashMap::with_capacity(ids.len());
        for relay in ids {
            let peer = match self.peer_ids.get(&relay) {
                Some(peer) => *peer,
                None => match keys::peer_id(&relay) {
                    Some(peer) => {
                        self.peer_ids.insert(relay, peer);
                        peer
                    }
                    None => continue,
                },
            };
            fresh.insert(peer, relay);
        }
        if fresh.len() == self.registered.len()
            && fresh.keys().all(|p| self.registered.contains_key(p))
        {
            return;
        }
        let gone: Vec<PeerId> = self
            .registered
            .keys()
            .filter(|p| !fresh.contains_key(p))
            .copied()
            .collect();
        for peer in gone {
            self.kad().remove_peer(&peer);
            self.routed.remove(&peer);
            self.provider_counts.remove(&peer);
        }
        self.peer_ids.retain(|_, peer| fresh.contains_key(peer));
        let relays: HashSet<RelayId> = fresh.values().copied().collect();
        self.control
            .prune(|relay| relays.contains(relay), unix_now_ms());
        let now = Instant::now();
        if !self.registry_read {
            self.registry_read = true;
        } else {
            // Relays registered just now announce once the network has their block: they are
            // looked up only after that (a lookup before finds nothing and backs off).
            for relay in relays
                .iter()
                .filter(|r| !self.registered.values().any(|h| h == *r))
            {
                self.looked_up.entry(*relay).or_insert((
                    now + ANNOUNCE_SETTLE * 2,
                    LOOKUP_AGAIN,
                    0,
                ));
            }
        }
        let me = *self.swarm.local_peer_id();
        if fresh.contains_key(&me) && !self.registered.contains_key(&me) {
            // Registered now: announced once the others hold the block that says so (an
            // announcement of a relay they do not know of yet is not passed on).
            self.announce_at = now + ANNOUNCE_SETTLE;
            self.announced = 0;
        }
        self.registered = fresh;
        let registered = &self.registered;
        self.tx_quota.retain(|p| registered.contains_key(p));
        self.learn_early();
    }

    /// Signs and stores this relay's announcement (here and at the relays closest to its key).
    pub(super) fn announce(&mut self, now: Instant) {
        self.announce_at = now + ANNOUNCE_RETRY;
        let now_ms = unix_now_ms();
        let control: Vec<String> = self
            .swarm
            .listeners()
            .filter(|a| !is_unspecified(a))
            .chain(self.swarm.external_addresses())
            .take(ledger_lite::announce::MAX_CONTROL_ADDRS)
            .map(|a| a.to_string())
            .collect();
        let body = AnnouncementBody {
            chain: self.chain_id,
            relay: self.core.id,
            addrs: vec![self.core.addr.host_port.clone()],
            control,
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(ANNOUNCE_TTL.as_millis() as u64),
        };
        let announcement = body.sign(&self.core.identity);
        let encoded = announcement.encode();
        let record = Record::new(records::relay_key(&self.core.id), encoded.clone());
        match self.kad().put_record(record, Quorum::One) {
            Ok(query) => {
                // The first announcement goes again soon, for relays that had not yet taken
                // the block registering this one; then every [`REANNOUNCE`].
                self.announced = self.announced.saturating_add(1);
                let again = match self.announced {
                    1 => ANNOUNCE_SECOND,
                    _ => REANNOUNCE,
                };
                self.announce_at = now + again;
                self.announcing = Some(query);
                self.control.note(announcement);
                // Relays online now hear of it at once; the DHT keeps it for those that come
                // later.
                let topic = self.topics.relays.clone();
                if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, encoded) {
                    debug!("gossiping this relay's announcement: {e}");
                }
            }
            Err(e) => debug!("storing this relay's announcement: {e}"),
        }
    }

    /// A relay's announcement by gossip: passed on only if its publisher is the relay it
    /// names, it checks, and it is news no sooner than [`MIN_REANNOUNCE`] after the one held
    /// (a relay cannot make the network carry its announcements without end).
    pub(super) fn on_gossiped_announcement(
        &mut self,
        from: PeerId,
        source: Option<PeerId>,
        data: Vec<u8>,
    ) -> MessageAcceptance {
        let Ok(announcement) = Announcement::decode(&data) else {
            return MessageAcceptance::Reject;
        };
        let relay = announcement.body.relay;
        let Some(peer) = self.peer_ids.get(&relay).copied() else {
            // Not registered as far as this relay's chain knows yet: not passed on, but held
            // until it is, if a registered relay passed it on and its publisher is the relay
            // it names (a stranger cannot push the real ones out).
            if self.registered.contains_key(&from)
                && source.is_some()
                && source == keys::peer_id(&relay)
            {
                self.early.hold(relay, data, Instant::now());
            }
            return MessageAcceptance::Ignore;
        };
        if source != Some(peer) {
            return MessageAcceptance::Reject;
        }
        let held = self.control.issued_ms(&relay);
        let issued = announcement.body.issued_ms;
        let news = held
            .is_none_or(|held| issued > held && issued - held >= MIN_REANNOUNCE.as_millis() as u64);
        if !news {
            return MessageAcceptance::Ignore;
        }
        let record = Record::new(records::relay_key(&relay), data);
        match self.check_record(&record) {
            Ok(announcement) => {
                if self.learn(announcement)
                    && let Err(e) = self.kad().store_mut().put(record)
                {
                    debug!("storing an announcement: {e}");
                }
                MessageAcceptance::Accept
            }
            Err(records::RecordError::Announcement(AnnounceError::Expired)) => {
                MessageAcceptance::Ignore
            }
            Err(e) => {
                debug!("refused a gossiped announcement: {e}");
                self.control.update(|s| s.refused_records += 1);
                MessageAcceptance::Reject
            }
        }
    }

    /// Looks up registered relays whose announcement is missing or about to expire.
    pub(super) fn look_up(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        let renew_before = unix_now_ms().saturating_add(RENEW_BEFORE.as_millis() as u64);
        let fresh = self.control.valid_at(renew_before);
        let in_flight: HashSet<RelayId> = self.lookups.values().copied().collect();
        let due: Vec<RelayId> = self
            .registered
            .values()
            .filter(|relay| **relay != self.core.id && !fresh.contains(*relay))
            .filter(|relay| !in_flight.contains(*relay))
            .filter(|relay| self.looked_up.get(relay).is_none_or(|(at, ..)| now >= *at))
            .copied()
            .take(MAX_LOOKUPS.saturating_sub(self.lookups.len()))
            .collect();
        for relay in due {
            // A relay not found is looked up again soon a few times (its announcement may
            // reach the relays closest to its key only with its second), then later and later
            // (it may be down for good).
            let (wait, tries) = match self.looked_up.get(&relay) {
                None => (LOOKUP_AGAIN, 1),
                Some((_, wait, tries)) if *tries < LOOKUPS_SOON => {
                    ((*wait * 2).min(LOOKUP_SOON_AT_MOST), tries + 1)
                }
                Some((_, wait, tries)) => ((*wait * 2).min(LOOKUP_AGAIN_AT_MOST), *tries),
            };
            self.looked_up.insert(relay, (now + wait, wait, tries));
            let query = self.kad().get_record(records::relay_key(&relay));
            self.lookups.insert(query, relay);
        }
        let registered: HashSet<&RelayId> = self.registered.values().collect();
        self.looked_up.retain(|relay, _| registered.contains(relay));
    }

    /// The announcement in `record`, if it counts now (no chain lock: the registry is the
    /// task's copy).
    pub(super) fn check_record(
        &self,
        record: &Record,
    ) -> Result<Announcement, records::RecordError> {
        let registered = |relay: &RelayId| {
            self.peer_ids
                .get(relay)
                .is_some_and(|peer| self.registered.contains_key(peer))
        };
        records::checked_announcement(record, &self.chain_id, registered, unix_now_ms())
    }

    /// Keeps a checked announcement and, if it is news, routes to the relay's control
    /// addresses; true if it was news.
    pub(super) fn learn(&mut self, announcement: Announcement) -> bool {
        let relay = announcement.body.relay;
        let addrs: Vec<Multiaddr> = announcement
            .body
            .control
            .iter()
            .filter_map(|a| a.parse().ok())
            .filter(|a| !is_unspecified(a))
            .collect();
        if !self.control.note(announcement) {
            return false;
        }
        self.looked_up.remove(&relay);
        if relay != self.core.id
            && let Some(peer) = self.peer_ids.get(&relay).copied()
        {
            self.route_to(peer, addrs);
        }
        true
    }

    /// Adds addresses of a registered relay to the routing table, at most
    /// [`MAX_ROUTED_ADDRS`] over time (what a peer says of itself cannot grow its entry).
    pub(super) fn route_to(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            let added = self.routed.entry(peer).or_default();
            if *added >= MAX_ROUTED_ADDRS {
                return;
            }
            *added += 1;
            self.kad().add_address(&peer, addr);
        }
    }

    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => self.on_inbound_record(request),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetRecord(found) => self.on_record_found(id, found, step.last),
                QueryResult::GetProviders(found) => self.on_providers_found(id, found, step.last),
                // Stored at no other relay: tried again soon.
                QueryResult::PutRecord(Err(e)) if self.announcing == Some(id) => {
                    debug!("announcing this relay: {e}");
                    self.announce_at = Instant::now() + ANNOUNCE_RETRY;
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A peer asks this relay to store a record: an announcement that checks, or a provider
    /// record of a registered relay; nothing else.
    pub(super) fn on_inbound_record(&mut self, request: kad::InboundRequest) {
        match request {
            kad::InboundRequest::PutRecord {
                record: Some(record),
                ..
            } => {
                match self.check_record(&record) {
                    // Kept only if newer than what is held: an old announcement, however
                    // valid, does not replace a newer one.
                    Ok(announcement) => {
                        if self.learn(announcement)
                            && let Err(e) = self.kad().store_mut().put(record)
                        {
                            debug!("storing an announcement: {e}");
                        }
                    }
                    Err(e) => {
                        debug!("refused a record: {e}");
                        self.control.update(|s| s.refused_records += 1);
                    }
                }
            }
            kad::InboundRequest::AddProvider {
                record: Some(mut record),
            } => {
                // A registered relay's claim on a content key, within its quota; the addresses
                // it gives are dropped (a relay is reached at its announced ones).
                let count = self.provider_counts.entry(record.provider).or_default();
                let taken = self.registered.contains_key(&record.provider)
                    && records::is_content_key(&record.key)
                    && *count < PROVIDER_QUOTA;
                if !taken {
                    self.control.update(|s| s.refused_records += 1);
                    return;
                }
                *count += 1;
                record.addresses.clear();
                if let Err(e) = self.kad().store_mut().add_provider(record) {
                    debug!("storing a provider: {e}");
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_record_found(&mut self, id: QueryId, found: kad::GetRecordResult, last: bool) {
        let mut done = last;
        if let Ok(GetRecordOk::FoundRecord(peer_record)) = found {
            match self.check_record(&peer_record.record) {
                // Done once something newer than what is held turns up.
                Ok(announcement) => done |= self.learn(announcement),
                Err(e) => {
                    debug!("a lookup found a record that does not count: {e}");
                    self.control.update(|s| s.refused_records += 1);
                }
            }
        } else {
            done = true;
        }
        if done
            && self.lookups.remove(&id).is_some()
            && let Some(mut query) = self.kad().query_mut(&id)
        {
            query.finish();
        }
    }

    pub(super) fn on_providers_found(
        &mut self,
        id: QueryId,
        found: kad::GetProvidersResult,
        last: bool,
    ) {
        let Some((_, relays)) = self.providers.get_mut(&id) else {
            return;
        };
        if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = &found {
            let me = *self.swarm.local_peer_id();
            for peer in providers.iter().filter(|p| **p != me) {
                if let Some(relay) = self.registered.get(peer)
                    && !relays.contains(relay)
                    && relays.len() < MAX_PROVIDERS
                {
                    relays.push(*relay);
                }
            }
        }
        // Answered as soon as a provider is known: whoever asked fetches from it at once.
        if last || !relays.is_empty() || found.is_err() {
            if let Some((reply, relays)) = self.providers.remove(&id) {
                reply.send(relays).ok();
            }
            if let Some(mut query) = self.kad().query_mut(&id) {
                query.finish();
            }
        }
    }
}

impl Task {
    /// Learns the announcements held for relays registered now (each checked as any record).
    pub(super) fn learn_early(&mut self) {
        let peer_ids = &self.peer_ids;
        let taken = self
            .early
            .take(|relay| peer_ids.contains_key(relay), Instant::now());
        for data in taken {
            let Ok(announcement) = ledger_lite::announce::Announcement::decode(&data) else {
                continue;
            };
            let relay = announcement.body.relay;
            let record = Record::new(records::relay_key(&relay), data);
            let Ok(announcement) = self.check_record(&record) else {
                continue;
            };
            if self.learn(announcement)
                && let Err(e) = self.kad().store_mut().put(record)
            {
                debug!("storing an announcement: {e}");
            }
        }
    }
}
