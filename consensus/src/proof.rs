//! Checking a block's finality proof: the finalization certificate the validators of the
//! block's epoch (as the state before the block names them) signed for its digest. What a follower checks before it takes a block, since
//! no single signature makes a block of a chain of several validators valid.

use commonware_codec::{Encode as _, Read as _};
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Finalization;
use commonware_consensus::types::Epoch;
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::certificate::Verifier as _;
use commonware_parallel::Sequential;
use commonware_utils::ordered::Set;
use ledger_lite::{Block, Genesis};
use top_proto::id::AccountId;

use crate::service::{consensus_namespace, public_key};

/// The largest finality proof taken (a certificate of [`ledger_lite::block::MAX_VALIDATORS`]
/// signatures, with room to spare).
pub const MAX_PROOF: usize = 64 << 10;

/// A finalization certificate as validators sign it.
pub type Certificate = Finalization<Scheme, Digest>;

/// Why a finality proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The chain has one validator: its blocks are signed, not proven.
    #[error("the chain has a single validator")]
    NotConsensus,
    /// A validator's id is not a valid key.
    #[error("the genesis names a validator that is not a valid key")]
    BadValidator,
    /// Larger than [`MAX_PROOF`].
    #[error("finality proof of {0} bytes is too large")]
    TooLarge(usize),
    /// Does not decode as a certificate.
    #[error("finality proof does not decode")]
    Malformed,
    /// For another block.
    #[error("finality proof is for another block")]
    OtherBlock,
    /// For an epoch whose validators are not these.
    #[error("finality proof is for epoch {0}")]
    OtherEpoch(u64),
    /// The signatures do not verify for the validator set.
    #[error("finality proof signatures do not verify")]
    BadSignatures,
}

/// Checks finality proofs against the validator set of each block's epoch.
pub struct FinalityCheck {
    namespace: Vec<u8>,
    /// The verifier of the last epoch checked.
    verifier: std::sync::Mutex<Option<(u64, Vec<AccountId>, Scheme)>>,
}

impl FinalityCheck {
    /// The check for `genesis`'s chain.
    pub fn new(genesis: &Genesis) -> Result<Self, ProofError> {
        if !genesis.is_consensus() {
            return Err(ProofError::NotConsensus);
        }
        Ok(Self {
            namespace: consensus_namespace(genesis),
            verifier: std::sync::Mutex::new(None),
        })
    }

    /// The verifier for `validators` in `epoch`.
    fn verifier(&self, epoch: u64, validators: &[AccountId]) -> Result<Scheme, ProofError> {
        let mut cached = self.verifier.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((epoch_kept, kept, scheme)) = cached.as_ref()
            && *epoch_kept == epoch
            && kept == validators
        {
            return Ok(scheme.clone());
        }
        let keys = validators
            .iter()
            .map(public_key)
            .collect::<Option<Vec<_>>>()
            .ok_or(ProofError::BadValidator)?;
        let participants = Set::try_from(keys).map_err(|_| ProofError::BadValidator)?;
        let scheme = Scheme::verifier(&self.namespace, participants);
        *cached = Some((epoch, validators.to_vec(), scheme.clone()));
        Ok(scheme)
    }

    /// Checks that `proof` finalizes `block`, a block of `epoch` whose validators are
    /// `validators` (as the state before the block names them): cheap checks first (size,
    /// decoding, the digest, the epoch), the signatures last.
    pub fn check(
        &self,
        (epoch, validators): (u64, &[AccountId]),
        block: &Block,
        proof: &[u8],
    ) -> Result<(), ProofError> {
        if proof.len() > MAX_PROOF {
            return Err(ProofError::TooLarge(proof.len()));
        }
        let verifier = self.verifier(epoch, validators)?;
        let cfg = verifier.certificate_codec_config();
        let certificate = Certificate::read_cfg(&mut &proof[..], &cfg)
            .ok()
            .filter(|c| c.encode().len() == proof.len())
            .ok_or(ProofError::Malformed)?;
        if certificate.proposal.payload != Digest(block.hash().0) {
            return Err(ProofError::OtherBlock);
        }
        let signed_in = certificate.proposal.round.epoch();
        if signed_in != Epoch::new(epoch) {
            return Err(ProofError::OtherEpoch(signed_in.get()));
        }
        let mut rng = commonware_utils::sys_rng();
        if !certificate.verify(&mut rng, &verifier, &Sequential) {
            return Err(ProofError::BadSignatures);
        }
        Ok(())
    }
}

/// The finality proof `signers` make for `block` at `view` of `epoch`, signing as validators
/// of `validators` on `genesis`'s chain (none when they are fewer than a quorum, or one is not
/// in the set). The engine assembles the same from its votes; tools and tests make one with it.
pub fn certify(
    genesis: &Genesis,
    validators: &[top_proto::id::AccountId],
    signers: &[&top_proto::identity::Identity],
    block: &Block,
    (epoch, view): (u64, u64),
) -> Option<Vec<u8>> {
    use commonware_codec::ReadExt as _;
    use commonware_consensus::simplex::types::{Finalize, Proposal};
    use commonware_consensus::types::{Round, View};
    let keys = validators
        .iter()
        .map(public_key)
        .collect::<Option<Vec<_>>>()?;
    let participants = Set::try_from(keys).ok()?;
    let namespace = consensus_namespace(genesis);
    let proposal = Proposal::new(
        Round::new(Epoch::new(epoch), View::new(view)),
        View::new(view.saturating_sub(1)),
        Digest(block.hash().0),
    );
    let mut votes = Vec::new();
    let mut scheme = None;
    for signer in signers {
        let seed = signer.signing_key().to_bytes();
        let key = commonware_cryptography::ed25519::PrivateKey::read(&mut &seed[..]).ok()?;
        let signing = Scheme::signer(&namespace, participants.clone(), key)?;
        votes.push(Finalize::sign(&signing, proposal.clone())?);
        scheme = Some(signing);
    }
    let certificate = Certificate::from_finalizes(&scheme?, &votes, &Sequential)?;
    Some(encode(&certificate))
}

/// Encodes a certificate as a finality proof.
pub fn encode(certificate: &Certificate) -> Vec<u8> {
    certificate.encode().to_vec()
}
