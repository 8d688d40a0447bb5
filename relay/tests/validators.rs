//! A chain of four validators, each a real `toprelay` process on loopback, a follower, and a
//! relay given nothing but the genesis (it follows the bootstrap relay the genesis lists).
//! Transactions sent to any relay are finalized; with one validator killed (SIGKILL) the other
//! three go on; with two killed nothing is finalized; restarted, they catch up and the chain
//! resumes. Every relay reports the same block at every height and the supply invariant holds.

mod common;

use std::time::Duration;

use common::network::{
    Faucet, Node, block_hash, call, connect, path, reach, settled_height, summary, toprelay,
};
use ledger_lite::wire::{LedgerRequest, LedgerResponse};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;

#[tokio::test(flavor = "multi_thread")]
async fn four_validators_finalize_survive_one_stop_at_two_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mut validators: Vec<Node> = (0..4)
        .map(|i| Node::init(tmp.path().join(format!("v{i}")), &[]))
        .collect();
    let genesis = tmp.path().join("genesis.json");
    let mut args = vec!["genesis", "new", "--chain-id", "four", "--faucet"];
    let ids: Vec<String> = validators.iter().map(|v| v.addr.id.to_string()).collect();
    for id in &ids {
        args.extend(["--validator", id]);
    }
    // The genesis names validator 0 as a bootstrap relay.
    let bootstrap = validators[0].addr.to_string();
    args.extend(["--bootstrap", &bootstrap, "--out", path(&genesis)]);
    toprelay(&args);
    let faucet_key = tmp.path().join("faucet.key");
    let addrs: Vec<RelayAddr> = validators.iter().map(|v| v.addr.clone()).collect();
    for (i, v) in validators.iter().enumerate() {
        let mut args = vec!["genesis", "use", "--data-dir", path(&v.dir)];
        if i == 0 {
            args.extend(["--faucet-key", path(&faucet_key)]);
        }
        args.push(path(&genesis));
        toprelay(&args);
        v.configure(addrs.iter().filter(|a| **a != v.addr).cloned().collect());
    }
    // A follower joins with the genesis, following validator 0.
    let v0 = addrs[0].to_string();
    let mut follower = Node::init(
        tmp.path().join("follower"),
        &["--genesis", path(&genesis), "--peer", &v0],
    );
    follower.configure(vec![addrs[0].clone()]);
    // Another is given nothing but the genesis: it follows the bootstrap relay it lists.
    let mut newcomer = Node::init(tmp.path().join("newcomer"), &["--genesis", path(&genesis)]);
    newcomer.configure(Vec::new());
    for v in &mut validators {
        v.start();
    }
    follower.start();
    newcomer.start();

    let all: Vec<&Node> = validators.iter().chain([&follower, &newcomer]).collect();
    reach(&all, 2, Duration::from_secs(60)).await;
    let s = summary(&addrs[1]).await;
    assert_eq!(s.validators.len(), 4);
    assert_eq!(s.finalized, s.height);
    let mut faucet = Faucet {
        key: Identity::load(&faucet_key).unwrap(),
        chain: s.chain,
        nonce: 0,
    };
    // Transactions sent to any relay, validator or follower, are finalized.
    for node in &all {
        let height = faucet.send(&node.addr, true).await;
        assert!(height.is_some(), "finalized through {}", node.addr);
    }

    // More in flight from one account than a validator's window of next nonces (64): those
    // beyond it wait at the validator for their turn, and all land.
    let (_e, conn, mut rpc) = connect(&addrs[0]).await;
    for _ in 0..100 {
        let tx = faucet.transfer().sign(&faucet.key);
        let resp = rpc.call(LedgerRequest::Submit { tx, wait: false }).await;
        assert!(
            matches!(resp, Ok(LedgerResponse::Submitted { .. })),
            "{resp:?}"
        );
    }
    conn.close(0u32.into(), b"");
    let last = tokio::time::timeout(Duration::from_secs(30), faucet.send(&addrs[0], true));
    assert!(last.await.expect("the burst landed").is_some());

    // One validator killed: the other three go on finalizing.
    validators[3].kill();
    let before = summary(&addrs[0]).await.height;
    for _ in 0..3 {
        let sent = tokio::time::timeout(Duration::from_secs(20), faucet.send(&addrs[1], true));
        assert!(sent.await.expect("finalized within seconds").is_some());
    }
    let live: Vec<&Node> = validators[..3].iter().chain([&follower]).collect();
    reach(&live, before + 3, Duration::from_secs(20)).await;

    // A second killed: no block is finalized.
    validators[2].kill();
    // What was in flight settles first (a block the two now gone voted for may still land).
    let stalled = settled_height(&addrs[0]).await;
    let queued = faucet.transfer().sign(&faucet.key);
    let resp = call(
        &addrs[0],
        LedgerRequest::Submit {
            tx: queued,
            wait: false,
        },
    )
    .await;
    assert!(matches!(resp, LedgerResponse::Submitted { .. }), "{resp:?}");
    // Several leader timeouts pass without a block.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for node in [&validators[0], &validators[1], &follower] {
        assert_eq!(
            summary(&node.addr).await.height,
            stalled,
            "{} finalized a block with two of four validators down",
            node.addr
        );
    }

    // Both restarted: they catch up and the chain resumes, with the queued transfer.
    validators[2].start();
    validators[3].start();
    let all: Vec<&Node> = validators.iter().chain([&follower]).collect();
    reach(&all, stalled + 3, Duration::from_secs(60)).await;
    let height = faucet.send(&addrs[3], true).await.expect("finalized");
    reach(&all, height, Duration::from_secs(30)).await;
    let committed = match call(&addrs[2], LedgerRequest::Account(faucet.key.account_id())).await {
        LedgerResponse::Account(view) => view.account.map(|a| a.nonce),
        other => panic!("{other:?}"),
    };
    assert_eq!(committed, Some(faucet.nonce), "the queued transfer landed");

    // Every relay holds the same block at every height; the invariant holds everywhere.
    for h in 1..=height {
        let first = block_hash(&addrs[0], h).await.expect("block held");
        for node in &all[1..] {
            assert_eq!(
                block_hash(&node.addr, h).await,
                Some(first),
                "{} disagrees at height {h}",
                node.addr
            );
        }
    }
    for node in &all {
        let s = summary(&node.addr).await;
        assert!(s.invariant_ok, "invariant at {}", node.addr);
        assert_eq!(s.finalized, s.height);
    }
}
