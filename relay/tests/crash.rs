//! Crash safety with the real daemon: a message the relay reported as stored survives kill -9.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, open_session, sealed_envelope, start_daemon};
use top_proto::frame::{Outcome, SessionFrame};
use top_proto::identity::Identity;
use top_proto::seal::Opener;

const BIN: &str = common::TOPRELAY;

#[tokio::test(flavor = "multi_thread")]
async fn accepted_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--listen", &listen, "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sender = Identity::generate();
    let recipient = Identity::generate();
    let mut sent = Vec::new();
    for round in 0..3 {
        let (mut child, addr) = start_daemon(&data);
        let mut session = open_session(&addr, &sender).await;
        for i in 0..20 {
            let env = sealed_envelope(
                &sender,
                recipient.account_id(),
                format!("round {round} msg {i}").as_bytes(),
            );
            session.write(&SessionFrame::Send(env.clone())).await;
            let id = env.id;
            let reply = session
                .until(|f| matches!(f, SessionFrame::Accepted { id: i, .. } if *i == id))
                .await;
            assert_eq!(
                reply,
                SessionFrame::Accepted {
                    id,
                    outcome: Outcome::Stored
                }
            );
            sent.push(env.id);
        }
        // SIGKILL right after the last acknowledgement: no graceful flush.
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // What the relay holds is sealed: no plaintext in its store.
    let store = std::fs::read(data.join("store.redb")).unwrap();
    assert!(
        !store.windows(11).any(|w| w == b"round 0 msg"),
        "plaintext found in the relay's store"
    );

    let (mut child, addr) = start_daemon(&data);
    let mut session = open_session(&addr, &recipient).await;
    let mut opener = Opener::new(recipient.clone());
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .unwrap()
        {
            SessionFrame::Deliver(env) => {
                let (from, content) = opener.open(&env.sealed).unwrap();
                assert_eq!(from, sender.account_id());
                assert!(content.body.starts_with(b"round "));
                got.push(env.id);
            }
            SessionFrame::Synced => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, sent, "every accepted message, in order per sender");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A message answered `Durable` (its recipient is connected but does not acknowledge) is on
/// disk: after kill -9 and a restart, the recipient is offered it when it connects again.
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_answer_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--listen", &listen, "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let sender = Identity::generate();
    let recipient = Identity::generate();
    let (mut child, addr) = start_daemon(&data);
    // The recipient is connected and reads, but its app never acknowledges.
    let mut slow = open_session(&addr, &recipient).await;
    slow.until(|f| matches!(f, SessionFrame::Synced)).await;
    let mut session = open_session(&addr, &sender).await;
    let env = sealed_envelope(&sender, recipient.account_id(), b"kept while in flight");
    session.write(&SessionFrame::Send(env.clone())).await;
    let delivered = slow.until(|f| matches!(f, SessionFrame::Deliver(_))).await;
    assert_eq!(delivered, SessionFrame::Deliver(env.clone()));
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        session.until(|f| matches!(f, SessionFrame::Accepted { .. })),
    )
    .await
    .expect("an answer while the recipient holds the message unacknowledged");
    assert_eq!(
        reply,
        SessionFrame::Accepted {
            id: env.id,
            outcome: Outcome::Durable
        }
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, addr) = start_daemon(&data);
    let mut again = open_session(&addr, &recipient).await;
    let offered = again
        .until(|f| matches!(f, SessionFrame::Deliver(_) | SessionFrame::Synced))
        .await;
    assert_eq!(offered, SessionFrame::Deliver(env));
    child.kill().unwrap();
    child.wait().unwrap();
}
