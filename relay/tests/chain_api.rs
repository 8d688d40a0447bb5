//! The ledger API refuses bad input with clear errors and changes nothing: on QUIC and HTTP.

use ledger_lite::wire::{LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME};
use ledger_lite::{Amount, ChainId, Tx, TxKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use top_proto::frame::{Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;
use top_relay::{InitOptions, Relay, init};

type Rpc = RpcStream<LedgerRequest, LedgerResponse>;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

fn error_of(resp: LedgerResponse) -> String {
    match resp {
        LedgerResponse::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let faucet = Identity::load(&dir.path().join("faucet.key")).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, &faucet, &relay.addr())
        .await
        .unwrap();
    let mut rpc = Rpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME)
        .await
        .unwrap();
    let chain = relay.chain().unwrap();
    let (chain_id, fee) = chain.with_state(|s| (s.chain, s.params.min_fee));
    let before = chain.with_state(|s| s.root());
    let bob = Identity::generate();
    let tx = |nonce, kind| Tx {
        chain: chain_id,
        from: faucet.account_id(),
        nonce,
        fee,
        kind,
    };
    let pay = |amount| TxKind::Transfer {
        to: bob.account_id(),
        amount,
    };

    let mut forged = tx(0, pay(Amount::from_units(5))).sign(&faucet);
    forged.tx.kind = pay(Amount::from_units(500));
    let e = error_of(
        rpc.call(LedgerRequest::Submit {
            tx: forged,
            wait: false,
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("bad transaction signature"), "{e}");

    let e = error_of(
        rpc.call(LedgerRequest::Submit {
            tx: tx(7, pay(Amount::from_units(5))).sign(&faucet),
            wait: false,
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("wrong nonce: expected 0, got 7"), "{e}");

    let e = error_of(
        rpc.call(LedgerRequest::Submit {
            tx: tx(0, pay(Amount::from_units(u128::MAX))).sign(&faucet),
            wait: false,
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("insufficient balance"), "{e}");

    let other_chain = Tx {
        chain: ChainId([1; 32]),
        ..tx(0, pay(Amount::from_units(5)))
    }
    .sign(&faucet);
    let e = error_of(
        rpc.call(LedgerRequest::Submit {
            tx: other_chain,
            wait: false,
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("another chain"), "{e}");

    let stranger = Identity::generate();
    let from_nobody = Tx {
        chain: chain_id,
        from: stranger.account_id(),
        nonce: 0,
        fee,
        kind: pay(Amount::from_units(1)),
    }
    .sign(&stranger);
    let e = error_of(
        rpc.call(LedgerRequest::Submit {
            tx: from_nobody,
            wait: false,
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("unknown account"), "{e}");

    let e = error_of(
        rpc.call(LedgerRequest::Faucet {
            to: bob.account_id(),
            amount: Amount::from_top(1_000_000).unwrap(),
        })
        .await
        .unwrap(),
    );
    assert!(e.contains("at most"), "{e}");
    assert_eq!(
        chain.with_state(|s| s.account(&bob.account_id()).cloned()),
        None
    );

    // A malformed frame closes that stream only.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Ledger).unwrap())
        .await
        .unwrap();
    send.write_all(&[0, 0, 0, 3, 1, 0xff, 0xff]).await.unwrap();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), recv.read_to_end(1 << 16)).await;
    let ok = rpc.call(LedgerRequest::Summary).await.unwrap();
    assert!(
        matches!(ok, LedgerResponse::Summary(ref s) if s.invariant_ok),
        "{ok:?}"
    );

    // Valid after all that: committed, and the refused ones changed nothing before it.
    let ok = rpc
        .call(LedgerRequest::Submit {
            tx: tx(0, pay(Amount::from_units(5))).sign(&faucet),
            wait: true,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            ok,
            LedgerResponse::Submitted {
                height: Some(_),
                ..
            }
        ),
        "{ok:?}"
    );
    assert_ne!(before, chain.with_state(|s| s.root()));
    assert_eq!(
        chain.with_state(|s| s.account(&bob.account_id()).unwrap().balance),
        Amount::from_units(5)
    );

    let http = relay.http_addr();
    let (code, body) = http_get(http, "/api/ledger/summary").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["invariant_ok"], true);
    assert!(v["burned"].is_u64());
    // A dev chain: its one validator, epoch 0, every committed block final.
    assert_eq!(v["epoch"], 0);
    assert_eq!(v["finalized"], v["height"]);
    let validators = v["validators"].as_array().expect("the validator set");
    assert_eq!(validators.len(), 1);
    assert_eq!(
        validators[0],
        chain.genesis().validator.to_string().as_str()
    );
    let (code, body) = http_get(http, &format!("/api/ledger/account/{}", bob.account_id())).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["balance"],
        5
    );
    let (code, body) = http_get(http, "/api/ledger/account/acct1nonsense").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad account id"), "{body}");
    let (code, _) = http_get(http, "/api/ledger/block/999999").await;
    assert_eq!(code, 404);
    let (code, _) = http_get(http, "/api/ledger/block/-1").await;
    assert_eq!(code, 400);
    let (code, body) = http_get(http, "/api/ledger/block/1").await;
    assert_eq!(code, 200, "{body}");
    conn.close(0u32.into(), b"");
    relay.shutdown().await;
}
