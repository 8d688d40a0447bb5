//! Only member relays link: a stranger's key that opens a link is refused before it can claim a
//! user's presence, and so never receives the user's mail; a registered relay links at once.

mod common;

use std::time::Duration;

use common::{endpoint_and_conn, metric, open_session, sealed_envelope, store_for_offline};
use top_proto::frame::{LinkFrame, Open, SessionFrame, encode_frame};
use top_proto::identity::Identity;
use top_proto::presence::Presence;
use top_relay::{InitOptions, Relay, init};

/// A dev chain without charges: these raw clients open no payment channels (a relay that
/// charges carries nothing for a key without one).
fn free_of_charge(dir: &std::path::Path) {
    let mut config = top_relay::config::RelayConfig::load(dir).unwrap();
    config.billing.enabled = false;
    config.save(dir).unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_pose_as_a_relay_and_take_mail() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    free_of_charge(dir.path());
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
    // Even bob's own statement naming the stranger does not help it: it is no member.
    let claim = LinkFrame::Online(Presence::sign(&bob, stranger.relay_id(), now_ms()));
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
    free_of_charge(&v_dir);
    let validator = Relay::start(&v_dir).await.unwrap();
    init(
        &f_dir,
        InitOptions {
            peers: vec![validator.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    free_of_charge(&f_dir);
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

#[tokio::test(flavor = "multi_thread")]
async fn a_member_relay_gets_a_users_mail_only_on_the_users_own_word() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    store_for_offline(&relay.addr(), &alice, bob.account_id(), 3).await;
    // A member relay (configured: there is no chain) that wants bob's mail.
    let evil = Identity::generate();
    relay.add_peer(format!("{}@127.0.0.1:9", evil.relay_id()).parse().unwrap());
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &evil).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Link).unwrap())
        .await
        .unwrap();
    let now = now_ms();
    let mut forged = Presence::sign(&evil, evil.relay_id(), now);
    forged.body.client = bob.account_id();
    let claims = [
        forged,
        // bob's word, but for the relay he is really on.
        Presence::sign(&bob, relay.id(), now),
        // bob's word for the evil relay, from long ago.
        Presence::sign(&bob, evil.relay_id(), now - 31 * 24 * 3600 * 1000),
    ];
    for claim in claims {
        send.write_all(&encode_frame(&LinkFrame::Online(claim)).unwrap())
            .await
            .unwrap();
    }
    let http = relay.http_addr();
    tokio::time::timeout(Duration::from_secs(10), async {
        while metric(http, "toprelay_presence_refused_total").await < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the false claims were believed");
    assert_eq!(relay.status().mailbox.messages, 3);

    // bob really connects to the evil relay: his fresh statement gets his mail there.
    let genuine = Presence::sign(&bob, evil.relay_id(), now_ms());
    send.write_all(&encode_frame(&LinkFrame::Online(genuine)).unwrap())
        .await
        .unwrap();
    let mut frames = tokio_util::codec::FramedRead::new(
        recv,
        top_proto::frame::FrameCodec::<LinkFrame>::default(),
    );
    let mut forwarded = 0;
    while forwarded < 3 {
        let frame = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut frames),
        )
        .await
        .expect("bob's mail never came")
        .unwrap()
        .unwrap();
        if let LinkFrame::Forward { env, .. } = frame {
            assert_eq!(env.to, bob.account_id());
            forwarded += 1;
        }
    }
    assert_eq!(metric(http, "toprelay_presence_refused_total").await, 3);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_opens_only_with_the_clients_fresh_statement_for_this_relay() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let me = Identity::generate();
    let other = Identity::generate();
    let now = now_ms();
    let bad = [
        Presence::sign(&other, relay.id(), now),
        Presence::sign(&me, other.relay_id(), now),
        Presence::sign(&me, relay.id(), now - 3600 * 1000),
    ];
    // Each on a connection of its own: every one must be refused for its own fault.
    for statement in bad {
        let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &me).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&encode_frame(&Open::Session(statement)).unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf))
            .await
            .unwrap();
        assert!(!matches!(got, Ok(Some(_))), "a session opened: {got:?}");
    }
    assert_eq!(relay.status().sessions, 0);
    // A refused statement does not use up the connection: a good one opens the session.
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &me).await;
    let open = |statement| {
        let conn = conn.clone();
        async move {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            send.write_all(&encode_frame(&Open::Session(statement)).unwrap())
                .await
                .unwrap();
            let mut frames = tokio_util::codec::FramedRead::new(
                recv,
                top_proto::frame::FrameCodec::<SessionFrame>::default(),
            );
            let first = tokio::time::timeout(
                Duration::from_secs(10),
                futures::StreamExt::next(&mut frames),
            )
            .await
            .unwrap();
            (send, first.and_then(Result::ok))
        }
    };
    let (_refused, first) = open(Presence::sign(&me, other.relay_id(), now)).await;
    assert_eq!(first, None);
    let (_session, first) = open(Presence::sign(&me, relay.id(), now_ms())).await;
    assert_eq!(first, Some(SessionFrame::Synced));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_fresh_statements_reach_linked_relays_and_old_ones_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    // A member relay listening on a link.
    let peer = Identity::generate();
    relay.add_peer(format!("{}@127.0.0.1:9", peer.relay_id()).parse().unwrap());
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &peer).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Link).unwrap())
        .await
        .unwrap();
    let mut link = tokio_util::codec::FramedRead::new(
        recv,
        top_proto::frame::FrameCodec::<LinkFrame>::default(),
    );
    let mut next_online = async || loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut link))
                .await
                .expect("no presence")
                .unwrap()
                .unwrap();
        if let LinkFrame::Online(p) = frame {
            return p;
        }
    };
    let bob = Identity::generate();
    let mut session = open_session(&relay.addr(), &bob).await;
    let first = next_online().await;
    assert_eq!(first.body.client, bob.account_id());
    // bob re-signs: the link hears the fresh statement.
    let fresh = Presence::sign(&bob, relay.id(), first.body.time_ms + 1000);
    session.write(&SessionFrame::Present(fresh.clone())).await;
    assert_eq!(next_online().await, fresh);
    // A statement older than bob's newest is bad input: the session ends.
    session.write(&SessionFrame::Present(first)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while futures::StreamExt::next(&mut session.frames)
            .await
            .is_some_and(|f| f.is_ok())
        {}
    })
    .await;
    assert!(ended.is_ok(), "an old statement was taken");
    // On links, a statement past the maximum age is not believed.
    let old = Presence::sign(
        &Identity::generate(),
        peer.relay_id(),
        now_ms() - top_proto::presence::PRESENCE_MAX_AGE_MS - 60_000,
    );
    send.write_all(&encode_frame(&LinkFrame::Online(old)).unwrap())
        .await
        .unwrap();
    let http = relay.http_addr();
    tokio::time::timeout(Duration::from_secs(10), async {
        while metric(http, "toprelay_presence_refused_total").await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a statement past its age was believed");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_told_where_a_user_is_believes_only_an_answer_it_asked_for_with_the_users_word() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    // Two member relays (configured: there is no chain): an evil one that answers, and
    // another that is never reached.
    let (evil, other) = (Identity::generate(), Identity::generate());
    for member in [&evil, &other] {
        relay.add_peer(
            format!("{}@127.0.0.1:9", member.relay_id())
                .parse()
                .unwrap(),
        );
    }
    // bob's homes are those two, not this relay: it does not know where bob is.
    let bob = loop {
        let bob = Identity::generate();
        if !relay.home_relays(&bob.account_id()).contains(&relay.id()) {
            break bob;
        }
    };
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &evil).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Link).unwrap())
        .await
        .unwrap();
    let mut link = tokio_util::codec::FramedRead::new(
        recv,
        top_proto::frame::FrameCodec::<LinkFrame>::default(),
    );
    let http = relay.http_addr();
    let refused = async |n: u64| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while metric(http, "toprelay_presence_refused_total").await < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a false claim was believed");
    };
    // bob's genuine word, but nobody asked: not taken.
    let genuine = Presence::sign(&bob, evil.relay_id(), now_ms());
    send.write_all(&encode_frame(&LinkFrame::Located(genuine)).unwrap())
        .await
        .unwrap();
    refused(1).await;

    // alice sends to bob: this relay asks a home (the evil relay) to relay it. Each answer
    // below comes to such a question.
    let alice = Identity::generate();
    let mut alice_session = open_session(&relay.addr(), &alice).await;
    alice_session.until(|f| *f == SessionFrame::Synced).await;
    let mut ask = async |body: &[u8]| -> LinkFrame {
        let env = sealed_envelope(&alice, bob.account_id(), body);
        alice_session.write(&SessionFrame::Send(env)).await;
        loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut link))
                    .await
                    .expect("the message never came")
                    .unwrap()
                    .unwrap();
            if matches!(frame, LinkFrame::Relay { .. } | LinkFrame::Forward { .. }) {
                return frame;
            }
        }
    };
    let now = now_ms();
    let mut forged = Presence::sign(&evil, evil.relay_id(), now);
    forged.body.client = bob.account_id();
    let claims = [
        forged,
        // bob's word, for a relay that is not a member.
        Presence::sign(&bob, Identity::generate().relay_id(), now),
        // bob's word for the evil relay, past the age a statement is believed.
        Presence::sign(
            &bob,
            evil.relay_id(),
            now - top_proto::presence::PRESENCE_MAX_AGE_MS - 60_000,
        ),
        // bob's word for this very relay (he is not here).
        Presence::sign(&bob, relay.id(), now),
    ];
    for (i, claim) in claims.into_iter().enumerate() {
        assert!(matches!(ask(b"where is he").await, LinkFrame::Relay { .. }));
        send.write_all(&encode_frame(&LinkFrame::Located(claim)).unwrap())
            .await
            .unwrap();
        refused(2 + i as u64).await;
    }
    // The answer that passes: bob's own fresh word that he is at the evil relay. The next
    // message goes straight there, no longer through a home.
    assert!(matches!(ask(b"where is he").await, LinkFrame::Relay { .. }));
    let genuine = Presence::sign(&bob, evil.relay_id(), now_ms());
    send.write_all(&encode_frame(&LinkFrame::Located(genuine)).unwrap())
        .await
        .unwrap();
    let mut straight = false;
    for _ in 0..50 {
        if let LinkFrame::Forward { env, .. } = ask(b"to bob").await {
            assert_eq!(env.to, bob.account_id());
            straight = true;
            break;
        }
    }
    assert!(straight, "the genuine answer was not taken");
    assert_eq!(metric(http, "toprelay_presence_refused_total").await, 5);
    relay.shutdown().await;
}

