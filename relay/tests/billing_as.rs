//! Billing on someone else's channel (`BillingAs`, for streams that come through an entry
//! relay) needs that payer's fresh signed proof naming this relay and the entry: nobody rides
//! or reads another account's channel on its word.

mod common;

use std::time::Duration;

use common::endpoint_and_conn;
use futures::StreamExt;
use tokio_util::codec::FramedRead;
use top_billing::wire::{MAX_BILLING_FRAME, RelayBilling};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::presence::PayerProof;
use top_relay::{InitOptions, Relay, init};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Opens a `BillingAs` stream with `proof` on a connection of `me`; the relay's first answer.
async fn billing_as(relay: &Relay, me: &Identity, proof: PayerProof) -> Option<RelayBilling> {
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), me).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::BillingAs(proof)).unwrap())
        .await
        .unwrap();
    let mut frames = FramedRead::new(recv, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
    tokio::time::timeout(Duration::from_secs(10), frames.next())
        .await
        .expect("no answer")
        .and_then(Result::ok)
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_bills_as_another_account_without_its_proof() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    // A dev validator's chain is open once `start` returns.
    assert!(relay.chain().is_some());
    let (victim, attacker, elsewhere) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let now = now_ms();
    // Signed by the attacker, naming the victim.
    let mut forged = PayerProof::sign(&attacker, relay.id(), attacker.relay_id(), now);
    forged.body.payer = victim.account_id();
    // The victim's real proof, but for streams through another entry.
    let other_entry = PayerProof::sign(&victim, relay.id(), elsewhere.relay_id(), now);
    // The victim's real proof from an hour ago.
    let stale = PayerProof::sign(&victim, relay.id(), attacker.relay_id(), now - 3_600_000);
    for proof in [forged, other_entry, stale] {
        let answer = billing_as(&relay, &attacker, proof).await;
        assert!(
            !matches!(answer, Some(RelayBilling::Offer(_))),
            "billed as the victim: {answer:?}"
        );
    }
    // The victim really routes through the attacker's relay: that is served.
    let genuine = PayerProof::sign(&victim, relay.id(), attacker.relay_id(), now_ms());
    let answer = billing_as(&relay, &attacker, genuine.clone()).await;
    assert!(matches!(answer, Some(RelayBilling::Offer(_))), "{answer:?}");
    // The same proof again (the entry replaying it): refused.
    let again = billing_as(&relay, &attacker, genuine).await;
    assert!(
        !matches!(again, Some(RelayBilling::Offer(_))),
        "replayed: {again:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_key_without_a_channel_is_carried_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    // Many fresh keys, no deposit, no channel: not one byte is carried on credit.
    for _ in 0..20 {
        let me = Identity::generate();
        let mut s = common::open_session(&relay.addr(), &me).await;
        let env = common::sealed_envelope(&me, Identity::generate().account_id(), b"free?");
        s.write(&top_proto::frame::SessionFrame::Send(env.clone()))
            .await;
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            s.until(|f| *f != top_proto::frame::SessionFrame::Synced),
        )
        .await
        .unwrap();
        assert_eq!(
            answer,
            top_proto::frame::SessionFrame::Rejected {
                id: env.id,
                reason: top_proto::frame::Reject::PaymentRequired
            }
        );
    }
    assert_eq!(relay.status().mailbox.messages, 0);
    relay.shutdown().await;
}
