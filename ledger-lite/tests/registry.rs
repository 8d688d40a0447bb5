//! The relay registry: registering needs the minimum stake and a well-formed record; a
//! registered relay cannot unstake below the minimum; deregistering unbonds the whole stake.

mod common;

use common::{MIN_STAKE, UNBONDING, World, top};
use ledger_lite::registry::{RecordError, RelayRecord, Services};
use ledger_lite::*;

fn record(addr: &str) -> RelayRecord {
    RelayRecord {
        addrs: vec![addr.into()],
        services: Services {
            messaging: true,
            mailbox: true,
            ..Services::default()
        },
        prices: registry::Prices::default(),
        region: "eu-west".into(),
    }
}

fn register(w: &World, i: usize, addr: &str, stake: u128) -> SignedTx {
    w.tx(
        i,
        TxKind::RegisterRelay {
            record: Box::new(record(addr)),
            stake: top(stake),
        },
    )
}

#[test]
fn registering_needs_the_minimum_stake_and_a_sound_record() {
    let mut w = World::new(2);
    assert_eq!(
        w.run(register(&w, 0, "relay.example:4433", MIN_STAKE - 1)),
        Err(TxError::StakeBelowMinimum {
            have: top(MIN_STAKE - 1),
            need: top(MIN_STAKE)
        })
    );
    assert_eq!(w.state.relays().count(), 0, "a refusal changes nothing");
    assert_eq!(
        w.run(register(&w, 0, "no-port", MIN_STAKE)),
        Err(TxError::BadRecord(RecordError::BadAddress(
            "no-port".into()
        )))
    );
    w.run(register(&w, 0, "relay.example:4433", MIN_STAKE))
        .unwrap();
    let me = w.id(0);
    assert_eq!(w.state.relay(&me), Some(&record("relay.example:4433")));
    assert_eq!(w.state.account(&me).unwrap().stake, top(MIN_STAKE));
    assert_eq!(w.balance(0), w.less_fees(0, top(1000 - MIN_STAKE)));
    let since = w.state.height;
    assert_eq!(w.state.account(&me).unwrap().relay_since, since);
    // An update moves the address without more stake, and keeps the registration's block.
    w.run(register(&w, 0, "relay.example:5000", 0)).unwrap();
    assert_eq!(w.state.relay(&me).unwrap().addrs, ["relay.example:5000"]);
    assert_eq!(w.state.account(&me).unwrap().relay_since, since);
    let ids: Vec<_> = w.state.relays().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, [me]);
}

#[test]
fn a_registered_relay_keeps_its_stake_until_it_deregisters() {
    let mut w = World::new(1);
    w.run(register(&w, 0, "r:1", MIN_STAKE + 5)).unwrap();
    assert!(matches!(
        w.run(w.tx(0, TxKind::Unstake { amount: top(6) })),
        Err(TxError::StakeBelowMinimum { .. })
    ));
    w.run(w.tx(0, TxKind::Unstake { amount: top(5) })).unwrap();
    w.run(w.tx(0, TxKind::DeregisterRelay)).unwrap();
    let me = w.id(0);
    assert_eq!(w.state.relay(&me), None);
    assert_eq!(w.state.relays().count(), 0);
    let account = w.state.account(&me).unwrap();
    assert_eq!(account.stake, Amount::ZERO);
    let since = account.relay_since;
    assert!(since > 0);
    assert_eq!(account.unbonding_total(), top(MIN_STAKE + 5));
    assert_eq!(
        w.run(w.tx(0, TxKind::DeregisterRelay)),
        Err(TxError::NotRegistered)
    );
    for _ in 0..=UNBONDING {
        w.tick();
    }
    assert_eq!(
        w.balance(0),
        w.less_fees(0, top(1000)),
        "the stake came back whole"
    );
    // Registering again keeps the first registration's block: no new draw for homes.
    w.run(register(&w, 0, "r:1", MIN_STAKE)).unwrap();
    assert_eq!(w.state.account(&me).unwrap().relay_since, since);
}

#[test]
fn the_registry_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let w = World::new(2);
    let mut ledger = Ledger::open(&path, w.genesis.clone()).unwrap();
    let tx = register(&w, 1, "r:1", MIN_STAKE);
    let time = ledger.state().time_ms + 1000;
    let built = ledger.produce(vec![tx], time, &w.validator).unwrap();
    assert!(built.rejected.is_empty(), "{:?}", built.rejected);
    let root = ledger.state().root();
    drop(ledger);
    let reopened = Ledger::open(&path, w.genesis.clone()).unwrap();
    let state = reopened.state();
    assert_eq!(state.relay(&w.id(1)), Some(&record("r:1")));
    assert_eq!(state.relays().count(), 1, "the index is rebuilt on load");
    assert_eq!(state.root(), root);
}
