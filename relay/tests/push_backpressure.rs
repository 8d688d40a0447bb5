//! A mailbox push bigger than the session's queue waits for room without starving the
//! session's answers: a client that has not read yet still gets every answer to what it sends,
//! and is offered every stored message before `Synced`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{metric, open_session, sealed_envelope, store_for_offline};
use top_proto::frame::{Outcome, SessionFrame};
use top_proto::identity::Identity;
use top_relay::{InitOptions, Relay, init};

/// More than a session's delivery queue holds.
const STORED: usize = 5000;
/// Messages the recipient sends while its push is waiting for room.
const SENT: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn a_big_push_waits_for_room_without_starving_answers() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );

    store_for_offline(&relay.addr(), &alice, bob.account_id(), STORED).await;

    // Bob connects and, before reading anything, sends to offline carol.
    let mut bob_session = open_session(&relay.addr(), &bob).await;
    let mut waiting: HashSet<_> = HashSet::new();
    for i in 0..SENT {
        let env = sealed_envelope(&bob, carol.account_id(), format!("c{i}").as_bytes());
        waiting.insert(env.id);
        bob_session.write(&SessionFrame::Send(env)).await;
    }
    let mut offered = HashSet::new();
    let mut synced = false;
    while !synced || !waiting.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(30), bob_session.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stuck: {} offered, synced {synced}, {} answers missing",
                    offered.len(),
                    waiting.len()
                )
            });
        match frame {
            SessionFrame::Deliver(env) => {
                assert!(!synced, "a stored message came after Synced");
                offered.insert(env.id);
            }
            SessionFrame::Synced => synced = true,
            SessionFrame::Accepted { id, outcome } => {
                assert_eq!(outcome, Outcome::Stored);
                waiting.remove(&id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(offered.len(), STORED, "every stored message before Synced");
    relay.shutdown().await;
}

/// Two relays without a chain, configured with each other and linked, each keeping mailboxes
/// alone.
async fn linked_pair_one_home(root: &std::path::Path) -> (Relay, Relay) {
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    for dir in [&a_dir, &b_dir] {
        init(dir, InitOptions::loopback()).unwrap();
        one_home(dir);
    }
    let a = Relay::start(&a_dir).await.unwrap();
    let b = Relay::start(&b_dir).await.unwrap();
    // Without a chain, each relay links only with the relays its operator configured.
    a.add_peer(b.addr());
    b.add_peer(a.addr());
    tokio::time::timeout(Duration::from_secs(10), a.wait_linked(&b.id()))
        .await
        .unwrap();
    (a, b)
}

/// A client id whose only home (of `a` and `b`) is `b`, as both relays see it.
fn homed_at(b: &Relay, a: &Relay) -> Identity {
    loop {
        let id = Identity::generate();
        let home = [b.id()];
        if b.home_relays(&id.account_id()) == home && a.home_relays(&id.account_id()) == home {
            return id;
        }
    }
}

/// Sets `[mailbox] home_replicas` in a relay's config.
fn one_home(dir: &std::path::Path) {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("home_replicas = 2"), "{text}");
    std::fs::write(
        &path,
        text.replace("home_replicas = 2", "home_replicas = 1"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_relays_push_bigger_than_the_queue_arrives_whole_before_synced() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = linked_pair_one_home(root.path()).await;
    // Bob's only home relay is B; he will connect to A, so B's push crosses the link.
    let bob = homed_at(&b, &a);
    let alice = Identity::generate();
    store_for_offline(&b.addr(), &alice, bob.account_id(), STORED).await;
    assert_eq!(a.status().mailbox.messages, 0, "B alone keeps bob's mail");

    let mut bob_session = open_session(&a.addr(), &bob).await;
    let mut offered = HashSet::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), bob_session.next())
            .await
            .unwrap_or_else(|_| panic!("stuck after {} offered", offered.len()));
        match frame {
            SessionFrame::Deliver(env) => {
                offered.insert(env.id);
            }
            SessionFrame::Synced => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        offered.len(),
        STORED,
        "everything B held was offered before Synced"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_holds_a_links_pushes_back_only_once() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = linked_pair_one_home(root.path()).await;
    let (bob, alice) = (homed_at(&b, &a), Identity::generate());
    store_for_offline(&b.addr(), &alice, bob.account_id(), STORED).await;

    // Bob connects to A and never reads: A's queue towards him fills, and B's push of the
    // rest waits on A's link reader.
    let (_bob_endpoint, bob_conn) =
        common::conn_with_stream_window(&a.addr(), &bob, 16 << 10).await;
    let (mut bob_send, bob_recv) = bob_conn.open_bi().await.unwrap();
    bob_send
        .write_all(&top_proto::frame::encode_frame(&common::session_open(&bob, &a.addr())).unwrap())
        .await
        .unwrap();
    // Carol, on A, will get a message from dave, on B, over the same link.
    let (carol, dave) = (Identity::generate(), Identity::generate());
    let mut carol_session = open_session(&a.addr(), &carol).await;
    carol_session.until(|f| *f == SessionFrame::Synced).await;
    let mut dave_session = open_session(&b.addr(), &dave).await;
    dave_session.until(|f| *f == SessionFrame::Synced).await;
    // Bob reads nothing; once a push for him waited in vain, dave writes to carol: his
    // message travels behind the rest of bob's push.
    let _bob_recv = bob_recv;
    tokio::time::timeout(Duration::from_secs(60), async {
        while metric(a.http_addr(), "toprelay_pushes_stalled_total").await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("B's push never waited for bob");
    let env = sealed_envelope(&dave, carol.account_id(), b"not behind bob");
    dave_session.write(&SessionFrame::Send(env.clone())).await;
    // Every later push for bob goes on at once (each would wait 5 s otherwise).
    let got = tokio::time::timeout(
        Duration::from_secs(15),
        carol_session.until(|f| matches!(f, SessionFrame::Deliver(_))),
    )
    .await
    .expect("the link stayed stuck behind a client that does not read");
    assert_eq!(got, SessionFrame::Deliver(env));
    a.shutdown().await;
    b.shutdown().await;
}
