//! A synthetic 30 fps "video" over a realtime pipe, paid, through a relay on loopback running a
//! dev chain (validator, faucet): alice streams to bob, each paying the relay for what it sends
//! (two relays work the same way: `tests/realtime.rs`). Every frame is split into 1200-byte datagrams (a key frame of 40 every second, 8 for the
//! others: about 2.8 Mbit/s), each stamped with its frame, index and send time. Bob reports
//! datagram loss, complete frames, one-way latency and RFC 3550 interarrival jitter; both report
//! what they paid.
//!
//! `cargo run --release --example realtime_video [-- SECONDS]` (default 5).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use top_client::{Client, Identity, RealtimeReceiver, Sent, Wallet};
use top_relay::{InitOptions, Relay, init};

const FPS: u32 = 30;
const PAYLOAD: usize = 1200;
/// Header of each datagram: frame u32, index u16, count u16, send time µs u64.
const HEADER: usize = 16;

async fn start_relay(dir: &Path, opts: InitOptions) -> Result<Relay> {
    init(dir, opts)?;
    Ok(Relay::start(dir).await?)
}

async fn funded_identity(relay: &Relay) -> Result<Identity> {
    let id = Identity::generate();
    let wallet = Wallet::connect(&relay.addr(), id.clone()).await?;
    wallet.faucet("10".parse()?).await?;
    wallet.deposit("2".parse()?).await?;
    wallet.close().await;
    Ok(id)
}

fn packets_in(frame: u32) -> u16 {
    if frame.is_multiple_of(FPS) { 40 } else { 8 }
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    received: u64,
    /// Datagrams received per frame.
    per_frame: std::collections::HashMap<u32, u16>,
    delays_us: Vec<u64>,
    /// RFC 3550 interarrival jitter, µs.
    jitter_us: f64,
    last_transit_us: Option<i64>,
}

async fn receive(mut rx: RealtimeReceiver, base: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut out = vec![0u8; 2048];
    while let Ok(Ok(Some(n))) =
        tokio::time::timeout(Duration::from_secs(1), rx.recv(&mut out)).await
    {
        if n < HEADER {
            continue;
        }
        let field = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&out[r]);
            u64::from_le_bytes(b)
        };
        let (frame, sent_us) = (field(0..4) as u32, field(8..16));
        let now_us = base.elapsed().as_micros() as u64;
        seen.received += 1;
        *seen.per_frame.entry(frame).or_default() += 1;
        seen.delays_us.push(now_us.saturating_sub(sent_us));
        let transit = now_us as i64 - sent_us as i64;
        if let Some(last) = seen.last_transit_us {
            let d = (transit - last).abs() as f64;
            seen.jitter_us += (d - seen.jitter_us) / 16.0;
        }
        seen.last_transit_us = Some(transit);
    }
    seen
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let seconds: u32 = match std::env::args().nth(1) {
        Some(s) => s.parse().context("usage: realtime_video [SECONDS]")?,
        None => 5,
    };
    let dir = tempfile::tempdir()?;
    let relay = start_relay(&dir.path().join("relay"), InitOptions::loopback_dev()).await?;
    let (alice_id, bob_id) = (
        funded_identity(&relay).await?,
        funded_identity(&relay).await?,
    );
    let alice = Client::connect(&relay.addr(), alice_id).await?;
    let bob = Client::connect(&relay.addr(), bob_id).await?;
    alice.synced().await?;
    bob.synced().await?;
    println!("relay {}", relay.addr());
    println!("alice {} streams to bob {}", alice.id(), bob.id());

    let bob_account = bob.id();
    let (opened, accepted) = tokio::join!(
        alice.open_realtime_pipe(&bob_account),
        bob.accept_realtime_pipe()
    );
    let (mut tx, _) = opened.context("opening the realtime pipe")?.split();
    let (_, rx) = accepted.context("bob's client closed")?.split();
    let base = Instant::now();
    let receiver = tokio::spawn(receive(rx, base));

    let frames = FPS * seconds;
    let (mut sent, mut dropped, mut expected) = (0u64, 0u64, 0u64);
    let mut datagram = [0u8; PAYLOAD];
    let mut tick = tokio::time::interval(Duration::from_secs(1) / FPS);
    for frame in 0..frames {
        tick.tick().await;
        let count = packets_in(frame);
        for index in 0..count {
            datagram[0..4].copy_from_slice(&frame.to_le_bytes());
            datagram[4..6].copy_from_slice(&index.to_le_bytes());
            datagram[6..8].copy_from_slice(&count.to_le_bytes());
            let now = base.elapsed().as_micros() as u64;
            datagram[8..16].copy_from_slice(&now.to_le_bytes());
            expected += 1;
            match tx.send(&datagram).context("sending a datagram")? {
                Sent::Queued => sent += 1,
                Sent::Dropped => dropped += 1,
            }
        }
    }
    let mut seen = receiver.await?;
    let complete = (0..frames)
        .filter(|f| seen.per_frame.get(f) == Some(&packets_in(*f)))
        .count();
    seen.delays_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((seen.delays_us.len().max(1) - 1) as f64 * p).round() as usize;
        seen.delays_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let lost = expected - seen.received;
    println!(
        "{frames} frames, {expected} datagrams in {seconds} s ({:.1} Mbit/s)",
        (expected * PAYLOAD as u64 * 8) as f64 / f64::from(seconds) / 1e6
    );
    println!(
        "sent {sent}, dropped at the sender's queue {dropped}, received {} — loss {:.2}%",
        seen.received,
        lost as f64 * 100.0 / expected.max(1) as f64
    );
    println!(
        "complete frames {complete}/{frames}; one-way latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; jitter {:.3} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        seen.jitter_us / 1000.0
    );
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        let signed = client
            .billing()
            .map(|b| b.signed.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0);
        println!(
            "{who}: counted {} pipe bytes; signed receipts for {} TOP so far",
            client.usage().pipe,
            top_client::Amount::from_units(u128::from(signed))
        );
    }
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
    Ok(())
}