/// `toprelay register` signs with the key the running relay signs with too: when the relay
/// spent its balance in a transaction still waiting for a block, the command looks again once
/// it landed (and takes the stake from a dev chain's faucet) rather than fail on "insufficient
/// balance" (a CI run failed on it when the relay topped up its deposit for links meanwhile).
#[tokio::test(flavor = "multi_thread")]
async fn toprelay_register_looks_again_when_the_relay_spent_its_balance_first() {
    use ledger_lite::{Amount, TxKind};
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let chain = relay.chain().unwrap();
    let key = Identity::load(&dir.path().join(top_relay::config::KEY_FILE)).unwrap();
    let me = key.account_id();
    // Registered, its deposit for links topped up, nothing of its own waiting.
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let view = chain.account(&me);
            if let Some(account) = view.account
                && account.relay.is_some()
                && !account.deposit.is_zero()
                && view.next_nonce == account.nonce
                && !account.balance.is_zero()
            {
                return account;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay never registered");
    // The relay spends all but a fee of its balance; the block takes it in a while.
    let fee = chain.with_state(|s| s.params.min_fee);
    let amount = settled.balance.checked_sub(fee).unwrap();
    chain
        .submit_own(&key, TxKind::Deposit { amount }, false)
        .await
        .unwrap();
    // The owner raises the stake meanwhile.
    let mut config = top_relay::config::RelayConfig::load(dir.path()).unwrap();
    let more = settled.stake.checked_add(Amount::from_units(1)).unwrap();
    config.billing.stake = more.to_string();
    let height = top_relay::node::registration::submit_from_cli(relay.addr(), key, &config, false)
        .await
        .expect("register");
    let account = chain.with_state(|s| s.account(&me).cloned()).unwrap();
    assert_eq!(account.stake, more, "registered in block {height}");
    assert_eq!(
        account.deposit,
        settled.deposit.checked_add(amount).unwrap(),
        "the relay's own transaction landed too"
    );
    relay.shutdown().await;
}
