//! Property: over random sequences of valid and invalid transactions from many accounts, the
//! supply invariant holds after every block (fees burned included), refused transactions change
//! nothing, no committed transaction paid less than the minimum fee, and a follower
//! applying the validator's blocks reaches the same state.

mod common;

use std::collections::HashSet;

use common::{MIN_FEE, World, top};
use ledger_lite::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        to: usize,
        amount: u128,
    },
    Deposit(u128),
    Withdraw(u128),
    Stake(u128),
    Unstake(u128),
    Open {
        relay: usize,
        amount: u128,
        sponsor: Option<usize>,
    },
    Close {
        channel: usize,
    },
    Settle {
        channel: usize,
        cum: u128,
        signer: Option<usize>,
    },
    Grant {
        user: usize,
        cap: u128,
        ttl_ms: u64,
    },
    Register {
        stake: u128,
        bad_addr: bool,
    },
    Deregister,
}

#[derive(Clone, Debug)]
struct Step {
    from: usize,
    op: Op,
    /// 0: correct nonce; otherwise off by this much.
    nonce_skew: u8,
    /// The fee it offers (mostly the minimum; sometimes below it, above it, or beyond any balance).
    fee: u128,
    tamper: bool,
    end_block: bool,
}

const PEOPLE: usize = 6;

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        8 => 1u128..300_000_000_000,
        1 => Just(0u128),
        1 => Just(u128::MAX),
        1 => (u128::MAX - 10)..=u128::MAX,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..PEOPLE;
    prop_oneof![
        1 => (who.clone(), amount()).prop_map(|(to, amount)| Op::Transfer { to, amount }),
        3 => amount().prop_map(Op::Deposit),
        1 => amount().prop_map(Op::Withdraw),
        1 => amount().prop_map(Op::Stake),
        1 => amount().prop_map(Op::Unstake),
        3 => (who.clone(), amount(), proptest::option::weighted(0.3, who.clone()))
            .prop_map(|(relay, amount, sponsor)| Op::Open { relay, amount, sponsor }),
        1 => (0..8usize).prop_map(|channel| Op::Close { channel }),
        8 => (0..8usize, amount(), proptest::option::weighted(0.2, who.clone()))
            .prop_map(|(channel, cum, signer)| Op::Settle { channel, cum, signer }),
        1 => (who, amount(), 0..20_000u64).prop_map(|(user, cap, ttl_ms)| Op::Grant { user, cap, ttl_ms }),
        2 => (prop_oneof![Just(0u128), amount(), Just(common::MIN_STAKE * 1_000_000_000)], proptest::bool::weighted(0.1))
            .prop_map(|(stake, bad_addr)| Op::Register { stake, bad_addr }),
        1 => Just(Op::Deregister),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..PEOPLE,
        op(),
        prop_oneof![9 => Just(0u8), 1 => 1..3u8],
        prop_oneof![
            12 => Just(MIN_FEE),
            1 => 0..MIN_FEE,
            1 => MIN_FEE..1_000_000_000_000,
            1 => Just(u128::MAX),
        ],
        proptest::bool::weighted(0.05),
        proptest::bool::weighted(0.25),
    )
        .prop_map(|(from, op, nonce_skew, fee, tamper, end_block)| Step {
            from,
            op,
            nonce_skew,
            fee,
            tamper,
            end_block,
        })
}

