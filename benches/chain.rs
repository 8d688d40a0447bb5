//! The chain under load: finalized settlements per second and finality latency (submit →
//! finalized, p50/p99) with four validators agreeing through consensus, beside the single
//! validator, in the same run.
//!
//! `cargo bench --bench chain`: rounds alternate single / four; each starts fresh relays
//! in-process on loopback (same block interval), opens a channel for every payer, then sends
//! one-receipt settlements from many relays' accounts, round-robin through every relay of the
//! network, as fast as the ledger API takes them. Latency runs from a settlement's submission
//! to the first relay's commit of the block holding it; every round is printed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_lite::wire::{LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME};
use ledger_lite::{
    Amount, ChainId, ChannelId, Genesis, Params, ReceiptBody, SignedTx, Tx, TxHash, TxKind,
};
use top_proto::addr::RelayAddr;
use top_proto::frame::Open;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::config::{DataDir, RelayConfig};
use top_relay::{InitOptions, Relay, init};

/// Payers, each with a channel to one settler.
const PAYERS: usize = 8_192;
/// Accounts settling (32 settlements each: within a validator's window per account).
const SETTLERS: usize = 256;
const ROUNDS: usize = 2;
const INTERVAL_MS: u64 = 250;
const SUBMITTERS: usize = 8;

type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    blocks: u64,
    /// From the first settlement sent to the last finalized.
    took: Duration,
}

fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn rpc(addr: &RelayAddr) -> (quinn::Endpoint, quinn::Connection, Rpc) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, &Identity::generate(), addr)
        .await
        .unwrap();
    let rpc = Rpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME)
        .await
        .unwrap();
    (endpoint, conn, rpc)
}

fn tx(chain: ChainId, from: &Identity, nonce: u64, kind: TxKind) -> SignedTx {
    Tx {
        chain,
        from: from.account_id(),
        nonce,
        fee: Amount::from_units(1),
        kind,
    }
    .sign(from)
}

