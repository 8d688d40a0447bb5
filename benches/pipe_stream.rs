//! Pipe stream throughput: 1 MiB writes through one relay against a raw quinn stream through a
//! forwarder that splices chunks as the relay does (the same two QUIC hops, no relay logic, no
//! end-to-end encryption), on loopback in one process; and, as the ceiling of any QUIC transfer here, the
//! same writes straight over one hop. Each round runs all three; every round is printed with
//! its ratio, then the median.
//!
//! `cargo bench --bench pipe_stream`

use std::time::Instant;

use top_client::{Client, Identity};
use top_relay::{InitOptions, Relay, init};

/// Bytes per write.
const WRITE: usize = 1 << 20;
/// Writes per run.
const WRITES: usize = 128;
const ROUNDS: usize = 5;

/// MiB/s of `WRITES` writes on a new stream of `conn`, until `sink` has read them all.
async fn write_all_to(conn: &quinn::Connection, sink: tokio::task::JoinHandle<usize>) -> f64 {
    let data = vec![7u8; WRITE];
    let start = Instant::now();
    let mut send = conn.open_uni().await.unwrap();
    for _ in 0..WRITES {
        send.write_all(&data).await.unwrap();
    }
    send.finish().unwrap();
    let got = sink.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, WRITE * WRITES);
    (got as f64 / f64::from(1 << 20)) / secs
}

/// MiB/s of `WRITES` writes through a raw stream spliced by a forwarder to a reading peer.
async fn raw_run() -> f64 {
    let fwd_id = Identity::generate();
    let forwarder = quinn::Endpoint::server(
        top_proto::tls::server_config(&fwd_id).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let fwd_addr =
        top_proto::addr::RelayAddr::new(fwd_id.relay_id(), forwarder.local_addr().unwrap());
    let splice = tokio::spawn(async move {
        let peer = forwarder.accept().await.unwrap().await.unwrap();
        let client = forwarder.accept().await.unwrap().await.unwrap();
        let mut from = client.accept_uni().await.unwrap();
        let mut to = peer.open_uni().await.unwrap();
        // As the relay does: chunks as quinn holds them, no copy.
        while let Some(chunk) = from.read_chunk(64 * 1024, true).await.unwrap() {
            to.write_chunk(chunk.bytes).await.unwrap();
        }
        to.finish().unwrap();
        to.stopped().await.ok();
        drop((forwarder, peer, client));
    });
    let peer_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = top_proto::net::dial::dial(&peer_ep, &Identity::generate(), &fwd_addr)
        .await
        .unwrap();
    let sink = tokio::spawn(async move {
        let mut recv = peer.accept_uni().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while let Some(n) = recv.read(&mut buf).await.unwrap() {
            got += n;
        }
        drop(peer_ep);
        got
    });
    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&client_ep, &Identity::generate(), &fwd_addr)
        .await
        .unwrap();
    let rate = write_all_to(&conn, sink).await;
    splice.await.unwrap();
    drop((conn, client_ep));
    rate
}

/// MiB/s of `WRITES` writes on a raw stream straight to a reading peer (one QUIC hop: the
/// ceiling of anything carried over QUIC here).
async fn direct_run() -> f64 {
    let peer_id = Identity::generate();
    let server = quinn::Endpoint::server(
        top_proto::tls::server_config(&peer_id).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = top_proto::addr::RelayAddr::new(peer_id.relay_id(), server.local_addr().unwrap());
    let sink = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while let Some(n) = recv.read(&mut buf).await.unwrap() {
            got += n;
        }
        drop((conn, server));
        got
    });
    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&client_ep, &Identity::generate(), &addr)
        .await
        .unwrap();
    let rate = write_all_to(&conn, sink).await;
    drop((conn, client_ep));
    rate
}

/// MiB/s of `WRITES` writes on a pipe between two clients of `relay`.
async fn pipe_run(relay: &Relay) -> f64 {
    let alice = Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    let bob = Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    alice.synced().await.unwrap();
    bob.synced().await.unwrap();
    let data = vec![7u8; WRITE];
    let start = Instant::now();
    let (mut pipe, accepted) = tokio::join!(
        async { alice.open_pipe(&bob.id()).await.unwrap() },
        bob.accept_pipe()
    );
    let mut accepted = accepted.unwrap();
    let reading = async {
        let mut got = 0;
        while let Some(piece) = accepted.recv().await.unwrap() {
            got += piece.len();
        }
        got
    };
    let writing = async {
        for _ in 0..WRITES {
            pipe.send(&data).await.unwrap();
        }
        pipe.close().await.unwrap();
    };
    let (got, ()) = tokio::join!(reading, writing);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, WRITE * WRITES);
    alice.close().await;
    bob.close().await;
    (got as f64 / f64::from(1 << 20)) / secs
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), InitOptions::loopback()).unwrap();
        let relay = Relay::start(dir.path()).await.unwrap();
        println!("pipe stream, {WRITES} writes of {} KiB each", WRITE / 1024);
        println!(
            "{:<6} {:>14} {:>18} {:>12} {:>12}",
            "round", "direct MiB/s", "via forwarder MiB/s", "pipe MiB/s", "pipe / fwd"
        );
        let mut ratios = Vec::new();
        for round in 1..=ROUNDS {
            let direct = direct_run().await;
            let raw = raw_run().await;
            let pipe = pipe_run(&relay).await;
            ratios.push(pipe / raw);
            println!(
                "{round:<6} {direct:>14.0} {raw:>18.0} {pipe:>12.0} {:>12.2}",
                pipe / raw
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!("median pipe / raw: {:.2}", ratios[ROUNDS / 2]);
        relay.shutdown().await;
    });
}
