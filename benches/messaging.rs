//! Messaging through one relay on loopback vs a plain quinn echo of the same sizes.
//!
//! `cargo bench --bench messaging` prints messages/s (pipelined) and p50/p99 round-trip latency
//! (one message at a time) for both, measured in the same run: three rounds, each with its own
//! echo and relay runs (billing off and on), every round printed, medians of the ratios reported.
//! The relay path: sender → relay → recipient, recipient's ack → relay → sender ("Delivered").
//! Across two relays (sender on A, recipient on B, linked), billing off and on: with billing on,
//! both clients pay through channels, presence is signed, and A pays B for every delivery
//! through a relay-to-relay channel.
//! The baseline: client → echo server → client on one QUIC stream, no relay logic; and, to show
//! what the path's shape costs, the same through a forwarder that splices raw bytes (two hops).

use std::time::{Duration, Instant};

use top_client::Identity;
use top_relay::{InitOptions, Relay, init};

#[path = "common/drive.rs"]
mod drive;

use drive::{COUNT, Figures, SAMPLES, SIZE, WINDOW, drive, percentiles};

/// With `billing`, the relay runs a dev chain with default prices and both clients pay through
/// channels and receipts; without, nothing is metered.
async fn relay_bench(billing: bool) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let opts = if billing {
        InitOptions::loopback_dev()
    } else {
        InitOptions::loopback()
    };
    init(dir.path(), opts).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let figures = drive(&relay, &relay, billing).await;
    relay.shutdown().await;
    figures
}

/// Sender on relay A, recipient on relay B (linked; with billing, B follows A's dev chain,
/// registers, and A pays B for deliveries).
async fn two_relay_bench(billing: bool) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a_opts = if billing {
        InitOptions::loopback_dev()
    } else {
        InitOptions::loopback()
    };
    init(&a_dir, a_opts).unwrap();
    let a = Relay::start(&a_dir).await.unwrap();
    let b_opts = InitOptions {
        peers: vec![a.addr()],
        ..InitOptions::loopback()
    };
    init(&b_dir, b_opts).unwrap();
    let b = Relay::start(&b_dir).await.unwrap();
    if !billing {
        a.add_peer(b.addr());
    }
    tokio::time::timeout(Duration::from_secs(60), a.wait_linked(&b.id()))
        .await
        .expect("the relays link");
    let figures = drive(&a, &b, billing).await;
    b.shutdown().await;
    a.shutdown().await;
    figures
}

async fn echo_bench() -> Figures {
    let server_id = Identity::generate();
    let server_config = top_proto::tls::server_config(&server_id).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = top_proto::addr::RelayAddr::new(server_id.relay_id(), server.local_addr().unwrap());
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let conn = incoming.await.unwrap();
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move { tokio::io::copy(&mut recv, &mut send).await.ok() });
                }
            });
        }
    });
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&client, &Identity::generate(), &addr)
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    drive_echo(send, recv).await
}

/// Pipelined throughput, then one-at-a-time latency, over an echoing stream.
async fn drive_echo(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Figures {
    let frame = vec![7u8; SIZE];
    let mut buf = vec![0u8; SIZE];
    // A round trip first, so the far end's stream exists before timing.
    send.write_all(&frame).await.unwrap();
    recv.read_exact(&mut buf).await.unwrap();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..COUNT {
            send.write_all(&frame).await.unwrap();
        }
        send
    });
    let mut big = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < COUNT * SIZE {
        got += recv.read(&mut big).await.unwrap().unwrap();
    }
    let rate = COUNT as f64 / start.elapsed().as_secs_f64();
    let mut send = writer.await.unwrap();
    let frame = vec![7u8; SIZE];
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        send.write_all(&frame).await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    Figures { rate, p50, p99 }
}

