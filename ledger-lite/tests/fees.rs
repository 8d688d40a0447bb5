//! Every transaction pays at least the chain's minimum fee, burned: spam costs the spammer, and
//! an account that cannot pay is refused before any signature is checked.

mod common;

use common::{MIN_FEE, World, top};
use ledger_lite::*;
use top_proto::identity::Identity;

fn fee() -> Amount {
    Amount::from_units(MIN_FEE)
}

/// `kind` from `who` with `fee` and the next nonce, signed.
fn signed(w: &World, who: &Identity, fee: Amount, kind: TxKind) -> SignedTx {
    let nonce = w.state.account(&who.account_id()).map_or(0, |a| a.nonce);
    Tx {
        chain: w.chain(),
        from: who.account_id(),
        nonce,
        fee,
        kind,
    }
    .sign(who)
}

#[test]
fn every_transaction_burns_its_fee_and_less_than_the_minimum_is_refused() {
    let mut w = World::new(2);
    let to = w.id(1);
    let cheap = signed(
        &w,
        &w.people[0],
        Amount::from_units(MIN_FEE - 1),
        TxKind::Transfer { to, amount: top(1) },
    );
    let refused = Err(TxError::FeeTooLow {
        have: Amount::from_units(MIN_FEE - 1),
        need: fee(),
    });
    assert_eq!(w.state.precheck(&cheap), refused.clone().map(|_: ()| ()));
    assert_eq!(w.run(cheap), refused.map(|_: ()| vec![]));
    assert_eq!(w.state.burned, Amount::ZERO, "a refusal burns nothing");

    // A self-transfer is not free: each one burns its fee.
    let generous = Amount::from_units(5 * MIN_FEE);
    let to_self = signed(
        &w,
        &w.people[0],
        generous,
        TxKind::Transfer {
            to: w.id(0),
            amount: top(1),
        },
    );
    w.run(to_self).unwrap();
    assert_eq!(w.balance(0), top(1000).checked_sub(generous).unwrap());
    assert_eq!(w.state.burned, generous, "the whole offered fee is burned");
    w.state.check_invariant().unwrap();
}

#[test]
fn an_account_that_cannot_pay_the_fee_is_refused_before_its_signature_is_checked() {
    let w = World::new(1);
    let stranger = Identity::generate();
    let mut forged = signed(
        &w,
        &stranger,
        fee(),
        TxKind::Grant {
            user: w.id(0),
            cap: top(1),
            expires_ms: u64::MAX,
        },
    );
    forged.signature = ed25519_dalek::Signature::from_bytes(&[7; 64]);
    assert_eq!(
        w.state.precheck(&forged),
        Err(TxError::UnknownAccount(stranger.account_id()))
    );

    // An account that exists but holds less than the fee: same, by lookup.
    let mut w = World::new(2);
    let all_but_a_fee = top(1000)
        .checked_sub(Amount::from_units(2 * MIN_FEE - 1))
        .unwrap();
    w.run(w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: all_but_a_fee,
        },
    ))
    .unwrap();
    assert_eq!(w.balance(0), Amount::from_units(MIN_FEE - 1));
    let mut broke = w.tx(0, TxKind::Deposit { amount: top(1) });
    broke.signature = ed25519_dalek::Signature::from_bytes(&[7; 64]);
    let short = Err(TxError::Insufficient {
        what: "balance",
        have: Amount::from_units(MIN_FEE - 1),
        need: fee(),
    });
    assert_eq!(w.state.precheck(&broke), short);
    let mut pool = Mempool::new(&w.state, 100);
    assert_eq!(
        pool.submit(broke),
        short
            .map_err(SubmitError::Invalid)
            .map(|()| TxHash([0; 32])),
        "the mempool ran the cheap check before the signature"
    );
}

#[test]
fn self_transfer_spam_stops_when_the_balance_is_spent_on_fees() {
    let mut w = World::new(2);
    // Leave person 0 with exactly three fees and one unit.
    let keep = Amount::from_units(3 * MIN_FEE + 1);
    let give = top(1000)
        .checked_sub(keep)
        .and_then(|a| a.checked_sub(fee()))
        .unwrap();
    w.run(w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: give,
        },
    ))
    .unwrap();
    let mut pool = Mempool::new(&w.state, 1_000);
    let spam = |pool: &Mempool| {
        let me = &w.people[0];
        Tx {
            chain: w.chain(),
            from: me.account_id(),
            nonce: pool.pending().account(&me.account_id()).unwrap().nonce,
            fee: fee(),
            kind: TxKind::Transfer {
                to: me.account_id(),
                amount: Amount::from_units(1),
            },
        }
        .sign(me)
    };
    let accepted = (0..10).filter(|_| pool.submit(spam(&pool)).is_ok()).count();
    assert_eq!(accepted, 3, "three fees buy three transactions, no more");
}

