//! The money rules of DESIGN.md §6, each checked against the ledger.

mod common;

use common::{MIN_FEE, UNBONDING, World, top};
use ledger_lite::*;

#[test]
fn transfers_move_exact_amounts_and_refuse_bad_ones() {
    let mut w = World::new(3);
    let tx = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: Amount::from_units(1_500_000_001),
        },
    );
    w.run(tx).unwrap();
    assert_eq!(w.balance(0), Amount::from_units(998_499_999_999 - MIN_FEE));
    assert_eq!(w.balance(1), Amount::from_units(1_001_500_000_001));

    let too_much = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: Amount::from_units(u128::MAX),
        },
    );
    assert!(matches!(
        w.run(too_much),
        Err(TxError::Insufficient {
            what: "balance",
            ..
        })
    ));
    let zero = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: Amount::ZERO,
        },
    );
    assert_eq!(w.run(zero), Err(TxError::ZeroAmount));

    let mut replay = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: top(1),
        },
    );
    replay.tx.nonce = 0;
    let replay = replay.tx.sign(&w.people[0]);
    assert_eq!(
        w.run(replay),
        Err(TxError::WrongNonce {
            expected: 1,
            got: 0
        })
    );

    let mut forged = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(2),
            amount: top(1),
        },
    );
    forged.tx.kind = TxKind::Transfer {
        to: w.id(2),
        amount: top(2),
    };
    assert_eq!(w.run(forged), Err(TxError::BadSignature));

    let mut foreign = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(2),
            amount: top(1),
        },
    );
    foreign.tx.chain = ChainId([9; 32]);
    let foreign = foreign.tx.sign(&w.people[0]);
    assert_eq!(w.run(foreign), Err(TxError::WrongChain));

    let stranger = top_proto::identity::Identity::from_seed(&[99; 32]);
    let from_nobody = Tx {
        chain: w.chain(),
        from: stranger.account_id(),
        nonce: 0,
        fee: Amount::from_units(MIN_FEE),
        kind: TxKind::Transfer {
            to: w.id(0),
            amount: top(1),
        },
    }
    .sign(&stranger);
    assert_eq!(
        w.run(from_nobody),
        Err(TxError::UnknownAccount(stranger.account_id()))
    );
    assert_eq!(
        w.balance(2),
        top(1000),
        "no refused transaction moved anything"
    );
}

#[test]
fn withdrawals_and_unstakes_wait_out_unbonding() {
    let mut w = World::new(1);
    w.run(w.tx(0, TxKind::Deposit { amount: top(100) }))
        .unwrap();
    w.run(w.tx(0, TxKind::Stake { amount: top(50) })).unwrap();
    assert_eq!(w.balance(0), w.less_fees(0, top(850)));
    w.run(w.tx(0, TxKind::Withdraw { amount: top(40) }))
        .unwrap();
    let withdrawn_at = w.state.height;
    w.run(w.tx(0, TxKind::Unstake { amount: top(50) })).unwrap();
    assert!(matches!(
        w.run(w.tx(0, TxKind::Withdraw { amount: top(61) })),
        Err(TxError::Insufficient {
            what: "deposit",
            ..
        })
    ));
    let account = w.state.account(&w.id(0)).unwrap().clone();
    assert_eq!(
        (account.deposit, account.stake, account.unbonding_total()),
        (top(60), top(0), top(90))
    );
    while w.state.height < withdrawn_at + UNBONDING - 1 {
        w.tick();
        assert_eq!(
            w.balance(0),
            w.less_fees(0, top(850)),
            "released early at height {}",
            w.state.height
        );
    }
    w.tick();
    assert_eq!(
        w.balance(0),
        w.less_fees(0, top(890)),
        "the withdrawal comes back after {UNBONDING} blocks"
    );
    w.tick();
    assert_eq!(w.balance(0), w.less_fees(0, top(940)));
    w.state.check_invariant().unwrap();
}

