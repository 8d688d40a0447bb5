//! Billing end to end with real relays, a real chain and real signatures: messages are paid
//! through channels and receipts, relays settle on their own, 10% is burned, a follower agrees,
//! and traffic stops when a client stops paying.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{counter, dev_relay, funded, top, wait_until};

use top_client::{
    Amount, BillingOptions, Client, ClientError, ClientOptions, Identity, Outcome, Reject, Wallet,
};
use top_relay::{InitOptions, Relay, init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_paid_settled_and_burned_and_followers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let validator = dev_relay(&dir.path().join("v"), |_| {}).await;
    let follower_dir = dir.path().join("f");
    init(
        &follower_dir,
        InitOptions {
            peers: vec![validator.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let follower = Relay::start(&follower_dir).await.unwrap();

    let alice = funded(&validator, "10").await;
    let bob = funded(&validator, "10").await;
    let sender = Client::connect(&validator.addr(), alice.clone())
        .await
        .unwrap();
    let channel = sender.billing().expect("the dev relay charges").channel;
    let body = vec![7u8; 4000];
    for _ in 0..100 {
        // Bob is offline: stored, so Alice pays for messages and mailbox storage.
        assert_eq!(
            sender.send(&bob.account_id(), &body).await.unwrap(),
            Outcome::Stored
        );
    }
    let receiver = Client::connect(&validator.addr(), bob.clone())
        .await
        .unwrap();
    for _ in 0..100 {
        let m = receiver.recv().await.unwrap();
        receiver.ack(&m).await.unwrap();
    }
    let usage = sender.usage();
    // The sender pays for sending and delivering (twice the bytes), and for both copies the
    // network keeps of a stored message and their later delivery.
    assert!(
        usage.msg >= 1_200_000 && usage.mailbox >= 800_000,
        "{usage:?}"
    );
    // The recipient pays nothing for messages it did not ask for.
    assert_eq!(receiver.usage().total(), 0, "{:?}", receiver.usage());
    let bob_signed = receiver.billing().unwrap().signed.load(Ordering::Relaxed);
    assert_eq!(bob_signed, 0, "the recipient signed for deliveries");
    sender.close().await;
    receiver.close().await;

    // The relay settles on its own once the sessions went quiet.
    let chain = validator.chain().unwrap();
    let relay_account = Identity::load(&dir.path().join("v/identity.key"))
        .unwrap()
        .account_id();
    wait_until("settlement of Alice's channel", async || {
        chain.with_state(|s| s.channel(&channel).is_some_and(|c| !c.settled.is_zero()))
    })
    .await;
    // Leftovers that would earn less than a settlement's fee wait for more.
    wait_until("every receipt worth a settlement settled", async || {
        validator
            .status()
            .ledger
            .is_some_and(|l| !l.pending_worth_settling)
    })
    .await;
    chain.with_state(|s| {
        s.check_invariant().unwrap();
        let relay = s.account(&relay_account).unwrap();
        let settled: Amount = s
            .channels()
            .filter(|(_, c)| c.relay == relay_account)
            .fold(Amount::ZERO, |sum, (_, c)| {
                sum.checked_add(c.settled).unwrap()
            });
        assert!(!relay.fees_burned.is_zero());
        assert_eq!(
            relay.fees_earned.checked_add(relay.fees_burned).unwrap(),
            settled
        );
        // Every committed transaction paid the minimum fee (what the SDK and relays sign).
        let txs: u64 = s.accounts().map(|(_, a)| a.nonce).sum();
        let tx_fees = Amount::from_units(u128::from(txs) * s.params.min_fee.units());
        // Settlement burns: this relay's clients' and its follower's relay-to-relay ones.
        let settlement_burns = s.accounts().fold(Amount::ZERO, |sum, (_, a)| {
            sum.checked_add(a.fees_burned).unwrap()
        });
        assert_eq!(
            s.burned,
            settlement_burns.checked_add(tx_fees).unwrap(),
            "every burn came from settlements and transaction fees"
        );
        // At least a tenth of what was settled is burned (⌈fee/10⌉ per settlement).
        assert!(relay.fees_burned.units() * 10 >= settled.units());
        // 400 kB of messages + 400 kB of mailbox, sent, and 400 kB delivered to Bob.
        let alice_paid = s.channel(&channel).unwrap().settled;
        assert!(alice_paid >= top("0.0001"), "alice paid {alice_paid}");
        assert_eq!(
            s.total_supply(),
            s.genesis_supply.checked_sub(s.burned).unwrap()
        );
    });

    // The follower verified every block and reached the same state.
    let follower_chain = {
        let mut c = None;
        wait_until("the follower's chain", async || {
            c = follower.chain();
            c.is_some()
        })
        .await;
        c.unwrap()
    };
    let height = chain.height();
    wait_until("the follower to catch up", async || {
        follower_chain.height() >= height
    })
    .await;
    let theirs = follower_chain.block(height).unwrap().unwrap();
    assert_eq!(theirs, chain.block(height).unwrap().unwrap());
    follower.shutdown().await;
    validator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_signing_is_cut_off_at_the_credit_window() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |_| {}).await;
    let alice = funded(&relay, "10").await;
    let bob = Identity::generate();
    let client = Client::connect(&relay.addr(), alice).await.unwrap();
    let billing = client.billing().unwrap().clone();
    let body = vec![1u8; 2000];
    // Paying: far more than the credit window goes through.
    for _ in 0..60 {
        client.send(&bob.account_id(), &body).await.unwrap();
    }
    billing
        .paying
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let before = client.usage();
    let mut carried = 0u64;
    let refused = loop {
        match client.send(&bob.account_id(), &body).await {
            Ok(_) => carried += 1,
            Err(e) => break e,
        }
        assert!(carried < 1000, "the relay kept carrying without receipts");
    };
    assert!(
        matches!(refused, ClientError::Rejected(Reject::PaymentRequired)),
        "{refused}"
    );
    // Unpaid: at most the credit window (0.0002 TOP; sent, delivered and stored cost
    // 0.07 TOP/MiB: ≈ 3 kB of messages) plus what was asked for before.
    let unpaid_bytes = client.usage().msg - before.msg;
    assert!(
        unpaid_bytes <= 20 * 2048,
        "carried {unpaid_bytes} unpaid bytes"
    );
    // Signing again: traffic flows again.
    billing
        .paying
        .store(true, std::sync::atomic::Ordering::Relaxed);
    client.send(&bob.account_id(), &body).await.unwrap();
    client.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_on_one_channel_are_not_paid_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |_| {}).await;
    let alice = funded(&relay, "10").await;
    let first = Client::connect(&relay.addr(), alice.clone()).await.unwrap();
    let channel = first.billing().unwrap().channel;
    let bob = Identity::generate().account_id();
    first
        .send_tracked(&bob, b"on the first session")
        .await
        .unwrap();
    let chain = relay.chain().unwrap();
    wait_until("the channel is on chain", async || {
        chain.with_state(|s| s.channel(&channel).is_some())
    })
    .await;
    // A second session of the same account resumes the same channel: the first one stops
    // billing it, so it carries nothing more on credit.
    let second = Client::connect(&relay.addr(), alice.clone()).await.unwrap();
    assert_eq!(
        second.billing().unwrap().channel,
        channel,
        "resumed, not reopened"
    );
    let big = vec![0u8; 30 * 1024]; // beyond the 20 KiB credit window
    let refused = first.send(&bob, &big).await;
    assert!(
        matches!(refused, Err(ClientError::Rejected(Reject::PaymentRequired))),
        "the older session was still billed on the channel: {refused:?}"
    );
    assert_eq!(second.send(&bob, &big).await.unwrap(), Outcome::Stored);
    second.close().await;
    first.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_before_its_channel_is_in_a_block_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks far apart: the second session comes before the first one's open is in a block.
    let relay = dev_relay(dir.path(), |c| c.ledger.block_interval_ms = 5_000).await;
    let alice = funded(&relay, "10").await;
    let first = Client::connect(&relay.addr(), alice.clone()).await.unwrap();
    let channel = first.billing().unwrap().channel;
    let chain = relay.chain().unwrap();
    assert!(chain.with_state(|s| s.channel(&channel).is_none()));
    first.close().await;
    let second = Client::connect(&relay.addr(), alice.clone()).await.unwrap();
    assert_eq!(
        second.billing().unwrap().channel,
        channel,
        "a second channel opened while the first was on its way"
    );
    second.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_pays_for_its_users_through_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |_| {}).await;
    let app = funded(&relay, "50").await;
    let user = Identity::generate();
    let no_grant = ClientOptions {
        billing: BillingOptions {
            lock: top("1"),
            sponsor: Some(app.account_id()),
        },
    };
    let err = Client::connect_with(&relay.addr(), user.clone(), no_grant.clone())
        .await
        .err()
        .expect("no grant yet");
    assert!(err.to_string().contains("granted"), "{err}");

    let wallet = Wallet::connect(&relay.addr(), app.clone()).await.unwrap();
    wallet
        .grant(user.account_id(), top("2"), Duration::from_secs(3600))
        .await
        .unwrap();
    let client = Client::connect_with(&relay.addr(), user.clone(), no_grant)
        .await
        .unwrap();
    let channel = client.billing().unwrap().channel;
    for _ in 0..50 {
        client
            .send(&Identity::generate().account_id(), &[0u8; 3000])
            .await
            .unwrap();
    }
    client.close().await;
    let chain = relay.chain().unwrap();
    wait_until("the sponsored channel to settle", async || {
        chain.with_state(|s| s.channel(&channel).is_some_and(|c| !c.settled.is_zero()))
    })
    .await;
    chain.with_state(|s| {
        let c = s.channel(&channel).unwrap();
        assert_eq!(c.payer, app.account_id());
        assert_eq!(c.signer, user.account_id());
        assert!(
            s.account(&user.account_id())
                .is_none_or(|a| a.balance.is_zero()),
            "the user paid nothing"
        );
        assert_eq!(
            s.account(&app.account_id()).unwrap().deposit,
            top("49").checked_sub(s.params.min_fee).unwrap(),
            "1 TOP locked for the user, and the open's fee"
        );
    });
    wallet.close().await;
    relay.shutdown().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .await
        .expect("curl runs");
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split + 1..])
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_fetches_pay_by_receipt_and_http_egress_by_the_publishers_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |c| {
        c.billing.cdn_price_per_mib = "0.001".into();
        c.billing.credit_window = "0.002".into(); // 2 MiB of chunks
    })
    .await;
    let publisher_id = funded(&relay, "10").await;
    let publisher = Client::connect(&relay.addr(), publisher_id.clone())
        .await
        .unwrap();
    let data: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
    let cid = publisher
        .publish(&data, Some("application/x-test"))
        .await
        .unwrap();

    // An SDK reader pays for what it fetched (and verified) with receipts on its own channel.
    let reader = Client::connect(&relay.addr(), funded(&relay, "10").await)
        .await
        .unwrap();
    for _ in 0..3 {
        let got = reader.fetch(&cid).await.unwrap().bytes().await.unwrap();
        assert!(got == data);
    }
    assert_eq!(reader.usage().cdn, 3 * data.len() as u64);
    let reader_channel = reader.billing().unwrap().channel;
    // Chunks waited for receipts (9 MiB through a 2 MiB window), and the relay asked again
    // while they waited: the client sent each receipt once, so none was refused.
    assert!(counter(&relay, "receipts_total") >= 4);
    assert_eq!(
        counter(&relay, "receipts_refused_total{reason=\"not_newer\"}"),
        0,
        "duplicate receipts"
    );

    // The gateway charges the publisher's allowance: none yet, so 402.
    let path = format!("/cdn/{cid}");
    assert_eq!(http_get(relay.http_addr(), &path).await.0, 402);
    let cap = top("0.01"); // 10 MiB at 0.001 TOP/MiB: three full downloads, not four
    let egress_channel = publisher.allow_egress(&cid, cap).await.unwrap();
    for _ in 0..3 {
        let (code, body) = http_get(relay.http_addr(), &path).await;
        assert_eq!(code, 200);
        assert!(body == data);
    }
    assert_eq!(
        http_get(relay.http_addr(), &path).await.0,
        402,
        "cap exceeded"
    );
    // The relay settles both: receipts for the SDK reads, the egress claim for HTTP, each with
    // ⌈fee/10⌉ burned; the supply invariant holds.
    // Every charge is settled in the end: the reader's channel up to the last amount it signed
    // (less a leftover worth less than a settlement's fee), the egress channel to the unit for
    // all three responses, 3 × (3 MiB + 17 B) at
    // 0.001 TOP/MiB rounded up: 0.009000049 TOP (the third one's charge is settled once serving
    // stops, below the settlement threshold).
    let chain = relay.chain().unwrap();
    let reader_signed = Amount::from_units(u128::from(
        reader.billing().unwrap().signed.load(Ordering::Relaxed),
    ));
    let served = top("0.009000049");
    wait_until("both channels to settle in full", async || {
        chain.with_state(|s| {
            // A leftover that would earn less than a settlement's fee waits for more.
            let dust = |settled: Amount| {
                let left = reader_signed.saturating_sub(settled);
                left.saturating_sub(left.burn_share()) <= s.params.min_fee
            };
            s.channel(&reader_channel)
                .is_some_and(|c| c.settled <= reader_signed && dust(c.settled))
                && s.channel(&egress_channel)
                    .is_some_and(|c| c.settled == served)
        })
    })
    .await;
    chain.with_state(|s| {
        assert!(s.channel(&egress_channel).unwrap().settled <= cap);
        assert!(!s.burned.is_zero());
        s.check_invariant().unwrap();
    });
    reader.close().await;
    publisher.close().await;
    relay.shutdown().await;
}
