//! Crash safety of the chain with the real daemon: the validator is killed with SIGKILL while
//! transactions flow, again and again. No block it reported as committed is lost or half applied,
//! the invariant holds, and a follower that verified every block agrees on each one.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, start_daemon};
use ledger_lite::wire::{LedgerRequest, LedgerResponse, Summary};
use ledger_lite::{Amount, Block, Tx, TxHash, TxKind};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::config::RelayConfig;

const BIN: &str = common::TOPRELAY;

type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

fn init(dir: &std::path::Path, extra: &[&str]) {
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args(["--listen", &listen, "--http", "127.0.0.1:0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config = RelayConfig::load(dir).unwrap();
    config.ledger.block_interval_ms = 20;
    // This test signs faucet transactions itself, nonce by nonce: no relay may take faucet
    // nonces in between (a follower registering on a dev chain asks the faucet for its stake).
    config.auto_register = false;
    config.save(dir).unwrap();
}

async fn connect(addr: &RelayAddr, me: &Identity) -> (quinn::Endpoint, quinn::Connection, Rpc) {
    common::ledger_rpc(addr, me).await
}

async fn summary(rpc: &mut Rpc) -> Summary {
    match rpc.call(LedgerRequest::Summary).await.unwrap() {
        LedgerResponse::Summary(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn block(rpc: &mut Rpc, height: u64) -> Option<Block> {
    match rpc
        .call(LedgerRequest::Blocks {
            from: height,
            max: 1,
            wait_ms: 0,
        })
        .await
        .unwrap()
    {
        LedgerResponse::Blocks(mut b) => b.pop().filter(|b| b.header.height == height),
        other => panic!("{other:?}"),
    }
}

async fn transfer(
    rpc: &mut Rpc,
    faucet: &Identity,
    chain: ledger_lite::ChainId,
    wait: bool,
) -> (TxHash, Option<u64>) {
    let nonce = match rpc
        .call(LedgerRequest::Account(faucet.account_id()))
        .await
        .unwrap()
    {
        LedgerResponse::Account(v) => v.next_nonce,
        other => panic!("{other:?}"),
    };
    let to = Identity::generate().account_id();
    let tx = Tx {
        chain,
        from: faucet.account_id(),
        nonce,
        fee: ledger_lite::Amount::from_units(top_relay::ledger::setup::DEV_MIN_FEE_UNITS),
        kind: TxKind::Transfer {
            to,
            amount: Amount::from_units(1_000),
        },
    }
    .sign(faucet);
    match rpc.call(LedgerRequest::Submit { tx, wait }).await.unwrap() {
        LedgerResponse::Submitted { hash, height } => (hash, height),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_blocks_survive_sigkill_and_followers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (vdir, fdir) = (dir.path().join("validator"), dir.path().join("follower"));
    init(&vdir, &["--dev"]);
    let faucet = Identity::load(&vdir.join("faucet.key")).unwrap();
    let (mut validator, vaddr) = start_daemon(&vdir);
    init(&fdir, &["--peer", &vaddr.to_string()]);
    let (mut follower, faddr) = start_daemon(&fdir);

    let mut committed: Vec<(TxHash, u64)> = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            let (child, addr) = start_daemon(&vdir);
            assert_eq!(addr, vaddr);
            validator = child;
        }
        let (_e, conn, mut rpc) = connect(&vaddr, &faucet).await;
        let s = summary(&mut rpc).await;
        assert!(s.invariant_ok, "invariant after restart {round}");
        // Nothing reported committed was lost, and each block holds its transaction.
        let top = committed.iter().map(|c| c.1).max().unwrap_or(0);
        assert!(s.height >= top, "height {} went back below {top}", s.height);
        for (hash, height) in &committed {
            let b = block(&mut rpc, *height)
                .await
                .expect("committed block lost");
            assert!(
                b.txs.iter().any(|t| t.hash() == *hash),
                "tx missing from block {height}"
            );
        }
        for _ in 0..(5 + round * 3) {
            let (hash, height) = transfer(&mut rpc, &faucet, s.chain, true).await;
            committed.push((hash, height.expect("waited for the block")));
        }
        // Submissions in flight while the validator dies.
        let (_e2, conn2, mut rpc2) = connect(&vaddr, &faucet).await;
        let signer = faucet.clone();
        let inflight = tokio::spawn(async move {
            for _ in 0..20 {
                let attempt = transfer(&mut rpc2, &signer, s.chain, false);
                let _ = tokio::time::timeout(Duration::from_millis(500), attempt).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(15 + round * 10)).await;
        validator.kill().unwrap();
        validator.wait().unwrap();
        inflight.abort();
        conn.close(0u32.into(), b"");
        conn2.close(0u32.into(), b"");
    }
    let (mut child, _) = start_daemon(&vdir);
    let (_e, _c, mut vrpc) = connect(&vaddr, &faucet).await;
    let vs = summary(&mut vrpc).await;
    assert!(vs.invariant_ok);
    let (_fe, _fc, mut frpc) = connect(&faddr, &Identity::generate()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while summary(&mut frpc).await.height < vs.height {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for h in 1..=vs.height {
        let (a, b) = (
            block(&mut vrpc, h).await.unwrap(),
            block(&mut frpc, h).await.unwrap(),
        );
        assert_eq!(
            a.hash(),
            b.hash(),
            "validator and follower disagree at height {h}"
        );
    }
    assert!(summary(&mut frpc).await.invariant_ok);
    child.kill().ok();
    follower.kill().ok();
    child.wait().ok();
    follower.wait().ok();
}
