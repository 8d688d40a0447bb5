//! Realtime pipes against raw QUIC datagrams, 1200-byte payloads, on loopback in one process.
//!
//! Baseline: two endpoints with the relay's own QUIC settings, one connection, datagrams sent
//! straight between them. Measured: a realtime pipe between two clients through one relay
//! (sealed end to end, flow id rewritten). For each, every round: the capacity (the sender as
//! fast as its queue takes, datagrams delivered per second), a paced run at a video call's rate
//! and one at 80% of the realtime pipe's capacity of that round: loss and one-way latency
//! p50/p99.
//!
//! `cargo bench --bench realtime`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use top_client::{Client, Identity, RealtimeReceiver, RealtimeSender, SEND_QUEUE_LIMIT, Sent};
use top_proto::addr::RelayAddr;
use top_proto::net::path_mtu::MtuNudge;
use top_proto::tls::DATAGRAM_SEND_BUFFER;
use top_relay::{InitOptions, Relay, init};

const PAYLOAD: usize = 1200;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 5;
/// Datagrams per second of a 30 fps video call (about 3.5 Mbit/s).
const CALL_RATE: f64 = 360.0;
/// How long the receiver waits for stragglers once the sender stopped.
const GRACE: Duration = Duration::from_millis(300);

/// The sending side of either path.
enum Tx {
    /// A connection, waking it while its datagrams are refused as too large (as every sender
    /// in the relay and the SDK does).
    Raw(quinn::Connection, MtuNudge),
    Pipe(Box<RealtimeSender>),
}

/// The receiving side of either path.
enum Rx {
    Raw(quinn::Connection),
    Pipe(Box<RealtimeReceiver>),
}