#[test]
fn settlement_pays_the_relay_and_burns_the_ceiling_of_a_tenth() {
    let mut w = World::new(3);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, Amount::from_units(100));
    let relay_before = w.balance(1);

    let fees = w
        .settle(1, vec![w.receipt(0, ch, Amount::from_units(15))])
        .unwrap();
    assert_eq!(
        fees,
        vec![SettledFee {
            channel: ch,
            fee: Amount::from_units(15),
            burned: Amount::from_units(2)
        }]
    );
    assert_eq!(
        w.balance(1),
        relay_before
            .checked_add(Amount::from_units(13))
            .and_then(|a| a.checked_sub(Amount::from_units(MIN_FEE)))
            .unwrap(),
        "the relay earns the fee less the burn, and pays its transaction's fee"
    );
    let burned = w.all_fees().checked_add(Amount::from_units(2)).unwrap();
    assert_eq!(
        w.state.burned, burned,
        "the tenth and every transaction fee"
    );
    assert_eq!(
        w.state.total_supply(),
        w.state.genesis_supply.checked_sub(burned).unwrap()
    );

    let same = w.receipt(0, ch, Amount::from_units(15));
    assert!(
        matches!(w.settle(1, vec![same]), Err(TxError::OldReceipt { .. })),
        "no settlement twice"
    );
    let older = w.receipt(0, ch, Amount::from_units(10));
    assert!(matches!(
        w.settle(1, vec![older]),
        Err(TxError::OldReceipt { .. })
    ));

    // Beyond the lock: only what is left of the lock is paid.
    let fees = w
        .settle(1, vec![w.receipt(0, ch, Amount::from_units(1_000))])
        .unwrap();
    assert_eq!(fees[0].fee, Amount::from_units(85));
    assert_eq!(fees[0].burned, Amount::from_units(9));
    assert_eq!(
        w.state.channel(&ch).unwrap().settled,
        Amount::from_units(100)
    );
    assert_eq!(
        w.settle(1, vec![w.receipt(0, ch, Amount::from_units(2_000))]),
        Err(TxError::ChannelSpent)
    );
    assert_eq!(
        w.state.burned,
        Amount::from_units(11).checked_add(w.all_fees()).unwrap()
    );
}

#[test]
fn settlements_by_others_or_with_forged_or_foreign_receipts_fail() {
    let mut w = World::new(4);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, top(5));
    let receipt = w.receipt(0, ch, top(1));
    assert_eq!(
        w.settle(2, vec![receipt.clone()]),
        Err(TxError::NotChannelRelay),
        "another relay"
    );

    let mut forged = receipt.clone();
    forged.body.cum_amount = top(4);
    assert_eq!(w.settle(1, vec![forged]), Err(TxError::BadReceiptSignature));

    let by_stranger = w.receipt(3, ch, top(1));
    assert_eq!(
        w.settle(1, vec![by_stranger]),
        Err(TxError::WrongReceiptSigner(w.id(3)))
    );

    let foreign = ReceiptBody {
        chain: ChainId([7; 32]),
        channel: ch,
        cum_bytes: 1,
        cum_amount: top(1),
    }
    .sign(&w.people[0]);
    assert_eq!(w.settle(1, vec![foreign]), Err(TxError::ReceiptWrongChain));

    let unknown = w.receipt(0, ChannelId([1; 32]), top(1));
    assert_eq!(w.settle(1, vec![unknown]), Err(TxError::UnknownChannel));
    assert_eq!(w.settle(1, vec![]), Err(TxError::BadSettlement));
    assert_eq!(
        w.settle(1, vec![receipt.clone(), receipt.clone()]),
        Err(TxError::BadSettlement)
    );
    assert_eq!(w.state.burned, w.all_fees(), "only transaction fees burned");

    // A settlement with one bad receipt applies none of them.
    let ch2 = w.open(0, 1, top(1));
    let good = w.receipt(0, ch2, top(1));
    let mut bad = w.receipt(0, ch, top(2));
    bad.body.cum_bytes += 1;
    assert_eq!(
        w.settle(1, vec![good, bad]),
        Err(TxError::BadReceiptSignature)
    );
    assert_eq!(w.state.channel(&ch2).unwrap().settled, Amount::ZERO);
    w.settle(1, vec![receipt]).unwrap();
}

