//! What the messaging benchmarks share: driving messages from a client on one relay to a client
//! on another (or the same), pipelined then one at a time.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use top_client::{BillingOptions, Client, ClientOptions, Identity, Outcome, Wallet};
use top_relay::Relay;

/// Message body size.
pub const SIZE: usize = 256;
/// Messages sent pipelined.
pub const COUNT: usize = 100_000;
/// Messages in flight at once, pipelined.
pub const WINDOW: usize = 1024;
/// Messages sent one at a time, for latency.
pub const SAMPLES: usize = 3_000;
/// Application tasks sending at once.
pub const SENDER_TASKS: usize = 2;

/// Throughput and latency of one run.
pub struct Figures {
    /// Messages per second, pipelined.
    pub rate: f64,
    /// Median round trip, one message at a time.
    pub p50: Duration,
    /// 99th percentile round trip.
    pub p99: Duration,
}

/// The median and 99th percentile.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// Sends from a client on `from` to a client on `to`, pipelined then one at a time.
pub async fn drive(from: &Relay, to: &Relay, billing: bool) -> Figures {
    let connect = async |relay: &Relay| {
        let id = Identity::generate();
        if billing {
            // The faucet is on the dev chain's validator (`from`).
            let wallet = Wallet::connect(&from.addr(), id.clone()).await.unwrap();
            wallet.faucet("1000".parse().unwrap()).await.unwrap();
            wallet.deposit("500".parse().unwrap()).await.unwrap();
            wallet.close().await;
        }
        let options = ClientOptions {
            billing: BillingOptions {
                lock: "400".parse().unwrap(),
                sponsor: None,
            },
        };
        let client = Client::connect_with(&relay.addr(), id, options)
            .await
            .unwrap();
        assert_eq!(client.billing().is_some(), billing);
        std::sync::Arc::new(client)
    };
    let sender = connect(from).await;
    let recipient = connect(to).await;
    sender.synced().await.unwrap();
    recipient.synced().await.unwrap();
    let to = recipient.id();
    let r = recipient.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = r.recv().await {
            r.ack(&m).await.unwrap();
        }
    });
    let body = vec![7u8; SIZE];
    // Warm up the Noise session and the paths.
    for _ in 0..1000 {
        assert_eq!(sender.send(&to, &body).await.unwrap(), Outcome::Delivered);
    }
    // Two application tasks send concurrently, as a busy app would (one per core).
    let start = Instant::now();
    let senders: Vec<_> = (0..SENDER_TASKS)
        .map(|_| {
            let (sender, body) = (sender.clone(), body.clone());
            tokio::spawn(async move {
                futures::stream::iter(0..COUNT / SENDER_TASKS)
                    .map(|_| sender.send(&to, &body))
                    .buffer_unordered(WINDOW / SENDER_TASKS)
                    .filter(|r| std::future::ready(matches!(r, Ok(Outcome::Delivered))))
                    .count()
                    .await
            })
        })
        .collect();
    let mut delivered = 0;
    for task in senders {
        delivered += task.await.unwrap();
    }
    let rate = delivered as f64 / start.elapsed().as_secs_f64();
    assert_eq!(delivered, COUNT, "every message delivered");
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        sender.send(&to, &body).await.unwrap();
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    reader.abort();
    Figures { rate, p50, p99 }
}
