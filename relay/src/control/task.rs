//! The control plane's one task: it owns the swarm and turns its events, the node's commands,
//! new blocks and a tick into DHT queries, records checked against the registry, gossip checks
//! and the relay's own announcement. Nothing here waits on I/O but the swarm: checks run in
//! tasks of their own and report back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ledger_lite::announce::AnnouncementBody;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, Record};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use tokio::sync::mpsc;
use top_proto::id::RelayId;
use tracing::{debug, info, warn};

use super::behaviour::{self, Behaviour, BehaviourEvent, DROP_BELOW, Topics};
use super::{Command, Control, MAX_OBSERVED, Reachability, gossip, keys, records};
use crate::ledger::chain::ChainNode;
use crate::node::core::Core;
use crate::util::unix_now_ms;

/// How often the task looks around (lookups, announcing, scores, bootstrap).
const TICK: Duration = Duration::from_millis(500);
/// How long a relay's announcement is valid for.
const ANNOUNCE_TTL: Duration = Duration::from_secs(3600);
/// How often a relay announces itself afresh.
const REANNOUNCE: Duration = Duration::from_secs(20 * 60);
/// Wait before announcing again after a failed attempt.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(5);
/// Announcement lookups in flight at once.
const MAX_LOOKUPS: usize = 8;
/// Wait before looking a relay up again.
const LOOKUP_AGAIN: Duration = Duration::from_secs(5);
/// An announcement expiring sooner than this is looked up afresh.
const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);
/// Provider lookups in flight at once.
const MAX_PROVIDER_QUERIES: usize = 64;
/// Most providers one lookup answers with.
const MAX_PROVIDERS: usize = 20;
/// How long a peer dropped for its score stays blocked.
const BLOCK_FOR: Duration = Duration::from_secs(600);
/// Wait between dials of the bootstrap relays while none is connected.
const BOOTSTRAP_AGAIN: Duration = Duration::from_secs(2);
/// Most addresses taken from a peer's identify answer.
const MAX_PEER_ADDRS: usize = 4;

/// Starts the control plane of a relay whose chain is open (logs and returns if it cannot).
pub fn start(core: &Arc<Core>, control: &Arc<Control>, chain: Arc<ChainNode>) {
    if !core.config.control.enabled {
        return;
    }
    let Some(inbox) = control.take_inbox() else {
        return;
    };
    let key = match keys::keypair(&core.identity) {
        Ok(key) => key,
        Err(e) => return warn!("control plane: {e}"),
    };
    let topics = Topics::of(&chain.genesis().chain_id());
    let built = core.metrics.with_registry(|r| {
        behaviour::build(
            key,
            &core.config.control,
            &topics,
            r.sub_registry_with_prefix("control"),
        )
    });
    let mut swarm = match built {
        Ok(swarm) => swarm,
        Err(e) => return warn!("{e}"),
    };
    if let Err(e) = listen(core, &mut swarm) {
        return warn!("control plane: {e}");
    }
    if let Err(e) = swarm.behaviour_mut().gossip.subscribe(&topics.blocks) {
        return warn!("control plane: {e}");
    }
    control.update(|s| {
        s.peer_id = swarm.local_peer_id().to_string();
        s.reachability = Reachability::Unknown;
    });
    let (verdicts, verdicts_in) = mpsc::channel(gossip::MAX_CHECKS);
    let task = Task {
        published: chain.height(),
        swarm,
        core: core.clone(),
        control: control.clone(),
        chain,
        topics,
        registered: HashMap::new(),
        peer_ids: HashMap::new(),
        lookups: HashMap::new(),
        looked_up: HashMap::new(),
        providers: HashMap::new(),
        announce_at: Instant::now(),
        announcing: None,
        blocked: Vec::new(),
        bootstrap_at: Instant::now(),
        bootstrapped: false,
        checks: 0,
        verdicts,
        observed: HashSet::new(),
    };
    core.tasks.spawn(task.run(inbox, verdicts_in));
}

