//! A peer on the validators' network sending garbage votes and certificates: each validator
//! drops them, blocks the peer and counts it; nothing crashes and the chain goes on.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::sim::{Sim, all_reach, assert_agree, wait};
use commonware_codec::varint::UInt;
use commonware_codec::{Encode as _, ReadExt as _};
use commonware_cryptography::Signer as _;
use commonware_cryptography::ed25519::PrivateKey;
use commonware_p2p::{Recipients, Sender as _};
use commonware_runtime::{Quota, Runner as _, deterministic};
use top_consensus::misbehaviour::{Misbehaviour, Report};
use top_consensus::node::channel;
use top_proto::identity::Identity;

#[test]
fn garbage_from_a_peer_is_dropped_counted_and_the_chain_goes_on() {
    let runner = deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(4)
            .with_timeout(Some(Duration::from_secs(600))),
    );
    runner.start(|context| async move {
        let ids: Vec<Identity> = (0..4u8)
            .map(|i| Identity::from_seed(&[i + 41; 32]))
            .collect();
        let rogue = PrivateKey::read(&mut &[66u8; 32][..]).unwrap().public_key();
        let user = Identity::from_seed(&[77; 32]);
        let genesis = common::consensus_genesis("bad", &ids, &user);
        let blocked = Arc::new(AtomicU64::new(0));
        let counter = blocked.clone();
        let report: Report = Arc::new(move |seen| {
            assert_eq!(seen, Misbehaviour::PeerBlocked);
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let sim = Sim::start_with(
            &context,
            &ids,
            &genesis,
            std::slice::from_ref(&rogue),
            report,
        )
        .await;
        all_reach(&sim.ledgers, 3).await;

        // Garbage on epoch 0's sub-channel of votes and of certificates.
        let control = sim.oracle.control(rogue.clone());
        let quota = Quota::per_second(NonZeroU32::MAX);
        for ch in [channel::VOTES, channel::CERTIFICATES] {
            let (mut sender, _receiver) = control.register(ch, quota).await.unwrap();
            let mut junk = UInt(0u64).encode().to_vec();
            junk.extend_from_slice(&[0xA5; 200]);
            sender.send(Recipients::All, junk, false);
        }
        let top = sim.heights().into_iter().max().unwrap_or(0);
        all_reach(&sim.ledgers, top + 5).await;
        wait(&context, 1).await;
        assert!(
            blocked.load(Ordering::Relaxed) >= 4,
            "every validator blocks the rogue (counted {})",
            blocked.load(Ordering::Relaxed)
        );
        assert_agree(&sim.ledgers);
    });
}

#[test]
fn forged_transactions_in_a_gossiped_batch_are_dropped_and_counted() {
    let ids: Vec<Identity> = (0..4u8)
        .map(|i| Identity::from_seed(&[i + 41; 32]))
        .collect();
    let user = Identity::from_seed(&[77; 32]);
    let genesis = common::consensus_genesis("forged", &ids, &user);
    let state = genesis.state().unwrap();
    let ledger = top_consensus::app::Ledger::new(
        &top_consensus::ChainBlock::genesis(&genesis).unwrap(),
        state.clone(),
    );
    let to = Identity::from_seed(&[78; 32]).account_id();
    let good = common::transfer(state.chain, &user, to, 0, 100);
    let mut forged = common::transfer(state.chain, &user, to, 1, 100);
    // The amount raised after signing: the signature no longer covers it.
    forged.tx.kind = ledger_lite::TxKind::Transfer {
        to,
        amount: ledger_lite::Amount::from_units(900_000),
    };
    assert_eq!(ledger.submit_gossiped(vec![good, forged]), (1, 1));
    assert_eq!(ledger.pending(), 1);
}
