//! The control plane's libp2p swarm: TCP with Noise and yamux, and its protocols: connection
//! limits and a block list first (a denied connection costs nothing further), identify (where
//! peers are and see us), Kademlia (announcements, content providers) and gossipsub (blocks and
//! transactions, peer scoring). Every table and message has a bound set here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, identify, noise, tcp, yamux};
use prometheus_client::registry::Registry;

use ledger_lite::announce::{MAX_ANNOUNCE_BYTES, MAX_ANNOUNCE_TTL_MS};
use ledger_lite::chain::MAX_BLOCK_BYTES;
use ledger_lite::tx::ChainId;

use super::config::ControlConfig;

/// The Kademlia protocol of TOP relays (not the public IPFS DHT).
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/top/kad/1.0.0");
/// Identify's protocol version: peers on another one are not relays of this network.
pub const IDENTIFY_PROTOCOL: &str = "/top/control/1";
/// Most records (announcements) a relay keeps: one per registered relay, with room.
const MAX_RECORDS: usize = 2 * crate::node::peers::MAX_MEMBERS;
/// Most providers kept per content.
const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Most contents this relay provides at once (announced to the DHT).
pub const MAX_PROVIDED: usize = 65_536;
/// Most concurrent DHT requests one query sends.
const KAD_PARALLELISM: usize = 3;
/// Longest a DHT query runs.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest gossip message: a full block with its finality proof.
const MAX_GOSSIP_BYTES: usize = MAX_BLOCK_BYTES + (64 << 10);
/// Connections kept per peer.
const MAX_PER_PEER: u32 = 2;
/// Handshakes in progress at once (each way).
const MAX_PENDING: u32 = 32;
/// How long an idle connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The protocols a relay's control plane runs.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection bounds.
    pub limits: connection_limits::Behaviour,
    /// Peers dropped for misbehaving.
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Addresses and protocols, ours as seen by others.
    pub identify: identify::Behaviour,
    /// The DHT.
    pub kad: kad::Behaviour<MemoryStore>,
    /// Blocks and transactions.
    pub gossip: gossipsub::Behaviour,
}

/// The gossip topics of one chain.
pub struct Topics {
    /// Finalized blocks with their proofs.
    pub blocks: IdentTopic,
    /// Transactions submitted anywhere.
    pub txs: IdentTopic,
    /// Relays' announcements as they make them (the DHT keeps them for later comers).
    pub relays: IdentTopic,
}

impl Topics {
    /// The topics of `chain`.
    pub fn of(chain: &ChainId) -> Self {
        let chain = blake3::Hash::from(chain.0).to_hex();
        Self {
            blocks: IdentTopic::new(format!("/top/{chain}/blocks/1")),
            txs: IdentTopic::new(format!("/top/{chain}/txs/1")),
            relays: IdentTopic::new(format!("/top/{chain}/relays/1")),
        }
    }
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The transport (Noise) could not be set up.
    #[error("control plane transport: {0}")]
    Transport(String),
    /// A protocol's configuration was refused.
    #[error("control plane {0}")]
    Behaviour(String),
}

/// A swarm for `key` with every protocol configured, its transport counted in `registry`.
pub fn build(
    key: Keypair,
    config: &ControlConfig,
    topics: &Topics,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, BuildError> {
    let transport_error = |e: &dyn std::fmt::Display| BuildError::Transport(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_error(&e))?
        .with_dns()
        .map_err(|e| transport_error(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| behaviour(key, config, topics))
        .map_err(|e| BuildError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

fn behaviour(
    key: &Keypair,
    config: &ControlConfig,
    topics: &Topics,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let me = key.public().to_peer_id();
    let limits = ConnectionLimits::default()
        .with_max_established_incoming(Some(config.max_connections))
        .with_max_established_outgoing(Some(config.max_connections))
        .with_max_pending_incoming(Some(MAX_PENDING))
        .with_max_pending_outgoing(Some(MAX_PENDING))
        .with_max_established_per_peer(Some(MAX_PER_PEER));
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
            .with_agent_version(format!("toprelay/{}", env!("CARGO_PKG_VERSION")))
            .with_interval(Duration::from_secs(300))
            .with_cache_size(0),
    );
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        // Only registered relays enter the routing table (the task adds them).
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        .set_parallelism(NonZeroUsize::new(KAD_PARALLELISM).unwrap_or(NonZeroUsize::MIN))
        .set_query_timeout(KAD_QUERY_TIMEOUT)
        .set_record_ttl(Some(Duration::from_millis(MAX_ANNOUNCE_TTL_MS)))
        // Relays republish their own announcements, freshly signed.
        .set_publication_interval(None)
        .set_replication_interval(Some(Duration::from_secs(600)))
        .set_provider_record_ttl(Some(Duration::from_secs(2 * 3600)))
        .set_provider_publication_interval(Some(Duration::from_secs(1800)))
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(300)));
    let store = MemoryStore::with_config(
        me,
        MemoryStoreConfig {
            max_records: MAX_RECORDS,
            max_value_bytes: MAX_ANNOUNCE_BYTES,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            max_provided_keys: MAX_PROVIDED,
        },
    );
    let mut kad = kad::Behaviour::with_config(me, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
        })
        .heartbeat_interval(Duration::from_millis(700))
        .build()
        .map_err(|e| e.to_string())?;
    let mut gossip =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)?;
    let (params, thresholds) = scoring(topics);
    gossip.with_peer_score(params, thresholds)?;
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        blocked: allow_block_list::Behaviour::default(),
        identify,
        kad,
        gossip,
    })
}

/// Score below which a peer is dropped and blocked for a while (gossipsub's graylist).
pub const DROP_BELOW: f64 = -80.0;

/// Peer scoring: an invalid message costs far more than good deliveries earn, so one forged
/// block or transaction puts its sender below [`DROP_BELOW`].
fn scoring(topics: &Topics) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        // Blocks come once a second or less: a quiet mesh peer is not at fault.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(topics.blocks.hash(), topic.clone());
    params.topics.insert(topics.txs.hash(), topic.clone());
    params.topics.insert(topics.relays.hash(), topic);
    // Many relays of one operator on one host are not a Sybil attack on loopback.
    params.ip_colocation_factor_whitelist = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .collect();
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: DROP_BELOW,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}