/// Listens where the config says or, by default, on the QUIC address's IP and port number
/// (TCP), falling back to any port if that one is taken.
fn listen(core: &Core, swarm: &mut Swarm<Behaviour>) -> Result<(), String> {
    let quic = core.endpoint.local_addr().map_err(|e| e.to_string())?;
    let (addr, explicit) = match core.config.control.listen {
        Some(addr) => (addr, true),
        None => (quic, false),
    };
    match swarm.listen_on(tcp_multiaddr(addr)) {
        Ok(_) => Ok(()),
        Err(e) if !explicit => {
            debug!("control plane: port {} taken ({e}); any port", addr.port());
            swarm
                .listen_on(tcp_multiaddr(SocketAddr::new(addr.ip(), 0)))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// `/ip4|ip6/…/tcp/port` of `addr`.
fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

/// The multiaddr of a `host:port` (an IP address or a DNS name), TCP.
pub fn host_port_multiaddr(host_port: &str) -> Option<Multiaddr> {
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Some(tcp_multiaddr(addr));
    }
    let (host, port) = host_port.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(
        Multiaddr::empty()
            .with(Protocol::Dns(host.to_owned().into()))
            .with(Protocol::Tcp(port)),
    )
}

struct Task {
    swarm: Swarm<Behaviour>,
    core: Arc<Core>,
    control: Arc<Control>,
    chain: Arc<ChainNode>,
    topics: Topics,
    /// Registered relays by peer id (the registry as of the last block).
    registered: HashMap<PeerId, RelayId>,
    /// Peer ids computed so far (each costs a point decompression).
    peer_ids: HashMap<RelayId, PeerId>,
    /// Announcement lookups in flight.
    lookups: HashMap<QueryId, RelayId>,
    /// When each relay was last looked up.
    looked_up: HashMap<RelayId, Instant>,
    /// Provider lookups in flight: who waits, and the relays found so far.
    providers: HashMap<QueryId, (tokio::sync::oneshot::Sender<Vec<RelayId>>, Vec<RelayId>)>,
    /// When this relay announces itself next.
    announce_at: Instant,
    /// The query storing its announcement at other relays.
    announcing: Option<QueryId>,
    /// Peers blocked for their score, until when.
    blocked: Vec<(PeerId, Instant)>,
    /// When the bootstrap relays are dialed next.
    bootstrap_at: Instant,
    bootstrapped: bool,
    /// The last height published (validators) or seen.
    published: u64,
    /// Gossip checks running.
    checks: usize,
    verdicts: mpsc::Sender<(MessageId, PeerId, MessageAcceptance, bool)>,
    observed: HashSet<Multiaddr>,
}

impl Task {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut verdicts: mpsc::Receiver<(MessageId, PeerId, MessageAcceptance, bool)>,
    ) {
        let mut heights = self.chain.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.on_registry();
        let stop = self.core.shutdown.clone();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = inbox.recv() => self.on_command(command),
                Some((id, from, verdict, taken)) = verdicts.recv() => {
                    self.on_verdict(id, from, verdict, taken)
                }
                changed = heights.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.on_registry();
                    self.publish_blocks().await;
                }
                _ = tick.tick() => self.on_tick(),
                _ = stop.cancelled() => return,
            }
        }
    }

    fn kad(&mut self) -> &mut kad::Behaviour<kad::store::MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    /// Takes the registry as of the last block: who counts as a relay, who leaves the routing
    /// table and which announcements are forgotten.
    fn on_registry(&mut self) {
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

    fn is_me_registered(&self) -> bool {
        self.registered.contains_key(self.swarm.local_peer_id())
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.dial_bootstrap(now);
        if now >= self.announce_at && self.is_me_registered() {
            self.announce(now);
        }
        self.look_up(now);
        self.drop_low_scores(now);
    }

    /// Dials the configured bootstrap relays while no peer is connected.
    fn dial_bootstrap(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_some() {
            if !self.bootstrapped && self.kad().bootstrap().is_ok() {
                self.bootstrapped = true;
            }
            return;
        }
        if now < self.bootstrap_at {
            return;
        }
        self.bootstrap_at = now + BOOTSTRAP_AGAIN;
        for relay in self.core.config.control.bootstrap.clone() {
            let (Some(peer), Some(addr)) = (
                keys::peer_id(&relay.id),
                host_port_multiaddr(&relay.host_port),
            ) else {
                continue;
            };
            if peer == *self.swarm.local_peer_id() {
                continue;
            }
            self.kad().add_address(&peer, addr.clone());
            let dial = DialOpts::peer_id(peer).addresses(vec![addr]).build();
            if let Err(e) = self.swarm.dial(dial) {
                debug!("dialing bootstrap relay {}: {e}", relay.id.short());
            }
        }
    }

    /// Signs and stores this relay's announcement (here and at the relays closest to its key).
    fn announce(&mut self, now: Instant) {
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
    fn look_up(&mut self, now: Instant) {
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

    /// Drops and blocks peers whose gossip score fell below [`DROP_BELOW`]; unblocks those
    /// whose time is up.
    fn drop_low_scores(&mut self, now: Instant) {
        let low: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| {
                self.swarm
                    .behaviour()
                    .gossip
                    .peer_score(p)
                    .is_some_and(|s| s < DROP_BELOW)
            })
            .copied()
            .collect();
        for peer in low {
            info!(%peer, "dropping a control-plane peer for its gossip score");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.blocked.push((peer, now + BLOCK_FOR));
            self.control.update(|s| s.dropped_peers += 1);
        }
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.blocked.drain(..).partition(|(_, until)| *until <= now);
        self.blocked = kept;
        for (peer, _) in expired {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
    }

    /// Validators publish the blocks committed since the last call, each with its proof.
    async fn publish_blocks(&mut self) {
        let height = self.chain.height();
        if !self.chain.is_validator() || height <= self.published {
            self.published = self.published.max(height);
            return;
        }
        let from = self.published + 1;
        let max = u32::try_from(height - self.published)
            .unwrap_or(u32::MAX)
            .min(64);
        self.published = height;
        let run = match self.chain.finalized_blocks(from, max, Duration::ZERO).await {
            Ok(run) => run,
            Err(e) => return debug!("reading blocks to gossip: {e}"),
        };
        for entry in run {
            let Some(data) = gossip::block_message(&entry) else {
                continue;
            };
            let topic = self.topics.blocks.clone();
            if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, data) {
                debug!("gossiping block {}: {e}", entry.block.header.height);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Provide(cid) => {
                if let Err(e) = self.kad().start_providing(records::content_key(&cid)) {
                    debug!("providing {cid}: {e}");
                }
            }
            Command::FindProviders(cid, reply) => {
                if self.providers.len() >= MAX_PROVIDER_QUERIES {
                    reply.send(Vec::new()).ok();
                    return;
                }
                let query = self.kad().get_providers(records::content_key(&cid));
                self.providers.insert(query, (reply, Vec::new()));
            }
        }
    }

    fn on_verdict(&mut self, id: MessageId, from: PeerId, verdict: MessageAcceptance, taken: bool) {
        self.checks = self.checks.saturating_sub(1);
        let refused = matches!(verdict, MessageAcceptance::Reject);
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&id, &from, verdict);
        if refused || taken {
            self.control.update(|s| {
                s.refused_gossip += u64::from(refused);
                s.gossiped_blocks += u64::from(taken);
            });
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!("control plane listening on {address}");
                let listening = self.swarm.listeners().map(|a| a.to_string()).collect();
                self.control.update(|s| s.listening = listening);
                // Announce again with the new address.
                self.announce_at = Instant::now();
            }
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                let connected = self.swarm.connected_peers().count();
                let inbound = endpoint.is_listener();
                self.control.update(|s| {
                    s.connected = connected;
                    if inbound {
                        s.inbound += 1;
                        s.reachability = Reachability::Public;
                    }
                });
            }
            SwarmEvent::ConnectionClosed { .. } => {
                let connected = self.swarm.connected_peers().count();
                self.control.update(|s| s.connected = connected);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            _ => {}
        }
    }

    /// A peer said who it is: a registered relay enters the routing table at the addresses it
    /// listens on; a peer of another protocol is dropped.
    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != behaviour::IDENTIFY_PROTOCOL {
            self.swarm.disconnect_peer_id(peer).ok();
            return;
        }
        if self.observed.len() < MAX_OBSERVED && self.observed.insert(info.observed_addr.clone()) {
            let observed = self.observed.iter().map(|a| a.to_string()).collect();
            self.control.update(|s| s.observed = observed);
        }
        if !self.registered.contains_key(&peer) {
            return;
        }
        for addr in info
            .listen_addrs
            .into_iter()
            .filter(|a| !is_unspecified(a))
            .take(MAX_PEER_ADDRS)
        {
            self.kad().add_address(&peer, addr);
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
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
    fn on_inbound_record(&mut self, request: kad::InboundRequest) {
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

    /// Keeps a checked announcement and, if it is news, routes to the relay's control
    /// addresses.
    fn learn(&mut self, announcement: ledger_lite::announce::Announcement) {
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

    fn on_record_found(&mut self, id: QueryId, found: kad::GetRecordResult, last: bool) {
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

    fn on_providers_found(&mut self, id: QueryId, found: kad::GetProvidersResult, last: bool) {
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

    fn on_gossip(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        if message.topic != self.topics.blocks.hash() || self.checks >= gossip::MAX_CHECKS {
            self.swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            return;
        }
        self.checks += 1;
        let (chain, verdicts) = (self.chain.clone(), self.verdicts.clone());
        self.core.tasks.spawn(async move {
            let (verdict, taken) = gossip::check_block(chain, message.data).await;
            verdicts.send((id, from, verdict, taken)).await.ok();
        });
    }
}

/// Whether `addr` is a wildcard (0.0.0.0, ::), which no peer can dial.
fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
