//! The validator set by stake: at each epoch's last block the registered relays staking most
//! become the next epoch's validators; one that deregisters leaves; the set is in the state
//! root and survives the store's restart.

mod common;

use common::{World, top};
use ledger_lite::registry::{RelayRecord, Services};
use ledger_lite::*;

const EPOCH: u64 = 8;

fn record(addr: &str) -> RelayRecord {
    RelayRecord {
        addrs: vec![addr.into()],
        services: Services {
            messaging: true,
            ..Services::default()
        },
        prices: registry::Prices::default(),
        region: "eu-west".into(),
    }
}

/// A chain of four validators (the world's validator and persons 0, 1, 2) whose set changes
/// every [`EPOCH`] blocks to the 4 relays staking most.
fn world() -> World {
    let mut w = World::new(6);
    w.genesis.validators = vec![w.validator.account_id(), w.id(0), w.id(1), w.id(2)];
    w.genesis.epochs = Some(EpochRule {
        blocks: EPOCH,
        max_validators: 4,
        min_stake: top(15),
    });
    w.state = w.genesis.state().unwrap();
    w
}

fn register(w: &mut World, i: usize, stake: u128) {
    let tx = w.tx(
        i,
        TxKind::RegisterRelay {
            record: Box::new(record(&format!("10.0.0.{i}:4433"))),
            stake: top(stake),
        },
    );
    w.run(tx).unwrap();
}

/// Persons 0, 1, 2 (validators) and 3 (a newcomer, most stake) register.
fn register_four(w: &mut World) {
    for (i, stake) in [(0, 20), (1, 20), (2, 20), (3, 30)] {
        register(w, i, stake);
    }
}

/// Empty blocks up to and including `height`.
fn run_to(w: &mut World, height: u64) {
    while w.state.height < height {
        w.tick();
    }
}

#[test]
fn the_relays_staking_most_become_the_next_epochs_validators_a_third_at_a_time() {
    let mut w = world();
    let genesis_set = w.state.validators.clone();
    assert_eq!(w.state.epoch, 0);
    // Persons 0, 1, 2, 3 register; 2 below the validator stake (it only relays).
    register(&mut w, 0, 20);
    register(&mut w, 1, 16);
    register(&mut w, 2, 10);
    register(&mut w, 3, 30);
    run_to(&mut w, EPOCH - 2);
    assert_eq!(w.state.validators, genesis_set, "no change within an epoch");
    // The epoch's last block: registrations in it count.
    register(&mut w, 4, 25);
    assert_eq!(w.state.height, EPOCH - 1);
    assert_eq!(w.state.epoch, 1);
    // Ranked 3, 4, 0, 1: of the two newcomers only the first takes a seat (a third of four
    // seats, at least one); the seat 4 would take stays with the current validators.
    let set = w.state.validators.clone();
    assert_eq!(set.len(), 4);
    assert_eq!(set[..3], [w.id(3), w.id(0), w.id(1)]);
    assert!(!set.contains(&w.id(4)), "a second newcomer waits");
    assert!(!set.contains(&w.id(2)), "2 staked too little");
    // 5 outbids everyone: it joins at epoch 2, 4 still waits.
    register(&mut w, 5, 50);
    run_to(&mut w, 2 * EPOCH - 1);
    assert_eq!(w.state.epoch, 2);
    assert_eq!(w.state.validators[0], w.id(5));
    assert!(!w.state.validators.contains(&w.id(4)));
    // At epoch 3 the ranking is the set: 5, 3, 4, 0.
    run_to(&mut w, 3 * EPOCH - 1);
    assert_eq!(w.state.epoch, 3);
    assert_eq!(w.state.validators, vec![w.id(5), w.id(3), w.id(4), w.id(0)]);
    w.state.check_invariant().unwrap();
}

#[test]
fn fresh_keys_outbidding_everyone_take_a_third_of_the_seats_per_epoch() {
    let mut w = world();
    // Four strangers (persons 3, 4, 5 and 0, who is a validator) stake far more than anyone.
    for i in [3, 4, 5] {
        register(&mut w, i, 100);
    }
    register(&mut w, 0, 100);
    run_to(&mut w, EPOCH - 1);
    let incumbents: Vec<_> = [w.validator.account_id(), w.id(0), w.id(1), w.id(2)].into();
    let kept = w
        .state
        .validators
        .iter()
        .filter(|v| incumbents.contains(v))
        .count();
    assert_eq!(kept, 3, "the set of epoch 0 holds a quorum of epoch 1");
}

#[test]
fn too_few_candidates_keep_the_set() {
    let mut w = world();
    let genesis_set = w.state.validators.clone();
    // One key staking the validator stake is no set of validators.
    register(&mut w, 3, 30);
    run_to(&mut w, EPOCH - 1);
    assert_eq!(w.state.epoch, 1);
    assert_eq!(w.state.validators, genesis_set);
    let tx = w.tx(3, TxKind::DeregisterRelay);
    w.run(tx).unwrap();
    run_to(&mut w, 2 * EPOCH - 1);
    assert_eq!(w.state.epoch, 2);
    assert_eq!(w.state.validators, genesis_set);
}

