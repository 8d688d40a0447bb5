//! A follower's check of finality proofs, against forgeries: a quorum of the chain's
//! validators signing this block passes; a proof for another block, another chain, another
//! epoch, by outsiders, tampered with or malformed is refused; after the set changes, the old
//! set's certificates are stale.

mod common;

use ledger_lite::{Block, BlockHash, Genesis, State};
use top_consensus::proof::{FinalityCheck, ProofError, certify};
use top_proto::id::AccountId;
use top_proto::identity::Identity;

struct Chain {
    genesis: Genesis,
    keys: Vec<Identity>,
    blocks: Vec<Block>,
}

/// A chain of four validators and two (empty) blocks after its genesis.
fn chain(name: &str) -> Chain {
    let keys: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
    let user = Identity::generate();
    let mut genesis = common::genesis(name, &keys[0], &user);
    genesis.validators = keys.iter().map(Identity::account_id).collect();
    let mut state = genesis.state().unwrap();
    let mut prev = BlockHash::default();
    let mut blocks = Vec::new();
    for height in 1..=2u64 {
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
    fn proof(&self, signers: &[usize], block: usize) -> Vec<u8> {
        let signers: Vec<&Identity> = signers.iter().map(|i| &self.keys[*i]).collect();
        let validators = &self.genesis.validators;
        certify(
            &self.genesis,
            validators,
            &signers,
            &self.blocks[block],
            (0, 5),
        )
        .unwrap()
    }

    /// The state before the blocks (epoch 0, the genesis validators).
    fn before(&self) -> State {
        self.genesis.state().unwrap()
    }

    /// The epoch and validators of the blocks.
    fn set(&self) -> (u64, &[AccountId]) {
        (0, &self.genesis.validators)
    }

    fn check(&self) -> FinalityCheck {
        FinalityCheck::new(&self.genesis).unwrap()
    }
}

#[test]
fn a_quorum_of_the_validators_finalizes_a_block() {
    let c = chain("quorum");
    assert_eq!(
        c.check()
            .check(c.set(), &c.blocks[0], &c.proof(&[0, 1, 2], 0)),
        Ok(())
    );
    assert_eq!(
        c.check()
            .check(c.set(), &c.blocks[1], &c.proof(&[3, 1, 2, 0], 1)),
        Ok(())
    );
}

#[test]
fn fewer_than_a_quorum_cannot_make_a_proof() {
    let c = chain("few");
    let signers = [&c.keys[0], &c.keys[1]];
    let made = certify(
        &c.genesis,
        &c.genesis.validators,
        &signers,
        &c.blocks[0],
        (0, 5),
    );
    assert!(made.is_none());
}

#[test]
fn a_proof_for_another_block_is_refused() {
    let c = chain("stale");
    let proof = c.proof(&[0, 1, 2], 0);
    assert_eq!(
        c.check().check(c.set(), &c.blocks[1], &proof),
        Err(ProofError::OtherBlock)
    );
}

#[test]
fn a_proof_from_another_chain_is_refused() {
    let c = chain("ours");
    let mut other = chain("theirs");
    // The same validators on another chain: their votes there are no votes here.
    other.keys = c.keys.clone();
    other.genesis.validators = c.genesis.validators.clone();
    other.genesis.validator = c.genesis.validator;
    other.blocks = c.blocks.clone();
    let proof = other.proof(&[0, 1, 2], 0);
    assert_eq!(
        c.check().check(c.set(), &c.blocks[0], &proof),
        Err(ProofError::BadSignatures)
    );
}

#[test]
fn outsiders_cannot_finalize() {
    let c = chain("ours");
    // Three strangers and one validator, certifying as if they were the set.
    let mut forged = chain("ours");
    forged.keys[0] = c.keys[0].clone();
    let strangers: Vec<_> = forged.keys.iter().map(Identity::account_id).collect();
    let signers: Vec<&Identity> = forged.keys[..3].iter().collect();
    let proof = certify(&c.genesis, &strangers, &signers, &c.blocks[0], (0, 5)).unwrap();
    assert!(matches!(
        c.check().check(c.set(), &c.blocks[0], &proof),
        Err(ProofError::BadSignatures | ProofError::Malformed)
    ));
}

#[test]
fn a_proof_of_another_epoch_is_refused() {
    let c = chain("epoch");
    let signers: Vec<&Identity> = c.keys[..3].iter().collect();
    let proof = certify(
        &c.genesis,
        &c.genesis.validators,
        &signers,
        &c.blocks[0],
        (1, 5),
    );
    assert_eq!(
        c.check().check(c.set(), &c.blocks[0], &proof.unwrap()),
        Err(ProofError::OtherEpoch(1))
    );
}

#[test]
fn tampered_or_malformed_proofs_are_refused() {
    let c = chain("tamper");
    let proof = c.proof(&[0, 1, 2], 0);
    let check = c.check();
    // Any one byte changed.
    for i in 0..proof.len() {
        let mut bad = proof.clone();
        bad[i] ^= 0x01;
        assert!(
            check.check(c.set(), &c.blocks[0], &bad).is_err(),
            "byte {i} changed and still accepted"
        );
    }
    let mut longer = proof.clone();
    longer.push(0);
    assert_eq!(
        check.check(c.set(), &c.blocks[0], &longer),
        Err(ProofError::Malformed)
    );
    assert_eq!(
        check.check(c.set(), &c.blocks[0], &proof[..proof.len() - 1]),
        Err(ProofError::Malformed)
    );
    assert_eq!(
        check.check(c.set(), &c.blocks[0], &[]),
        Err(ProofError::Malformed)
    );
    let huge = vec![0u8; top_consensus::proof::MAX_PROOF + 1];
    assert!(matches!(
        check.check(c.set(), &c.blocks[0], &huge),
        Err(ProofError::TooLarge(_))
    ));
}

#[test]
fn a_single_validator_chain_has_no_proofs() {
    let user = Identity::generate();
    let genesis = common::genesis("single", &Identity::generate(), &user);
    assert!(matches!(
        FinalityCheck::new(&genesis),
        Err(ProofError::NotConsensus)
    ));
}

#[test]
fn after_the_set_changes_the_old_sets_certificates_are_stale() {
    let c = chain("stale");
    // The state in epoch 1, whose validators are three of the old and a newcomer.
    let newcomer = Identity::generate();
    let mut state = c.before();
    state.epoch = 1;
    state.validators = vec![
        c.genesis.validators[1],
        c.genesis.validators[2],
        c.genesis.validators[3],
        newcomer.account_id(),
    ];
    let check = c.check();
    let old_set: Vec<&Identity> = c.keys[..3].iter().collect();
    // The old set's quorum, signing in epoch 1: not the validators of epoch 1.
    let stale = certify(
        &c.genesis,
        &c.genesis.validators,
        &old_set,
        &c.blocks[0],
        (1, 9),
    );
    assert!(matches!(
        check.check(
            (state.epoch, &state.validators),
            &c.blocks[0],
            &stale.unwrap()
        ),
        Err(ProofError::BadSignatures | ProofError::Malformed)
    ));
    // A certificate of epoch 0 for a block of epoch 1.
    let old_epoch = c.proof(&[0, 1, 2], 0);
    assert_eq!(
        check.check((state.epoch, &state.validators), &c.blocks[0], &old_epoch),
        Err(ProofError::OtherEpoch(0))
    );
    // The new set's quorum, with the newcomer: taken.
    let new_signers = vec![&c.keys[1], &c.keys[2], &newcomer];
    let fresh = certify(
        &c.genesis,
        &state.validators,
        &new_signers,
        &c.blocks[0],
        (1, 9),
    );
    assert_eq!(
        check.check(
            (state.epoch, &state.validators),
            &c.blocks[0],
            &fresh.unwrap()
        ),
        Ok(())
    );
    // And the cache of epoch 1 does not leak back into epoch 0.
    assert_eq!(check.check(c.set(), &c.blocks[0], &old_epoch), Ok(()));
}
