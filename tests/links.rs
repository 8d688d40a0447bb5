//! Links on demand: relays that found each other through the registry do not link with every
//! other relay. A message for a user its sender's relay does not know goes through one of the
//! user's home relays and then straight to the user's relay; a pipe finds its peer through
//! the homes; mail waits at the homes and follows the user to any relay.

mod common;

use std::time::Duration;

use common::wait_until_for;
use top_client::{Client, Identity, Outcome};
use top_proto::id::RelayId;
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

/// How many relays the test runs: two are the chosen user's homes, two are not.
const RELAYS: usize = 4;

async fn start(dir: &std::path::Path, bootstrap: Option<&Relay>, link_idle_secs: u64) -> Relay {
    let options = match bootstrap {
        None => InitOptions::loopback_dev(),
        Some(b) => InitOptions {
            bootstrap: vec![b.addr()],
            ..InitOptions::loopback()
        },
    };
    init(dir, options).unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    config.ledger.block_interval_ms = 200;
    config.billing.enabled = false;
    config.link_idle_secs = link_idle_secs;
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

/// Four registered relays, each knowing all four.
async fn network(dir: &std::path::Path, link_idle_secs: u64) -> Vec<Relay> {
    let first = start(&dir.join("r0"), None, link_idle_secs).await;
    let mut relays = vec![first];
    for i in 1..RELAYS {
        let relay = start(&dir.join(format!("r{i}")), Some(&relays[0]), link_idle_secs).await;
        relays.push(relay);
    }
    wait_until_for(
        "every relay to hold the registry of all",
        Duration::from_secs(60),
        async || {
            relays.iter().all(|r| {
                r.chain()
                    .is_some_and(|c| c.with_state(|s| s.relays().count()) == RELAYS)
            })
        },
    )
    .await;
    relays
}

/// A user whose two homes are relays 1 and 2 (not 0 or 3), as every relay computes them.
async fn user_homed_at_1_and_2(relays: &[Relay]) -> Identity {
    let wanted: Vec<RelayId> = vec![relays[1].id(), relays[2].id()];
    loop {
        let user = Identity::generate();
        let mut homes = relays[0].home_relays(&user.account_id());
        homes.sort();
        let mut expected = wanted.clone();
        expected.sort();
        if homes == expected {
            // Every relay draws the same homes once it holds the same registry.
            wait_until_for(
                "the same homes everywhere",
                Duration::from_secs(20),
                async || {
                    relays.iter().all(|r| {
                        let mut h = r.home_relays(&user.account_id());
                        h.sort();
                        h == expected
                    })
                },
            )
            .await;
            return user;
        }
    }
}

fn relayed(relay: &Relay) -> u64 {
    relay
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("toprelay_messages_relayed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_goes_through_a_home_once_then_straight_and_mail_follows_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let relays = network(dir.path(), 60).await;
    let bob_id = user_homed_at_1_and_2(&relays).await;
    let bob_account = bob_id.account_id();
    let (a, d) = (&relays[0], &relays[3]);

    // Bob on relay 3, alice on relay 0: neither is his home, so relay 0 does not know where
    // he is (his relay told only his homes).
    let bob = Client::connect(&d.addr(), bob_id.clone()).await.unwrap();
    let alice = Client::connect(&a.addr(), Identity::generate())
        .await
        .unwrap();
    assert!(!a.linked().contains(&d.id()), "no link before it is needed");
    // Relay 3 tells bob's homes where he is (over links it makes for that): until they
    // know, a message for him waits at a home as mail (`Stored`).
    wait_until_for(
        "bob's homes to know where he is",
        Duration::from_secs(20),
        async || {
            [&relays[1], &relays[2]]
                .iter()
                .all(|h| h.serving_relay(&bob_account) == Some(d.id()))
        },
    )
    .await;
    let recv = async |bob: &Client| {
        let m = tokio::time::timeout(Duration::from_secs(20), bob.recv())
            .await
            .expect("the message arrives")
            .unwrap();
        bob.ack(&m).await.unwrap();
        m
    };
    let (sent, got) = tokio::join!(alice.send(&bob_account, b"first"), recv(&bob));
    assert_eq!(sent.unwrap(), Outcome::Delivered);
    assert_eq!(got.body.as_slice(), b"first");
    let through_homes = relayed(&relays[1]) + relayed(&relays[2]);
    assert_eq!(through_homes, 1, "the first message went through a home");

    // The home told relay 0 where bob is (his own statement): relay 0 links with relay 3 and
    // the next message goes straight there.
    wait_until_for(
        "relay 0 to link with bob's relay",
        Duration::from_secs(20),
        async || a.linked().contains(&d.id()),
    )
    .await;
    let (sent, got) = tokio::join!(alice.send(&bob_account, b"second"), recv(&bob));
    assert_eq!(sent.unwrap(), Outcome::Delivered);
    assert_eq!(got.body.as_slice(), b"second");
    assert_eq!(
        relayed(&relays[1]) + relayed(&relays[2]),
        through_homes,
        "the second message went straight to bob's relay"
    );

    // Bob leaves; relay 3 tells the relays linked with it. Alice's next message waits at his
    // homes, and reaches him on a relay he never used before.
    bob.close().await;
    let sent = alice.send(&bob_account, b"while away").await.unwrap();
    assert_eq!(sent, Outcome::Stored);
    let bob = Client::connect(&a.addr(), bob_id).await.unwrap();
    let got = recv(&bob).await;
    assert_eq!(got.body.as_slice(), b"while away");

    alice.close().await;
    bob.close().await;
    for r in relays {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_finds_its_peer_through_the_peers_homes_and_idle_links_are_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let relays = network(dir.path(), 2).await;
    let dave_id = user_homed_at_1_and_2(&relays).await;
    let dave_account = dave_id.account_id();
    let (a, d) = (&relays[0], &relays[3]);
    // carol's homes do not include dave's relay: relay 0 has no reason to keep a link there.
    let carol_id = loop {
        let carol = Identity::generate();
        if !a.home_relays(&carol.account_id()).contains(&d.id()) {
            break carol;
        }
    };
    let carol_homes: Vec<RelayId> = a
        .home_relays(&carol_id.account_id())
        .into_iter()
        .filter(|h| *h != a.id())
        .collect();
    let dave = Client::connect(&d.addr(), dave_id).await.unwrap();
    let carol = Client::connect(&a.addr(), carol_id).await.unwrap();
    assert!(!a.linked().contains(&d.id()), "no link before it is needed");
    let (pipe, incoming) = tokio::join!(carol.open_pipe(&dave_account), dave.accept_pipe());
    let (mut pipe, mut incoming) = (pipe.unwrap(), incoming.unwrap());
    pipe.send(b"found you").await.unwrap();
    assert_eq!(incoming.recv().await.unwrap().unwrap(), b"found you");
    incoming.send(b"hello").await.unwrap();
    assert_eq!(pipe.recv().await.unwrap().unwrap(), b"hello");
    assert!(a.linked().contains(&d.id()));
    pipe.close().await.unwrap();
    incoming.close().await.unwrap();

    // The pipe is done: relay 0 lets its link to dave's relay go once idle (here 2 s)…
    wait_until_for(
        "the pipe's link let go",
        Duration::from_secs(30),
        async || !a.linked().contains(&d.id()),
    )
    .await;
    // …while links to the homes of connected users stay, idle or not.
    let linked = d.linked();
    assert!(
        linked.contains(&relays[1].id()) && linked.contains(&relays[2].id()),
        "dave's relay dropped a link to his homes: {linked:?}"
    );
    let linked = a.linked();
    assert!(
        carol_homes.iter().all(|h| linked.contains(h)),
        "carol's relay dropped a link to her homes: {linked:?} (homes {carol_homes:?})"
    );
    carol.close().await;
    dave.close().await;
    // Nothing needs a link any more: every one is let go.
    wait_until_for("every link let go", Duration::from_secs(30), async || {
        relays.iter().all(|r| r.linked().is_empty())
    })
    .await;
    for r in relays {
        r.shutdown().await;
    }
}