#[test]
fn closing_channels_still_settle_until_closed_then_refund() {
    let mut w = World::new(3);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, top(4));
    assert_eq!(w.state.account(&w.id(0)).unwrap().deposit, top(6));
    assert_eq!(
        w.run(w.tx(2, TxKind::CloseChannel { channel: ch })),
        Err(TxError::NotChannelParty)
    );
    w.run(w.tx(0, TxKind::CloseChannel { channel: ch }))
        .unwrap();
    assert_eq!(
        w.run(w.tx(0, TxKind::CloseChannel { channel: ch })),
        Err(TxError::AlreadyClosing)
    );
    w.settle(1, vec![w.receipt(0, ch, top(1))]).unwrap();
    w.tick();
    w.tick();
    assert_eq!(w.state.channel(&ch).unwrap().status, ChannelStatus::Closed);
    assert_eq!(
        w.settle(1, vec![w.receipt(0, ch, top(2))]),
        Err(TxError::ChannelClosed)
    );
    assert_eq!(
        w.state.account(&w.id(0)).unwrap().deposit,
        top(9),
        "unspent lock refunded"
    );
    w.state.check_invariant().unwrap();
}

#[test]
fn one_deposit_cannot_be_promised_twice() {
    let mut w = World::new(3);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    w.open(0, 1, top(7));
    let second = w.tx(
        0,
        TxKind::OpenChannel {
            relay: w.id(2),
            amount: top(4),
            sponsor: None,
        },
    );
    assert!(matches!(
        w.run(second),
        Err(TxError::Insufficient {
            what: "deposit",
            ..
        })
    ));
    assert!(matches!(
        w.run(w.tx(0, TxKind::Withdraw { amount: top(4) })),
        Err(TxError::Insufficient {
            what: "deposit",
            ..
        })
    ));
}

#[test]
fn sponsored_channels_bill_the_app_within_cap_and_expiry() {
    let (app, user, relay) = (0, 1, 2);
    let mut w = World::new(3);
    w.run(w.tx(app, TxKind::Deposit { amount: top(100) }))
        .unwrap();
    let open = |w: &World, amount| {
        w.tx(
            user,
            TxKind::OpenChannel {
                relay: w.id(relay),
                amount,
                sponsor: Some(w.id(app)),
            },
        )
    };
    assert_eq!(
        w.run(open(&w, top(1))),
        Err(TxError::NoGrant {
            app: w.id(app),
            user: w.id(user)
        })
    );
    let expires_ms = w.state.time_ms + 10_000;
    w.run(w.tx(
        app,
        TxKind::Grant {
            user: w.id(user),
            cap: top(5),
            expires_ms,
        },
    ))
    .unwrap();
    let nonce = w.state.account(&w.id(user)).unwrap().nonce;
    w.run(open(&w, top(3))).unwrap();
    let ch = ChannelId::derive(&w.chain(), &w.id(user), &w.id(relay), nonce);
    assert!(matches!(
        w.run(open(&w, top(3))),
        Err(TxError::Insufficient { what: "grant", .. })
    ));
    let user_balance = w.balance(user);

    w.settle(relay, vec![w.receipt(user, ch, top(2))]).unwrap();
    assert_eq!(w.balance(user), user_balance, "the user pays nothing");
    assert_eq!(
        w.state.account(&w.id(app)).unwrap().deposit,
        top(97).checked_sub(Amount::from_units(MIN_FEE)).unwrap(),
        "the app's deposit paid the lock and the open's fee"
    );
    let receipt_by_app = w.receipt(app, ch, top(3));
    assert_eq!(
        w.settle(relay, vec![receipt_by_app]),
        Err(TxError::WrongReceiptSigner(w.id(app)))
    );

    w.run(w.tx(user, TxKind::CloseChannel { channel: ch }))
        .unwrap();
    for _ in 0..UNBONDING {
        w.tick();
    }
    assert_eq!(
        w.state.grant(&w.id(app), &w.id(user)).unwrap().used,
        top(2).checked_add(Amount::from_units(2 * MIN_FEE)).unwrap(),
        "refund frees the cap; the open's and the close's fees stay counted"
    );
    assert_eq!(
        w.state.account(&w.id(app)).unwrap().deposit,
        top(98)
            .checked_sub(Amount::from_units(2 * MIN_FEE))
            .unwrap(),
        "the app paid the open's and the close's fee"
    );
    while w.state.time_ms <= expires_ms {
        w.tick();
    }
    assert_eq!(w.run(open(&w, top(1))), Err(TxError::GrantExpired));
}

