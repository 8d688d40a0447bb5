//! The control plane against a stranger with a fresh key running the same protocols: records
//! that do not check against the registry (forged, unregistered, expired) are neither stored nor
//! believed, provider records of unregistered peers are refused, a forged block is refused and
//! costs its sender its connection, and connections are bounded.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ledger_lite::announce::AnnouncementBody;
use ledger_lite::wire::FinalizedBlock;
use libp2p::kad::{Quorum, Record};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub};
use top_proto::cdn::Cid;
use top_proto::identity::Identity;
use top_relay::config::RelayConfig;
use top_relay::control::behaviour::{self, Behaviour, BehaviourEvent, Topics};
use top_relay::control::{config::ControlConfig, keys, records};
use top_relay::{InitOptions, Relay, init};

/// A dev relay (the chain's validator) with fast blocks, its config tweaked.
async fn dev_relay(dir: &std::path::Path, tweak: impl FnOnce(&mut RelayConfig)) -> Relay {
    init(dir, InitOptions::loopback_dev()).unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    config.ledger.block_interval_ms = 100;
    config.billing.enabled = false;
    tweak(&mut config);
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

/// A relay told only `validator`'s address.
async fn joining(dir: &std::path::Path, validator: &Relay) -> Relay {
    let opts = InitOptions {
        bootstrap: vec![validator.addr()],
        ..InitOptions::loopback()
    };
    init(dir, opts).unwrap();
    Relay::start(dir).await.unwrap()
}

/// A stranger: the relay's own control-plane protocols under a fresh key.
fn stranger(relay: &Relay) -> Swarm<Behaviour> {
    let key = keys::keypair(&Identity::generate()).unwrap();
    let topics = Topics::of(&relay.chain().unwrap().genesis().chain_id());
    let mut registry = prometheus_client::registry::Registry::default();
    behaviour::build(key, &ControlConfig::default(), &topics, &mut registry).unwrap()
}

/// Polls `swarm` until `done` holds (checked every 20 ms), failing after 20 s.
async fn drive_until(swarm: &mut Swarm<Behaviour>, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::select! {
            _ = swarm.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Polls `swarm` until an event `wanted` says so, failing after 20 s.
async fn drive_for_event(
    swarm: &mut Swarm<Behaviour>,
    what: &str,
    mut wanted: impl FnMut(&SwarmEvent<BehaviourEvent>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if wanted(&event) {
            return;
        }
    }
}

/// The relay's control-plane address and peer id, once it listens.
async fn control_addr(relay: &Relay) -> (PeerId, Multiaddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = relay.status().control;
        if let Some(addr) = status.listening.first() {
            return (status.peer_id.parse().unwrap(), addr.parse().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "the control plane never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(swarm: &mut Swarm<Behaviour>, relay: &Relay) -> PeerId {
    let (peer, addr) = control_addr(relay).await;
    swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
    swarm.dial(addr).unwrap();
    drive_for_event(
        swarm,
        "a connection",
        |e| matches!(e, SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == peer),
    )
    .await;
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_check_are_neither_stored_nor_believed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(&dir.path().join("r"), |_| {}).await;
    let relay_key = Identity::load(&dir.path().join("r").join("identity.key")).unwrap();
    // The relay registers itself and announces.
    let mut changed = relay.control().subscribe();
    while !relay.control().discovered().contains_key(&relay.id()) {
        changed.changed().await.unwrap();
    }
    let genuine = relay.control().discovered()[&relay.id()].clone();
    let mut attacker = stranger(&relay);
    let target = connect(&mut attacker, &relay).await;

    let chain = relay.chain().unwrap().genesis().chain_id();
    let now = top_relay::util::unix_now_ms();
    let body = |relay_id, issued_ms: u64| AnnouncementBody {
        chain,
        relay: relay_id,
        addrs: vec!["203.0.113.9:7700".into()],
        control: Vec::new(),
        issued_ms,
        expires_ms: issued_ms + 3_600_000,
    };
    let stranger_key = Identity::generate();
    let bad = [
        // The relay's id, the stranger's signature: forged.
        {
            let mut a = body(relay.id(), now + 1).sign(&relay_key);
            a.signature = stranger_key.sign(b"not the body");
            a
        },
        // The stranger's own: not registered.
        body(stranger_key.relay_id(), now).sign(&stranger_key),
        // The relay's own signature, but expired long ago.
        body(relay.id(), now - 10_000_000).sign(&relay_key),
    ];
    for a in &bad {
        let record = Record::new(records::relay_key(&a.body.relay), a.encode());
        attacker
            .behaviour_mut()
            .kad
            .put_record_to(record, std::iter::once(target), Quorum::One);
    }
    // A provider record from a peer that is not a registered relay.
    let cid = Cid([9; 32]);
    attacker
        .behaviour_mut()
        .kad
        .start_providing(records::content_key(&cid))
        .unwrap();
    drive_until(&mut attacker, "four refusals", || {
        relay.status().control.refused_records >= 4
    })
    .await;
    let held = relay.control().discovered();
    assert_eq!(held.len(), 1, "only the relay itself");
    assert_eq!(
        held[&relay.id()],
        genuine,
        "its own announcement, not the forged one"
    );
    assert!(relay.control().providers(cid).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_block_is_refused_and_its_sender_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let validator = dev_relay(&dir.path().join("v"), |_| {}).await;
    let follower = joining(&dir.path().join("f"), &validator).await;
    let mut changed = follower.control().subscribe();
    while follower.status().control.gossiped_blocks == 0 {
        changed.changed().await.unwrap();
    }

    let mut attacker = stranger(&follower);
    let topics = Topics::of(&follower.chain().unwrap().genesis().chain_id());
    attacker
        .behaviour_mut()
        .gossip
        .subscribe(&topics.blocks)
        .unwrap();
    let target = connect(&mut attacker, &follower).await;
    drive_for_event(&mut attacker, "the follower's subscription", |e| {
        matches!(
            e,
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. }))
                if *peer_id == target
        )
    })
    .await;
    // Block 1 as the follower holds it, with another time: not the block at that height.
    let mut block = follower.chain().unwrap().block(1).unwrap().unwrap();
    block.header.time_ms += 1;
    let forged = postcard::to_allocvec(&FinalizedBlock { block, proof: None }).unwrap();
    attacker
        .behaviour_mut()
        .gossip
        .publish(topics.blocks.clone(), forged)
        .unwrap();
    drive_for_event(
        &mut attacker,
        "the follower dropping the forger",
        |e| matches!(e, SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == target),
    )
    .await;
    let status = follower.status().control;
    assert!(
        status.refused_gossip >= 1 && status.dropped_peers >= 1,
        "{status:?}"
    );
    // It stays out: a new connection is refused.
    let (_, addr) = control_addr(&follower).await;
    attacker.dial(addr).unwrap();
    drive_for_event(&mut attacker, "the redial to fail", |e| {
        matches!(
            e,
            SwarmEvent::OutgoingConnectionError { .. } | SwarmEvent::ConnectionClosed { .. }
        )
    })
    .await;
    // The chain goes on for the follower, from honest gossip.
    let height = follower.chain().unwrap().height();
    let mut heights = follower.chain().unwrap().subscribe();
    while follower.chain().unwrap().height() < height + 3 {
        heights.changed().await.unwrap();
    }
    follower.shutdown().await;
    validator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(&dir.path().join("r"), |c| c.control.max_connections = 3).await;
    let (_, addr) = control_addr(&relay).await;
    // Six strangers dial and keep their swarms running.
    let mut running = Vec::new();
    for _ in 0..6 {
        let mut s = stranger(&relay);
        s.dial(addr.clone()).unwrap();
        running.push(tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        }));
    }
    let mut changed = relay.control().subscribe();
    loop {
        let c = relay.status().control;
        if c.connected + c.refused_connections as usize >= 6 {
            break;
        }
        tokio::time::timeout(Duration::from_secs(20), changed.changed())
            .await
            .expect("every stranger is answered")
            .unwrap();
    }
    let c = relay.status().control;
    assert!(c.connected <= 3 && c.refused_connections >= 3, "{c:?}");
    for r in running {
        r.abort();
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_share_a_few_connections() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(&dir.path().join("r"), |_| {}).await;
    let (_, addr) = control_addr(&relay).await;
    // Forty fresh keys, under the relay's connection bound (128) but over its share for peers
    // that are not registered relays (32).
    let mut running = Vec::new();
    for _ in 0..40 {
        let mut s = stranger(&relay);
        s.dial(addr.clone()).unwrap();
        running.push(tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        }));
    }
    // Every stranger answered, and the refused ones' connections closed (a refusal closes a
    // connection after it is counted as connected).
    let mut changed = relay.control().subscribe();
    loop {
        let c = relay.status().control;
        if c.inbound + c.refused_connections >= 40 && c.connected <= 32 {
            break;
        }
        tokio::time::timeout(Duration::from_secs(20), changed.changed())
            .await
            .unwrap_or_else(|_| panic!("strangers still connected beyond their share: {c:?}"))
            .unwrap();
    }
    let c = relay.status().control;
    assert!(c.connected <= 32 && c.refused_connections >= 8, "{c:?}");
    for r in running {
        r.abort();
    }
    relay.shutdown().await;
}