#[test]
fn the_set_is_in_the_state_root_and_a_block_that_lies_about_it_is_refused() {
    let mut w = world();
    register_four(&mut w);
    run_to(&mut w, EPOCH - 2);
    let before = w.state.clone();
    let head = w.head;
    // The epoch's last block, built honestly: it moves the set.
    let honest = w.state.build_block(vec![], 10_000_000, head, &w.validator);
    let moved = w.state.validators.clone();
    assert_ne!(moved, before.validators);
    // The same block claiming the set stayed: the root it would then have.
    let mut forged = honest.block.clone();
    forged.header.state_root = {
        let mut s = before.clone();
        s.height = honest.block.header.height;
        s.time_ms = honest.block.header.time_ms;
        s.root()
    };
    let mut verifier = before.clone();
    assert!(matches!(
        verifier.apply_agreed(&forged, &head),
        Err(BlockError::StateRoot)
    ));
    assert_eq!(verifier, before, "nothing changed");
    let mut verifier = before.clone();
    verifier.apply_agreed(&honest.block, &head).unwrap();
    assert_eq!(verifier.validators, moved);
    assert_eq!(verifier.epoch, 1);
}

#[test]
fn the_store_keeps_the_epoch_and_its_validators_across_a_restart() {
    let mut w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let mut ledger = Ledger::open(&path, w.genesis.clone()).unwrap();
    let mut blocks = Vec::new();
    for i in [0, 1, 2, 3] {
        register(&mut w, i, 30);
        blocks.push(w.last_block.clone().unwrap());
    }
    while w.state.height < EPOCH + 1 {
        w.tick();
        blocks.push(w.last_block.clone().unwrap());
    }
    for block in &mut blocks {
        // Nobody signs a block of several validators.
        block.signature = ed25519_dalek::Signature::from_bytes(&[0; 64]);
        ledger.apply_agreed(block).unwrap();
    }
    assert_eq!(ledger.state().epoch, 1);
    drop(ledger);
    let ledger = Ledger::open(&path, w.genesis.clone()).unwrap();
    assert_eq!(ledger.state().epoch, 1);
    assert_eq!(ledger.state().validators, w.state.validators);
    assert_ne!(w.state.validators, w.genesis.validators);
    assert_eq!(ledger.state().root(), w.state.root());
}

#[test]
fn chains_without_epochs_keep_their_ids_and_roots() {
    let w = World::new(2);
    // (tests/golden.rs holds the ids and roots chains had before epochs existed.)
    let mut with_rule = w.genesis.clone();
    assert_eq!(
        with_rule.state().unwrap().validators,
        vec![w.validator.account_id()]
    );
    with_rule.validators = vec![w.validator.account_id()];
    with_rule.epochs = Some(EpochRule {
        blocks: EPOCH,
        max_validators: 4,
        min_stake: top(15),
    });
    assert_ne!(with_rule.chain_id(), w.genesis.chain_id());
    let mut no_rule = w.genesis.clone();
    no_rule.epochs = None;
    assert_eq!(no_rule.chain_id(), w.genesis.chain_id());
    // A single validator's chain cannot have epochs.
    let mut single = w.genesis.clone();
    single.epochs = with_rule.epochs;
    assert!(single.state().is_err());
}

#[test]
fn bootstrap_relays_are_part_of_the_chain_id_and_bounded() {
    let w = World::new(2);
    // (tests/golden.rs holds the ids chains had before genesis bootstrap lists existed.)
    let relay = |i: u8| top_proto::addr::RelayAddr {
        id: top_proto::identity::Identity::from_seed(&[100 + i; 32]).relay_id(),
        host_port: format!("198.51.100.{i}:4433"),
    };
    let mut listed = w.genesis.clone();
    listed.bootstrap = vec![relay(1)];
    assert_ne!(
        listed.chain_id(),
        w.genesis.chain_id(),
        "a peer could swap a genesis' bootstrap list"
    );
    assert!(listed.state().is_ok());
    let mut other = w.genesis.clone();
    other.bootstrap = vec![relay(2)];
    assert_ne!(other.chain_id(), listed.chain_id());
    listed.bootstrap = (0..=64).map(relay).collect();
    assert!(listed.state().is_err(), "65 bootstrap relays taken");

    // A store made before bootstrap lists holds its genesis without one: it still opens.
    let g = &w.genesis;
    let before = (
        &g.name,
        g.time_ms,
        &g.validator,
        &g.validators,
        &g.params,
        &g.faucet,
        &g.allocations,
        &g.epochs,
    );
    let stored = postcard::to_stdvec(&before).unwrap();
    assert_eq!(Genesis::from_stored(&stored).unwrap(), w.genesis);
    let now = postcard::to_stdvec(&w.genesis).unwrap();
    assert_eq!(Genesis::from_stored(&now).unwrap(), w.genesis);
}
