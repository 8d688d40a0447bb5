//! Relays pay each other: the sender's relay is paid for the whole delivery and pays the
//! recipient's relay for its part through a relay-to-relay channel and receipts (the same
//! primitive clients use), which that relay settles on the chain with the same burn. The
//! recipient pays nothing.

mod common;

use futures::StreamExt;
use std::time::Duration;

use common::{counter, dev_relay, funded, wait_until};
use ledger_lite::ChannelStatus;
use top_client::{Client, Identity, Outcome};
use top_relay::Relay;
use top_relay::config::RelayConfig;

/// A (non-dev) relay in `dir` configured to link with `a`, its config tweaked.
async fn relay_linked_to(
    a: &Relay,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut RelayConfig),
) -> Relay {
    common::relay_with(dir, vec![a.addr()], tweak).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_relay_pays_the_recipients_relay_for_delivery() {
    let dir = tempfile::tempdir().unwrap();
    // The clients' own billing is not what this test is about: a roomy window and wait, so a
    // busy machine never refuses alice for a receipt still on its way.
    let a = dev_relay(&dir.path().join("a"), |c| {
        c.billing.credit_window = "0.01".into();
        c.billing.pay_wait_ms = 5_000;
    })
    .await;
    let b_dir = dir.path().join("b");
    let b = relay_linked_to(&a, &b_dir, |_| {}).await;
    let (alice, bob) = (funded(&a, "10").await, funded(&a, "10").await);
    let a_account = Identity::load(&dir.path().join("a/identity.key"))
        .unwrap()
        .account_id();
    let b_account = Identity::load(&b_dir.join("identity.key"))
        .unwrap()
        .account_id();
    // B registers itself on A's chain (the faucet funds its stake), then A links with it.
    tokio::time::timeout(Duration::from_secs(30), a.wait_linked(&b.id()))
        .await
        .expect("A links with B once B is registered");
    let receiver = Client::connect(&b.addr(), bob.clone()).await.unwrap();
    let sender = Client::connect(&a.addr(), alice).await.unwrap();
    // Bob reads and acknowledges as messages come.
    let reading = async {
        for _ in 0..101 {
            let m = receiver.recv().await.unwrap();
            receiver.ack(&m).await.unwrap();
        }
    };
    let sending = async {
        // Until B's word that bob is there reaches A, a message waits in bob's mailbox.
        let first = sender.send(&bob.account_id(), b"hello").await.unwrap();
        assert!(
            matches!(first, Outcome::Delivered | Outcome::Stored),
            "{first:?}"
        );
        let body = vec![3u8; 4000];
        for _ in 0..100 {
            let outcome = sender.send(&bob.account_id(), &body).await.unwrap();
            assert_eq!(outcome, Outcome::Delivered);
        }
    };
    let both = async { tokio::join!(reading, sending) };
    tokio::time::timeout(Duration::from_secs(40), both)
        .await
        .expect("every message delivered and read");
    assert_eq!(receiver.usage().total(), 0, "the recipient pays nothing");
    // A sent each receipt once, however often B asked while deliveries waited for it.
    assert_eq!(
        counter(&b, "receipts_refused_total{reason=\"not_newer\"}"),
        0,
        "duplicate receipts"
    );

    // Relay A opened a channel to B from its own deposit; B settles A's receipts on chain.
    let chain = a.chain().unwrap();
    wait_until("B settles what A signed for", async || {
        chain.with_state(|s| {
            s.channels()
                .any(|(_, c)| c.payer == a_account && c.relay == b_account && !c.settled.is_zero())
        })
    })
    .await;
    chain.with_state(|s| {
        let (_, link) = s
            .channels()
            .find(|(_, c)| c.payer == a_account && c.relay == b_account)
            .unwrap();
        // What A handed B: 101 sealed messages (4,000 bytes and the hello, each with its
        // envelope), delivered at B's message price (0.01 TOP/MiB; the first one perhaps stored
        // too, at 0.05 TOP/MiB more): A signed no more than that.
        assert!(link.settled_bytes <= 101 * (4000 + 256), "{link:?}");
        let per_mib = 10_000_000 + 50_000_000;
        let most = u128::from(link.settled_bytes) * per_mib / (1 << 20) + 2;
        assert!(link.settled.units() <= most, "{link:?}");
        let b_relay = s.account(&b_account).unwrap();
        assert!(
            !b_relay.fees_burned.is_zero(),
            "the same burn as clients' receipts"
        );
        s.check_invariant().unwrap();
    });
    sender.close().await;
    receiver.close().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_link_channel_is_followed_by_a_fresh_one_and_idle_ones_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    // A pays B from small channels (0.01 TOP: about 100 KiB of deliveries at B's price of
    // 0.1 TOP/MiB), and B asks for payment every few KiB.
    let a = dev_relay(&dir.path().join("a"), |c| {
        c.billing.credit_window = "0.01".into();
        c.billing.pay_wait_ms = 5_000;
        c.billing.link_lock = "0.01".into();
    })
    .await;
    let b = relay_linked_to(&a, &dir.path().join("b"), |c| {
        c.billing.msg_price_per_mib = "0.1".into();
        c.billing.credit_window = "0.002".into();
    })
    .await;
    let a_account = Identity::load(&dir.path().join("a/identity.key"))
        .unwrap()
        .account_id();
    let b_account = Identity::load(&dir.path().join("b/identity.key"))
        .unwrap()
        .account_id();
    let (alice, bob) = (funded(&a, "10").await, funded(&a, "10").await);
    tokio::time::timeout(Duration::from_secs(30), a.wait_linked(&b.id()))
        .await
        .expect("A links with B once B is registered");
    let receiver = Client::connect(&b.addr(), bob.clone()).await.unwrap();
    let sender = Client::connect(&a.addr(), alice).await.unwrap();
    const MESSAGES: usize = 60;
    let reading = async {
        for _ in 0..MESSAGES {
            let m = receiver.recv().await.unwrap();
            receiver.ack(&m).await.unwrap();
        }
    };
    // Three messages at a time: deliveries wait at B for A's receipts, and B asks again.
    let sending = futures::stream::iter(0..MESSAGES).for_each_concurrent(3, |_| async {
        let body = vec![5u8; 4000];
        // While a fresh channel opens, B may refuse a forward: then the message waits in
        // bob's mailbox and reaches him from there.
        let outcome = sender.send(&bob.account_id(), &body).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Delivered | Outcome::Stored),
            "{outcome:?}"
        );
    });
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(reading, sending)
    })
    .await
    .expect("every message reached bob");
    assert_eq!(
        counter(&b, "receipts_refused_total{reason=\"not_newer\"}"),
        0,
        "duplicate receipts"
    );

    // 240 KB handed over: more than two channels' worth, each paid within its lock.
    let chain = a.chain().unwrap();
    let links = |s: &ledger_lite::State| {
        s.channels()
            .filter(|(_, c)| c.payer == a_account && c.relay == b_account)
            .map(|(id, c)| (*id, c.clone()))
            .collect::<Vec<_>>()
    };
    wait_until("a third channel, the first two settled", async || {
        chain.with_state(|s| {
            let links = links(s);
            links.len() >= 3 && links.iter().filter(|(_, c)| !c.settled.is_zero()).count() >= 2
        })
    })
    .await;
    // Each spent channel is closed once a fresh one pays: what is left in it comes back.
    wait_until("the spent channels closing", async || {
        chain.with_state(|s| {
            let closing = |c: &ledger_lite::Channel| c.status != ChannelStatus::Open;
            links(s).iter().filter(|(_, c)| closing(c)).count() >= 2
        })
    })
    .await;
    chain.with_state(|s| {
        for (_, c) in links(s) {
            assert!(c.settled <= c.lock, "{c:?}");
        }
        s.check_invariant().unwrap();
    });

    // Linked: nothing is idle. Once B is gone, A closes what it left locked there.
    assert_eq!(a.close_idle_link_channels(Duration::ZERO).await, vec![]);
    sender.close().await;
    receiver.close().await;
    let b_id = b.id();
    b.shutdown().await;
    wait_until("A sees B gone", async || !a.linked().contains(&b_id)).await;
    let closing = a.close_idle_link_channels(Duration::ZERO).await;
    assert!(!closing.is_empty(), "the last channel had room left");
    wait_until("the idle channels closing on chain", async || {
        chain.with_state(|s| {
            closing.iter().all(|id| {
                s.channel(id)
                    .is_some_and(|c| matches!(c.status, ChannelStatus::Closing { .. }))
            })
        })
    })
    .await;
    a.shutdown().await;
}
