//! The validator set changes by stake, with real `toprelay` processes on loopback: four
//! genesis validators and a fifth relay that offered to validate (`init --validate`) and
//! registers itself as it starts (faucet-funded, through a validator while it is none). Three
//! of the four and the fifth stake the validator stake; the fourth does not. At
//! the next epoch boundary every relay reports the new set; then the relay that left and one
//! more are killed, and the remaining three of the new set (the newcomer among them) still
//! finalize; with the newcomer killed too, nothing is; one of them restarted, the chain
//! resumes. Every relay holds the same blocks.

mod common;

use std::time::Duration;

use common::network::{
    Faucet, Node, block_hash, call, path, reach, settled_height, summary, toprelay,
};
use ledger_lite::registry::{Prices, RelayRecord, Services};
use ledger_lite::wire::Summary;
use ledger_lite::wire::{LedgerRequest, LedgerResponse};
use ledger_lite::{Amount, ChainId, Tx, TxKind};
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_relay::config::RelayConfig;

/// Blocks in an epoch (200 ms blocks: a few seconds).
const EPOCH_BLOCKS: &str = "16";
/// The least stake of a validator, in TOP.
const VALIDATOR_STAKE: u128 = 5_000;

/// `node` registers (its own key signs) with `stake` TOP, through `via`. The relay may be
/// sending transactions of its own meanwhile (paying for its links): a nonce taken by one of
/// those is read again.
async fn register(node: &Node, chain: ChainId, stake: u128, via: &Node) -> u64 {
    let key = Identity::load(&node.dir.join("identity.key")).unwrap();
    for _ in 0..50 {
        let nonce = match call(&via.addr, LedgerRequest::Account(key.account_id())).await {
            LedgerResponse::Account(view) => view.next_nonce,
            other => panic!("{other:?}"),
        };
        let tx = Tx {
            chain,
            from: key.account_id(),
            nonce,
            fee: Amount::from_units(top_relay::ledger::setup::DEV_MIN_FEE_UNITS),
            kind: TxKind::RegisterRelay {
                record: Box::new(RelayRecord {
                    addrs: vec![node.addr.host_port.clone()],
                    services: Services::default(),
                    prices: Prices::default(),
                    region: "test".into(),
                }),
                stake: Amount::from_top(stake).unwrap(),
            },
        }
        .sign(&key);
        match call(&via.addr, LedgerRequest::Submit { tx, wait: true }).await {
            LedgerResponse::Submitted {
                height: Some(height),
                ..
            } => return height,
            LedgerResponse::Error(e) if e.contains("nonce") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("registering {}: {other:?}", node.addr),
        }
    }
    panic!("{} could not register", node.addr);
}

fn account(node: &Node) -> AccountId {
    AccountId::from_wire(*node.addr.id.as_bytes())
}