impl Tx {
    /// Sends now if the queue has room (the same bound on both paths): `Ok(false)` when the
    /// datagram was refused at the sender (its queue full, or too large for the path now);
    /// `Err` once the connection or the pipe is gone.
    fn try_send(&mut self, payload: &[u8]) -> Result<bool, String> {
        match self {
            Tx::Raw(conn, nudge) => {
                let queued = DATAGRAM_SEND_BUFFER.saturating_sub(conn.datagram_send_buffer_space());
                if queued + payload.len() > SEND_QUEUE_LIMIT {
                    return Ok(false);
                }
                match conn.send_datagram(bytes::Bytes::copy_from_slice(payload)) {
                    Ok(()) => Ok(true),
                    Err(quinn::SendDatagramError::TooLarge) => {
                        nudge.refused(conn);
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Tx::Pipe(pipe) => match pipe.send(payload) {
                Ok(sent) => Ok(sent == Sent::Queued),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

impl Tx {
    /// Black holes quinn detected on the raw connection (the pipe's count its too-large drops).
    fn black_holes(&self) -> u64 {
        match self {
            Tx::Raw(conn, _) => conn.stats().path.black_holes_detected,
            Tx::Pipe(_) => 0,
        }
    }
}

impl Rx {
    async fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        match self {
            Rx::Raw(conn) => {
                let d = conn.read_datagram().await.ok()?;
                out[..d.len()].copy_from_slice(&d);
                Some(d.len())
            }
            Rx::Pipe(pipe) => pipe.recv(out).await.ok().flatten(),
        }
    }
}

/// What one run delivered.
struct Run {
    attempted: u64,
    /// Of those, refused at the sender (queue full, or too large for the path then).
    refused: u64,
    received: u64,
    /// Black holes detected on a raw connection during the run.
    black_holes: u64,
    /// One-way delays, microseconds.
    delays: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.received as f64 / ROUND.as_secs_f64()
    }

    fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.attempted.max(1) as f64
    }

    fn refused(&self) -> f64 {
        self.refused as f64 / self.attempted.max(1) as f64
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.delays.sort_unstable();
        let i = ((self.delays.len() as f64 - 1.0) * p).round() as usize;
        self.delays.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Counts what arrives (and each one's delay) until nothing came for [`GRACE`] after `done`;
/// runs as its own task, beside the sender.
async fn receive(mut rx: Rx, base: Instant, done: Arc<AtomicBool>) -> (Rx, u64, Vec<u64>) {
    let mut out = vec![0u8; 2048];
    let (mut received, mut delays) = (0u64, Vec::new());
    loop {
        match tokio::time::timeout(GRACE, rx.recv(&mut out)).await {
            Ok(Some(n)) if n >= 8 => {
                let sent_us = u64::from_le_bytes(out[..8].try_into().unwrap_or_default());
                let now_us = base.elapsed().as_micros() as u64;
                delays.push(now_us.saturating_sub(sent_us));
                received += 1;
            }
            Ok(Some(_)) => {}
            // The pipe (or the connection) closed: nothing more will come.
            Ok(None) => return (rx, received, delays),
            Err(_) if done.load(Ordering::Relaxed) => return (rx, received, delays),
            Err(_) => {}
        }
    }
}

/// Sends for one round on a thread of its own, as an app's capture loop would: as fast as the
/// queue takes (`rate` None) or paced at `rate` per second, each datagram at its due time (the
/// thread sleeps to it with the OS's fine timer, so the pacer itself sends no bursts unless
/// the thread was held up). Each datagram carries the time it actually left.
fn send_round(tx: &mut Tx, base: Instant, rate: Option<f64>) -> (u64, u64) {
    let mut payload = [0u8; PAYLOAD];
    let (mut attempted, mut refused) = (0u64, 0u64);
    let end = base + ROUND;
    loop {
        if let Some(rate) = rate {
            let due = base + Duration::from_secs_f64(attempted as f64 / rate);
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        } else if Instant::now() >= end {
            break;
        }
        payload[..8].copy_from_slice(&(base.elapsed().as_micros() as u64).to_le_bytes());
        match tx.try_send(&payload) {
            Ok(true) => attempted += 1,
            // Paced: refused at the sender is a loss, as it is for a call.
            Ok(false) if rate.is_some() => {
                attempted += 1;
                refused += 1;
            }
            // Flat out: the queue is full; it drains in well under this.
            Ok(false) => std::thread::sleep(Duration::from_micros(20)),
            Err(e) => panic!("the path closed during the bench: {e}"),
        }
    }
    (attempted, refused)
}

/// One round: the sender on its thread, the receiver as a task beside it.
async fn run(tx: &mut Option<Tx>, rx: &mut Option<Rx>, rate: Option<f64>) -> Run {
    let base = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let (Some(mut sender), Some(receiver)) = (tx.take(), rx.take()) else {
        panic!("the pipe's halves are gone");
    };
    let receiving = tokio::spawn(receive(receiver, base, done.clone()));
    let sending = tokio::task::spawn_blocking(move || {
        let counts = send_round(&mut sender, base, rate);
        (sender, counts)
    });
    let (sender, (attempted, refused)) = sending.await.unwrap();
    let black_holes = sender.black_holes();
    done.store(true, Ordering::Relaxed);
    let (receiver, received, delays) = receiving.await.unwrap();
    *tx = Some(sender);
    *rx = Some(receiver);
    Run {
        attempted,
        refused,
        received,
        black_holes,
        delays,
    }
}

/// Two endpoints connected directly, with the relay's QUIC settings.
async fn raw_pair() -> (quinn::Endpoint, quinn::Endpoint, Option<Tx>, Option<Rx>) {
    let server_id = Identity::generate();
    let config = top_proto::tls::server_config(&server_id).unwrap();
    let server = top_proto::net::endpoint::server_endpoint(
        config,
        "127.0.0.1:0".parse().unwrap(),
        &server_id,
    )
    .unwrap();
    let addr = RelayAddr {
        id: server_id.relay_id(),
        host_port: server.local_addr().unwrap().to_string(),
    };
    let client = top_proto::net::endpoint::client_endpoint(&addr.host_port).unwrap();
    let accept = async { server.accept().await.unwrap().await.unwrap() };
    let dialer = Identity::generate();
    let (incoming, outgoing) =
        tokio::join!(accept, top_proto::net::dial::dial(&client, &dialer, &addr));
    (
        server,
        client,
        Some(Tx::Raw(outgoing.unwrap(), MtuNudge::default())),
        Some(Rx::Raw(incoming)),
    )
}

/// A counter's value in the relay's metrics text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let alice = Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    let bob = Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    bob.synced().await.unwrap();
    let bob_id = bob.id();
    let (opened, accepted) = tokio::join!(
        alice.open_realtime_pipe(&bob_id),
        bob.accept_realtime_pipe()
    );
    let (a_send, _a_recv) = opened.unwrap().split();
    let (_b_send, b_recv) = accepted.unwrap().split();
    let (mut pipe_tx, mut pipe_rx) = (
        Some(Tx::Pipe(Box::new(a_send))),
        Some(Rx::Pipe(Box::new(b_recv))),
    );

    println!("realtime pipe through one relay vs raw quinn datagrams, {PAYLOAD}-byte payloads");
    println!("capacity: pkt/s delivered with the sender as fast as its queue takes");
    println!(
        "call: paced at {CALL_RATE} pkt/s (a 30 fps video call); load: paced at 80% of the pipe's capacity"
    );
    println!(
        "loss % (of it, refused at the sender: its queue full or the path too small %), one-way latency p50 / p99 ms"
    );
    println!(
        "round | raw cap  pipe cap  ratio | call: raw p50/p99  pipe loss p50/p99 | load pkt/s: raw loss (sender) p50/p99 | pipe loss (sender) p50/p99"
    );
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        // A fresh direct connection each round: one that was overrun (the capacity runs) can
        // sit with a collapsed congestion window for seconds, which is not what is measured.
        let (_server, _client, mut raw_tx, mut raw_rx) = raw_pair().await;
        let raw = run(&mut raw_tx, &mut raw_rx, None).await;
        let pipe = run(&mut pipe_tx, &mut pipe_rx, None).await;
        let ratio = pipe.rate() / raw.rate();
        ratios.push(ratio);
        let (_server, _client, mut raw_tx, mut raw_rx) = raw_pair().await;
        let mut raw_call = run(&mut raw_tx, &mut raw_rx, Some(CALL_RATE)).await;
        let mut pipe_call = run(&mut pipe_tx, &mut pipe_rx, Some(CALL_RATE)).await;
        // (At least one datagram a second: a round whose capacity run delivered nothing shows
        // as a load of 0 and loses or delivers those.)
        let load = (0.8 * pipe.rate()).max(1.0);
        let (_server, _client, mut raw_tx, mut raw_rx) = raw_pair().await;
        let mut raw_load = run(&mut raw_tx, &mut raw_rx, Some(load)).await;
        let mut pipe_load = run(&mut pipe_tx, &mut pipe_rx, Some(load)).await;
        println!(
            "{round:>5} | {:>7.0}  {:>8.0}  {ratio:.2} | {:.3}/{:.3}  {:.2}% {:.3}/{:.3} | {load:>6.0}: {:.2}% ({:.2}%) {:.3}/{:.3} | {:.2}% ({:.2}%) {:.3}/{:.3}",
            raw.rate(),
            pipe.rate(),
            raw_call.percentile(0.5),
            raw_call.percentile(0.99),
            pipe_call.loss() * 100.0,
            pipe_call.percentile(0.5),
            pipe_call.percentile(0.99),
            raw_load.loss() * 100.0,
            raw_load.refused() * 100.0,
            raw_load.percentile(0.5),
            raw_load.percentile(0.99),
            pipe_load.loss() * 100.0,
            pipe_load.refused() * 100.0,
            pipe_load.percentile(0.5),
            pipe_load.percentile(0.99),
        );
        if let (Some(Tx::Pipe(tx)), Some(Rx::Pipe(rx))) = (&pipe_tx, &pipe_rx) {
            let (sent, got) = (tx.stats(), rx.stats());
            let metric = |name: &str| counter(&relay.metrics_text(), name);
            println!(
                "      | raw black holes (cap, call, load): {} {} {}; pipe drops so far: sender queue {} too large {}; relay queue {} unpaid {} too large {}; receiver inbox {}",
                raw.black_holes,
                raw_call.black_holes,
                raw_load.black_holes,
                sent.dropped_queue,
                sent.dropped_too_large,
                metric("toprelay_realtime_dropped_queue_total"),
                metric("toprelay_realtime_dropped_unpaid_total"),
                metric("toprelay_realtime_dropped_too_large_total"),
                got.dropped_inbox,
            );
        }
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "pipe/raw capacity: median {:.2} (min {:.2}, max {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}
