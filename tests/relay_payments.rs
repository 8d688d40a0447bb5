//! Relays pay each other: the sender's relay is paid for the whole delivery and pays the
//! recipient's relay for its part through a relay-to-relay channel and receipts (the same
//! primitive clients use), which that relay settles on the chain with the same burn. The
//! recipient pays nothing.

mod common;

use common::{dev_relay, funded, wait_until};
use top_client::{Client, Identity, Outcome};
use top_relay::{InitOptions, Relay, init};

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
    init(
        &b_dir,
        InitOptions {
            peers: vec![a.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let b = Relay::start(&b_dir).await.unwrap();
    let (alice, bob) = (funded(&a, "10").await, funded(&a, "10").await);
    let a_account = Identity::load(&dir.path().join("a/identity.key"))
        .unwrap()
        .account_id();
    let b_account = Identity::load(&b_dir.join("identity.key"))
        .unwrap()
        .account_id();
    // B registers itself on A's chain (the faucet funds its stake), then A links with it.
    tokio::time::timeout(std::time::Duration::from_secs(30), a.wait_linked(&b.id()))
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
    tokio::time::timeout(std::time::Duration::from_secs(40), both)
        .await
        .expect("every message delivered and read");
    assert_eq!(receiver.usage().total(), 0, "the recipient pays nothing");

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
