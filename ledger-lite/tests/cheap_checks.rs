//! A forged settlement costs a lookup, not thousands of signature checks: the checks that need
//! no signature run first, on the mempool path the relay uses, and a settlement is bounded.

mod common;

use common::{MIN_FEE, World, top};
use ledger_lite::apply::MAX_SETTLE_CLAIMS;
use ledger_lite::*;
use top_proto::identity::Identity;

/// A settlement from `from` (who signs it) with `n` receipts whose signatures are garbage.
fn forged_settle(w: &World, from: &Identity, n: usize, channel: ChannelId) -> SignedTx {
    let junk = ReceiptBody {
        chain: w.chain(),
        channel,
        cum_bytes: 1,
        cum_amount: Amount::from_units(1),
    }
    .sign(from);
    let receipts = (0..n)
        .map(|_| Receipt {
            signature: ed25519_dalek::Signature::from_bytes(&[7; 64]),
            ..junk.clone()
        })
        .collect();
    Tx {
        chain: w.chain(),
        from: from.account_id(),
        nonce: 0,
        fee: Amount::from_units(MIN_FEE),
        kind: TxKind::Settle { receipts },
    }
    .sign(from)
}

#[test]
fn a_forged_settlement_from_nowhere_fails_before_any_signature_is_checked() {
    let w = World::new(2);
    let stranger = Identity::generate();
    // Settling may create the relay's account, so the channel check is what stops it: a
    // channel that does not exist fails by lookup; the junk signatures are never reached.
    let stx = forged_settle(&w, &stranger, 1000, ChannelId([9; 32]));
    assert_eq!(w.state.precheck(&stx), Err(TxError::UnknownChannel));
    let mut pool = Mempool::new(&w.state, 100);
    assert_eq!(
        pool.submit(stx),
        Err(SubmitError::Invalid(TxError::UnknownChannel)),
        "the mempool ran the signature checks first"
    );
}

#[test]
fn a_settlement_on_someone_elses_channel_fails_by_lookup_too() {
    let mut w = World::new(3);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, top(5));
    // Person 2 is not the channel's relay.
    let stx = forged_settle(&w, &w.people[2].clone(), 10, ch);
    let stx = Tx {
        nonce: w.state.account(&w.id(2)).unwrap().nonce,
        fee: Amount::from_units(MIN_FEE),
        ..stx.tx
    }
    .sign(&w.people[2]);
    assert_eq!(w.state.precheck(&stx), Err(TxError::NotChannelRelay));
}

#[test]
fn settlements_are_bounded() {
    let mut w = World::new(2);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, top(5));
    let relay = w.people[1].clone();
    let nonce = w.state.account(&w.id(1)).unwrap().nonce;
    let stx = Tx {
        nonce,
        fee: Amount::from_units(MIN_FEE),
        ..forged_settle(&w, &relay, MAX_SETTLE_CLAIMS + 1, ch).tx
    }
    .sign(&relay);
    assert_eq!(w.state.precheck(&stx), Err(TxError::BadSettlement));
}

#[test]
fn one_account_cannot_fill_the_mempool() {
    let w = World::new(2);
    let mut pool = Mempool::new(&w.state, 10_000);
    let me = w.id(0);
    let mut refused = None;
    for nonce in 0..(mempool::MAX_PENDING_PER_ACCOUNT as u64 + 1) {
        let tx = Tx {
            chain: w.chain(),
            from: me,
            nonce,
            fee: Amount::from_units(MIN_FEE),
            kind: TxKind::Transfer {
                to: me,
                amount: Amount::from_units(1),
            },
        }
        .sign(&w.people[0]);
        if let Err(e) = pool.submit(tx) {
            refused = Some((nonce, e));
            break;
        }
    }
    assert_eq!(
        refused,
        Some((
            mempool::MAX_PENDING_PER_ACCOUNT as u64,
            SubmitError::AccountFull(mempool::MAX_PENDING_PER_ACCOUNT)
        ))
    );
    // Others still get in.
    let other = w.tx(1, TxKind::Deposit { amount: top(1) });
    assert!(pool.submit(other).is_ok());
}

#[test]
fn one_channel_never_settles_both_receipts_and_egress() {
    // Both kinds count from zero: on one channel, the second kind would be paid only past the
    // first's total (a relay earned 0.9 TOP for 2 TOP of service).
    let mut w = World::new(2);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, top(5));
    let receipt = w.receipt(0, ch, top(1));
    w.settle(1, vec![receipt]).unwrap();
    let allowance = AllowanceBody {
        chain: w.chain(),
        channel: ch,
        content: [9; 32],
        cap: top(2),
    }
    .sign(&w.people[0]);
    let claim = EgressClaim {
        allowance,
        cum_bytes: 1,
        cum_amount: top(2),
    };
    let egress = w.tx(
        1,
        TxKind::SettleEgress {
            claims: vec![claim],
        },
    );
    assert_eq!(w.state.precheck(&egress), Err(TxError::MixedSettlement));
    assert_eq!(w.run(egress), Err(TxError::MixedSettlement));
    assert_eq!(
        w.state.channel(&ch).unwrap().settles,
        Some(SettleKind::Receipts)
    );
}
