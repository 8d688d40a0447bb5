//! Bytes from another validator: consensus blocks (gossiped, or served to fill a gap) and
//! gossiped transactions through their cheap checks. Must never panic or over-allocate; a block
//! that decodes commits to its transactions and re-encodes to the same digest.
#![no_main]

use commonware_codec::{Encode, Read};
use commonware_cryptography::Digestible;
use ledger_lite::block::txs_root;
use ledger_lite::SignedTx;
use libfuzzer_sys::fuzz_target;
use top_consensus::block::{ChainBlock, MAX_BLOCK_WIRE};

mod common;

use common::STATE;

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
});
