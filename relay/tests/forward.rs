//! The entry's forwarder of 2-hop routes, attacked: it forwards only the packets of the client
//! that asked (by its exact address), only to the relay it named (a handshake proves it), one
//! route per address, no more routes than configured, and never after the forward stream ends.
//! Real relays and real QUIC on loopback; a counting UDP hop in front of the exit shows what
//! reached it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::net::dial::dial;
use top_proto::vpn::forward::{ForwardReply, MAX_FORWARD_FRAME};
use top_relay::{InitOptions, Relay, init};

/// Marks a stranger's packets.
const MAGIC: &[u8] = b"stranger-packet-";

/// A UDP hop in front of `target` that counts the packets it passes, and those carrying
/// [`MAGIC`].
struct Counter {
    addr: SocketAddr,
    magic: Arc<AtomicU64>,
}

async fn counter(target: SocketAddr) -> Counter {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let magic = Arc::new(AtomicU64::new(0));
    let m = magic.clone();
    tokio::spawn(async move {
        // One socket towards the target per source, as the entry's routes are.
        let mut backs: std::collections::HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> =
            Default::default();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            if buf[..n].windows(MAGIC.len()).any(|w| w == MAGIC) {
                m.fetch_add(1, Ordering::Relaxed);
            }
            let back = match backs.get(&from) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(target).await.unwrap();
                    let (f, b2) = (front.clone(), b.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(n) = b2.recv(&mut buf).await {
                            f.send_to(&buf[..n], from).await.ok();
                        }
                    });
                    backs.insert(from, b.clone());
                    b
                }
            };
            back.send(&buf[..n]).await.ok();
        }
    });
    Counter { addr, magic }
}

