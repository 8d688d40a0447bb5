//! Only member relays link: a stranger's key that opens a link is refused before it can claim a
//! user's presence, and so never receives the user's mail; a registered relay links at once.

mod common;

use std::time::Duration;

use common::{endpoint_and_conn, metric, open_session, sealed_envelope, store_for_offline};
use top_proto::frame::{LinkFrame, Open, SessionFrame, encode_frame};
use top_proto::identity::Identity;
use top_relay::{InitOptions, Relay, init};

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_pose_as_a_relay_and_take_mail() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    store_for_offline(&relay.addr(), &alice, bob.account_id(), 3).await;

    // A fresh key opens a link and claims bob is connected to it.
    let stranger = Identity::generate();
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &stranger).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Link).unwrap())
        .await
        .unwrap();
    let claim = LinkFrame::Presence {
        client: bob.account_id(),
        online: true,
    };
    send.write_all(&encode_frame(&claim).unwrap()).await.ok();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the relay kept a stranger's link open");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if &c.reason[..] == b"not a registered relay"),
        "{closed}"
    );
    let mut buf = [0u8; 1];
    assert!(
        !matches!(recv.read(&mut buf).await, Ok(Some(_))),
        "nothing was forwarded to the stranger"
    );
    assert_eq!(relay.status().mailbox.messages, 3, "bob's mail stays");
    assert!(relay.linked().is_empty());
    assert_eq!(
        metric(relay.http_addr(), "toprelay_links_refused_total").await,
        1
    );
    assert_eq!(
        metric(relay.http_addr(), "toprelay_bad_frames_total").await,
        0
    );

    // Bob still gets his mail.
    let mut bob_session = open_session(&relay.addr(), &bob).await;
    let mut got = 0;
    while got < 3 {
        if let SessionFrame::Deliver(_) = bob_session.next().await {
            got += 1;
        }
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_registers_itself_and_then_links() {
    let root = tempfile::tempdir().unwrap();
    let (v_dir, f_dir) = (root.path().join("v"), root.path().join("f"));
    init(&v_dir, InitOptions::loopback_dev()).unwrap();
    let validator = Relay::start(&v_dir).await.unwrap();
    init(
        &f_dir,
        InitOptions {
            peers: vec![validator.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let follower = Relay::start(&f_dir).await.unwrap();
    // The validator's config does not name the follower: the registry lets it in.
    tokio::time::timeout(
        Duration::from_secs(30),
        validator.wait_linked(&follower.id()),
    )
    .await
    .expect("the follower never linked");
    let chain = validator.chain().unwrap();
    let record = chain
        .with_state(|s| {
            s.relay(&top_proto::id::AccountId::from_wire(
                *follower.id().as_bytes(),
            ))
            .cloned()
        })
        .expect("the follower is registered");
    assert_eq!(record.addrs, [follower.addr().host_port]);
    // A message crosses the link.
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let mut bob_session = open_session(&follower.addr(), &bob).await;
    bob_session.until(|f| *f == SessionFrame::Synced).await;
    let mut alice_session = open_session(&validator.addr(), &alice).await;
    alice_session.until(|f| *f == SessionFrame::Synced).await;
    let env = sealed_envelope(&alice, bob.account_id(), b"over the link");
    alice_session.write(&SessionFrame::Send(env.clone())).await;
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        bob_session.until(|f| matches!(f, SessionFrame::Deliver(_))),
    )
    .await
    .unwrap();
    assert_eq!(got, SessionFrame::Deliver(env));
    follower.shutdown().await;
    validator.shutdown().await;
}
