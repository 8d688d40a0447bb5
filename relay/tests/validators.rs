//! A chain of four validators, each a real `toprelay` process on loopback, and a follower.
//! Transactions sent to any relay are finalized; with one validator killed (SIGKILL) the other
//! three go on; with two killed nothing is finalized; restarted, they catch up and the chain
//! resumes. Every relay reports the same block at every height and the supply invariant holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TOPRELAY, free_port};
use ledger_lite::wire::{LedgerRequest, LedgerResponse, Summary};
use ledger_lite::{Amount, BlockHash, ChainId, Tx, TxKind};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::config::RelayConfig;

type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

fn toprelay(args: &[&str]) -> String {
    let out = Command::new(TOPRELAY).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "toprelay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One relay's data directory and, while it runs, its process.
struct Node {
    dir: PathBuf,
    addr: RelayAddr,
    child: Option<Child>,
}

impl Node {
    fn init(dir: PathBuf, extra: &[&str]) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["init", "--data-dir", path(&dir), "--listen", &listen];
        args.extend(["--http", "127.0.0.1:0"]);
        args.extend(extra);
        let addr = toprelay(&args).parse().unwrap();
        Self {
            dir,
            addr,
            child: None,
        }
    }

    fn configure(&self, peers: Vec<RelayAddr>) {
        let mut config = RelayConfig::load(&self.dir).unwrap();
        config.peers = peers;
        config.ledger.block_interval_ms = 200;
        // The test signs faucet transactions itself, nonce by nonce.
        config.auto_register = false;
        config.save(&self.dir).unwrap();
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let mut child = Command::new(TOPRELAY)
            .args(["run", "--data-dir", path(&self.dir)])
            .env("RUST_LOG", "info,quinn=warn,commonware=warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line.trim().parse::<RelayAddr>().unwrap(), self.addr);
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(addr: &RelayAddr) -> (quinn::Endpoint, quinn::Connection, Rpc) {
    common::ledger_rpc(addr, &Identity::generate()).await
}

async fn call(addr: &RelayAddr, req: LedgerRequest) -> LedgerResponse {
    let (_e, conn, mut rpc) = connect(addr).await;
    let resp = rpc.call(req).await.unwrap();
    conn.close(0u32.into(), b"");
    resp
}

async fn summary(addr: &RelayAddr) -> Summary {
    match call(addr, LedgerRequest::Summary).await {
        LedgerResponse::Summary(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn block_hash(addr: &RelayAddr, height: u64) -> Option<BlockHash> {
    let req = LedgerRequest::Blocks {
        from: height,
        max: 1,
        wait_ms: 0,
    };
    match call(addr, req).await {
        LedgerResponse::Blocks(b) => b
            .first()
            .filter(|b| b.header.height == height)
            .map(|b| b.hash()),
        other => panic!("{other:?}"),
    }
}

/// The faucet's transactions, signed by the test with consecutive nonces.
struct Faucet {
    key: Identity,
    chain: ChainId,
    nonce: u64,
}

impl Faucet {
    fn transfer(&mut self) -> Tx {
        let tx = Tx {
            chain: self.chain,
            from: self.key.account_id(),
            nonce: self.nonce,
            fee: Amount::from_units(top_relay::ledger::setup::DEV_MIN_FEE_UNITS),
            kind: TxKind::Transfer {
                to: Identity::generate().account_id(),
                amount: Amount::from_units(1_000),
            },
        };
        self.nonce += 1;
        tx
    }

    /// Sends a transfer through `relay`; with `wait`, the height it was finalized at.
    async fn send(&mut self, relay: &RelayAddr, wait: bool) -> Option<u64> {
        let tx = self.transfer().sign(&self.key);
        match call(relay, LedgerRequest::Submit { tx, wait }).await {
            LedgerResponse::Submitted { height, .. } => height,
            other => panic!("submit through {relay}: {other:?}"),
        }
    }
}

/// Waits until every relay in `addrs` is at `height` or above.
async fn reach(nodes: &[&Node], height: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    for node in nodes {
        loop {
            if summary(&node.addr).await.height >= height {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let logs: Vec<String> = nodes.iter().map(|n| n.log_tail()).collect();
                panic!(
                    "{} did not reach height {height}\n{}",
                    node.addr,
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

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
    args.extend(["--out", path(&genesis)]);
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
    for v in &mut validators {
        v.start();
    }
    follower.start();

    let all: Vec<&Node> = validators.iter().chain([&follower]).collect();
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
    let mut stalled = summary(&addrs[0]).await.height;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = summary(&addrs[0]).await.height;
        if now == stalled {
            break;
        }
        stalled = now;
    }
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
