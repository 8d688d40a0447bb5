//! The chain on redb: blocks survive reopening, followers reach the same state, replays skip.

mod common;

use common::{MIN_FEE, World, top};
use ledger_lite::*;

#[test]
fn committed_blocks_survive_reopening_and_followers_agree() {
    let w = World::new(3);
    let dir = tempfile::tempdir().unwrap();
    let (vpath, fpath) = (dir.path().join("v.redb"), dir.path().join("f.redb"));
    let mut validator = Ledger::open(&vpath, w.genesis.clone()).unwrap();
    let mut follower = Ledger::open(&fpath, w.genesis.clone()).unwrap();
    let mut nonce = 0;
    let mut blocks = Vec::new();
    for round in 0..5u64 {
        let mut txs = Vec::new();
        for _ in 0..3 {
            let kind = if nonce == 0 {
                TxKind::Deposit { amount: top(10) }
            } else {
                TxKind::Transfer {
                    to: w.id(1),
                    amount: Amount::from_units(u128::from(nonce)),
                }
            };
            txs.push(
                Tx {
                    chain: w.chain(),
                    from: w.id(0),
                    nonce,
                    fee: Amount::from_units(MIN_FEE),
                    kind,
                }
                .sign(&w.people[0]),
            );
            nonce += 1;
        }
        let built = validator
            .produce(txs, 10_000 + round * 1000, &w.validator)
            .unwrap();
        assert!(built.rejected.is_empty());
        follower.apply(&built.block).unwrap().unwrap();
        blocks.push(built.block);
    }
    assert_eq!(follower.state(), validator.state());
    assert_eq!(follower.head(), validator.head());
    assert!(
        follower.apply(&blocks[2]).unwrap().is_none(),
        "replays at or below the height skip"
    );

    let (state, head) = (validator.state().clone(), validator.head());
    drop(validator);
    let reopened = Ledger::open(&vpath, w.genesis.clone()).unwrap();
    assert_eq!(reopened.state(), &state);
    assert_eq!(reopened.head(), head);
    assert_eq!(reopened.block(3).unwrap().unwrap(), blocks[2]);
    // Reads are bounded by bytes: a follower asking for many big blocks gets what fits (at
    // least one), never one answer too big for a frame.
    let reader = reopened.reader();
    assert_eq!(reader.blocks(1, 5, usize::MAX).unwrap().len(), 5);
    assert_eq!(reader.blocks(1, 5, 1).unwrap(), blocks[..1]);
    let one = postcard::to_allocvec(&blocks[0]).unwrap().len();
    let two = one + postcard::to_allocvec(&blocks[1]).unwrap().len();
    assert_eq!(reader.blocks(1, 5, two).unwrap().len(), 2);
    reopened.state().check_invariant().unwrap();

    let mut other = w.genesis.clone();
    other.name = "another".into();
    drop((reader, reopened));
    assert!(matches!(
        Ledger::open(&vpath, other),
        Err(StoreError::OtherChain { .. })
    ));
}
