//! Credit is bounded per payer account and per address, not per connection: reconnecting does
//! not renew it, and many accounts from one address share that address's credit. Each client
//! stops signing and sends until the relay refuses; what it carried unpaid is counted.

mod common;

use std::sync::atomic::Ordering;

use common::{dev_relay, funded};
use top_client::{Client, ClientError, Identity, Reject};

/// Connects as `who`, stops paying, sends until refused; returns the message bytes carried
/// unpaid.
async fn carry_unpaid(relay: &top_relay::Relay, who: Identity) -> u64 {
    let client = Client::connect(&relay.addr(), who).await.unwrap();
    client
        .billing()
        .expect("the dev relay charges")
        .paying
        .store(false, Ordering::Relaxed);
    let to = Identity::generate().account_id();
    let body = vec![1u8; 2000];
    let mut sent = 0u64;
    loop {
        match client.send(&to, &body).await {
            Ok(_) => sent += body.len() as u64,
            Err(ClientError::Rejected(Reject::PaymentRequired)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 2_000_000, "the relay kept carrying without receipts");
    }
    client.close().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_does_not_renew_the_credit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |c| {
        c.billing.credit_per_payer = c.billing.credit_window.clone();
    })
    .await;
    let alice = funded(&relay, "10").await;
    let first = carry_unpaid(&relay, alice.clone()).await;
    assert!(first > 0, "the first session gets its credit window");
    let mut later = 0;
    for _ in 0..4 {
        later += carry_unpaid(&relay, alice.clone()).await;
    }
    // Without the book, every reconnection carries another window (≈ 4 × first).
    assert!(
        later <= first / 2,
        "four reconnections carried {later} unpaid bytes after the first's {first}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_from_one_address_share_its_credit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dev_relay(dir.path(), |c| {
        // Two sessions' worth for the whole address.
        c.billing.credit_per_address = "0.0004".into();
    })
    .await;
    let mut accounts = Vec::new();
    for _ in 0..5 {
        accounts.push(funded(&relay, "10").await);
    }
    let mut per_account = Vec::new();
    for who in accounts {
        per_account.push(carry_unpaid(&relay, who).await);
    }
    let one = per_account[0];
    let total: u64 = per_account.iter().sum();
    // Without the book, each of the five carries a whole window (≈ 5 × one).
    assert!(
        total <= one * 5 / 2,
        "five accounts from one address carried {per_account:?} unpaid bytes"
    );
    relay.shutdown().await;
}
