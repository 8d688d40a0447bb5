//! Realtime pipes end to end over real QUIC: datagrams both ways through one relay (paid) and
//! two (linked), a burst dropped at the sender's bounded queue, strangers' datagrams never
//! reaching a pipe they are not part of, unpaid traffic stopped, the send path allocating
//! nothing per datagram, and full-size datagrams back soon after a loss episode.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::lossy::{DROP_ABOVE, Lossy, forwarder};
use common::{dev_relay, funded, wait_until};
use top_client::{Client, ClientError, Identity, RealtimePipe, SEND_QUEUE_LIMIT, Sent};
use top_proto::addr::RelayAddr;
use top_proto::alloc_count::{CountingAllocator, allocations};
use top_proto::tls::BLACK_HOLE_COOLDOWN;
use top_relay::{InitOptions, Relay, init};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const PAYLOAD: usize = 1200;
const PATIENCE: Duration = Duration::from_secs(10);

fn metric(relay: &Relay, name: &str) -> u64 {
    let text = relay.metrics_text();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Connects `identity` and waits until its session is up (others can reach it).
async fn connect(relay: &Relay, identity: Identity) -> Client {
    let client = Client::connect(&relay.addr(), identity).await.unwrap();
    client.synced().await.unwrap();
    client
}

async fn pair(a: &Client, b: &Client) -> (RealtimePipe, RealtimePipe) {
    let b_id = b.id();
    let accepting = b.accept_realtime_pipe();
    tokio::pin!(accepting);
    let opened = a.open_realtime_pipe(&b_id).await.unwrap();
    let accepted = tokio::time::timeout(PATIENCE, accepting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.peer(), b.id());
    assert_eq!(accepted.peer(), a.id());
    (opened, accepted)
}

/// The realtime counters of `relays` (what a lost datagram's failure shows: where it went).
fn realtime_counters(relays: &[&Relay]) -> String {
    relays
        .iter()
        .flat_map(|r| {
            r.metrics_text()
                .lines()
                .filter(|l| l.starts_with("toprelay_realtime_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `rounds` datagrams each way, one at a time, checking each arrives intact (through
/// `relays`, whose counters a failure shows).
async fn ping_pong(a: &mut RealtimePipe, b: &mut RealtimePipe, rounds: u32, relays: &[&Relay]) {
    let mut out = vec![0u8; a.max_payload().max(b.max_payload())];
    for i in 0..rounds {
        let ping = [(i % 251) as u8; PAYLOAD];
        assert_eq!(a.send(&ping).unwrap(), Sent::Queued);
        let n = tokio::time::timeout(PATIENCE, b.recv(&mut out))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} lost:\n{}", realtime_counters(relays)))
            .unwrap()
            .unwrap();
        assert_eq!(&out[..n], &ping[..]);
        let pong = [(i % 13) as u8; 700];
        assert_eq!(b.send(&pong).unwrap(), Sent::Queued);
        let n = tokio::time::timeout(PATIENCE, a.recv(&mut out))
            .await
            .unwrap_or_else(|_| panic!("reply {i} lost:\n{}", realtime_counters(relays)))
            .unwrap()
            .unwrap();
        assert_eq!(&out[..n], &pong[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_cross_a_paying_relay_both_ways_and_each_side_pays_its_count() {
    let dir = tempfile::tempdir().unwrap();
    // A 400 KiB credit window: asked to pay at a quarter of it, a client has three quarters
    // of it (some 250 round trips here) for its receipt to land, fsync included, before the
    // relay drops its datagrams as unpaid (with 100 KiB, a loaded CI machine once took longer).
    let relay = dev_relay(dir.path(), |c| {
        c.billing.credit_window = "0.0008".into();
    })
    .await;
    let (alice, bob) = (funded(&relay, "10").await, funded(&relay, "10").await);
    let alice = connect(&relay, alice).await;
    let bob = connect(&relay, bob).await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    assert!(
        a.max_payload() >= PAYLOAD,
        "path too small: {}",
        a.max_payload()
    );
    // 600 KB one way, 380 KB the other: beyond the credit window, so the relay carries it
    // only while each side signs receipts for what it counted itself (its sends).
    ping_pong(&mut a, &mut b, 500, &[&relay]).await;
    assert_eq!(metric(&relay, "toprelay_realtime_dropped_unpaid"), 0);
    assert_eq!(metric(&relay, "toprelay_realtime_forwarded"), 1000);
    for client in [&alice, &bob] {
        let billing = client.billing().unwrap();
        let pipe_bytes = client.usage().pipe;
        assert!(pipe_bytes > 350_000, "counted {pipe_bytes}");
        wait_until("a receipt for the realtime traffic", async || {
            billing.signed.load(Ordering::Relaxed) > 0
        })
        .await;
    }
    let counts = a.stats();
    assert_eq!((counts.sent, counts.received), (500, 500));
    assert_eq!(counts.dropped_replay + counts.dropped_forged, 0);

    // Closing one side ends the pipe for the other, and the relay lets both flows go.
    let (a_send, _a_recv) = a.split();
    a_send.close();
    let mut out = vec![0u8; 2048];
    let end = tokio::time::timeout(PATIENCE, b.recv(&mut out))
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    wait_until("the relay closed the pipe", async || {
        metric(&relay, "toprelay_realtime_pipes") == 0
    })
    .await;
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

fn init_relay(dir: &Path) {
    init(dir, InitOptions::loopback()).unwrap();
}

/// A relay that does not bill, and two clients connected to it.
/// A relay without billing, started in a fresh directory.
async fn free_relay() -> (tempfile::TempDir, Relay) {
    let dir = tempfile::tempdir().unwrap();
    init_relay(dir.path());
    let relay = Relay::start(dir.path()).await.unwrap();
    (dir, relay)
}

async fn free_relay_and_two_clients() -> (tempfile::TempDir, Relay, Client, Client) {
    let (dir, relay) = free_relay().await;
    let alice = connect(&relay, Identity::generate()).await;
    let bob = connect(&relay, Identity::generate()).await;
    (dir, relay, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_cross_two_linked_relays_and_a_missing_peer_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    init_relay(&root.path().join("a"));
    init_relay(&root.path().join("b"));
    let r1 = Relay::start(&root.path().join("a")).await.unwrap();
    let r2 = Relay::start(&root.path().join("b")).await.unwrap();
    r1.add_peer(r2.addr());
    r2.add_peer(r1.addr());
    tokio::time::timeout(PATIENCE, r1.wait_linked(&r2.id()))
        .await
        .unwrap();
    let alice = connect(&r1, Identity::generate()).await;
    let bob = connect(&r2, Identity::generate()).await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    ping_pong(&mut a, &mut b, 100, &[&r1, &r2]).await;
    assert_eq!(metric(&r1, "toprelay_realtime_forwarded"), 200);
    assert_eq!(metric(&r2, "toprelay_realtime_forwarded"), 200);

    let nobody = Identity::generate().account_id();
    let missing = alice.open_realtime_pipe(&nobody).await;
    assert!(
        matches!(missing, Err(ClientError::Unreachable(p)) if p == nobody),
        "{:?}",
        missing.err()
    );
    alice.close().await;
    bob.close().await;
    r1.shutdown().await;
    r2.shutdown().await;
}

/// One thread: while the sender bursts, nothing drains its queue, as on a path far slower than
/// the sender. The queue holds at most [`SEND_QUEUE_LIMIT`]; the rest is dropped and counted.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_larger_than_the_path_is_dropped_at_the_senders_queue() {
    let (_dir, relay, alice, bob) = free_relay_and_two_clients().await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    let burst = 10_000u64;
    let payload = [7u8; PAYLOAD];
    let mut dropped = 0;
    for _ in 0..burst {
        if a.send(&payload).unwrap() == Sent::Dropped {
            dropped += 1;
        }
    }
    let held = (SEND_QUEUE_LIMIT / PAYLOAD) as u64;
    let counts = a.stats();
    assert_eq!(counts.dropped_queue, dropped);
    assert_eq!(counts.sent + dropped, burst);
    assert!(
        counts.sent <= held,
        "{} datagrams queued, more than the queue's {held}",
        counts.sent
    );
    // What was queued goes out; the pipe works on. A marker sent last arrives after at most
    // the queued datagrams, never after seconds of backlog.
    let mut out = vec![0u8; 2048];
    let mut before_marker = 0;
    loop {
        let sent = a.send(b"marker").unwrap();
        if sent == Sent::Queued {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = tokio::time::timeout(PATIENCE, b.recv(&mut out))
            .await
            .expect("the marker never came")
            .unwrap()
            .unwrap();
        if &out[..n] == b"marker" {
            break;
        }
        before_marker += 1;
    }
    assert!(
        before_marker <= counts.sent,
        "{before_marker} arrived first"
    );
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

/// A stranger's datagrams, under every flow id, reach nobody: flow ids are per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_datagrams_reach_no_pipe() {
    let (_dir, relay, alice, bob) = free_relay_and_two_clients().await;
    let mallory_key = Identity::generate();
    let mallory = connect(&relay, mallory_key.clone()).await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    // Mallory has a pipe of her own to Bob, so her connection carries realtime flows.
    let (mut m, mut mb) = pair(&mallory, &bob).await;
    ping_pong(&mut m, &mut mb, 1, &[&relay]).await;
    let endpoint = top_proto::net::endpoint::client_endpoint(&relay.addr().host_port).unwrap();
    let raw = top_proto::net::dial::dial(&endpoint, &mallory_key, &relay.addr())
        .await
        .unwrap();
    let mut forged = vec![0u8; 1300];
    // Her raw connection opens a realtime flow too (to Alice), then sprays every small id.
    let (mut send, _recv) = raw.open_bi().await.unwrap();
    let open = top_proto::frame::Open::Realtime {
        to: alice.id(),
        flow: 1,
    };
    send.write_all(&top_proto::frame::encode_frame(&open).unwrap())
        .await
        .unwrap();
    for flow in 0..64u32 {
        top_proto::realtime::set_flow(&mut forged, flow);
        raw.send_datagram(forged.clone().into()).unwrap();
    }
    wait_until("the relay dropped the stranger's datagrams", async || {
        metric(&relay, "toprelay_realtime_dropped_unknown") >= 60
    })
    .await;
    ping_pong(&mut a, &mut b, 5, &[&relay]).await;
    for counts in [a.stats(), b.stats(), mb.stats()] {
        assert_eq!(
            counts.dropped_forged + counts.dropped_replay,
            0,
            "{counts:?}"
        );
    }
    assert_eq!(b.stats().received, 5);
    alice.close().await;
    bob.close().await;
    mallory.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_stops_paying_is_stopped_at_the_credit_window() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |_| {}).await;
    let (alice, bob) = (funded(&relay, "10").await, funded(&relay, "10").await);
    let alice = connect(&relay, alice).await;
    let bob = connect(&relay, bob).await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    alice
        .billing()
        .unwrap()
        .paying
        .store(false, Ordering::Relaxed);
    // 2.4 MB offered against a 100 KiB credit window, paced so the path itself drops nothing.
    let payload = [1u8; PAYLOAD];
    for _ in 0..200 {
        for _ in 0..10 {
            a.send(&payload).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_until("the relay refused unpaid datagrams", async || {
        metric(&relay, "toprelay_realtime_dropped_unpaid") > 1000
    })
    .await;
    let mut out = vec![0u8; 2048];
    let mut got = 0u64;
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(500), b.recv(&mut out)).await
    {
        got += 1;
    }
    // Credit window (100 KiB) plus one pay-wait of traffic at most: well under the 2,000 sent.
    assert!(got < 400, "{got} unpaid datagrams delivered");
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sending_allocates_nothing_per_datagram() {
    let (_dir, relay, alice, bob) = free_relay_and_two_clients().await;
    let (mut a, mut b) = pair(&alice, &bob).await;
    let payload = [9u8; PAYLOAD];
    let mut out = vec![0u8; 2048];
    let mut sending = 0u64;
    let rounds = 2000u64;
    for _ in 0..rounds {
        let before = allocations();
        assert_eq!(a.send(&payload).unwrap(), Sent::Queued);
        sending += allocations() - before;
        let n = tokio::time::timeout(PATIENCE, b.recv(&mut out))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(n, PAYLOAD);
    }
    // One arena of 64 KiB per ~50 datagrams, plus quinn's queue growing now and then.
    assert!(
        sending * 10 < rounds,
        "{sending} allocations for {rounds} datagrams sent"
    );
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

/// A raw connection as `identity` (no billing stream, no session): what a hostile client or a
/// relay replaying someone's handshake can send.
async fn raw_conn(relay: &Relay, identity: &Identity) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = top_proto::net::endpoint::client_endpoint(&relay.addr().host_port).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, identity, &relay.addr())
        .await
        .unwrap();
    (endpoint, conn)
}

/// Sends `Open::Realtime` to `to` on a new stream; returns the stream and the relay's reply.
async fn raw_open(
    conn: &quinn::Connection,
    to: top_client::AccountId,
) -> (
    quinn::SendStream,
    quinn::RecvStream,
    top_proto::frame::RealtimeReply,
) {
    use futures::StreamExt;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let open = top_proto::frame::Open::Realtime { to, flow: 1 };
    send.write_all(&top_proto::frame::encode_frame(&open).unwrap())
        .await
        .unwrap();
    let codec = top_proto::frame::FrameCodec::<top_proto::frame::RealtimeReply>::new(1024);
    let mut replies = tokio_util::codec::FramedRead::new(recv, codec);
    let reply = replies.next().await.unwrap().unwrap();
    let parts = replies.into_parts();
    assert!(parts.read_buf.is_empty());
    (send, parts.io, reply)
}

fn record(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A relay (here a raw connection) replaying Carol's first message to Alice cannot confirm the
/// keys: Alice never hands the app a pipe "from Carol". An oversized handshake record closes the
/// attempt at the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_oversized_handshake_never_becomes_a_pipe() {
    let (_dir, relay) = free_relay().await;
    let alice = connect(&relay, Identity::generate()).await;
    let (carol, mallory) = (Identity::generate(), Identity::generate());
    let (_endpoint, raw) = raw_conn(&relay, &mallory).await;

    let (_, recorded) = top_proto::realtime::RealtimeInitiator::start(&carol, &alice.id()).unwrap();
    let (mut send, mut recv, reply) = raw_open(&raw, alice.id()).await;
    assert!(
        matches!(reply, top_proto::frame::RealtimeReply::Opened { .. }),
        "{reply:?}"
    );
    send.write_all(&record(&recorded)).await.unwrap();
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut answer).await.unwrap();
    // Without Carol's keys, the confirmation can only be made up.
    send.write_all(&record(&[7u8; top_proto::realtime::CONFIRMATION_LEN]))
        .await
        .unwrap();
    let ended = tokio::time::timeout(PATIENCE, recv.read_to_end(1 << 20)).await;
    assert!(ended.is_ok(), "the attempt was not closed");

    let (mut send, mut recv, _) = raw_open(&raw, alice.id()).await;
    send.write_all(&record(&vec![1u8; 100_000])).await.ok();
    let ended = tokio::time::timeout(PATIENCE, recv.read_to_end(1 << 20)).await;
    assert!(
        ended.is_ok(),
        "an oversized record did not close the attempt"
    );

    // The next pipe Alice is handed is a real one.
    let bob = connect(&relay, Identity::generate()).await;
    let (_b, a) = pair(&bob, &alice).await;
    assert_eq!(a.peer(), bob.id());
    assert_eq!(metric(&relay, "toprelay_realtime_pipes"), 1);
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

/// On a relay that bills, a connection without a channel opens no realtime pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_pipe_on_a_billing_relay_needs_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |_| {}).await;
    let bob = connect(&relay, funded(&relay, "10").await).await;
    let (_endpoint, raw) = raw_conn(&relay, &Identity::generate()).await;
    let (_send, _recv, reply) = raw_open(&raw, bob.id()).await;
    assert!(
        matches!(&reply, top_proto::frame::RealtimeReply::Refused(why) if why.contains("payment required")),
        "{reply:?}"
    );
    bob.close().await;
    relay.shutdown().await;
}

/// A receive-only peer drops its sending half: the pipe stays open until both halves are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_only_peer_keeps_the_pipe_open() {
    let (_dir, relay, alice, bob) = free_relay_and_two_clients().await;
    let (mut a, b) = pair(&alice, &bob).await;
    let (b_send, mut b_recv) = b.split();
    drop(b_send);
    let mut out = vec![0u8; 2048];
    for i in 0..50u8 {
        assert_eq!(a.send(&[i; 100]).unwrap(), Sent::Queued, "datagram {i}");
        let n = tokio::time::timeout(PATIENCE, b_recv.recv(&mut out))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&out[..n], &[i; 100]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Dropping the last half closes it.
    drop(b_recv);
    wait_until("the pipe closed", async || {
        metric(&relay, "toprelay_realtime_pipes") == 0
    })
    .await;
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}

/// The relay's hop to a receiver loses its full-size packets for a while, until quinn takes it
/// for a black hole and the relay refuses the sender's datagrams as too large. Once the path
/// carries them again, the receiver gets full-size datagrams within seconds although nobody
/// but the relay's refused forwarding sends anything: it wakes that connection so the probes
/// leave when the cooldown ends (nothing else would run it before the next keep-alive, 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_full_size_datagrams_back_soon_after_a_loss_episode() {
    let (_dir, relay) = free_relay().await;
    let alice = connect(&relay, Identity::generate()).await;
    let lossy = Arc::new(Lossy::default());
    let server = relay.addr().host_port.parse().unwrap();
    let via = RelayAddr {
        id: relay.id(),
        host_port: forwarder(server, lossy.clone()).await.to_string(),
    };
    let bob = Client::connect(&via, Identity::generate()).await.unwrap();
    bob.synced().await.unwrap();
    let (mut a, mut b) = pair(&alice, &bob).await;
    let big = vec![9u8; a.max_payload()];
    assert!(
        big.len() + 40 > DROP_ABOVE,
        "full-size datagrams are dropped"
    );
    let too_large = "toprelay_realtime_dropped_too_large_total";

    // The episode: the relay's full-size packets to Bob are lost, its small ones (ACKs of Bob's
    // small datagrams) arrive, until quinn judges the path a black hole.
    lossy.to_client.store(true, Ordering::Relaxed);
    let episode = async {
        while metric(&relay, too_large) == 0 {
            a.send(&big).unwrap();
            b.send(b"small").unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), episode)
        .await
        .expect("the relay's hop to Bob is judged a black hole");
    lossy.to_client.store(false, Ordering::Relaxed);

    // Only Alice sends now, full-size datagrams, which the relay refuses until its connection
    // to Bob probes the path again.
    let mut out = vec![0u8; b.max_payload()];
    let back = async {
        loop {
            a.send(&big).unwrap();
            if let Ok(Some(Ok(Some(n)))) =
                tokio::time::timeout(Duration::from_millis(10), b.recv(&mut out))
                    .await
                    .map(Some)
                && n == big.len()
            {
                return;
            }
        }
    };
    tokio::time::timeout(BLACK_HOLE_COOLDOWN + Duration::from_secs(5), back)
        .await
        .expect("full-size datagrams reach Bob again within seconds");
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}