#[test]
fn blocks_apply_whole_or_not_at_all() {
    let mut w = World::new(2);
    let mut follower = w.state.clone();
    let validator = w.validator.account_id();
    let head = w.head;
    let ok = w.tx(
        0,
        TxKind::Transfer {
            to: w.id(1),
            amount: top(1),
        },
    );
    let built = w
        .state
        .build_block(vec![ok.clone()], 5_000, head, &w.validator);
    assert!(built.rejected.is_empty());
    follower
        .apply_block(&built.block, &head, &validator)
        .unwrap();
    assert_eq!(
        follower, w.state,
        "a follower reaches the validator's state"
    );
    assert_eq!(follower.root(), built.block.header.state_root);

    // A second block: one valid transfer, then one overdraft signed into the block by a rogue
    // validator. The follower refuses it and keeps its state.
    let head = built.block.hash();
    let before = follower.clone();
    let good = Tx {
        chain: w.chain(),
        from: w.id(0),
        nonce: 1,
        fee: Amount::from_units(MIN_FEE),
        kind: TxKind::Transfer {
            to: w.id(1),
            amount: top(1),
        },
    }
    .sign(&w.people[0]);
    let bad = Tx {
        chain: w.chain(),
        from: w.id(1),
        nonce: 0,
        fee: Amount::from_units(MIN_FEE),
        kind: TxKind::Transfer {
            to: w.id(0),
            amount: top(5000),
        },
    }
    .sign(&w.people[1]);
    let header = BlockHeader {
        chain: w.chain(),
        height: 2,
        prev: head,
        time_ms: 6_000,
        txs_root: ledger_lite::block::txs_root(&[good.clone(), bad.clone()]),
        state_root: [0; 32],
    };
    let rogue = Block::sign(header.clone(), vec![good.clone(), bad], &w.validator);
    assert!(matches!(
        follower.apply_block(&rogue, &head, &validator),
        Err(BlockError::Tx { index: 1, .. })
    ));
    assert_eq!(follower, before);

    let wrong_root = Block::sign(
        BlockHeader {
            txs_root: ledger_lite::block::txs_root(std::slice::from_ref(&good)),
            ..header.clone()
        },
        vec![good.clone()],
        &w.validator,
    );
    assert!(matches!(
        follower.apply_block(&wrong_root, &head, &validator),
        Err(BlockError::StateRoot)
    ));
    assert_eq!(follower, before);
    let impostor = Block::sign(header.clone(), vec![good.clone()], &w.people[0]);
    assert!(matches!(
        follower.apply_block(&impostor, &head, &validator),
        Err(BlockError::BadValidatorSignature)
    ));
    assert!(matches!(
        follower.apply_block(&built.block, &head, &validator),
        Err(BlockError::WrongHeight {
            expected: 2,
            got: 1
        })
    ));
    assert_eq!(follower, before);
}

#[test]
fn batch_verification_finds_one_bad_signature_among_many() {
    let mut w = World::new(2);
    w.run(w.tx(0, TxKind::Deposit { amount: top(100) }))
        .unwrap();
    let ch = w.open(0, 1, top(100));
    let mut txs = Vec::new();
    for i in 0..600u64 {
        let receipt = w.receipt(0, ch, Amount::from_units(1 + u128::from(i)));
        let tx = Tx {
            chain: w.chain(),
            from: w.id(1),
            nonce: i,
            fee: Amount::from_units(MIN_FEE),
            kind: TxKind::Settle {
                receipts: vec![receipt],
            },
        };
        txs.push(tx.sign(&w.people[1]));
    }
    assert_eq!(ledger_lite::verify::verify_txs(&txs), Ok(()));
    let mut tampered = txs[457].tx.clone();
    if let TxKind::Settle { receipts } = &mut tampered.kind {
        receipts[0].body.cum_bytes += 1;
    }
    txs[457] = tampered.sign(&w.people[1]);
    assert_eq!(
        ledger_lite::verify::verify_txs(&txs),
        Err((457, TxError::BadReceiptSignature))
    );
}

fn allowance(w: &World, signer: usize, channel: ChannelId, cap: Amount) -> Allowance {
    AllowanceBody {
        chain: w.chain(),
        channel,
        content: [9; 32],
        cap,
    }
    .sign(&w.people[signer])
}

fn claim(allowance: &Allowance, cum: u128) -> EgressClaim {
    EgressClaim {
        allowance: allowance.clone(),
        cum_bytes: cum as u64,
        cum_amount: Amount::from_units(cum),
    }
}

