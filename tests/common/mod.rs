//! What the end-to-end billing tests share: a dev relay with fast blocks, funded accounts, and
//! waiting on a condition.
#![allow(dead_code)]

pub mod lossy;

use std::path::Path;
use std::time::Duration;

use top_client::{Amount, Identity, Wallet};
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

pub fn top(s: &str) -> Amount {
    s.parse().unwrap()
}

/// A (non-dev) relay in `dir` configured with `peers`, its config tweaked.
pub async fn relay_with(
    dir: &Path,
    peers: Vec<top_client::RelayAddr>,
    tweak: impl FnOnce(&mut RelayConfig),
) -> Relay {
    init(
        dir,
        InitOptions {
            peers,
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    tweak(&mut config);
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

/// A dev relay with fast blocks and a small credit window.
pub async fn dev_relay(dir: &Path, tweak: impl FnOnce(&mut RelayConfig)) -> Relay {
    init(dir, InitOptions::loopback_dev()).unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    config.ledger.block_interval_ms = 50;
    config.billing.credit_window = "0.0002".into(); // 20 KiB of messages at 0.01 TOP/MiB
    config.billing.settle_threshold = "0.0001".into();
    config.billing.pay_wait_ms = 300;
    tweak(&mut config);
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

pub async fn funded(relay: &Relay, deposit: &str) -> Identity {
    let id = Identity::generate();
    let wallet = Wallet::connect(&relay.addr(), id.clone()).await.unwrap();
    wallet.faucet(top("100")).await.unwrap();
    wallet.deposit(top(deposit)).await.unwrap();
    wallet.close().await;
    id
}

pub async fn wait_until(what: &str, cond: impl AsyncFnMut() -> bool) {
    wait_until_for(what, Duration::from_secs(30), cond).await
}

/// Waits until `cond` holds, failing the test after `limit`.
pub async fn wait_until_for(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of series `toprelay_SERIES` (a name and its labels) on `relay`'s metrics.
pub fn counter(relay: &Relay, series: &str) -> u64 {
    let metrics = relay.metrics_text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("toprelay_{series} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}
