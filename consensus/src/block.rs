//! A ledger-lite block as the consensus engine sees it: its digest is the header's hash (so a
//! block's parent is its header's `prev`), and decoding one from a peer is bounded and checks
//! that the transactions are the ones the header commits to.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use commonware_codec::{EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::{Block as EngineBlock, Heightable};
use commonware_cryptography::Digestible;
use commonware_cryptography::blake3::Digest;
use ledger_lite::block::{BlockHeader, txs_root};
use ledger_lite::{Block, BlockHash, Genesis};

/// The most bytes of one encoded block taken from a peer: ledger-lite's largest block and its
/// header, with room to spare.
pub const MAX_BLOCK_WIRE: usize = ledger_lite::chain::MAX_BLOCK_BYTES + (64 << 10);

/// A block agreed through consensus (or proposed for it).
#[derive(Clone, Debug)]
pub struct ChainBlock {
    block: Arc<Block>,
    digest: Digest,
    wire: Bytes,
}

impl ChainBlock {
    /// Wraps `block`, encoding it once.
    pub fn new(block: Block) -> Self {
        // Height 0 is named by zeroes, as ledger-lite names the head before block 1.
        let digest = if block.header.height == 0 {
            Digest([0; 32])
        } else {
            Digest(block.hash().0)
        };
        let wire = Bytes::from(postcard::to_stdvec(&block).unwrap_or_default());
        Self {
            block: Arc::new(block),
            digest,
            wire,
        }
    }

    /// The block at height 0 every validator starts from: it commits to the genesis state; its
    /// digest is zeroes, which block 1 names as `prev` (as on a single validator's chain).
    pub fn genesis(genesis: &Genesis) -> Result<Self, ledger_lite::block::GenesisError> {
        let state = genesis.state()?;
        let header = BlockHeader {
            chain: state.chain,
            height: 0,
            prev: BlockHash::default(),
            time_ms: genesis.time_ms,
            txs_root: txs_root(&[]),
            state_root: state.root(),
        };
        Ok(Self::new(Block {
            header,
            txs: Vec::new(),
            signature: ed25519_signature_zero(),
        }))
    }

    /// The ledger-lite block.
    pub fn block(&self) -> &Arc<Block> {
        &self.block
    }

    /// Its hash as ledger-lite names it.
    pub fn hash(&self) -> BlockHash {
        BlockHash(self.digest.0)
    }
}

/// Nobody signs a consensus block's header: the validators' finality proof stands for it. The
/// signature field is zeroes, so every validator stores the same bytes for a block (the digest
/// does not cover the signature, which a relaying peer could otherwise rewrite).
fn ed25519_signature_zero() -> ed25519_dalek::Signature {
    ed25519_dalek::Signature::from_bytes(&[0; 64])
}

/// `block` without its signature, as consensus blocks are.
pub fn unsigned(mut block: Block) -> Block {
    block.signature = ed25519_signature_zero();
    block
}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.wire.write(buf);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.wire.encode_size()
    }
}

impl Read for ChainBlock {
    /// The most bytes one block may take.
    type Cfg = usize;

    fn read_cfg(buf: &mut impl Buf, max: &usize) -> Result<Self, CodecError> {
        let raw = Bytes::read_cfg(buf, &RangeCfg::from(..=*max))?;
        let block: Block = postcard::from_bytes(&raw)
            .map_err(|_| CodecError::Invalid("ChainBlock", "not a ledger-lite block"))?;
        // The digest covers the header only: the transactions must be the ones it commits to,
        // or a peer could serve an agreed digest with other contents.
        if txs_root(&block.txs) != block.header.txs_root {
            return Err(CodecError::Invalid("ChainBlock", "transactions root"));
        }
        // Height 0 is the genesis (marshal stores it like any block): no transactions. Every
        // validator starts from its own, so its digest of zeroes binds nothing a peer sends.
        if block.header.height == 0 && !block.txs.is_empty() {
            return Err(CodecError::Invalid(
                "ChainBlock",
                "a genesis with transactions",
            ));
        }
        // Consensus blocks are not signed.
        if block.signature != ed25519_signature_zero() {
            return Err(CodecError::Invalid("ChainBlock", "a signature"));
        }
        Ok(Self::new(block))
    }
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        self.digest
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height)
    }
}

