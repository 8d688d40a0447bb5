//! How long a relay takes to shut down (what `toprelay` does on SIGTERM: `Relay::shutdown`),
//! idle and under messaging load, beside a bare quinn endpoint closing one connection in the
//! same run.
//!
//! `cargo bench --bench shutdown` prints every round:
//! - baseline: a quinn server with one idle client connection: close, then `wait_idle`;
//! - idle: a dev-chain validator with one linked follower, nothing else going on;
//! - loaded: the same validator while two billed clients exchange pipelined messages (the
//!   messaging benchmark's load: 256-byte messages, a window of 1024) up to the moment it stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use top_client::{BillingOptions, Client, ClientOptions, Identity, Wallet};
use top_relay::{InitOptions, Relay, init};

const ROUNDS: usize = 5;
const SIZE: usize = 256;
const WINDOW: usize = 1024;
/// How long the load runs before the relay is told to stop.
const LOAD_FOR: Duration = Duration::from_secs(2);

async fn baseline() -> Duration {
    let id = Identity::generate();
    let server_config = top_proto::tls::server_config(&id).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = top_proto::addr::RelayAddr::new(id.relay_id(), server.local_addr().unwrap());
    let accept = server.clone();
    let held = tokio::spawn(async move { accept.accept().await.unwrap().await.unwrap() });
    let client = top_proto::net::endpoint::client_endpoint("127.0.0.1:0").unwrap();
    let conn = top_proto::net::dial::dial(&client, &Identity::generate(), &addr)
        .await
        .unwrap();
    let server_conn = held.await.unwrap();
    let start = Instant::now();
    server.close(0u32.into(), b"bye");
    server.wait_idle().await;
    let took = start.elapsed();
    drop((conn, server_conn, client));
    took
}

/// A dev validator (fast blocks) and a follower linked to it.
async fn pair(dir: &std::path::Path) -> (Relay, Relay) {
    init(&dir.join("v"), InitOptions::loopback_dev()).unwrap();
    let validator = Relay::start(&dir.join("v")).await.unwrap();
    init(
        &dir.join("f"),
        InitOptions {
            peers: vec![validator.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let follower = Relay::start(&dir.join("f")).await.unwrap();
    follower.wait_linked(&validator.id()).await;
    // The follower opens its chain once it fetched the genesis.
    while follower.chain().is_none_or(|c| c.height() < 1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (validator, follower)
}

async fn idle() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (validator, follower) = pair(dir.path()).await;
    let start = Instant::now();
    validator.shutdown().await;
    let took = start.elapsed();
    follower.shutdown().await;
    took
}

async fn billed_client(relay: &Relay) -> Arc<Client> {
    let id = Identity::generate();
    let wallet = Wallet::connect(&relay.addr(), id.clone()).await.unwrap();
    wallet.faucet("1000".parse().unwrap()).await.unwrap();
    wallet.deposit("500".parse().unwrap()).await.unwrap();
    wallet.close().await;
    let options = ClientOptions {
        billing: BillingOptions {
            lock: "400".parse().unwrap(),
            sponsor: None,
        },
    };
    let client = Client::connect_with(&relay.addr(), id, options)
        .await
        .unwrap();
    client.synced().await.unwrap();
    Arc::new(client)
}

/// Returns the shutdown time and how many messages were delivered before it.
async fn loaded() -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (validator, follower) = pair(dir.path()).await;
    let sender = billed_client(&validator).await;
    let recipient = billed_client(&validator).await;
    let to = recipient.id();
    let r = recipient.clone();
    tokio::spawn(async move {
        while let Some(m) = r.recv().await {
            if r.ack(&m).await.is_err() {
                return;
            }
        }
    });
    let delivered = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let (s, d, run) = (sender.clone(), delivered.clone(), running.clone());
    tokio::spawn(async move {
        let body = vec![7u8; SIZE];
        futures::stream::iter(0..)
            .take_while(|_| std::future::ready(run.load(Ordering::Relaxed)))
            .map(|_| s.send(&to, &body))
            .buffer_unordered(WINDOW)
            .for_each(|r| {
                if r.is_ok() {
                    d.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(())
            })
            .await
    });
    tokio::time::sleep(LOAD_FOR).await;
    let start = Instant::now();
    validator.shutdown().await;
    let took = start.elapsed();
    running.store(false, Ordering::Relaxed);
    follower.shutdown().await;
    (took, delivered.load(Ordering::Relaxed))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("relay shutdown (Relay::shutdown, what SIGTERM runs), {ROUNDS} rounds");
    println!(
        "{:>5} {:>12} {:>12} {:>12} {:>16}",
        "round", "baseline", "idle", "loaded", "msgs before stop"
    );
    for round in 1..=ROUNDS {
        let base = runtime.block_on(baseline());
        let idle = runtime.block_on(idle());
        let (loaded, msgs) = runtime.block_on(loaded());
        println!("{round:>5} {base:>12.1?} {idle:>12.1?} {loaded:>12.1?} {msgs:>16}");
    }
}