#[test]
fn a_new_relay_pays_its_settlement_fee_from_what_it_earns() {
    let mut w = World::new(1);
    let relay = Identity::generate();
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let nonce = w.state.account(&w.id(0)).unwrap().nonce;
    w.run(w.tx(
        0,
        TxKind::OpenChannel {
            relay: relay.account_id(),
            amount: top(1),
            sponsor: None,
        },
    ))
    .unwrap();
    let ch = ChannelId::derive(&w.chain(), &w.id(0), &relay.account_id(), nonce);

    // Earning less than the fee: refused, nothing settles.
    let tiny = w.receipt(0, ch, Amount::from_units(MIN_FEE / 2));
    let settle =
        |w: &World, r: Receipt| signed(w, &relay, fee(), TxKind::Settle { receipts: vec![r] });
    assert!(matches!(
        w.state.precheck(&settle(&w, tiny.clone())),
        Err(TxError::Insufficient {
            what: "balance",
            ..
        })
    ));
    assert!(w.run(settle(&w, tiny)).is_err());
    assert_eq!(w.state.channel(&ch).unwrap().settled, Amount::ZERO);

    // Earning more: the fee comes out of the earnings.
    let paid = Amount::from_units(100 * MIN_FEE);
    w.run(settle(&w, w.receipt(0, ch, paid))).unwrap();
    let burn = Amount::from_units(10 * MIN_FEE);
    let earned = paid.checked_sub(burn).and_then(|a| a.checked_sub(fee()));
    assert_eq!(
        w.state.account(&relay.account_id()).map(|a| a.balance),
        earned.ok()
    );
    w.state.check_invariant().unwrap();
}

#[test]
fn an_account_whose_coins_all_sit_in_its_deposit_pays_its_fees_from_it() {
    let mut w = World::new(2);
    // Every coin but the fee goes into the deposit: the balance is left at zero.
    let all = top(1000).checked_sub(fee()).unwrap();
    w.run(w.tx(0, TxKind::Deposit { amount: all })).unwrap();
    assert_eq!(w.balance(0), Amount::ZERO);
    // It can still open a channel, close it and take its deposit back out.
    let channel = w.open(0, 1, top(10));
    let close = w.tx(0, TxKind::CloseChannel { channel });
    assert_eq!(w.state.precheck(&close), Ok(()));
    w.run(close).unwrap();
    for _ in 0..=common::UNBONDING {
        w.tick();
    }
    let deposit = w.state.account(&w.id(0)).unwrap().deposit;
    assert_eq!(
        deposit,
        all.checked_sub(fee()).unwrap().checked_sub(fee()).unwrap()
    );
    w.run(w.tx(0, TxKind::Withdraw { amount: top(1) })).unwrap();
    assert_eq!(w.state.burned, w.all_fees());
    w.state.check_invariant().unwrap();

    // With nothing anywhere, nothing goes through, before any signature is checked.
    let mut broke = World::new(2);
    let everything = top(1000).checked_sub(fee()).unwrap();
    broke
        .run(broke.tx(
            0,
            TxKind::Transfer {
                to: broke.id(1),
                amount: everything,
            },
        ))
        .unwrap();
    let refused = broke.tx(0, TxKind::CloseChannel { channel });
    assert!(matches!(
        broke.state.precheck(&refused),
        Err(TxError::Insufficient { .. })
    ));
}

/// A fresh user that person `app` (with 100 TOP deposited) grants `cap`.
fn granted_user(w: &mut World, app: usize, cap: Amount) -> Identity {
    w.run(w.tx(app, TxKind::Deposit { amount: top(100) }))
        .unwrap();
    let user = Identity::generate();
    let grant = TxKind::Grant {
        user: user.account_id(),
        cap,
        expires_ms: u64::MAX,
    };
    w.run(w.tx(app, grant)).unwrap();
    user
}

