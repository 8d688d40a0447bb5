//! A relay that lies about what was already paid cannot make the SDK sign more than its own
//! count: the base of a resumed channel is the client's own signed receipt, checked, never the
//! relay's word.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ledger_lite::{Amount, ChainId, ChannelId, ReceiptBody};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::wire::{ClientBilling, ExistingChannel, MAX_BILLING_FRAME, Offer, RelayBilling};
use top_billing::{Prices, Usage};
use top_client::{Client, ClientError, Identity};
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, Open};

const LOCK: u128 = 1_000_000_000;

/// A relay that offers `existing` and then says `paid` was already signed; returns what the
/// client sent after the relay asked for a tiny payment (or `None` if it closed).
async fn lying_relay(
    client: &Identity,
    latest: Option<ledger_lite::Receipt>,
    paid: Amount,
) -> (Result<Client, ClientError>, Option<ClientBilling>) {
    let relay = Identity::generate();
    let server = quinn::Endpoint::server(
        top_proto::tls::server_config(&relay).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = RelayAddr::new(relay.relay_id(), server.local_addr().unwrap());
    let chain = ChainId([7; 32]);
    let channel = ChannelId([8; 32]);
    let relay_account = relay.account_id();
    let fake = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (send, recv) = conn.accept_bi().await.unwrap();
        let mut frames = FramedRead::new(recv, FrameCodec::<Open>::new(64));
        assert!(matches!(frames.next().await, Some(Ok(Open::Billing))));
        let recv = frames.into_inner();
        let mut out = FramedWrite::new(send, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
        let mut inp = FramedRead::new(recv, FrameCodec::<ClientBilling>::new(MAX_BILLING_FRAME));
        let prices = Prices {
            msg: Amount::from_units(1 << 20),
            ..Prices::default()
        };
        out.send(RelayBilling::Offer(Box::new(Offer {
            relay: relay_account,
            chain,
            prices,
            credit_window: Amount::from_units(1000),
            existing: Some(ExistingChannel {
                channel,
                lock: Amount::from_units(LOCK),
                latest,
            }),
        })))
        .await
        .unwrap();
        assert!(matches!(
            inp.next().await,
            Some(Ok(ClientBilling::Resume(_)))
        ));
        out.send(RelayBilling::Ready {
            channel,
            cum_amount: paid,
            cum_bytes: 0,
        })
        .await
        .unwrap();
        // One byte of messages costs one unit; the relay asks for its "paid" figure plus that.
        let usage = Usage {
            msg: 1,
            ..Usage::default()
        };
        let cum_amount = paid.checked_add(Amount::from_units(1)).unwrap();
        out.send(RelayBilling::PayRequest { usage, cum_amount })
            .await
            .ok();
        let answer = tokio::time::timeout(Duration::from_secs(3), inp.next())
            .await
            .ok()
            .flatten()
            .and_then(Result::ok);
        (answer, conn)
    });
    let connected = Client::connect(&addr, client.clone()).await;
    let (answer, _conn) = fake.await.unwrap();
    (connected, answer)
}

#[tokio::test]
async fn a_relay_cannot_claim_the_lock_was_almost_spent() {
    let me = Identity::generate();
    let almost = Amount::from_units(LOCK - 1);
    let (connected, answer) = lying_relay(&me, None, almost).await;
    assert!(
        !matches!(answer, Some(ClientBilling::Receipt(_))),
        "the client signed {answer:?}"
    );
    let Err(ClientError::Billing(e)) = connected else {
        panic!("the session went on: {:?}", connected.map(|_| ()));
    };
    assert!(e.to_string().contains("signed"), "{e}");
}

#[tokio::test]
async fn a_relay_cannot_inflate_a_real_receipt() {
    let me = Identity::generate();
    // The client really signed 10 units on the channel.
    let real = ReceiptBody {
        chain: ChainId([7; 32]),
        channel: ChannelId([8; 32]),
        cum_bytes: 10,
        cum_amount: Amount::from_units(10),
    }
    .sign(&me);
    let (connected, answer) = lying_relay(&me, Some(real), Amount::from_units(LOCK - 1)).await;
    assert!(
        !matches!(answer, Some(ClientBilling::Receipt(_))),
        "{answer:?}"
    );
    assert!(connected.is_err());
}

#[tokio::test]
async fn a_relay_cannot_present_someone_elses_receipt() {
    let me = Identity::generate();
    let forged = ReceiptBody {
        chain: ChainId([7; 32]),
        channel: ChannelId([8; 32]),
        cum_bytes: 0,
        cum_amount: Amount::from_units(LOCK - 1),
    }
    .sign(&Identity::generate());
    let (connected, answer) = lying_relay(&me, Some(forged), Amount::from_units(LOCK - 1)).await;
    assert!(
        !matches!(answer, Some(ClientBilling::Receipt(_))),
        "{answer:?}"
    );
    assert!(connected.is_err());
}

#[tokio::test]
async fn an_honest_resume_from_the_clients_own_receipt_pays_on() {
    let me = Identity::generate();
    let real = ReceiptBody {
        chain: ChainId([7; 32]),
        channel: ChannelId([8; 32]),
        cum_bytes: 0,
        cum_amount: Amount::from_units(10),
    }
    .sign(&me);
    let (connected, answer) = lying_relay(&me, Some(real), Amount::from_units(10)).await;
    // The fake relay serves nothing else, so the connection itself may fail later; what matters
    // is that the receipt for one more unit was signed.
    drop(connected);
    let Some(ClientBilling::Receipt(r)) = answer else {
        panic!("no receipt: {answer:?}");
    };
    assert_eq!(r.body.cum_amount, Amount::from_units(11));
}
