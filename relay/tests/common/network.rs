//! Several `toprelay` processes on one chain of several validators: start, stop, query and
//! compare them; sign the faucet's transfers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ledger_lite::wire::{LedgerRequest, LedgerResponse, Summary};
use ledger_lite::{Amount, BlockHash, ChainId, SignedTx, Tx, TxKind};
use top_proto::addr::RelayAddr;
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::config::RelayConfig;

use super::{TOPRELAY, free_port};

pub type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

pub fn toprelay(args: &[&str]) -> String {
    let out = Command::new(TOPRELAY).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "toprelay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One relay's data directory and, while it runs, its process.
pub struct Node {
    pub dir: PathBuf,
    pub addr: RelayAddr,
    pub child: Option<Child>,
}

impl Node {
    pub fn init(dir: PathBuf, extra: &[&str]) -> Self {
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

    pub fn configure(&self, peers: Vec<RelayAddr>) {
        let mut config = RelayConfig::load(&self.dir).unwrap();
        config.peers = peers;
        config.ledger.block_interval_ms = 200;
        // The test signs faucet transactions itself, nonce by nonce.
        config.auto_register = false;
        config.save(&self.dir).unwrap();
    }

    pub fn start(&mut self) {
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

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    pub fn log_tail(&self) -> String {
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

pub async fn connect(addr: &RelayAddr) -> (quinn::Endpoint, quinn::Connection, Rpc) {
    super::ledger_rpc(addr, &Identity::generate()).await
}

pub async fn call(addr: &RelayAddr, req: LedgerRequest) -> LedgerResponse {
    let (_e, conn, mut rpc) = connect(addr).await;
    let resp = rpc.call(req).await.unwrap();
    conn.close(0u32.into(), b"");
    resp
}

pub async fn summary(addr: &RelayAddr) -> Summary {
    match call(addr, LedgerRequest::Summary).await {
        LedgerResponse::Summary(s) => s,
        other => panic!("{other:?}"),
    }
}

pub async fn block_hash(addr: &RelayAddr, height: u64) -> Option<BlockHash> {
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
pub struct Faucet {
    pub key: Identity,
    pub chain: ChainId,
    pub nonce: u64,
}

impl Faucet {
    pub fn transfer(&mut self) -> Tx {
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
    pub async fn send(&mut self, relay: &RelayAddr, wait: bool) -> Option<u64> {
        let tx = self.transfer().sign(&self.key);
        submit(relay, tx, wait).await
    }

    /// Sends `amount` to `to` through `relay`, waiting for it to be finalized.
    pub async fn fund(&mut self, relay: &RelayAddr, to: AccountId, amount: Amount) -> u64 {
        let mut tx = self.transfer();
        tx.kind = TxKind::Transfer { to, amount };
        let tx = tx.sign(&self.key);
        submit(relay, tx, true).await.expect("finalized")
    }
}

/// Submits `tx` through `relay`; with `wait`, the height it was finalized at.
pub async fn submit(relay: &RelayAddr, tx: SignedTx, wait: bool) -> Option<u64> {
    match call(relay, LedgerRequest::Submit { tx, wait }).await {
        LedgerResponse::Submitted { height, .. } => height,
        other => panic!("submit through {relay}: {other:?}"),
    }
}

/// The height `relay` stays at once what was in flight has settled (a block voted for before
/// validators went down may still land): unchanged over 2 s.
pub async fn settled_height(relay: &RelayAddr) -> u64 {
    let mut last = summary(relay).await.height;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = summary(relay).await.height;
        if now == last {
            return last;
        }
        last = now;
    }
}

/// Waits until every relay in `addrs` is at `height` or above.
pub async fn reach(nodes: &[&Node], height: u64, within: Duration) {
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