/// The relay's own protocols under `key` (a registered relay's key, turned against the network).
fn swarm_of(relay: &Relay, key: &Identity) -> Swarm<Behaviour> {
    let topics = Topics::of(&relay.chain().unwrap().genesis().chain_id());
    let mut registry = prometheus_client::registry::Registry::default();
    let key = keys::keypair(key).unwrap();
    behaviour::build(key, &ControlConfig::default(), &topics, &mut registry).unwrap()
}

/// A transfer of one base unit from `from`, with its next nonce, signed by `signer`.
fn transfer(relay: &Relay, from: &Identity, signer: &Identity, to: &Identity) -> Vec<u8> {
    let nonce = relay
        .chain()
        .unwrap()
        .account(&from.account_id())
        .next_nonce;
    transfer_to(relay, from, nonce, signer, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossiped_transaction_is_queued_and_a_forged_one_costs_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    let validator = dev_relay(&dir.path().join("v"), |_| {}).await;
    let chain = validator.chain().unwrap();
    // A relay registers, then stops: its key is the attacker's (a registered relay gone bad).
    let gone = dir.path().join("gone");
    let relay = joining(&gone, &validator).await;
    let key = Identity::load(&gone.join(top_relay::config::KEY_FILE)).unwrap();
    let mut heights = chain.subscribe();
    while chain.with_state(|s| s.relay(&key.account_id()).is_none()) {
        heights.changed().await.unwrap();
    }
    relay.shutdown().await;

    // A stranger's transaction is not read at all (it is not a registered relay).
    let faucet = Identity::load(
        &dir.path()
            .join("v")
            .join(top_relay::config::FAUCET_KEY_FILE),
    )
    .unwrap();
    let topics = Topics::of(&chain.genesis().chain_id());
    let (to_stranger, to_relay) = (Identity::generate(), Identity::generate());
    let mut stranger = stranger(&validator);
    let mut attacker = swarm_of(&validator, &key);
    for swarm in [&mut stranger, &mut attacker] {
        swarm.behaviour_mut().gossip.subscribe(&topics.txs).unwrap();
        let target = connect(swarm, &validator).await;
        drive_for_event(swarm, "the validator's subscription", |e| {
            matches!(
                e,
                SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, topic }))
                    if *peer_id == target && *topic == topics.txs.hash()
            )
        })
        .await;
    }
    let from_stranger = transfer(&validator, &faucet, &faucet, &to_stranger);
    (stranger.behaviour_mut().gossip)
        .publish(topics.txs.clone(), from_stranger)
        .unwrap();
    // A registered relay's transaction is queued and committed.
    let from_relay = transfer(&validator, &faucet, &faucet, &to_relay);
    (attacker.behaviour_mut().gossip)
        .publish(topics.txs.clone(), from_relay)
        .unwrap();
    let committed = || chain.with_state(|s| s.account(&to_relay.account_id()).is_some());
    drive_until(&mut attacker, "the gossiped transfer committed", committed).await;
    assert!(
        chain.with_state(|s| s.account(&to_stranger.account_id()).is_none()),
        "a stranger's gossiped transaction was taken"
    );

    // A transaction whose signature is not its sender's: refused, and its sender dropped.
    let forged = transfer(&validator, &faucet, &Identity::generate(), &to_relay);
    (attacker.behaviour_mut().gossip)
        .publish(topics.txs.clone(), forged)
        .unwrap();
    let target = validator
        .status()
        .control
        .peer_id
        .parse::<PeerId>()
        .unwrap();
    drive_for_event(
        &mut attacker,
        "the validator dropping the forger",
        |e| matches!(e, SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == target),
    )
    .await;
    let status = validator.status().control;
    assert!(
        status.refused_gossip >= 1 && status.dropped_peers >= 1,
        "{status:?}"
    );
    validator.shutdown().await;
}

