//! A follower of a chain of several validators takes a block only with a proof that a quorum of
//! the chain's validators finalized it (or a later block's proof, through the parent hashes):
//! a forged, stale or foreign proof, or a run of blocks that does not chain, leaves its chain
//! as it was.

use ledger_lite::wire::FinalizedBlock;
use ledger_lite::{Amount, Block, BlockHash, Genesis, Params};
use tokio_util::sync::CancellationToken;
use top_consensus::proof::certify;
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_relay::ledger::chain::{ChainNode, Role};

struct Chain {
    genesis: Genesis,
    keys: Vec<Identity>,
    blocks: Vec<Block>,
}

/// A chain of four validators and `n` empty blocks after its genesis, as they agreed them.
fn chain(name: &str, n: u64) -> Chain {
    let keys: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
    let genesis = Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: name.into(),
        time_ms: 1,
        validator: keys[0].account_id(),
        validators: keys.iter().map(Identity::account_id).collect(),
        params: Params {
            unbonding_blocks: 3,
            max_block_txs: 100,
            min_stake: Amount::from_units(1),
            min_fee: Amount::from_units(10),
        },
        faucet: None,
        allocations: vec![(keys[1].account_id(), Amount::from_units(1_000))],
    };
    let mut state = genesis.state().unwrap();
    let mut prev = BlockHash::default();
    let mut blocks = Vec::new();
    for height in 1..=n {
        let built = state.build_block(vec![], 1_000 * height, prev, &keys[0]);
        prev = built.block.hash();
        blocks.push(top_consensus::block::unsigned(built.block));
    }
    Chain {
        genesis,
        keys,
        blocks,
    }
}

impl Chain {
    /// Block `i` (0: height 1) with a proof by validators `signers`, or none.
    fn entry(&self, i: usize, signers: &[usize]) -> FinalizedBlock {
        let proof = (!signers.is_empty()).then(|| {
            let signers: Vec<&Identity> = signers.iter().map(|s| &self.keys[*s]).collect();
            let view = i as u64 + 1;
            certify(
                &self.genesis,
                &self.genesis.validators,
                &signers,
                &self.blocks[i],
                (0, view),
            )
            .unwrap()
        });
        FinalizedBlock {
            block: self.blocks[i].clone(),
            proof,
        }
    }
}

fn follower(genesis: &Genesis, dir: &std::path::Path) -> std::sync::Arc<ChainNode> {
    let upstream = RelayAddr::new(
        Identity::generate().relay_id(),
        "127.0.0.1:9".parse().unwrap(),
    );
    ChainNode::open(
        &dir.join("chain.redb"),
        genesis.clone(),
        Role::Follower { upstream },
        None,
        Identity::generate(),
        CancellationToken::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_stale_or_foreign_proofs_leave_the_chain_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain("four", 3);
    let node = follower(&c.genesis, dir.path());

    // Outsiders' proof: three keys of another set, certifying block 1.
    let strangers = chain("four", 1);
    let mut forged = c.entry(0, &[]);
    let outsiders: Vec<&Identity> = strangers.keys[..3].iter().collect();
    let their_set: Vec<_> = strangers.keys.iter().map(Identity::account_id).collect();
    forged.proof = certify(&c.genesis, &their_set, &outsiders, &c.blocks[0], (0, 1));
    assert!(node.apply_finalized_run(&[forged]).is_err());
    assert_eq!(node.height(), 0);

    // A stale proof: block 1's, offered for block 2 (after block 1 without one).
    let mut stale = c.entry(1, &[]);
    stale.proof = c.entry(0, &[0, 1, 2]).proof;
    assert!(node.apply_finalized_run(&[c.entry(0, &[]), stale]).is_err());
    assert_eq!(node.height(), 0);

    // The same validators' votes on another chain.
    let foreign = chain("other", 1);
    let mut theirs = c.entry(0, &[]);
    let ours: Vec<&Identity> = c.keys[..3].iter().collect();
    theirs.proof = certify(
        &foreign.genesis,
        &c.genesis.validators,
        &ours,
        &c.blocks[0],
        (0, 1),
    );
    assert!(node.apply_finalized_run(&[theirs]).is_err());
    assert_eq!(node.height(), 0);

    // Blocks that do not chain, whatever their proofs.
    let gap = [c.entry(0, &[0, 1, 2]), c.entry(2, &[0, 1, 2])];
    assert!(node.apply_finalized_run(&gap).is_err());
    assert_eq!(node.height(), 0);

    // No proof yet: nothing is taken, and that is no error.
    assert_eq!(node.apply_finalized_run(&[c.entry(0, &[])]).unwrap(), 0);
    assert_eq!(node.height(), 0);

    // Block 1 with a garbage proof, block 2 with a true one: both final through block 2's,
    // both taken; block 1's garbage is not kept (nor served on to poison followers further).
    let mut garbage = c.entry(0, &[]);
    garbage.proof = Some(vec![7; 1000]);
    let taken = node.apply_finalized_run(&[garbage, c.entry(1, &[1, 2, 3])]);
    assert_eq!(taken.unwrap(), 2);
    assert_eq!(node.height(), 2);
    // Block 3 after a proven one, without its own: it waits.
    assert_eq!(node.apply_finalized_run(&[c.entry(2, &[])]).unwrap(), 0);
    assert_eq!(node.height(), 2);

    // A signed block is not this chain's (the hash does not cover the signature: relays would
    // store different bytes for one block), whatever its proof.
    let mut signed = c.entry(2, &[0, 1, 2]);
    signed.block.signature = c.keys[0].sign(b"anything");
    assert!(node.apply_finalized_run(&[signed]).is_err());
    assert_eq!(node.height(), 2);

    // What it took it serves on, with the proofs, for followers of its own.
    let served = node
        .finalized_blocks(1, 10, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(served.len(), 2);
    assert!(served[0].proof.is_none(), "an unchecked proof was kept");
    let check = top_consensus::proof::FinalityCheck::new(&c.genesis).unwrap();
    let proof = served[1].proof.as_ref().expect("block 2's proof kept");
    assert_eq!(
        check.check((0, &c.genesis.validators), &served[1].block, proof),
        Ok(())
    );
}
