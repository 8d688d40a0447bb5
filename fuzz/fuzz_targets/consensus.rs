//! Bytes from another validator or an upstream relay: consensus blocks (gossiped, or served to
//! fill a gap), gossiped transaction batches through their cheap checks, and finality proofs a
//! follower checks. Must never panic or over-allocate; a block that decodes commits to its
//! transactions and re-encodes to the same digest; no proof from these bytes finalizes a block
//! (no fuzzer forges four validators' signatures).
#![no_main]

use commonware_codec::{Encode, Read};
use commonware_cryptography::Digestible;
use ledger_lite::block::txs_root;
use ledger_lite::SignedTx;
use libfuzzer_sys::fuzz_target;
use top_consensus::block::{ChainBlock, MAX_BLOCK_WIRE};

mod common;

use common::{CONSENSUS_GENESIS, STATE};

static CHECK: std::sync::LazyLock<top_consensus::proof::FinalityCheck> =
    std::sync::LazyLock::new(|| {
        top_consensus::proof::FinalityCheck::new(&CONSENSUS_GENESIS).expect("a consensus genesis")
    });

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    if let Ok(block) = ChainBlock::read_cfg(&mut buf, &MAX_BLOCK_WIRE) {
        assert_eq!(txs_root(&block.block().txs), block.block().header.txs_root);
        let again = ChainBlock::read_cfg(&mut block.encode(), &MAX_BLOCK_WIRE).expect("re-decodes");
        assert_eq!(again.digest(), block.digest());
    }
    if let Ok(tx) = postcard::from_bytes::<SignedTx>(data) {
        let _ = top_consensus::pending::plausible(&tx, &STATE);
    }
    for tx in top_consensus::service::decode_batch(data).unwrap_or_default() {
        let _ = top_consensus::pending::cheap_checks(&tx, &STATE);
    }
    let block = ledger_lite::Block::sign(
        ledger_lite::BlockHeader {
            chain: STATE.chain,
            height: 1,
            prev: ledger_lite::BlockHash::default(),
            time_ms: 1,
            txs_root: txs_root(&[]),
            state_root: [0; 32],
        },
        Vec::new(),
        &top_proto::identity::Identity::from_seed(&[4; 32]),
    );
    assert!(CHECK.check((0, &CONSENSUS_GENESIS.validators), &block, data).is_err());
});
