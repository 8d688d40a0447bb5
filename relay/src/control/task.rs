//! The control plane's one task: it owns the swarm and turns its events, the node's commands,
//! new blocks and a tick into DHT queries, records checked against the registry, gossip checks
//! and the relay's own announcement. Nothing here waits on I/O but the swarm: checks run in
//! tasks of their own and report back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::kad::{self, QueryId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use tokio::sync::mpsc;
use top_proto::id::RelayId;
use tracing::{debug, info, warn};

use super::addrs::listen;
use super::behaviour::{self, Behaviour, BehaviourEvent, Topics};
use super::checks::{Checked, MAX_CHECKS, MAX_TX_CHECKS};
use super::{Command, Control, Reachability, keys, records};
use crate::ledger::chain::ChainNode;
use crate::node::core::Core;
use crate::util::unix_now_ms;

/// How often the task looks around (lookups, announcing, scores, bootstrap).
const TICK: Duration = Duration::from_millis(500);
/// How long a relay's announcement is valid for.
pub(super) const ANNOUNCE_TTL: Duration = Duration::from_secs(3600);
/// How often a relay announces itself afresh.
pub(super) const REANNOUNCE: Duration = Duration::from_secs(20 * 60);
/// Wait after this relay's registration before it first announces itself (the others take
/// the block that registers it meanwhile).
pub(super) const ANNOUNCE_SETTLE: Duration = Duration::from_secs(1);
/// Wait after the first announcement before the second.
pub(super) const ANNOUNCE_SECOND: Duration = Duration::from_secs(5);
/// Wait before announcing again after a failed attempt.
pub(super) const ANNOUNCE_RETRY: Duration = Duration::from_secs(5);
/// Announcement lookups in flight at once.
pub(super) const MAX_LOOKUPS: usize = 8;
/// First wait before looking a relay up again; doubles up to [`LOOKUP_AGAIN_AT_MOST`].
pub(super) const LOOKUP_AGAIN: Duration = Duration::from_secs(1);
/// Lookups of a relay not found that come soon (at most [`LOOKUP_SOON_AT_MOST`] apart).
pub(super) const LOOKUPS_SOON: u8 = 6;
/// Longest wait between the first lookups of a relay not found.
pub(super) const LOOKUP_SOON_AT_MOST: Duration = Duration::from_secs(3);
/// Longest wait before looking a relay up again.
pub(super) const LOOKUP_AGAIN_AT_MOST: Duration = Duration::from_secs(60);
/// An announcement expiring sooner than this is looked up afresh.
pub(super) const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);
/// Provider lookups in flight at once.
const MAX_PROVIDER_QUERIES: usize = 64;
/// Most providers one lookup answers with.
pub(super) const MAX_PROVIDERS: usize = 20;
/// How long a peer dropped for its score stays blocked.
pub(super) const BLOCK_FOR: Duration = Duration::from_secs(600);
/// Wait between dials of the bootstrap relays while none is connected (longer than an ask).
pub(super) const BOOTSTRAP_AGAIN: Duration = Duration::from_secs(5);
/// How often expired announcements are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the per-relay provider quotas start afresh (a provider record's lifetime).
const PROVIDER_COUNTS_RESET: Duration = Duration::from_secs(2 * 3600);
/// Most peers connected at once that are not registered relays.
pub(super) const MAX_STRANGERS: usize = 32;
/// Most addresses taken from a peer's identify answer.
pub(super) const MAX_PEER_ADDRS: usize = 4;

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
    for topic in [&topics.blocks, &topics.txs, &topics.relays] {
        if let Err(e) = swarm.behaviour_mut().gossip.subscribe(topic) {
            return warn!("control plane: {e}");
        }
    }
    control.update(|s| {
        s.peer_id = swarm.local_peer_id().to_string();
        s.reachability = Reachability::Unknown;
    });
    let (verdicts, verdicts_in) = mpsc::channel(MAX_CHECKS + MAX_TX_CHECKS);
    let (txs, txs_in) = mpsc::channel(MAX_TX_CHECKS);
    chain.set_tx_gossip(txs);
    let (found, found_in) = mpsc::channel(16);
    let genesis = chain.genesis();
    let task = Task {
        chain_id: genesis.chain_id(),
        genesis_validator: genesis.validator,
        validators: HashSet::new(),
        routed: HashMap::new(),
        provider_counts: HashMap::new(),
        swept: Instant::now(),
        providers_reset: Instant::now(),
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
        announced: 0,
        registry_read: false,
        early: Default::default(),
        announcing: None,
        blocked: Vec::new(),
        bootstrap: core
            .config
            .control
            .bootstrap_relays(&genesis, &core.identity.relay_id()),
        bootstrap_at: Instant::now(),
        bootstrapped: false,
        checks: 0,
        tx_checks: 0,
        tx_quota: Default::default(),
        verdicts,
        found,
        observed: HashSet::new(),
    };
    control.set_running();
    core.tasks
        .spawn(task.run(inbox, verdicts_in, found_in, txs_in));
}