/// Waits until `node` reports `validators`, returning its summary.
async fn wait_for_set(node: &Node, validators: &[AccountId], within: Duration) -> Summary {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = summary(&node.addr).await;
        if s.validators == validators {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still reports epoch {} with {:?}\n{}",
            node.addr,
            s.epoch,
            s.validators,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relays_staking_most_validate_from_the_next_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..4)
        .map(|i| Node::init(tmp.path().join(format!("v{i}")), &[]))
        .collect();
    let genesis = tmp.path().join("genesis.json");
    let ids: Vec<String> = nodes.iter().map(|v| v.addr.id.to_string()).collect();
    let mut args = vec!["genesis", "new", "--chain-id", "rotate", "--faucet"];
    args.extend(["--epoch-blocks", EPOCH_BLOCKS, "--validator-stake", "5000"]);
    for id in &ids {
        args.extend(["--validator", id]);
    }
    args.extend(["--out", path(&genesis)]);
    toprelay(&args);
    let faucet_key = tmp.path().join("faucet.key");
    for (i, v) in nodes.iter().enumerate() {
        let mut args = vec!["genesis", "use", "--data-dir", path(&v.dir)];
        if i == 0 {
            args.extend(["--faucet-key", path(&faucet_key)]);
        }
        args.push(path(&genesis));
        toprelay(&args);
    }
    // The fifth joins with the genesis, offering to validate.
    nodes.push(Node::init(
        tmp.path().join("newcomer"),
        &["--genesis", path(&genesis), "--validate"],
    ));
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr.clone()).collect();
    for node in &nodes {
        node.configure(addrs.iter().filter(|a| **a != node.addr).cloned().collect());
    }
    // The newcomer registers itself as it starts (through a validator, while it is none).
    let mut config = RelayConfig::load(&nodes[4].dir).unwrap();
    config.auto_register = true;
    config.save(&nodes[4].dir).unwrap();
    for node in &mut nodes {
        node.start();
    }
    // The newcomer is nobody's peer until it stakes: the four go on without it.
    let genesis_set: Vec<&Node> = nodes[..4].iter().collect();
    reach(&genesis_set, 2, Duration::from_secs(60)).await;
    let s = summary(&addrs[1]).await;
    assert_eq!((s.epoch, s.validators.len()), (0, 4));
    let mut faucet = Faucet {
        key: Identity::load(&faucet_key).unwrap(),
        chain: s.chain,
        nonce: 0,
    };

    // The newcomer (funded by the faucet as it registers) and validators 0, 1, 2 stake the
    // validator stake; validator 3 does not register. Equal stakes rank by id.
    for v in &nodes[..3] {
        register(v, s.chain, VALIDATOR_STAKE, &nodes[1]).await;
    }
    let mut expected: Vec<AccountId> = [0, 1, 2, 4].iter().map(|i| account(&nodes[*i])).collect();
    expected.sort();

    // At the next boundary every relay, the newcomer too, reports the new set.
    for node in &nodes {
        let s = wait_for_set(node, &expected, Duration::from_secs(90)).await;
        assert!(s.epoch >= 1);
    }
    // The faucet funded the newcomer meanwhile: its next nonce is the chain's.
    faucet.nonce = match call(&addrs[1], LedgerRequest::Account(faucet.key.account_id())).await {
        LedgerResponse::Account(view) => view.next_nonce,
        other => panic!("{other:?}"),
    };

    // 3 left the set and 0 is killed too: 1, 2 and the newcomer are three of four, a quorum
    // only with the newcomer's votes.
    nodes[3].kill();
    nodes[0].kill();
    let before = summary(&addrs[1]).await.height;
    for _ in 0..2 {
        let sent = tokio::time::timeout(Duration::from_secs(30), faucet.send(&addrs[2], true));
        assert!(sent.await.expect("finalized within seconds").is_some());
    }
    let live: Vec<&Node> = nodes[1..3].iter().chain([&nodes[4]]).collect();
    reach(&live, before + 2, Duration::from_secs(30)).await;

    // Every live relay holds the same blocks; the invariant holds.
    let height = summary(&addrs[1]).await.height;
    for h in 1..=height {
        let first = block_hash(&addrs[1], h).await.expect("block held");
        for node in &live[1..] {
            assert_eq!(block_hash(&node.addr, h).await, Some(first), "height {h}");
        }
    }
    for node in &live {
        assert!(summary(&node.addr).await.invariant_ok);
    }

    // The newcomer killed as well: two of four finalize nothing.
    nodes[4].kill();
    let stalled = settled_height(&addrs[1]).await;
    faucet.send(&addrs[1], false).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(summary(&addrs[1]).await.height, stalled);

    // Validator 0 restarted (its engine re-enters the epoch its chain store is in): with 1
    // and 2 a quorum again; the chain resumes with the transfer that waited, and 0 holds the
    // same blocks.
    nodes[0].start();
    let back: Vec<&Node> = nodes[..3].iter().collect();
    reach(&back, stalled + 2, Duration::from_secs(60)).await;
    let height = faucet.send(&addrs[0], true).await.expect("finalized");
    reach(&back, height, Duration::from_secs(30)).await;
    for h in 1..=height {
        let first = block_hash(&addrs[1], h).await.expect("block held");
        assert_eq!(block_hash(&addrs[0], h).await, Some(first), "height {h}");
    }
    let s = summary(&addrs[0]).await;
    assert_eq!(s.validators, expected);
    assert!(s.invariant_ok);
}
