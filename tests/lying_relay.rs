//! A linked relay that lies about what it carried is not paid for the lie: the relay paying it
//! signs only what its own count of forwarded messages covers, for services a link carries.
//! The liar here speaks the link and billing protocols by hand over real QUIC, against a real
//! relay, its chain and a real SDK client.

mod common;

use std::time::Duration;

use common::{dev_relay, funded};
use futures::{SinkExt, StreamExt};
use ledger_lite::ChannelId;
use ledger_lite::registry::Prices;
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::Usage;
use top_billing::wire::{ClientBilling, MAX_BILLING_FRAME, Offer, RelayBilling};
use top_client::{Amount, Client, Identity, Outcome};
use top_proto::frame::{FrameCodec, LinkFrame, Open, encode_frame};
use top_proto::presence::Presence;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Within `secs`, or the test fails saying `what`.
async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_relay_claiming_more_than_it_carried_is_not_paid_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev_relay(dir.path(), |c| {
        c.billing.credit_window = "0.01".into();
        c.billing.pay_wait_ms = 5_000;
    })
    .await;
    let (alice, bob) = (funded(&a, "10").await, Identity::generate());
    let chain = a.chain().unwrap();
    let chain_id = chain.with_state(|s| s.chain);

    // The liar: a relay A links with (configured, as a dev chain allows), where bob really is.
    let liar = Identity::generate();
    a.add_peer(format!("{}@127.0.0.1:9", liar.relay_id()).parse().unwrap());
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, &liar, &a.addr())
        .await
        .unwrap();
    let (mut link_send, link_recv) = conn.open_bi().await.unwrap();
    link_send
        .write_all(&encode_frame(&Open::Link).unwrap())
        .await
        .unwrap();
    let online = LinkFrame::Online(Presence::sign(&bob, liar.relay_id(), now_ms()));
    link_send
        .write_all(&encode_frame(&online).unwrap())
        .await
        .unwrap();

    // A pays the liar through a channel: offer, A's open, ready.
    let (billing_send, billing_recv) = within(30, "A's billing stream", conn.accept_bi())
        .await
        .unwrap();
    let mut opened = FramedRead::new(billing_recv, FrameCodec::<Open>::default());
    let first = within(10, "the stream's kind", opened.next()).await;
    assert!(matches!(first, Some(Ok(Open::LinkBilling))), "{first:?}");
    let mut from_a = opened.map_decoder(|c| c.retype::<ClientBilling>(MAX_BILLING_FRAME));
    let mut to_a = FramedWrite::new(
        billing_send,
        FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME),
    );
    let prices = Prices {
        msg: Amount::from_units(10_000_000), // 0.01 TOP per MiB, as A charges
        ..Prices::default()
    };
    let offer = Offer {
        relay: liar.account_id(),
        chain: chain_id,
        prices,
        credit_window: Amount::from_units(10_000_000),
        existing: None,
    };
    to_a.send(RelayBilling::Offer(Box::new(offer)))
        .await
        .unwrap();
    let open = match within(30, "A's channel", from_a.next()).await {
        Some(Ok(ClientBilling::Open(tx))) => tx,
        other => panic!("expected A's open, got {other:?}"),
    };
    let channel = ChannelId::derive(&chain_id, &open.tx.from, &liar.account_id(), open.tx.nonce);
    let ready = RelayBilling::Ready {
        channel,
        cum_amount: Amount::ZERO,
        cum_bytes: 0,
    };
    to_a.send(ready).await.unwrap();

    // Alice sends bob ten messages: A forwards them to the liar, which says they arrived.
    let mut from_link = FramedRead::new(link_recv, FrameCodec::<LinkFrame>::default());
    let mut link_out = FramedWrite::new(link_send, FrameCodec::<LinkFrame>::default());
    let sender = Client::connect(&a.addr(), alice).await.unwrap();
    let sending = async {
        for _ in 0..10 {
            let outcome = sender.send(&bob.account_id(), &[1u8; 4000]).await.unwrap();
            assert_eq!(outcome, Outcome::Delivered);
        }
    };
    let carrying = async {
        let mut carried = 0u64;
        let mut forwards = 0;
        while forwards < 10 {
            match from_link.next().await {
                Some(Ok(LinkFrame::Forward { env, .. })) => {
                    carried += env.sealed.len() as u64;
                    forwards += 1;
                    let delivered = LinkFrame::ForwardResult {
                        id: env.id,
                        outcome: Some(Outcome::Delivered),
                    };
                    link_out.send(delivered).await.unwrap();
                }
                Some(Ok(_)) => {}
                other => panic!("the link ended: {other:?}"),
            }
        }
        carried
    };
    let ((), carried) = within(30, "ten messages through the liar", async {
        tokio::join!(sending, carrying)
    })
    .await;

    // Its claims: ten times what it carried, and a pipe it never carried. Priced exactly, so
    // only A's own count can refuse them.
    let claim = |usage: Usage| RelayBilling::PayRequest {
        cum_amount: usage.cost(&prices).unwrap(),
        usage,
    };
    let inflated = Usage {
        msg: carried * 10,
        ..Usage::default()
    };
    let pipe = Usage {
        msg: carried,
        pipe: 4096,
        ..Usage::default()
    };
    let fair = Usage {
        msg: carried,
        ..Usage::default()
    };
    to_a.send(claim(inflated)).await.unwrap();
    to_a.send(claim(pipe)).await.unwrap();
    to_a.send(claim(fair)).await.unwrap();
    // Frames keep their order: a receipt for a lie would come before the fair one's.
    let receipt = match within(10, "A's receipt", from_a.next()).await {
        Some(Ok(ClientBilling::Receipt(r))) => r,
        other => panic!("expected a receipt, got {other:?}"),
    };
    assert_eq!(receipt.body.channel, channel);
    assert_eq!(receipt.body.cum_amount, fair.cost(&prices).unwrap());
    assert_eq!(receipt.body.cum_bytes, carried);
    assert_eq!(receipt.signer, open.tx.from, "signed by A");
    assert!(receipt.verify());
    sender.close().await;
    conn.close(0u32.into(), b"done");
    a.shutdown().await;
}
