//! The control plane's DHT work: the registry deciding who counts as a relay, this relay's own
//! announcement, lookups of the others', records peers ask this relay to store (checked before
//! stored), and provider lookups for content.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ledger_lite::announce::{Announcement, AnnouncementBody};
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, Record};
use libp2p::{Multiaddr, PeerId};
use top_proto::id::RelayId;
use tracing::debug;

use super::addrs::is_unspecified;
use super::task::{
    ANNOUNCE_RETRY, ANNOUNCE_TTL, LOOKUP_AGAIN, MAX_LOOKUPS, MAX_PROVIDERS, REANNOUNCE,
    RENEW_BEFORE, Task,
};
use super::{keys, records};
use crate::util::unix_now_ms;

impl Task {
    /// Takes the registry as of the last block: who counts as a relay, who leaves the routing
    /// table and which announcements are forgotten.
    pub(super) fn on_registry(&mut self) {
        let ids: Vec<RelayId> = self.chain.with_state(|s| {
            s.relays()
                .filter_map(|(id, _, _)| RelayId::from_bytes(*id.as_bytes()).ok())
                .take(crate::node::peers::MAX_MEMBERS)
                .collect()
        });
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
        }
        self.peer_ids.retain(|_, peer| fresh.contains_key(peer));
        let relays: HashSet<RelayId> = fresh.values().copied().collect();
        self.control
            .prune(|relay| relays.contains(relay), unix_now_ms());
        self.registered = fresh;
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
            chain: self.chain.genesis().chain_id(),
            relay: self.core.id,
            addrs: vec![self.core.addr.host_port.clone()],
            control,
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(ANNOUNCE_TTL.as_millis() as u64),
        };
        let announcement = body.sign(&self.core.identity);
        let record = Record::new(records::relay_key(&self.core.id), announcement.encode());
        match self.kad().put_record(record, Quorum::One) {
            Ok(query) => {
                self.announce_at = now + REANNOUNCE;
                self.announcing = Some(query);
                self.control.note(announcement);
            }
            Err(e) => debug!("storing this relay's announcement: {e}"),
        }
    }

    /// Looks up registered relays whose announcement is missing or about to expire.
    pub(super) fn look_up(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        let held = self.control.discovered();
        let renew_before = unix_now_ms().saturating_add(RENEW_BEFORE.as_millis() as u64);
        let due: Vec<RelayId> = self
            .registered
            .values()
            .filter(|relay| **relay != self.core.id)
            .filter(|relay| {
                held.get(relay)
                    .is_none_or(|a| a.body.expires_ms < renew_before)
            })
            .filter(|relay| !self.lookups.values().any(|r| r == *relay))
            .filter(|relay| {
                self.looked_up
                    .get(relay)
                    .is_none_or(|at| now.duration_since(*at) >= LOOKUP_AGAIN)
            })
            .copied()
            .take(MAX_LOOKUPS.saturating_sub(self.lookups.len()))
            .collect();
        for relay in due {
            self.looked_up.insert(relay, now);
            let query = self.kad().get_record(records::relay_key(&relay));
            self.lookups.insert(query, relay);
        }
        let registered: HashSet<&RelayId> = self.registered.values().collect();
        self.looked_up.retain(|relay, _| registered.contains(relay));
    }

    /// Keeps a checked announcement and, if it is news, routes to the relay's control
    /// addresses.
    pub(super) fn learn(&mut self, announcement: Announcement) {
        let relay = announcement.body.relay;
        let addrs: Vec<Multiaddr> = announcement
            .body
            .control
            .iter()
            .filter_map(|a| a.parse().ok())
            .filter(|a| !is_unspecified(a))
            .collect();
        if !self.control.note(announcement) || relay == self.core.id {
            return;
        }
        if let Some(peer) = self.peer_ids.get(&relay).copied() {
            for addr in addrs {
                self.kad().add_address(&peer, addr);
            }
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
                let checked = self
                    .chain
                    .with_state(|s| records::checked_announcement(&record, s, unix_now_ms()));
                match checked {
                    Ok(announcement) => {
                        if let Err(e) = self.kad().store_mut().put(record) {
                            debug!("storing an announcement: {e}");
                        }
                        self.learn(announcement);
                    }
                    Err(e) => {
                        debug!("refused a record: {e}");
                        self.control.update(|s| s.refused_records += 1);
                    }
                }
            }
            kad::InboundRequest::AddProvider {
                record: Some(record),
            } => {
                if self.registered.contains_key(&record.provider) {
                    if let Err(e) = self.kad().store_mut().add_provider(record) {
                        debug!("storing a provider: {e}");
                    }
                } else {
                    self.control.update(|s| s.refused_records += 1);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_record_found(&mut self, id: QueryId, found: kad::GetRecordResult, last: bool) {
        let mut done = last;
        if let Ok(GetRecordOk::FoundRecord(peer_record)) = found {
            let checked = self.chain.with_state(|s| {
                records::checked_announcement(&peer_record.record, s, unix_now_ms())
            });
            match checked {
                Ok(announcement) => {
                    self.learn(announcement);
                    done = true;
                }
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