/// A transfer of one base unit from `from` with `nonce`, to a fresh account.
fn transfer_at(relay: &Relay, from: &Identity, nonce: u64, signer: &Identity) -> Vec<u8> {
    transfer_to(relay, from, nonce, signer, &Identity::generate())
}

/// A transfer of one base unit from `from` with `nonce` to `to`, signed by `signer`.
fn transfer_to(
    relay: &Relay,
    from: &Identity,
    nonce: u64,
    signer: &Identity,
    to: &Identity,
) -> Vec<u8> {
    let (chain_id, fee) = relay
        .chain()
        .unwrap()
        .with_state(|s| (s.chain, s.params.min_fee));
    let tx = ledger_lite::Tx {
        chain: chain_id,
        from: from.account_id(),
        nonce,
        fee,
        kind: ledger_lite::TxKind::Transfer {
            to: to.account_id(),
            amount: ledger_lite::Amount::from_units(1),
        },
    }
    .sign(signer);
    postcard::to_allocvec(&tx).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_passes_on_only_transactions_that_could_be_paid_for() {
    use top_relay::ledger::tx_gossip::{GossipedTx, MAX_NONCE_AHEAD};
    let dir = tempfile::tempdir().unwrap();
    let validator = dev_relay(&dir.path().join("v"), |_| {}).await;
    let follower = joining(&dir.path().join("f"), &validator).await;
    // Its chain opens once it has fetched the genesis.
    let mut changed = follower.control().subscribe();
    while follower.chain().is_none() || follower.status().control.gossiped_blocks == 0 {
        changed.changed().await.unwrap();
    }
    let chain = follower.chain().unwrap();
    let faucet = Identity::load(
        &dir.path()
            .join("v")
            .join(top_relay::config::FAUCET_KEY_FILE),
    )
    .unwrap();
    let next = chain.account(&faucet.account_id()).next_nonce;
    let check = async |data: Vec<u8>| chain.take_gossiped_tx(&data).await;

    // The account's next transaction, and one a few nonces on (the faucet holds their fees).
    let first = transfer_at(&follower, &faucet, next, &faucet);
    assert_eq!(check(first.clone()).await, GossipedTx::Checked);
    assert_eq!(
        check(first).await,
        GossipedTx::Checked,
        "the same one again"
    );
    let ahead = transfer_at(&follower, &faucet, next + 3, &faucet);
    assert_eq!(check(ahead).await, GossipedTx::Checked);
    // Another transaction for a nonce taken: only one of them can ever be committed.
    let rival = transfer_at(&follower, &faucet, next, &faucet);
    assert!(matches!(check(rival).await, GossipedTx::Skipped(_)));
    // Far ahead: nothing before it is on its way; it would never be committed (or paid for).
    let far = transfer_at(&follower, &faucet, next + MAX_NONCE_AHEAD + 1, &faucet);
    assert!(matches!(check(far).await, GossipedTx::Skipped(_)));
    // An account without the fees of the transactions before it.
    let pauper = Identity::generate();
    let unfunded = transfer_at(&follower, &pauper, 2, &pauper);
    assert!(matches!(check(unfunded).await, GossipedTx::Skipped(_)));
    // Not signed by its sender, or not a transaction at all: its sender is at fault; and it
    // holds no nonce against the real one.
    let forged = transfer_at(&follower, &faucet, next + 1, &Identity::generate());
    assert!(matches!(check(forged).await, GossipedTx::Invalid(_)));
    let real = transfer_at(&follower, &faucet, next + 1, &faucet);
    assert_eq!(check(real).await, GossipedTx::Checked);
    assert!(matches!(
        check(vec![0xff; 40]).await,
        GossipedTx::Invalid(_)
    ));
    let huge = vec![0; top_relay::ledger::tx_gossip::MAX_GOSSIP_TX_BYTES + 1];
    assert!(matches!(check(huge).await, GossipedTx::Invalid(_)));
    follower.shutdown().await;
    validator.shutdown().await;
}
