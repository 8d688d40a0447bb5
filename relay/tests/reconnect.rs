//! A client that reconnects while its old session is still open gets every stored message on
//! the new session before `Synced`, including those the old session was offered and never acked.

mod common;

use std::time::Duration;

use common::{open_session, store_for_offline};
use top_proto::frame::SessionFrame;
use top_proto::identity::Identity;
use top_relay::{InitOptions, Relay, init};

const STORED: usize = 300;

/// Reads one session until `Synced`; returns the ids it was offered.
async fn offered_until_synced(s: &mut common::RawSession) -> Vec<top_proto::frame::MsgId> {
    let mut ids = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("no Synced")
        {
            SessionFrame::Deliver(env) => ids.push(env.id),
            SessionFrame::Synced => return ids,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_session_is_offered_what_the_old_one_never_acked() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let alice = Identity::generate();
    let bob = Identity::generate();

    let mut sent = store_for_offline(&relay.addr(), &alice, bob.account_id(), STORED).await;

    // Bob's first session is offered everything and acks nothing (its connection went quiet).
    let mut old = open_session(&relay.addr(), &bob).await;
    let first = offered_until_synced(&mut old).await;
    assert_eq!(first.len(), STORED);

    // Bob reconnects before the old session times out.
    let mut new = open_session(&relay.addr(), &bob).await;
    let mut offered = offered_until_synced(&mut new).await;
    offered.sort();
    offered.dedup();
    sent.sort();
    assert!(
        offered == sent,
        "the new session was told Synced after {} of {STORED} messages",
        offered.len()
    );
    for id in &offered {
        new.write(&SessionFrame::Ack { id: *id }).await;
    }
    drop(old);

    // Everything was acknowledged: soon a later session finds the mailbox empty (one opened
    // before the acks arrived is offered them again, and acks them too).
    let expect_empty = async {
        loop {
            let mut later = open_session(&relay.addr(), &bob).await;
            let again = offered_until_synced(&mut later).await;
            if again.is_empty() {
                return;
            }
            for id in again {
                later.write(&SessionFrame::Ack { id }).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), expect_empty)
        .await
        .expect("acknowledged messages were offered again");
    relay.shutdown().await;
}