/// A counter of `relay`'s metrics.
fn metric(relay: &Relay, name: &str) -> u64 {
    let prefix = format!("toprelay_{name} ");
    let total = format!("toprelay_{name}_total ");
    relay
        .metrics_text()
        .lines()
        .find_map(|l| {
            l.strip_prefix(total.as_str())
                .or(l.strip_prefix(prefix.as_str()))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn start(dir: &std::path::Path, name: &str, routes: usize, peers: Vec<RelayAddr>) -> Relay {
    let dir = dir.join(name);
    init(
        &dir,
        InitOptions {
            peers,
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let mut c = top_relay::config::RelayConfig::load(&dir).unwrap();
    c.forward_routes = routes;
    c.save(&dir).unwrap();
    Relay::start(&dir).await.unwrap()
}

/// Asks `entry` on `conn` to forward to `to`; the reply and the stream held open.
async fn ask(conn: &quinn::Connection, to: &RelayAddr) -> (ForwardReply, quinn::SendStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Forward { to: to.clone() }).unwrap())
        .await
        .unwrap();
    let mut replies = FramedRead::new(recv, FrameCodec::<ForwardReply>::new(MAX_FORWARD_FRAME));
    let reply = tokio::time::timeout(Duration::from_secs(15), replies.next())
        .await
        .expect("no reply in time")
        .expect("stream closed")
        .unwrap();
    (reply, send)
}

fn refused(reply: &ForwardReply, why: &str) {
    match reply {
        ForwardReply::Refused(r) => assert!(r.contains(why), "refused for {r:?}, not {why:?}"),
        other => panic!("not refused ({why}): {other:?}"),
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_the_client_that_asked_reaches_only_the_exit_it_named() {
    let dir = tempfile::tempdir().unwrap();
    let exit = start(dir.path(), "exit", 1, Vec::new()).await;
    // The entry knows the exit (a member: only members are forwarded to).
    let entry = start(dir.path(), "entry", 1, vec![exit.addr()]).await;
    let hop = counter(exit.addr().host_port.parse().unwrap()).await;
    let exit_there = RelayAddr {
        id: exit.id(),
        host_port: hop.addr.to_string(),
    };

    let me = Identity::generate();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let control = dial(&endpoint, &me, &entry.addr()).await.unwrap();

    // A relay nobody knows (any host with a key), the entry itself, or a member at an address
    // where it is not: refused.
    let stranger_relay = RelayAddr {
        id: Identity::generate().relay_id(),
        host_port: hop.addr.to_string(),
    };
    refused(&ask(&control, &stranger_relay).await.0, "not a member");
    refused(&ask(&control, &entry.addr()).await.0, "this relay itself");
    let elsewhere = RelayAddr {
        id: exit.id(),
        host_port: entry.addr().host_port,
    };
    refused(&ask(&control, &elsewhere).await.0, "unreachable");

    // The named exit: forwarded, and a QUIC connection to it through the entry works (the
    // client's own, end to end: the exit proves its identity to the client).
    let (reply, stream) = ask(&control, &exit_there).await;
    let ForwardReply::Ready { port } = reply else {
        panic!("not forwarded: {reply:?}");
    };
    let through = RelayAddr {
        id: exit.id(),
        host_port: format!("127.0.0.1:{port}"),
    };
    let tunnel = tokio::time::timeout(Duration::from_secs(10), dial(&endpoint, &me, &through))
        .await
        .expect("no handshake through the entry")
        .unwrap();
    assert_eq!(metric(&entry, "vpn_forwards"), 1);

    // A second route for the same address, or a route beyond the configured one: refused
    // (checked before the exit is dialled).
    refused(&ask(&control, &exit_there).await.0, "already");
    let other = Identity::generate();
    let other_endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let other_control = dial(&other_endpoint, &other, &entry.addr()).await.unwrap();
    refused(&ask(&other_control, &exit_there).await.0, "as many routes");

    // A stranger at the forwarding port: nothing of it reaches the exit.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = metric(&entry, "vpn_dropped_stranger");
    let mut packet = MAGIC.to_vec();
    packet.resize(1200, 0x42);
    // In bursts the socket buffer holds (the count waits for each).
    for burst in 1..=20 {
        for _ in 0..10 {
            stranger
                .send_to(&packet, ("127.0.0.1", port))
                .await
                .unwrap();
        }
        wait_for("the stranger's packets dropped", || {
            metric(&entry, "vpn_dropped_stranger") >= before + burst * 10
        })
        .await;
    }
    assert_eq!(
        hop.magic.load(Ordering::Relaxed),
        0,
        "a stranger reached the exit"
    );
    // The client's own connection is still carried.
    let (mut s, _r) = tunnel.open_bi().await.unwrap();
    s.write_all(&encode_frame(&Open::Control).unwrap())
        .await
        .unwrap();
    assert!(tunnel.close_reason().is_none());

    // The forward stream ends (the connection stays): so does the route, and the client's
    // packets are a stranger's.
    drop(stream);
    wait_for("the route ended", || metric(&entry, "vpn_forwards") == 0).await;
    let before = metric(&entry, "vpn_dropped_stranger");
    let (mut s, _r) = tunnel.open_bi().await.unwrap();
    s.write_all(&[0u8; 1000]).await.ok();
    wait_for("the client's later packets dropped", || {
        metric(&entry, "vpn_dropped_stranger") > before
    })
    .await;
    assert!(control.close_reason().is_none());
    // Its room is free again.
    let (reply, _stream) = ask(&other_control, &exit_there).await;
    assert!(matches!(reply, ForwardReply::Ready { .. }), "{reply:?}");
    entry.shutdown().await;
    exit.shutdown().await;
}

#[tokio::test]
async fn a_relay_that_bills_forwards_nothing_for_a_stranger_with_no_channel() {
    let dir = tempfile::tempdir().unwrap();
    let exit_dir = dir.path().join("exit");
    init(&exit_dir, InitOptions::loopback_dev()).unwrap();
    let exit = Relay::start(&exit_dir).await.unwrap();
    let me = Identity::generate();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // The dev-chain relay bills; a fresh key with no channel asks it to be an entry.
    let other_exit = start(dir.path(), "other", 1, Vec::new()).await;
    let control = dial(&endpoint, &me, &exit.addr()).await.unwrap();
    refused(
        &ask(&control, &other_exit.addr()).await.0,
        "payment required",
    );
    assert_eq!(metric(&exit, "vpn_forwards"), 0);
    exit.shutdown().await;
    other_exit.shutdown().await;
}

#[tokio::test]
async fn one_request_at_a_time_and_a_moved_connection_loses_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let exit = start(dir.path(), "exit", 4, Vec::new()).await;
    let entry = start(dir.path(), "entry", 4, vec![exit.addr()]).await;
    let me = Identity::generate();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let control = dial(&endpoint, &me, &entry.addr()).await.unwrap();

    // The exit named at an address that never answers: the entry's check of it waits, and a
    // second request on the connection meanwhile is refused (no pile of dials per connection).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = RelayAddr {
        id: exit.id(),
        host_port: silent.local_addr().unwrap().to_string(),
    };
    let (mut first, _first_recv) = control.open_bi().await.unwrap();
    first
        .write_all(&encode_frame(&Open::Forward { to: nowhere }).unwrap())
        .await
        .unwrap();
    // The entry is dialling it once its first packet arrives there.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let silent = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 2048];
        silent.recv(&mut buf).map(|_| silent)
    })
    .await
    .unwrap()
    .expect("the entry never dialled the exit's given address");
    refused(
        &ask(&control, &exit.addr()).await.0,
        "one forward request at a time",
    );
    drop((first, silent));

    // A fresh connection forwards; once it moves to another address (QUIC migration), its
    // route ends: packets from the new address are not forwarded for the old one's sake.
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let control = dial(&endpoint, &me, &entry.addr()).await.unwrap();
    let (reply, _stream) = ask(&control, &exit.addr()).await;
    assert!(matches!(reply, ForwardReply::Ready { .. }), "{reply:?}");
    wait_for("the route up", || metric(&entry, "vpn_forwards") == 1).await;
    endpoint
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    // Traffic on the control connection makes the entry see the new address.
    let (mut s, _r) = control.open_bi().await.unwrap();
    s.write_all(&encode_frame(&Open::Control).unwrap())
        .await
        .unwrap();
    wait_for("the moved route ended", || {
        metric(&entry, "vpn_forwards") == 0
    })
    .await;
    entry.shutdown().await;
    exit.shutdown().await;
}