#[test]
fn a_sponsored_user_with_no_coins_closes_its_channel_at_the_apps_cost() {
    let mut w = World::new(2);
    let (app, relay) = (0, 1);
    let user = granted_user(&mut w, app, top(10));
    let open = TxKind::OpenChannel {
        relay: w.id(relay),
        amount: top(1),
        sponsor: Some(w.id(app)),
    };
    // The app pays the minimum fee, never what its user picks.
    let lavish = signed(&w, &user, top(5), open.clone());
    let refused = Err(TxError::SponsoredFee { need: fee() });
    assert_eq!(w.state.precheck(&lavish), refused.clone().map(|_: ()| ()));
    assert_eq!(w.run(lavish), refused.map(|_: ()| vec![]));
    w.run(signed(&w, &user, fee(), open)).unwrap();
    let channel = ChannelId::derive(&w.chain(), &user.account_id(), &w.id(relay), 0);
    let user_account = w.state.account(&user.account_id()).unwrap();
    assert!(user_account.balance.is_zero() && user_account.deposit.is_zero());

    let deposit_before = w.state.account(&w.id(app)).unwrap().deposit;
    // A fee above the minimum is not the app's to pay: the user, with no coins, is refused.
    let greedy = signed(&w, &user, deposit_before, TxKind::CloseChannel { channel });
    assert!(matches!(
        w.state.precheck(&greedy),
        Err(TxError::Insufficient { .. })
    ));
    assert!(w.run(greedy).is_err());
    assert_eq!(w.state.account(&w.id(app)).unwrap().deposit, deposit_before);
    let close = signed(&w, &user, fee(), TxKind::CloseChannel { channel });
    assert_eq!(w.state.precheck(&close), Ok(()));
    w.run(close).unwrap();
    let deposit = w.state.account(&w.id(app)).unwrap().deposit;
    assert_eq!(deposit, deposit_before.checked_sub(fee()).unwrap());
    assert!(matches!(
        w.state.channel(&channel).unwrap().status,
        ChannelStatus::Closing { .. }
    ));
    // Counted against the grant, like the open's fee.
    let grant = w.state.grant(&w.id(app), &user.account_id()).unwrap();
    assert_eq!(
        grant.used,
        top(1)
            .checked_add(fee())
            .unwrap()
            .checked_add(fee())
            .unwrap()
    );
    // A second close is refused, and costs the app nothing.
    let again = signed(&w, &user, fee(), TxKind::CloseChannel { channel });
    assert_eq!(w.run(again), Err(TxError::AlreadyClosing));
    assert_eq!(w.state.account(&w.id(app)).unwrap().deposit, deposit);
    w.state.check_invariant().unwrap();
}

#[test]
fn a_genesis_must_name_a_fee_above_zero() {
    let w = World::new(1);
    let mut genesis = Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: "free".into(),
        time_ms: 1,
        validator: w.id(0),
        validators: vec![],
        params: w.state.params.clone(),
        faucet: None,
        allocations: vec![(w.id(0), top(1))],
    };
    genesis.params.min_fee = Amount::ZERO;
    assert!(matches!(
        genesis.state(),
        Err(ledger_lite::block::GenesisError::Params(_))
    ));
    // A genesis file that leaves the fee (or the stake) out does not load as zero.
    genesis.params.min_fee = fee();
    let mut json: serde_json::Value = serde_json::to_value(&genesis).unwrap();
    json["params"].as_object_mut().unwrap().remove("min_fee");
    assert!(serde_json::from_value::<Genesis>(json).is_err());
}

#[test]
fn a_sponsored_users_closes_stop_costing_the_app_at_its_grant() {
    let mut w = World::new(2);
    let (app, relay) = (0, 1);
    // Room for the lock and the open's fee only.
    let user = granted_user(&mut w, app, top(1).checked_add(fee()).unwrap());
    let open = TxKind::OpenChannel {
        relay: w.id(relay),
        amount: top(1),
        sponsor: Some(w.id(app)),
    };
    w.run(signed(&w, &user, fee(), open)).unwrap();
    let channel = ChannelId::derive(&w.chain(), &user.account_id(), &w.id(relay), 0);
    // The grant is used up: the close is the user's to pay, and it has nothing.
    let close = signed(&w, &user, fee(), TxKind::CloseChannel { channel });
    assert!(matches!(
        w.state.precheck(&close),
        Err(TxError::Insufficient { .. })
    ));
    // Once it has a coin of its own, it closes at its own cost.
    w.run(w.tx(
        app,
        TxKind::Transfer {
            to: user.account_id(),
            amount: top(1),
        },
    ))
    .unwrap();
    let deposit = w.state.account(&w.id(app)).unwrap().deposit;
    w.run(signed(&w, &user, fee(), TxKind::CloseChannel { channel }))
        .unwrap();
    assert_eq!(w.state.account(&w.id(app)).unwrap().deposit, deposit);
    assert_eq!(
        w.state.account(&user.account_id()).unwrap().balance,
        top(1).checked_sub(fee()).unwrap()
    );
    w.state.check_invariant().unwrap();
}
