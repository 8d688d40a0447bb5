//! Validators on commonware's deterministic runtime and simulated network: links that can be
//! cut, slowed or made lossy; in-memory ledgers to compare.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use commonware_codec::ReadExt;
use commonware_cryptography::Signer as _;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::Manager as _;
use commonware_p2p::simulated::{self, Link, Network};
use commonware_runtime::{Clock, Quota, Supervisor as _, deterministic};
use commonware_utils::ordered::Set;
use ledger_lite::{Genesis, State};
use top_consensus::app::{Ledger, LedgerApp};
use top_consensus::block::ChainBlock;
use top_consensus::epochs::Membership;
use top_consensus::misbehaviour;
use top_consensus::node::{Channels, MAX_MESSAGE, ValidatorConfig, channel, start_validator};
use top_proto::identity::Identity;

/// The namespace the simulated validators sign in.
pub const NAMESPACE: &[u8] = b"top-test-consensus";

/// A link with this latency, jitter and delivery rate.
pub fn link(latency_ms: u64, jitter_ms: u64, success_rate: f64) -> Link {
    Link {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        success_rate,
    }
}

/// Every node is every epoch's peer on the simulated network (who votes is the scheme's
/// business, not the transport's).
struct Everyone {
    manager: simulated::Manager<PublicKey, deterministic::Context>,
    all: Set<PublicKey>,
}

impl Membership for Everyone {
    fn track(&mut self, epoch: u64, _state: &State) {
        // Set 0 is tracked as the network starts.
        if epoch > 0 {
            self.manager.track(epoch, self.all.clone());
        }
    }
}

/// A simulated network of nodes.
pub struct Sim {
    /// The network's oracle (links are added and cut through it).
    pub oracle: simulated::Oracle<PublicKey, deterministic::Context>,
    /// Each node's key.
    pub pks: Vec<PublicKey>,
    /// Each node's ledger.
    pub ledgers: Vec<Arc<Ledger>>,
}

impl Sim {
    /// Starts a node for each of `ids` on `genesis`, every pair linked with 10 ms links.
    pub async fn start(
        context: &deterministic::Context,
        ids: &[Identity],
        genesis: &Genesis,
    ) -> Self {
        Self::start_with(context, ids, genesis, &[], misbehaviour::ignore()).await
    }

    /// [`Sim::start`], with `others` on the network too (linked, but running no node), and
    /// every node's bad messages reported to `report`.
    pub async fn start_with(
        context: &deterministic::Context,
        ids: &[Identity],
        genesis: &Genesis,
        others: &[PublicKey],
        report: misbehaviour::Report,
    ) -> Self {
        let keys: Vec<PrivateKey> = ids
            .iter()
            .map(|id| PrivateKey::read(&mut &id.signing_key().to_bytes()[..]).unwrap())
            .collect();
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
        let everyone: Vec<PublicKey> = pks.iter().chain(others).cloned().collect();
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size: MAX_MESSAGE,
                disconnect_on_block: true,
                tracked_peer_sets: NonZeroUsize::new(2).unwrap(),
            },
            everyone.clone(),
        )
        .await;
        network.start();
        let sim = Self {
            oracle,
            pks: pks.clone(),
            ledgers: Vec::new(),
        };
        sim.connect(&everyone, &everyone, Some(link(10, 2, 1.0)))
            .await;
        let genesis_block = ChainBlock::genesis(genesis).unwrap();
        let quota = Quota::per_second(NonZeroU32::MAX);
        let all = Set::try_from(everyone.clone()).unwrap();
        let mut ledgers = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let ledger = Ledger::new(&genesis_block, genesis.state().unwrap());
            ledgers.push(ledger.clone());
            let control = sim.oracle.control(pks[i].clone());
            let register = async |ch| control.register(ch, quota).await.unwrap();
            let channels = Channels {
                votes: register(channel::VOTES).await,
                certificates: register(channel::CERTIFICATES).await,
                resolver: register(channel::RESOLVER).await,
                backfill: register(channel::BACKFILL).await,
                blocks: register(channel::BLOCKS).await,
            };
            let config = ValidatorConfig {
                key: key.clone(),
                namespace: NAMESPACE.to_vec(),
                genesis: genesis_block.clone(),
                partition_prefix: format!("validator-{i}"),
                peers: sim.oracle.manager(),
                blocker: misbehaviour::Counting::new(control.clone(), report.clone()),
                membership: Everyone {
                    manager: sim.oracle.manager(),
                    all: all.clone(),
                },
                leader_timeout: Duration::from_secs(1),
            };
            let app = LedgerApp::new(ledger, ids[i].clone());
            start_validator(
                context.child("validator").with_attribute("index", i),
                config,
                channels,
                app,
            )
            .await
            .unwrap();
        }
        Self { ledgers, ..sim }
    }

    /// Links every ordered pair of `from` × `to` with `config` (none: cut).
    pub async fn connect(&self, from: &[PublicKey], to: &[PublicKey], config: Option<Link>) {
        for a in from {
            for b in to {
                if a == b {
                    continue;
                }
                self.oracle.remove_link(a.clone(), b.clone()).await.ok();
                if let Some(config) = &config {
                    self.oracle
                        .add_link(a.clone(), b.clone(), config.clone())
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// Cuts `nodes` off from everyone, both ways.
    pub async fn isolate(&self, nodes: &[PublicKey]) {
        self.connect(nodes, &self.pks, None).await;
        self.connect(&self.pks, nodes, None).await;
    }

    /// Each node's last finalized height.
    pub fn heights(&self) -> Vec<u64> {
        self.ledgers.iter().map(|l| l.height()).collect()
    }
}

/// Every pair of `ledgers` finalized the same block at each height both reached.
pub fn assert_agree(ledgers: &[Arc<Ledger>]) {
    let chains: Vec<Vec<Arc<ChainBlock>>> = ledgers.iter().map(|l| l.finalized()).collect();
    for chain in &chains[1..] {
        for (a, b) in chains[0].iter().zip(chain) {
            assert_eq!(a.block().header.height, b.block().header.height);
            assert_eq!(
                a.hash(),
                b.hash(),
                "two blocks at height {}",
                a.block().header.height
            );
        }
    }
}

/// Waits until every one of `ledgers` finalized `height`.
pub async fn all_reach(ledgers: &[Arc<Ledger>], height: u64) {
    for ledger in ledgers {
        ledger.wait_finalized(height).await;
    }
}

/// Waits (on the simulated clock) `secs` seconds.
pub async fn wait(context: &deterministic::Context, secs: u64) {
    context.sleep(Duration::from_secs(secs)).await;
}