/// Submits `txs` through `relays` from [`SUBMITTERS`] tasks (each account's in order through
/// one relay), without waiting for blocks; `sent` records when each went.
async fn submit_all(
    relays: &[RelayAddr],
    txs: Vec<SignedTx>,
    sent: &Arc<Mutex<HashMap<TxHash, Instant>>>,
) {
    // One account's transactions go in order down one lane, to one relay.
    let mut lanes: Vec<Vec<SignedTx>> = vec![Vec::new(); SUBMITTERS];
    for t in txs {
        lanes[t.tx.from.as_bytes()[0] as usize % SUBMITTERS].push(t);
    }
    let mut tasks = Vec::new();
    for (lane, txs) in lanes.into_iter().enumerate() {
        let addr = relays[lane % relays.len()].clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let (_e, _c, mut rpc) = rpc(&addr).await;
            for tx in txs {
                sent.lock().unwrap().insert(tx.hash(), Instant::now());
                match rpc.call(LedgerRequest::Submit { tx, wait: false }).await {
                    Ok(LedgerResponse::Submitted { .. }) => {}
                    other => panic!("submit: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Follows `relay`'s blocks from `from` until every transaction in `sent` is in one (or
/// `limit` passes); returns each one's latency and the blocks seen.
async fn watch(
    relay: &RelayAddr,
    from: u64,
    sent: &Arc<Mutex<HashMap<TxHash, Instant>>>,
    want: usize,
    limit: Duration,
) -> (Vec<Duration>, Instant, u64) {
    let (_e, _c, mut rpc) = rpc(relay).await;
    let deadline = Instant::now() + limit;
    let mut next = from;
    let mut latencies = Vec::new();
    let mut last = Instant::now();
    while latencies.len() < want && Instant::now() < deadline {
        let req = LedgerRequest::Blocks {
            from: next,
            max: 64,
            wait_ms: 1_000,
        };
        let blocks = match rpc.call(req).await.unwrap() {
            LedgerResponse::Blocks(b) => b,
            other => panic!("{other:?}"),
        };
        let now = Instant::now();
        for block in blocks {
            next = block.header.height + 1;
            let sent = sent.lock().unwrap();
            for t in &block.txs {
                if let Some(at) = sent.get(&t.hash()) {
                    latencies.push(now - *at);
                    last = now;
                }
            }
        }
    }
    (latencies, last, next - from)
}

/// One round: a fresh network of `validators` relays (1: a single-validator chain).
async fn round(validators: usize) -> Figures {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..validators)
        .map(|i| tmp.path().join(format!("r{i}")))
        .collect();
    let mut ids = Vec::new();
    for dir in &dirs {
        let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (id, _) = init(
            dir,
            InitOptions {
                listen,
                ..InitOptions::loopback()
            },
        )
        .unwrap();
        ids.push(id);
    }
    let accounts: Vec<_> = ids
        .iter()
        .map(|id| top_proto::id::AccountId::from_wire(*id.as_bytes()))
        .collect();
    let payers: Vec<Identity> = (0..PAYERS).map(|_| Identity::generate()).collect();
    let settlers: Vec<Identity> = (0..SETTLERS).map(|_| Identity::generate()).collect();
    let top = |n| Amount::from_top(n).unwrap();
    let genesis = Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: format!("bench-{validators}"),
        time_ms: 1,
        validator: accounts[0],
        validators: if validators > 1 {
            accounts.clone()
        } else {
            Vec::new()
        },
        params: Params {
            unbonding_blocks: 10,
            max_block_txs: 10_000,
            min_stake: Amount::ZERO,
            min_fee: Amount::from_units(1),
        },
        faucet: None,
        allocations: payers
            .iter()
            .chain(&settlers)
            .map(|p| (p.account_id(), top(100)))
            .collect(),
    };
    let chain = genesis.chain_id();
    let mut relays = Vec::new();
    let mut addrs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        top_relay::ledger::network::use_genesis(&DataDir(dir.clone()), &genesis, None).unwrap();
        let mut config = RelayConfig::load(dir).unwrap();
        config.ledger.block_interval_ms = INTERVAL_MS;
        config.auto_register = false;
        config.peers = dirs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, d)| {
                let c = RelayConfig::load(d).unwrap();
                RelayAddr::new(ids[j], c.listen)
            })
            .collect();
        config.save(dir).unwrap();
    }
    for dir in &dirs {
        let relay = Relay::start(dir).await.unwrap();
        addrs.push(relay.addr());
        relays.push(relay);
    }

    // Every payer deposits and opens a channel to a settler.
    let mut setup = Vec::new();
    let mut channels = Vec::new();
    for (i, payer) in payers.iter().enumerate() {
        let settler = settlers[i % SETTLERS].account_id();
        setup.push(tx(chain, payer, 0, TxKind::Deposit { amount: top(10) }));
        let open = TxKind::OpenChannel {
            relay: settler,
            amount: top(10),
            sponsor: None,
        };
        setup.push(tx(chain, payer, 1, open));
        channels.push(ChannelId::derive(&chain, &payer.account_id(), &settler, 1));
    }
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let start_height = height(&addrs[0]).await;
    submit_all(&addrs, setup, &sent).await;
    let (opened, _, _) = watch(
        &addrs[0],
        start_height + 1,
        &sent,
        PAYERS * 2,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(opened.len(), PAYERS * 2, "every channel opened");

    // The load: one-receipt settlements.
    let mut nonces = vec![0u64; SETTLERS];
    let settlements: Vec<SignedTx> = channels
        .iter()
        .zip(&payers)
        .enumerate()
        .map(|(i, (channel, payer))| {
            let receipt = ReceiptBody {
                chain,
                channel: *channel,
                cum_bytes: 1 << 20,
                cum_amount: top(1),
            }
            .sign(payer);
            let s = i % SETTLERS;
            nonces[s] += 1;
            tx(
                chain,
                &settlers[s],
                nonces[s] - 1,
                TxKind::Settle {
                    receipts: vec![receipt],
                },
            )
        })
        .collect();
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let from = height(&addrs[0]).await + 1;
    let began = Instant::now();
    let watcher = {
        let (addr, sent) = (addrs[0].clone(), sent.clone());
        tokio::spawn(
            async move { watch(&addr, from, &sent, PAYERS, Duration::from_secs(120)).await },
        )
    };
    submit_all(&addrs, settlements, &sent).await;
    let (mut latencies, last, blocks) = watcher.await.unwrap();
    assert_eq!(latencies.len(), PAYERS, "every settlement finalized");
    latencies.sort();
    for relay in relays {
        relay.shutdown().await;
    }
    Figures {
        rate: PAYERS as f64 / (last - began).as_secs_f64(),
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        blocks,
        took: last - began,
    }
}

async fn height(addr: &RelayAddr) -> u64 {
    let (_e, _c, mut rpc) = rpc(addr).await;
    match rpc.call(LedgerRequest::Summary).await.unwrap() {
        LedgerResponse::Summary(s) => s.height,
        other => panic!("{other:?}"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{PAYERS} one-receipt settlements from {SETTLERS} accounts, block interval {INTERVAL_MS} ms"
    );
    let mut ratios = Vec::new();
    for r in 1..=ROUNDS {
        let one = rt.block_on(round(1));
        let four = rt.block_on(round(4));
        for (name, f) in [("single validator", &one), ("four validators ", &four)] {
            println!(
                "round {r}  {name}  {:>8.0} settlements/s  p50 {:>6.0} ms  p99 {:>6.0} ms  \
                 ({} blocks in {:.2} s: one per {:.0} ms)",
                f.rate,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.blocks,
                f.took.as_secs_f64(),
                f.took.as_secs_f64() * 1e3 / f.blocks.max(1) as f64
            );
        }
        ratios.push(four.rate / one.rate);
        println!(
            "round {r}  four/single settlement rate {:.3}",
            four.rate / one.rate
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median four/single rate {:.3}", ratios[ratios.len() / 2]);
}