impl EngineBlock for ChainBlock {
    fn parent(&self) -> Digest {
        Digest(self.block.header.prev.0)
    }
}

#[cfg(test)]
mod tests {
    use commonware_codec::Encode;
    use ledger_lite::{Amount, Params, Tx, TxKind};
    use top_proto::identity::Identity;

    use super::*;

    fn genesis(user: &Identity) -> Genesis {
        Genesis {
            bootstrap: Vec::new(),
            epochs: None,
            name: "t".into(),
            time_ms: 1,
            validator: Identity::from_seed(&[9; 32]).account_id(),
            validators: vec![],
            params: Params {
                unbonding_blocks: 3,
                max_block_txs: 100,
                min_stake: Amount::from_units(1),
                min_fee: Amount::from_units(1),
            },
            faucet: None,
            allocations: vec![(user.account_id(), Amount::from_units(1_000))],
        }
    }

    fn block_one(user: &Identity, genesis: &Genesis) -> ChainBlock {
        let mut state = genesis.state().unwrap();
        let tx = Tx {
            chain: state.chain,
            from: user.account_id(),
            nonce: 0,
            fee: Amount::from_units(1),
            kind: TxKind::Deposit {
                amount: Amount::from_units(5),
            },
        }
        .sign(user);
        let parent = ChainBlock::genesis(genesis).unwrap();
        let built = state.build_block(vec![tx], 2, parent.hash(), user);
        assert!(built.rejected.is_empty());
        ChainBlock::new(unsigned(built.block))
    }

    #[test]
    fn a_block_round_trips_and_names_its_parent() {
        let user = Identity::from_seed(&[1; 32]);
        let genesis = genesis(&user);
        let zero = ChainBlock::genesis(&genesis).unwrap();
        assert_eq!(zero.height(), Height::new(0));
        let one = block_one(&user, &genesis);
        assert_eq!(one.parent(), zero.digest());
        assert_eq!(one.height(), Height::new(1));
        let decoded = ChainBlock::read_cfg(&mut one.encode(), &MAX_BLOCK_WIRE).unwrap();
        assert_eq!(decoded.digest(), one.digest());
        assert_eq!(decoded.block(), one.block());
        // The genesis block is the same on every validator.
        assert_eq!(
            ChainBlock::genesis(&genesis).unwrap().digest(),
            zero.digest()
        );
    }

    #[test]
    fn a_peer_cannot_swap_the_transactions_under_an_agreed_digest() {
        let user = Identity::from_seed(&[1; 32]);
        let genesis = genesis(&user);
        let one = block_one(&user, &genesis);
        let mut forged = (**one.block()).clone();
        forged.txs.clear();
        let mut wire = ChainBlock::new(forged).encode();
        assert!(ChainBlock::read_cfg(&mut wire, &MAX_BLOCK_WIRE).is_err());
    }

    #[test]
    fn oversized_and_garbage_blocks_are_refused() {
        let user = Identity::from_seed(&[1; 32]);
        let one = block_one(&user, &genesis(&user));
        let wire = one.encode();
        assert!(ChainBlock::read_cfg(&mut wire.clone(), &(wire.len() / 2)).is_err());
        let garbage = Bytes::from_static(&[5, 1, 2, 3, 4, 5]);
        assert!(ChainBlock::read_cfg(&mut garbage.clone(), &MAX_BLOCK_WIRE).is_err());
        // A signed block, or a "genesis" carrying transactions: refused.
        let mut signed = (**one.block()).clone();
        signed.signature = user.sign(b"anything");
        let mut wire = ChainBlock::new(signed).encode();
        assert!(ChainBlock::read_cfg(&mut wire, &MAX_BLOCK_WIRE).is_err());
        let mut fake_genesis = (**one.block()).clone();
        fake_genesis.header.height = 0;
        let mut wire = ChainBlock::new(fake_genesis).encode();
        assert!(ChainBlock::read_cfg(&mut wire, &MAX_BLOCK_WIRE).is_err());
    }
}