fn build(w: &World, pending: &State, step: &Step) -> SignedTx {
    let channels: Vec<(ChannelId, Channel)> =
        pending.channels().map(|(id, c)| (*id, c.clone())).collect();
    let pick = |i: usize| channels.get(i % channels.len().max(1)).cloned();
    let u = Amount::from_units;
    let kind = match &step.op {
        Op::Transfer { to, amount } => TxKind::Transfer {
            to: w.id(*to),
            amount: u(*amount),
        },
        Op::Deposit(a) => TxKind::Deposit { amount: u(*a) },
        Op::Withdraw(a) => TxKind::Withdraw { amount: u(*a) },
        Op::Stake(a) => TxKind::Stake { amount: u(*a) },
        Op::Unstake(a) => TxKind::Unstake { amount: u(*a) },
        Op::Open {
            relay,
            amount,
            sponsor,
        } => TxKind::OpenChannel {
            relay: w.id(*relay),
            amount: u(*amount),
            sponsor: sponsor.map(|s| w.id(s)),
        },
        Op::Close { channel } => TxKind::CloseChannel {
            channel: pick(*channel).map_or(ChannelId([3; 32]), |c| c.0),
        },
        Op::Settle {
            channel,
            cum,
            signer,
        } => {
            let (id, ch) = pick(*channel).unwrap_or((
                ChannelId([3; 32]),
                Channel {
                    payer: w.id(0),
                    signer: w.id(0),
                    relay: w.id(1),
                    lock: top(1),
                    settled: Amount::ZERO,
                    settled_bytes: 0,
                    status: ChannelStatus::Open,
                    settles: None,
                },
            ));
            let signer_index =
                signer.unwrap_or_else(|| (0..PEOPLE).find(|i| w.id(*i) == ch.signer).unwrap_or(0));
            let receipt = ReceiptBody {
                chain: w.chain(),
                channel: id,
                cum_bytes: 1,
                cum_amount: u(*cum),
            }
            .sign(&w.people[signer_index]);
            TxKind::Settle {
                receipts: vec![receipt],
            }
        }
        Op::Grant { user, cap, ttl_ms } => TxKind::Grant {
            user: w.id(*user),
            cap: u(*cap),
            expires_ms: pending.time_ms + ttl_ms,
        },
        Op::Register { stake, bad_addr } => TxKind::RegisterRelay {
            record: Box::new(registry::RelayRecord {
                addrs: vec![if *bad_addr { "bad" } else { "relay:4433" }.into()],
                ..registry::RelayRecord::default()
            }),
            stake: u(*stake),
        },
        Op::Deregister => TxKind::DeregisterRelay,
    };
    // Settlements mostly come from the channel's relay, sometimes from whoever else.
    let from_index = match (&step.op, step.from % 3) {
        (Op::Settle { channel, .. }, 0 | 1) => pick(*channel)
            .and_then(|(_, ch)| (0..PEOPLE).find(|i| w.id(*i) == ch.relay))
            .unwrap_or(step.from),
        _ => step.from,
    };
    let from = w.id(from_index);
    let nonce = pending.account(&from).map_or(0, |a| a.nonce) + u64::from(step.nonce_skew);
    let mut stx = Tx {
        chain: w.chain(),
        from,
        nonce,
        fee: Amount::from_units(step.fee),
        kind,
    }
    .sign(&w.people[from_index]);
    if step.tamper {
        stx.tx.nonce ^= 1 << 40;
    }
    stx
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn supply_is_conserved_and_refusals_change_nothing(steps in proptest::collection::vec(step(), 1..120)) {
        let w = World::new(PEOPLE as u8);
        let mut chain = w.state.clone();
        let mut follower = w.state.clone();
        let mut head = BlockHash::default();
        let mut pool = Mempool::new(&chain, 10_000);
        let mut time = chain.time_ms;
        for (i, step) in steps.iter().enumerate() {
            let stx = build(&w, pool.pending(), step);
            let before = pool.pending().clone();
            if pool.submit(stx).is_err() {
                prop_assert_eq!(pool.pending(), &before, "a refused transaction changed the state");
            }
            pool.pending().check_invariant().map_err(TestCaseError::fail)?;
            if step.end_block || i + 1 == steps.len() {
                time += 1_000;
                let built = chain.build_block(pool.candidates(usize::MAX), time, head, &w.validator);
                prop_assert!(built.rejected.is_empty() || chain.height > 0);
                chain.check_invariant().map_err(TestCaseError::fail)?;
                let min_fee = chain.params.min_fee;
                prop_assert!(built.block.txs.iter().all(|t| t.tx.fee >= min_fee), "a transaction paid less than the minimum fee");
                let min = chain.params.min_stake;
                prop_assert!(chain.relays().all(|(_, a, _)| a.stake >= min), "a relay below the minimum stake");
                follower.apply_block(&built.block, &head, &w.validator.account_id())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&follower, &chain);
                head = built.block.hash();
                let done: HashSet<_> = built.block.txs.iter().map(|t| t.hash()).collect();
                pool.rebase(&chain, &done);
            }
        }
        // Let every unbonding and closing finish: the invariant still holds with nothing pending.
        for _ in 0..common::UNBONDING + 1 {
            time += 1_000;
            let built = chain.build_block(vec![], time, head, &w.validator);
            head = built.block.hash();
            chain.check_invariant().map_err(TestCaseError::fail)?;
        }
        prop_assert!(chain.accounts().all(|(_, a)| a.unbonding.is_empty()));
    }
}