#[test]
fn egress_claims_settle_within_the_publishers_cap_with_the_burn() {
    let mut w = World::new(4);
    w.run(w.tx(0, TxKind::Deposit { amount: top(10) })).unwrap();
    let ch = w.open(0, 1, Amount::from_units(1_000));
    let allowed = allowance(&w, 0, ch, Amount::from_units(500));
    let egress = |w: &World, relay: usize, claims: Vec<EgressClaim>| {
        w.tx(relay, TxKind::SettleEgress { claims })
    };
    let relay_before = w.balance(1);

    // Claims grow; each pays the difference, a tenth (rounded up) burned.
    let fees = w.run(egress(&w, 1, vec![claim(&allowed, 101)])).unwrap();
    assert_eq!(
        (fees[0].fee, fees[0].burned),
        (Amount::from_units(101), Amount::from_units(11))
    );
    let fees = w.run(egress(&w, 1, vec![claim(&allowed, 500)])).unwrap();
    assert_eq!(
        (fees[0].fee, fees[0].burned),
        (Amount::from_units(399), Amount::from_units(40))
    );
    assert_eq!(
        w.balance(1),
        relay_before
            .checked_add(Amount::from_units(449))
            .and_then(|a| a.checked_sub(Amount::from_units(2 * MIN_FEE)))
            .unwrap()
    );
    assert_eq!(
        w.state.burned,
        Amount::from_units(51).checked_add(w.all_fees()).unwrap()
    );

    // Never above the cap, never twice, never by another relay, never on a forged allowance.
    assert_eq!(
        w.run(egress(&w, 1, vec![claim(&allowed, 501)])),
        Err(TxError::AboveAllowance {
            claimed: Amount::from_units(501),
            cap: Amount::from_units(500)
        })
    );
    assert!(matches!(
        w.run(egress(&w, 1, vec![claim(&allowed, 500)])),
        Err(TxError::OldReceipt { .. })
    ));
    assert_eq!(
        w.run(egress(&w, 2, vec![claim(&allowed, 400)])),
        Err(TxError::NotChannelRelay)
    );
    let mut forged = allowed.clone();
    forged.body.cap = Amount::from_units(1_000);
    assert_eq!(
        w.run(egress(&w, 1, vec![claim(&forged, 900)])),
        Err(TxError::BadReceiptSignature)
    );
    // An allowance the relay signed for itself is not the publisher's.
    let self_made = allowance(&w, 1, ch, Amount::from_units(1_000));
    assert_eq!(
        w.run(egress(&w, 1, vec![claim(&self_made, 900)])),
        Err(TxError::WrongReceiptSigner(w.id(1)))
    );
    assert_eq!(
        w.state.burned,
        Amount::from_units(51).checked_add(w.all_fees()).unwrap()
    );
    w.state.check_invariant().unwrap();
}

#[test]
fn only_the_signatures_picked_are_checked_again_and_a_forged_one_picked_is_refused() {
    let mut w = World::new(2);
    let head = w.head;
    let transfer = |w: &World, nonce| {
        Tx {
            chain: w.chain(),
            from: w.id(0),
            nonce,
            fee: Amount::from_units(MIN_FEE),
            kind: TxKind::Transfer {
                to: w.id(1),
                amount: top(1),
            },
        }
        .sign(&w.people[0])
    };
    let (a, b) = (transfer(&w, 0), transfer(&w, 1));
    let mut builder = w.state.clone();
    let built = builder.build_block(vec![a.clone(), b.clone()], 5_000, head, &w.validator);
    assert!(built.rejected.is_empty());
    // The same block with b's signature swapped for a's: its hash covers the transactions' root,
    // so it is a different block; a voter that checked a but not this b must catch it.
    let mut forged = built.block.clone();
    forged.txs[1].signature = a.signature;
    forged.header.txs_root = ledger_lite::block::txs_root(&forged.txs);
    let before = w.state.clone();
    let refused = w
        .state
        .apply_agreed_checking(&forged, &head, |t| t.hash() != a.hash());
    assert!(matches!(refused, Err(BlockError::Tx { index: 1, .. })));
    assert_eq!(w.state, before, "nothing changed");
    // Checking none (the engine checked them) or only b: the true block applies.
    let mut voter = w.state.clone();
    voter
        .apply_agreed_checking(&built.block, &head, |t| t.hash() == b.hash())
        .unwrap();
    assert_eq!(voter.root(), built.block.header.state_root);
}