async fn two_hop_echo_bench() -> Figures {
    let fwd_id = Identity::generate();
    let forwarder = quinn::Endpoint::server(
        top_proto::tls::server_config(&fwd_id).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let fwd_addr =
        top_proto::addr::RelayAddr::new(fwd_id.relay_id(), forwarder.local_addr().unwrap());
    let (peer_tx, peer_rx) = tokio::sync::oneshot::channel::<quinn::Connection>();
    let (client_tx, client_rx) = tokio::sync::oneshot::channel::<quinn::Connection>();
    tokio::spawn(async move {
        let peer = forwarder.accept().await.unwrap().await.unwrap();
        peer_tx.send(peer.clone()).ok();
        let client = forwarder.accept().await.unwrap().await.unwrap();
        client_tx.send(client.clone()).ok();
        let (c_send, c_recv) = client.accept_bi().await.unwrap();
        let (p_send, p_recv) = peer.open_bi().await.unwrap();
        let mut a = tokio::io::join(c_recv, c_send);
        let mut b = tokio::io::join(p_recv, p_send);
        tokio::io::copy_bidirectional(&mut a, &mut b).await.ok();
        drop((forwarder, peer_rx, client_rx));
    });
    // The echo peer.
    let peer_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer_conn = top_proto::net::dial::dial(&peer_ep, &Identity::generate(), &fwd_addr)
        .await
        .unwrap();
    tokio::spawn(async move {
        let (mut send, mut recv) = peer_conn.accept_bi().await.unwrap();
        tokio::io::copy(&mut recv, &mut send).await.ok();
        drop(peer_ep);
    });
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&client, &Identity::generate(), &fwd_addr)
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let figures = drive_echo(send, recv).await;
    drop((conn, client));
    figures
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // `cargo bench --bench messaging -- relay` runs the relay path alone (for profiling).
    if std::env::args().any(|a| a == "relay") {
        let f = runtime.block_on(relay_bench(false));
        println!(
            "relay: {:.0} msgs/s, p50 {:?}, p99 {:?}",
            f.rate, f.p50, f.p99
        );
        return;
    }
    let two_hop = runtime.block_on(two_hop_echo_bench());
    // The echo, billing off and billing on alternate, three rounds: run-to-run variance on this
    // machine is larger than the effects measured, so every round is printed with its own
    // ratios, and the medians of the ratios are what we report.
    let mut pairs = Vec::new();
    let rounds: Vec<(Figures, Figures, Figures)> = (0..3)
        .map(|_| {
            let echo = runtime.block_on(echo_bench());
            let off = runtime.block_on(relay_bench(false));
            let on = runtime.block_on(relay_bench(true));
            let two_off = runtime.block_on(two_relay_bench(false));
            let two_on = runtime.block_on(two_relay_bench(true));
            pairs.push((two_off, two_on));
            (echo, off, on)
        })
        .collect();
    println!(
        "messaging, {SIZE}-byte messages, {COUNT} pipelined (window {WINDOW}), {SAMPLES} sequential for latency"
    );
    println!("{:<34} {:>12} {:>10} {:>10}", "", "msgs/s", "p50", "p99");
    let line = |name: &str, f: &Figures| {
        println!(
            "{name:<34} {:>12.0} {:>10.3?} {:>10.3?}",
            f.rate, f.p50, f.p99
        )
    };
    line("quinn 2-hop echo via forwarder", &two_hop);
    for (n, (echo, off, on)) in rounds.iter().enumerate() {
        println!("round {}", n + 1);
        line("  quinn echo (baseline)", echo);
        line("  relay: send -> deliver -> ack", off);
        line("  relay, billing on (dev chain)", on);
        println!(
            "  relay / baseline {:.2}; billing on / off {:.3}",
            off.rate / echo.rate,
            on.rate / off.rate
        );
        let (two_off, two_on) = &pairs[n];
        line("  two relays (A -> B)", two_off);
        line("  two relays, billing + relay-to-relay", two_on);
        println!(
            "  two relays: billing and relay-to-relay payment on / off {:.3}",
            two_on.rate / two_off.rate
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let relay_ratio = median(rounds.iter().map(|(e, off, _)| off.rate / e.rate).collect());
    let billing_ratio = median(
        rounds
            .iter()
            .map(|(_, off, on)| on.rate / off.rate)
            .collect(),
    );
    let p99 = rounds
        .iter()
        .map(|(_, off, _)| off.p99)
        .max()
        .unwrap_or_default();
    println!("relay / baseline rate, median of 3 rounds: {relay_ratio:.2}");
    println!(
        "billing on / off rate, median of 3 rounds: {billing_ratio:.3} (metering cost {:.1}%)",
        (1.0 - billing_ratio) * 100.0
    );
    println!("relay p99, worst round: {p99:?}");
    let two_ratio = median(pairs.iter().map(|(off, on)| on.rate / off.rate).collect());
    println!(
        "two relays, billing and relay-to-relay payment on / off, median of 3 rounds: {two_ratio:.3} (cost {:.1}%)",
        (1.0 - two_ratio) * 100.0
    );
}
