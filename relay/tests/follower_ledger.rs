//! A follower relay's ledger API answers as the validator's does: the faucet is forwarded, a
//! commit is answered once the follower's own state holds it, next nonces count what the follower
//! forwarded, and submitting the same transaction twice waits for it instead of failing.

use std::time::Duration;

use ledger_lite::wire::{AccountView, LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME};
use ledger_lite::{Amount, Tx, TxKind};
use top_proto::frame::Open;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

/// Faucet requests sent through the follower at once (above the validator's burst of 100 new
/// connections per address).
const BURST: usize = 150;

async fn account(rpc: &mut Rpc, who: &Identity) -> AccountView {
    match rpc
        .call(LedgerRequest::Account(who.account_id()))
        .await
        .unwrap()
    {
        LedgerResponse::Account(view) => view,
        other => panic!("expected an account, got {other:?}"),
    }
}

async fn submit(rpc: &mut Rpc, tx: ledger_lite::SignedTx, wait: bool) -> Option<u64> {
    match rpc.call(LedgerRequest::Submit { tx, wait }).await.unwrap() {
        LedgerResponse::Submitted { height, .. } => height,
        other => panic!("expected Submitted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_like_its_validator() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("v");
    init(&vdir, InitOptions::loopback_dev()).unwrap();
    // Slow blocks: everything below happens well inside one block interval, where the
    // follower's state cannot know what it forwarded.
    let mut config = RelayConfig::load(&vdir).unwrap();
    config.ledger.block_interval_ms = 1500;
    config.save(&vdir).unwrap();
    let validator = Relay::start(&vdir).await.unwrap();
    let fdir = dir.path().join("f");
    init(
        &fdir,
        InitOptions {
            peers: vec![validator.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let follower = Relay::start(&fdir).await.unwrap();
    while follower.chain().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let user = Identity::generate();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, &user, &follower.addr())
        .await
        .unwrap();
    let mut rpc = Rpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME)
        .await
        .unwrap();

    // The faucet through the follower; its answer comes once the follower's state has it.
    let hundred = Amount::from_top(100).unwrap();
    let height = match rpc
        .call(LedgerRequest::Faucet {
            to: user.account_id(),
            amount: hundred,
        })
        .await
        .unwrap()
    {
        LedgerResponse::Submitted { height, .. } => height.expect("committed"),
        other => panic!("the follower forwards the faucet: {other:?}"),
    };
    let view = account(&mut rpc, &user).await;
    assert!(view.height >= height);
    assert_eq!(view.account.unwrap().balance, hundred, "read your writes");
    assert_eq!(view.next_nonce, 0);

    // Two transactions in a row, neither waited for: the second is signed with the nonce the
    // follower answers, which must count the first.
    let (chain, fee) = follower
        .chain()
        .unwrap()
        .with_state(|s| (s.chain, s.params.min_fee));
    let deposit = |nonce| {
        Tx {
            chain,
            from: user.account_id(),
            nonce,
            fee,
            kind: TxKind::Deposit {
                amount: Amount::from_top(1).unwrap(),
            },
        }
        .sign(&user)
    };
    assert_eq!(submit(&mut rpc, deposit(0), false).await, None);
    let next = account(&mut rpc, &user).await.next_nonce;
    assert_eq!(next, 1, "the forwarded transaction counts");
    assert_eq!(submit(&mut rpc, deposit(next), false).await, None);
    // Submitted again, not waiting: no error either (a client retrying after a lost answer).
    assert_eq!(submit(&mut rpc, deposit(next), false).await, None);
    // The same transaction again, waiting: it waits for the one already queued.
    let committed = submit(&mut rpc, deposit(next), true)
        .await
        .expect("committed");
    let view = account(&mut rpc, &user).await;
    assert!(view.height >= committed);
    let a = view.account.unwrap();
    assert_eq!(a.nonce, 2);
    assert_eq!(a.deposit, Amount::from_top(2).unwrap());
    assert_eq!(view.next_nonce, 2);

    // A burst of faucet requests through the follower, all at once: each is answered with its
    // commit (the faucet's nonces do not collide, and the follower's forwards share one
    // connection instead of tripping the validator's limit on new connections per address).
    let burst = (0..BURST).map(|_| {
        let conn = conn.clone();
        async move {
            let mut rpc = Rpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME)
                .await
                .unwrap();
            let to = Identity::generate().account_id();
            let amount = Amount::from_top(1).unwrap();
            rpc.call(LedgerRequest::Faucet { to, amount })
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(burst).await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| {
            !matches!(
                a,
                LedgerResponse::Submitted {
                    height: Some(_),
                    ..
                }
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {BURST} failed: {:?}",
        failed.len(),
        failed.first()
    );

    conn.close(0u32.into(), b"done");
    follower.shutdown().await;
    validator.shutdown().await;
}
