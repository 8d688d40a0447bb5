//! Sending does not wait on the recipient's app: a message is accepted once a relay holds it
//! durably, and its final outcome follows when the recipient acknowledges it.

use std::time::Duration;

use top_client::{Client, Identity, Outcome};
use top_relay::{InitOptions, Relay, init};

/// Longer than the relay's accept time many times over; a pass means no stall.
const PATIENCE: Duration = Duration::from_secs(10);

async fn relay(dir: &std::path::Path) -> Relay {
    init(dir, InitOptions::loopback()).unwrap();
    Relay::start(dir).await.unwrap()
}

/// A client connected to `relay` whose stored messages were all offered.
async fn synced(relay: &Relay, identity: Identity) -> Client {
    let client = Client::connect(&relay.addr(), identity).await.unwrap();
    client.synced().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_messages_itself_before_reading_is_accepted_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path()).await;
    let me = synced(&relay, Identity::generate()).await;
    let mut sending = me.send_tracked(&me.id(), b"note to self").await.unwrap();
    let accepted = tokio::time::timeout(PATIENCE, sending.accepted())
        .await
        .expect("accepted without the app reading")
        .unwrap();
    assert_eq!(accepted, Outcome::Durable);
    // Now the app reads and acknowledges: the same handle learns it was delivered.
    let msg = me.recv().await.unwrap();
    assert_eq!(msg.body, b"note to self");
    me.ack(&msg).await.unwrap();
    let delivered = tokio::time::timeout(PATIENCE, sending.delivered())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered, Outcome::Delivered);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_that_does_not_read_does_not_stall_its_senders_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path()).await;
    let alice = Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    let bob_key = Identity::generate();
    let bob = synced(&relay, bob_key.clone()).await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let body = format!("busy {i}");
        let mut sending = alice
            .send_tracked(&bob.id(), body.as_bytes())
            .await
            .unwrap();
        let accepted = tokio::time::timeout(PATIENCE, sending.accepted())
            .await
            .expect("accepted while bob's app is busy")
            .unwrap();
        assert_eq!(accepted, Outcome::Durable, "message {i}");
        handles.push(sending);
    }
    // Bob's app goes away without acknowledging anything, and comes back.
    bob.close().await;
    let bob = Client::connect(&relay.addr(), bob_key).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        let msg = tokio::time::timeout(PATIENCE, bob.recv())
            .await
            .unwrap()
            .unwrap();
        bob.ack(&msg).await.unwrap();
        if !got.contains(&msg.body) {
            got.push(msg.body);
        }
    }
    let want: Vec<Vec<u8>> = (0..20).map(|i| format!("busy {i}").into_bytes()).collect();
    assert_eq!(got, want, "all of them, in order");
    for sending in handles {
        let outcome = tokio::time::timeout(PATIENCE, sending.delivered())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Stored | Outcome::Delivered),
            "{outcome:?}"
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_keep_coming_while_the_app_does_not_read_its_inbox() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path()).await;
    let me = synced(&relay, Identity::generate()).await;
    let to = me.id();
    // Far more than the inbox holds, all to itself, and nobody reads: every one is accepted.
    let accepted = futures::stream::iter(0..3000)
        .map(|i| {
            let me = &me;
            async move {
                let mut sending = me.send_tracked(&to, format!("n{i}").as_bytes()).await?;
                sending.accepted().await
            }
        })
        .buffer_unordered(256)
        .filter(|r| std::future::ready(matches!(r, Ok(Outcome::Durable | Outcome::Delivered))))
        .count();
    let n = tokio::time::timeout(Duration::from_secs(60), accepted)
        .await
        .expect("answers stopped while the inbox was full");
    assert_eq!(n, 3000);
    // And every message is still there to read, once (sent concurrently: in no set order).
    let mut bodies = std::collections::HashSet::new();
    for _ in 0..3000 {
        let msg = tokio::time::timeout(PATIENCE, me.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(bodies.insert(msg.body), "a message read twice");
    }
    assert!((0..3000).all(|i| bodies.contains(&format!("n{i}").into_bytes())));
    relay.shutdown().await;
}
