//! The validator set changes by stake at an epoch boundary, on the deterministic runtime and
//! simulated network: five nodes, four of them the genesis validators; the fifth stakes most
//! and one of the four never stakes, so from epoch 1 the set is the other three and the fifth.
//! Then the one that left is not needed, the newcomer is (it votes: three of the new set make
//! progress only with it), and two of the new set cut off stop finality; every node agrees on
//! every height throughout.

mod common;

use std::time::Duration;

use common::sim::{Sim, all_reach, assert_agree, wait};
use commonware_runtime::{Runner as _, deterministic};
use ledger_lite::registry::{Prices, RelayRecord, Services};
use ledger_lite::{Amount, EpochRule, SignedTx, Tx, TxKind};
use top_proto::identity::Identity;

/// Blocks in an epoch.
const EPOCH: u64 = 12;
/// The least stake of a validator, in units.
const VALIDATOR_STAKE: u128 = 10_000;

fn register(chain: ledger_lite::ChainId, who: &Identity, stake: u128) -> SignedTx {
    Tx {
        chain,
        from: who.account_id(),
        nonce: 0,
        fee: Amount::from_units(common::FEE),
        kind: TxKind::RegisterRelay {
            record: Box::new(RelayRecord {
                addrs: vec!["127.0.0.1:4433".into()],
                services: Services::default(),
                prices: Prices::default(),
                region: "test".into(),
            }),
            stake: Amount::from_units(stake),
        },
    }
    .sign(who)
}

fn run(seed: u64) -> String {
    let runner = deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(1800))),
    );
    runner.start(|context| async move {
        let ids: Vec<Identity> = (0..5u8)
            .map(|i| Identity::from_seed(&[i + 101; 32]))
            .collect();
        let user = Identity::from_seed(&[77; 32]);
        let mut genesis = common::consensus_genesis("epochs", &ids[..4], &user);
        genesis.epochs = Some(EpochRule {
            blocks: EPOCH,
            max_validators: 4,
            min_stake: Amount::from_units(VALIDATOR_STAKE),
        });
        genesis.allocations.extend(
            ids.iter()
                .map(|id| (id.account_id(), Amount::from_units(100_000))),
        );
        let state = genesis.state().unwrap();
        let chain = state.chain;
        let sim = Sim::start(&context, &ids, &genesis).await;
        let ledgers = &sim.ledgers;

        // 0, 1, 2 stake the validator stake; 4 (not a validator yet) stakes more; 3 stakes
        // nothing. Every transaction goes to every validator's pending pool.
        let stakes = [
            (0, VALIDATOR_STAKE),
            (1, VALIDATOR_STAKE),
            (2, VALIDATOR_STAKE),
            (4, 50_000),
        ];
        for (who, stake) in stakes {
            let tx = register(chain, &ids[who], stake);
            for ledger in ledgers {
                ledger.submit(tx.clone());
            }
        }
        // Into epoch 1: the set is 4 first (most stake), then 0, 1, 2 by id.
        all_reach(ledgers, EPOCH + 2).await;
        assert_agree(ledgers);
        let mut expected = vec![ids[4].account_id()];
        let mut rest: Vec<_> = [0, 1, 2].iter().map(|i| ids[*i].account_id()).collect();
        rest.sort();
        expected.extend(rest);
        for ledger in ledgers {
            let state = ledger.finalized_state();
            assert_eq!(state.epoch, 1);
            assert_eq!(state.validators, expected);
        }

        // 3 left the set: cut off, it is not missed.
        sim.isolate(&sim.pks[3..4]).await;
        let top = sim.heights().into_iter().max().unwrap_or(0);
        let new_set = [&ledgers[0], &ledgers[1], &ledgers[2], &ledgers[4]].map(|l| (*l).clone());
        all_reach(&new_set, top + 3).await;

        // 0 cut off too: 1, 2 and 4 are three of the four; only with 4's votes is there a
        // quorum, so progress shows the newcomer votes.
        sim.isolate(&sim.pks[0..1]).await;
        let top = sim.heights().into_iter().max().unwrap_or(0);
        let three = [&ledgers[1], &ledgers[2], &ledgers[4]].map(|l| (*l).clone());
        all_reach(&three, top + 3).await;

        // 1 cut off as well: two of four are no quorum; nothing is finalized.
        sim.isolate(&sim.pks[1..2]).await;
        wait(&context, 5).await;
        let stalled = sim.heights();
        wait(&context, 30).await;
        assert_eq!(sim.heights(), stalled, "finalized without a quorum");
        assert_agree(ledgers);
        for ledger in ledgers {
            ledger.finalized_state().check_invariant().unwrap();
        }
        context.auditor().state()
    })
}

#[test]
fn the_validator_set_changes_by_stake_at_the_epoch_boundary() {
    for seed in [1, 5, 9] {
        run(seed);
    }
}

#[test]
fn a_set_change_is_deterministic() {
    assert_eq!(run(3), run(3));
}

/// Engines of ended epochs leave no journal behind: each epoch's engine writes its own, and
/// once the ledger is two epochs past it nothing reopens it, so it is removed (a long-lived
/// validator otherwise keeps one directory per epoch forever).
#[test]
fn ended_epochs_leave_no_journal() {
    use commonware_runtime::Storage as _;
    const SHORT: u64 = 4;
    let runner = deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(7)
            .with_timeout(Some(Duration::from_secs(600))),
    );
    runner.start(|context| async move {
        let ids: Vec<Identity> = (0..4u8)
            .map(|i| Identity::from_seed(&[i + 41; 32]))
            .collect();
        let user = Identity::from_seed(&[78; 32]);
        let mut genesis = common::consensus_genesis("journals", &ids, &user);
        genesis.epochs = Some(EpochRule {
            blocks: SHORT,
            max_validators: 4,
            min_stake: Amount::from_units(VALIDATOR_STAKE),
        });
        let sim = Sim::start(&context, &ids, &genesis).await;
        // Into epoch 4 everywhere (the set stays: no one stakes).
        all_reach(&sim.ledgers, 4 * SHORT + 1).await;
        for ledger in &sim.ledgers {
            assert_eq!(ledger.finalized_state().epoch, 4);
        }
        assert_agree(&sim.ledgers);
        let partition = |i: usize, epoch: u64| match epoch {
            0 => format!("validator-{i}-simplex"),
            e => format!("validator-{i}-simplex-{e}"),
        };
        let missing = |r: Result<Vec<Vec<u8>>, commonware_runtime::Error>| {
            matches!(r, Err(commonware_runtime::Error::PartitionMissing(_)))
        };
        for i in 0..ids.len() {
            for ended in 0..=2 {
                let scan = context.scan(&partition(i, ended)).await;
                assert!(missing(scan), "node {i} kept epoch {ended}'s journal");
            }
            let current = context.scan(&partition(i, 4)).await;
            assert!(!missing(current), "node {i} has no journal for its epoch");
        }
    });
}