/// The control plane's state, owned by its one task.
pub(super) struct Task {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) core: Arc<Core>,
    pub(super) control: Arc<Control>,
    pub(super) chain: Arc<ChainNode>,
    pub(super) topics: Topics,
    /// The chain's id.
    pub(super) chain_id: ledger_lite::tx::ChainId,
    /// The genesis validator (a dev chain's only one).
    pub(super) genesis_validator: top_proto::id::AccountId,
    /// Who may publish blocks now.
    pub(super) validators: HashSet<PeerId>,
    /// Addresses added to the routing table per relay.
    pub(super) routed: HashMap<PeerId, usize>,
    /// Content keys each relay said it provides here since the counts last reset.
    pub(super) provider_counts: HashMap<PeerId, usize>,
    /// When the held announcements were last swept.
    pub(super) swept: Instant,
    /// When the provider quotas last started afresh.
    pub(super) providers_reset: Instant,
    /// Registered relays by peer id (the registry as of the last block).
    pub(super) registered: HashMap<PeerId, RelayId>,
    /// Peer ids computed so far (each costs a point decompression).
    pub(super) peer_ids: HashMap<RelayId, PeerId>,
    /// Announcement lookups in flight.
    pub(super) lookups: HashMap<QueryId, RelayId>,
    /// When each relay was last looked up.
    pub(super) looked_up: HashMap<RelayId, (Instant, Duration, u8)>,
    /// Provider lookups in flight: who waits, and the relays found so far.
    pub(super) providers:
        HashMap<QueryId, (tokio::sync::oneshot::Sender<Vec<RelayId>>, Vec<RelayId>)>,
    /// When this relay announces itself next.
    pub(super) announce_at: Instant,
    /// Announcements stored since this relay was last registered.
    pub(super) announced: u32,
    /// Announcements of relays this relay's chain has not registered yet.
    pub(super) early: super::early::EarlyAnnouncements,
    /// Whether the registry was read once (relays in it later are newly registered).
    pub(super) registry_read: bool,
    /// The query storing its announcement at other relays.
    pub(super) announcing: Option<QueryId>,
    /// Peers blocked for their score, until when.
    pub(super) blocked: Vec<(PeerId, Instant)>,
    /// The relays to join through (configured, then the genesis' own).
    pub(super) bootstrap: Vec<top_proto::addr::RelayAddr>,
    /// When the bootstrap relays are dialed next.
    pub(super) bootstrap_at: Instant,
    pub(super) bootstrapped: bool,
    /// The last height published (validators) or seen.
    pub(super) published: u64,
    /// Bootstrap relays' control addresses, as they answer.
    pub(super) found: mpsc::Sender<(PeerId, Vec<Multiaddr>)>,
    /// Block checks running.
    pub(super) checks: usize,
    /// Transaction checks running.
    pub(super) tx_checks: usize,
    /// Gossiped transactions each registered relay had checked here lately.
    pub(super) tx_quota: super::checks::TxQuota,
    pub(super) verdicts: mpsc::Sender<(MessageId, PeerId, MessageAcceptance, Checked)>,
    pub(super) observed: HashSet<Multiaddr>,
}

impl Task {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut verdicts: mpsc::Receiver<(MessageId, PeerId, MessageAcceptance, Checked)>,
        mut found: mpsc::Receiver<(PeerId, Vec<Multiaddr>)>,
        mut txs: mpsc::Receiver<(Vec<u8>, tokio::sync::oneshot::Sender<bool>)>,
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
                Some((id, from, verdict, checked)) = verdicts.recv() => {
                    self.on_verdict(id, from, verdict, checked)
                }
                Some((data, sent)) = txs.recv() => self.publish_tx(data, sent),
                changed = heights.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.on_registry();
                    self.publish_blocks().await;
                }
                Some((peer, addrs)) = found.recv() => self.on_bootstrap_found(peer, addrs),
                _ = tick.tick() => self.on_tick(),
                _ = stop.cancelled() => return,
            }
        }
    }

    pub(super) fn kad(&mut self) -> &mut kad::Behaviour<kad::store::MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    pub(super) fn is_me_registered(&self) -> bool {
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
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.swept = now;
            let registered: HashSet<RelayId> = self.registered.values().copied().collect();
            self.control
                .prune(|relay| registered.contains(relay), unix_now_ms());
        }
        if now.duration_since(self.providers_reset) >= PROVIDER_COUNTS_RESET {
            self.providers_reset = now;
            self.provider_counts.clear();
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

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!("control plane listening on {address}");
                let listening = self.swarm.listeners().map(|a| a.to_string()).collect();
                self.control.update(|s| s.listening = listening);
                // Announce again with the new address.
                self.announce_at = Instant::now();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                // Peers that are not registered relays (relays still joining, or strangers)
                // share a few connections: they cannot take the slots relays need.
                let strangers = self
                    .swarm
                    .connected_peers()
                    .filter(|p| !self.registered.contains_key(p))
                    .count();
                if !self.registered.contains_key(&peer_id) && strangers > MAX_STRANGERS {
                    self.swarm.disconnect_peer_id(peer_id).ok();
                    self.control.update(|s| s.refused_connections += 1);
                    return;
                }
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
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { .. },
                ..
            } => self.control.update(|s| s.refused_connections += 1),
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
}
