//! Discovery at scale, for networks of 10 and 30 relays on loopback in one run (each relay told
//! only the first relay's address; the first is a dev chain's validator with 200 ms blocks):
//! - time from the first relay's start until every relay holds every relay's announcement;
//! - control-plane bytes (sent + received) per relay per minute, over a minute of steady state;
//! - block propagation: from the validator committing a block to each follower committing it,
//!   p50 and p99 over every (block, follower) pair of that minute.
//!
//! Run: `cargo bench --bench discovery` (prints one line per network size).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

/// Network sizes measured, in this order.
const SIZES: [usize; 2] = [10, 30];
/// Steady-state window.
const WINDOW: Duration = Duration::from_secs(60);
/// Longest wait for discovery before the run is called failed.
const DISCOVERY_LIMIT: Duration = Duration::from_secs(120);

type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

async fn start(dir: &std::path::Path, i: usize, through: Option<&Relay>) -> Relay {
    let dir = dir.join(format!("r{i}"));
    let opts = match through {
        None => InitOptions::loopback_dev(),
        Some(first) => InitOptions {
            bootstrap: vec![first.addr()],
            ..InitOptions::loopback()
        },
    };
    init(&dir, opts).expect("init");
    let mut config = RelayConfig::load(&dir).expect("config");
    config.ledger.block_interval_ms = 200;
    config.billing.enabled = false;
    config.save(&dir).expect("save");
    Relay::start(&dir).await.expect("start")
}

/// Records when each height is first reached on `relay`.
fn watch_heights(relay: &Relay) -> Arrivals {
    let arrivals: Arrivals = Arc::default();
    let chain = relay.chain().expect("chain open");
    let (mut heights, out) = (chain.subscribe(), arrivals.clone());
    tokio::spawn(async move {
        let mut last = *heights.borrow_and_update();
        while heights.changed().await.is_ok() {
            let now = Instant::now();
            let height = *heights.borrow_and_update();
            let mut map = out.lock().unwrap_or_else(|p| p.into_inner());
            for h in last + 1..=height {
                map.insert(h, now);
            }
            last = last.max(height);
        }
    });
    arrivals
}

/// Control-plane bytes this relay sent and received so far.
fn control_bytes(relay: &Relay) -> u64 {
    relay
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("toprelay_control_libp2p_bandwidth_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn measure(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let first = start(dir.path(), 0, None).await;
    let mut relays = vec![first];
    for i in 1..n {
        let relay = start(dir.path(), i, Some(&relays[0])).await;
        relays.push(relay);
    }
    let started = t0.elapsed();
    let mut registered = None;
    while !relays.iter().all(|r| r.status().control.discovered == n) {
        if registered.is_none()
            && relays[0]
                .chain()
                .is_some_and(|c| c.with_state(|s| s.relays().count()) >= n)
        {
            registered = Some(t0.elapsed());
        }
        assert!(t0.elapsed() < DISCOVERY_LIMIT, "discovery did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let discovered = t0.elapsed();
    let registered = registered.unwrap_or(discovered);

    // Wait until every follower has its chain open, then watch a minute of blocks.
    let arrivals: Vec<Arrivals> = relays.iter().map(watch_heights).collect();
    let bytes_before: Vec<u64> = relays.iter().map(control_bytes).collect();
    let from = relays[0].chain().expect("chain").height() + 1;
    tokio::time::sleep(WINDOW).await;
    let to = relays[0].chain().expect("chain").height();
    let bytes: Vec<u64> = relays
        .iter()
        .zip(&bytes_before)
        .map(|(r, before)| control_bytes(r).saturating_sub(*before))
        .collect();
    let per_minute = bytes.iter().sum::<u64>() as f64 / n as f64 * 60.0 / WINDOW.as_secs_f64();
    let max_minute = *bytes.iter().max().unwrap_or(&0) as f64 * 60.0 / WINDOW.as_secs_f64();

    let validator = arrivals[0]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut delays = Vec::new();
    let mut missing = 0usize;
    for follower in &arrivals[1..] {
        let follower = follower.lock().unwrap_or_else(|p| p.into_inner());
        for h in from..=to.saturating_sub(5) {
            match (validator.get(&h), follower.get(&h)) {
                (Some(v), Some(f)) => delays.push(f.saturating_duration_since(*v)),
                _ => missing += 1,
            }
        }
    }
    delays.sort();
    let gossiped: u64 = relays[1..]
        .iter()
        .map(|r| r.status().control.gossiped_blocks)
        .sum();
    // QUIC links between relays (made on demand: none are needed by a network without users).
    let links: Vec<usize> = relays.iter().map(|r| r.linked().len()).collect();
    let links_max = links.iter().max().copied().unwrap_or(0);
    let links_mean = links.iter().sum::<usize>() as f64 / n as f64;
    println!(
        "discovery/{n}: started all in {:.1} s, all registered at {:.1} s, all discovered all \
         at {:.1} s; control plane \
         {:.0} B/relay/min (max {:.0}); block propagation p50 {:.1} ms, p99 {:.1} ms over {} \
         pairs ({} missing); blocks taken from gossip {}; relay links mean {:.1}, max {} \
         (a full mesh: {})",
        started.as_secs_f64(),
        registered.as_secs_f64(),
        discovered.as_secs_f64(),
        per_minute,
        max_minute,
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
        delays.len(),
        missing,
        gossiped,
        links_mean,
        links_max,
        n - 1,
    );
    for r in relays {
        r.shutdown().await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs nothing here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for n in SIZES {
            measure(n).await;
        }
    });
}
