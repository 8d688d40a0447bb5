//! End-to-end messaging and pipes with real relays on loopback and the client SDK.

use std::path::Path;
use std::time::Duration;

use top_client::{Client, ClientError, Identity, Outcome, Reject, RelayAddr};
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

fn init_relay(dir: &Path) {
    init(dir, InitOptions::loopback()).unwrap();
}

async fn linked_pair(root: &Path) -> (Relay, Relay) {
    init_relay(&root.join("a"));
    init_relay(&root.join("b"));
    let a = Relay::start(&root.join("a")).await.unwrap();
    let b = Relay::start(&root.join("b")).await.unwrap();
    // Without a chain, each relay links only with the relays its operator configured.
    a.add_peer(b.addr());
    b.add_peer(a.addr());
    tokio::time::timeout(Duration::from_secs(10), a.wait_linked(&b.id()))
        .await
        .unwrap();
    (a, b)
}

async fn connected(relay: &RelayAddr, identity: Identity) -> Client {
    let c = Client::connect(relay, identity).await.unwrap();
    c.synced().await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn online_across_relays_offline_on_reconnect_in_order() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = linked_pair(root.path()).await;
    let alice = connected(&a.addr(), Identity::generate()).await;
    let bob = connected(&b.addr(), Identity::generate()).await;

    // Online, across relays: delivered and acknowledged end to end.
    let bob_id = bob.id();
    let (outcome, msg) = tokio::join!(alice.send(&bob_id, b"hello bob"), async {
        let m = bob.recv().await.unwrap();
        bob.ack(&m).await.unwrap();
        m
    });
    assert_eq!(outcome.unwrap(), Outcome::Delivered);
    assert_eq!(
        (msg.from, msg.body.as_slice()),
        (alice.id(), &b"hello bob"[..])
    );

    // Offline: stored; delivered in order when carol connects to either relay.
    let carol_key = Identity::generate();
    let carol = carol_key.account_id();
    for i in 0..10 {
        let outcome = alice
            .send(&carol, format!("note {i}").as_bytes())
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Stored);
    }
    let carol_client = Client::connect(&b.addr(), carol_key).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(10), carol_client.recv())
            .await
            .unwrap()
            .unwrap();
        carol_client.ack(&m).await.unwrap();
        assert_eq!(m.from, alice.id());
        got.push(String::from_utf8(m.body).unwrap());
    }
    let want: Vec<String> = (0..10).map(|i| format!("note {i}")).collect();
    assert_eq!(got, want, "order per sender");
    // Nothing is delivered twice, although both home relays held a copy.
    carol_client.synced().await.unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(500), carol_client.recv()).await;
    assert!(extra.is_err(), "duplicate delivery: {extra:?}");
    // Acked messages are deleted from the mailboxes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.status().mailbox.messages + b.status().mailbox.messages > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mailboxes not emptied after acks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mailbox_survives_relay_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("r");
    init_relay(&dir);
    let relay = Relay::start(&dir).await.unwrap();
    let alice = connected(&relay.addr(), Identity::generate()).await;
    let bob_key = Identity::generate();
    assert_eq!(
        alice
            .send(&bob_key.account_id(), b"after restart")
            .await
            .unwrap(),
        Outcome::Stored
    );
    alice.close().await;
    relay.shutdown().await;

    let relay = Relay::start(&dir).await.unwrap();
    let bob = Client::connect(&relay.addr(), bob_key).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), bob.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.body, b"after restart");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_carries_data_both_ways_through_two_relays() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = linked_pair(root.path()).await;
    let alice = connected(&a.addr(), Identity::generate()).await;
    let bob = connected(&b.addr(), Identity::generate()).await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let bob_id = bob.id();
    let (pipe, incoming) = tokio::join!(alice.open_pipe(&bob_id), bob.accept_pipe());
    let (mut pipe, mut incoming) = (pipe.unwrap(), incoming.unwrap());
    assert_eq!(incoming.peer(), alice.id());
    assert_eq!(pipe.peer(), bob.id());
    pipe.send(&big).await.unwrap();
    pipe.close().await.unwrap();
    let mut received = Vec::new();
    while let Some(chunk) = incoming.recv().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received, big);
    incoming.send(b"got it all").await.unwrap();
    assert_eq!(pipe.recv().await.unwrap().unwrap(), b"got it all");

    // A pipe to a peer that is nowhere fails clearly.
    let nobody = Identity::generate().account_id();
    assert!(
        matches!(alice.open_pipe(&nobody).await, Err(ClientError::Unreachable(p)) if p == nobody)
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_relay_id_fails_naming_both_ids() {
    let root = tempfile::tempdir().unwrap();
    init_relay(root.path());
    let relay = Relay::start(root.path()).await.unwrap();
    let impostor = Identity::generate().relay_id();
    let addr = RelayAddr {
        id: impostor,
        host_port: relay.addr().host_port,
    };
    let err = match Client::connect(&addr, Identity::generate()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected to a relay with the wrong id"),
    };
    assert!(
        err.contains(&impostor.to_string()) && err.contains(&relay.id().to_string()),
        "{err}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_mailbox_refuses_with_a_clear_reason() {
    let root = tempfile::tempdir().unwrap();
    init_relay(root.path());
    let mut config = RelayConfig::load(root.path()).unwrap();
    config.mailbox.max_messages = 3;
    config.save(root.path()).unwrap();
    let relay = Relay::start(root.path()).await.unwrap();
    let alice = connected(&relay.addr(), Identity::generate()).await;
    let bob = Identity::generate().account_id();
    for _ in 0..3 {
        assert_eq!(alice.send(&bob, b"x").await.unwrap(), Outcome::Stored);
    }
    match alice.send(&bob, b"one too many").await {
        Err(ClientError::Rejected(Reject::QuotaExceeded)) => {}
        other => panic!("expected quota refusal, got {other:?}"),
    }
    relay.shutdown().await;
}
