//! Signed transactions and receipts, with domain-separated signing bytes.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;
use top_proto::identity::{Identity, verify};

use crate::amount::Amount;
use crate::registry::RelayRecord;

/// Identifies a chain; signed into every transaction and receipt so none replays on another chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChainId(pub [u8; 32]);

/// Identifies a payment channel: `H(chain, opener, relay, nonce)`, where `nonce` is the nonce of
/// the transaction that opened it, so ids never repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// The id of the channel `opener` opens to `relay` with its transaction `nonce` on `chain`.
    pub fn derive(chain: &ChainId, opener: &AccountId, relay: &AccountId, nonce: u64) -> Self {
        let mut h = blake3::Hasher::new_derive_key("top channel id v1");
        h.update(&chain.0)
            .update(opener.as_bytes())
            .update(relay.as_bytes());
        h.update(&nonce.to_be_bytes());
        Self(*h.finalize().as_bytes())
    }
}

const TX_DOMAIN: &[u8] = b"top/tx/v1";
const RECEIPT_DOMAIN: &[u8] = b"top/receipt/v1";
/// Domain tag of egress allowances.
const ALLOWANCE_DOMAIN: &[u8] = b"top/egress-allowance/v1";

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// Moves balance to another account.
    Transfer {
        /// Recipient.
        to: AccountId,
        /// How much.
        amount: Amount,
    },
    /// Locks balance as a resource deposit.
    Deposit {
        /// How much.
        amount: Amount,
    },
    /// Starts returning free deposit to the balance (after the unbonding period).
    Withdraw {
        /// How much.
        amount: Amount,
    },
    /// Locks balance as a relay stake.
    Stake {
        /// How much.
        amount: Amount,
    },
    /// Starts returning stake to the balance (after the unbonding period).
    Unstake {
        /// How much.
        amount: Amount,
    },
    /// Locks part of a free deposit for one relay. The signer signs the receipts; the deposit is
    /// the signer's own, or the sponsor's when the sponsor granted the signer access.
    OpenChannel {
        /// The relay paid through the channel.
        relay: AccountId,
        /// How much to lock.
        amount: Amount,
        /// The app paying, if not the signer itself.
        sponsor: Option<AccountId>,
    },
    /// The payer or signer starts closing a channel; the relay may still settle until it closes.
    CloseChannel {
        /// Which channel.
        channel: ChannelId,
    },
    /// The relay claims what the latest receipts owe it, several channels in one transaction.
    Settle {
        /// The signed cumulative receipts, at most one per channel.
        receipts: Vec<Receipt>,
    },
    /// An app lets `user` open channels paid from the app's deposit, up to `cap` in all.
    Grant {
        /// The end user's account.
        user: AccountId,
        /// The most the user may ever have locked plus spent from the app's deposit.
        cap: Amount,
        /// Block time (unix milliseconds) after which the user can open no more channels.
        expires_ms: u64,
    },
    /// The relay claims what it served over HTTP under publishers' egress allowances (each
    /// allowance names one channel of the publisher to this relay, one content and a cap).
    SettleEgress {
        /// The claims, at most one per channel.
        claims: Vec<EgressClaim>,
    },
    /// Registers (or updates) the signer as a relay: publishes its record and adds `stake`
    /// (may be zero on an update) to its stake, which must then be at least the chain's minimum.
    RegisterRelay {
        /// What the relay publishes about itself.
        record: Box<RelayRecord>,
        /// Balance moved into the stake.
        stake: Amount,
    },
    /// Removes the signer's relay record and starts unbonding its whole stake.
    DeregisterRelay,
}

/// A transaction before signing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    /// The chain it is for.
    pub chain: ChainId,
    /// The signer.
    pub from: AccountId,
    /// Must equal the signer's next nonce.
    pub nonce: u64,
    /// Burned from the fee payer (the signer; a sponsored open's sponsor); at least the chain's
    /// minimum fee, so no transaction is free to send.
    pub fee: Amount,
    /// What it does.
    pub kind: TxKind,
}

/// A transaction with its signer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Tx,
    /// ed25519 over the domain tag and the encoded transaction.
    pub signature: Signature,
}

/// The bytes a signature covers: the domain tag, then the encoded body.
pub(crate) fn signing_bytes<T: Serialize>(domain: &[u8], body: &T) -> Vec<u8> {
    let mut out = domain.to_vec();
    // Encoding our own in-memory types cannot fail; an empty body would fail verification.
    postcard::to_io(body, &mut out).ok();
    out
}

impl Tx {
    /// Signs the transaction; `identity` must be `self.from`.
    pub fn sign(self, identity: &Identity) -> SignedTx {
        let signature = identity.sign(&signing_bytes(TX_DOMAIN, &self));
        SignedTx {
            tx: self,
            signature,
        }
    }
}

/// A transaction's hash: what clients wait on to learn it was committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxHash(pub [u8; 32]);

impl std::fmt::Display for TxHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl SignedTx {
    /// The hash of the signed transaction.
    pub fn hash(&self) -> TxHash {
        TxHash(*blake3::hash(&signing_bytes(b"top/txhash/v1", self)).as_bytes())
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(TX_DOMAIN, &self.tx)
    }

    /// Whether the signature is the sender's, over this exact transaction.
    pub fn verify(&self) -> bool {
        verify(
            &self.tx.from,
            &signing_bytes(TX_DOMAIN, &self.tx),
            &self.signature,
        )
    }
}

/// What a payer owes on a channel so far, as the payer signs it during a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// The chain.
    pub chain: ChainId,
    /// The channel.
    pub channel: ChannelId,
    /// Bytes carried so far in the session.
    pub cum_bytes: u64,
    /// Amount owed so far (cumulative; each receipt replaces the previous one).
    pub cum_amount: Amount,
}

/// A signed cumulative receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What is owed.
    pub body: ReceiptBody,
    /// Who signed (the channel's payer).
    pub signer: AccountId,
    /// ed25519 over the receipt domain tag and the body.
    pub signature: Signature,
}

impl ReceiptBody {
    /// Signs the receipt.
    pub fn sign(self, identity: &Identity) -> Receipt {
        let signature = identity.sign(&signing_bytes(RECEIPT_DOMAIN, &self));
        Receipt {
            body: self,
            signer: identity.account_id(),
            signature,
        }
    }
}

impl Receipt {
    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(RECEIPT_DOMAIN, &self.body)
    }

    /// Whether `signer` signed this exact body.
    pub fn verify(&self) -> bool {
        verify(
            &self.signer,
            &signing_bytes(RECEIPT_DOMAIN, &self.body),
            &self.signature,
        )
    }
}

/// What a publisher lets one relay charge, on one of its channels to that relay, for serving
/// one content over HTTP (where no downloader signs receipts): at most `cap` in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowanceBody {
    /// The chain.
    pub chain: ChainId,
    /// The publisher's channel to the relay (its lock bounds the payout too).
    pub channel: ChannelId,
    /// The content id's hash.
    pub content: [u8; 32],
    /// The most the relay may claim on the channel for it.
    pub cap: Amount,
}

/// A signed egress allowance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// What is allowed.
    pub body: AllowanceBody,
    /// Who signed (the channel's signer).
    pub signer: AccountId,
    /// ed25519 over the allowance domain tag and the body.
    pub signature: Signature,
}

impl AllowanceBody {
    /// Signs the allowance.
    pub fn sign(self, identity: &Identity) -> Allowance {
        let signature = identity.sign(&signing_bytes(ALLOWANCE_DOMAIN, &self));
        Allowance {
            body: self,
            signer: identity.account_id(),
            signature,
        }
    }
}

impl Allowance {
    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(ALLOWANCE_DOMAIN, &self.body)
    }

    /// Whether `signer` signed this exact body.
    pub fn verify(&self) -> bool {
        verify(&self.signer, &self.signing_bytes(), &self.signature)
    }
}

/// A relay's claim under an allowance: the cumulative amount its metering says it served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressClaim {
    /// The publisher's allowance.
    pub allowance: Allowance,
    /// Bytes served so far.
    pub cum_bytes: u64,
    /// Amount owed so far (at most the cap).
    pub cum_amount: Amount,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ChainId {
        ChainId([5; 32])
    }

    #[test]
    fn signatures_bind_every_field() {
        let alice = Identity::from_seed(&[1; 32]);
        let bob = Identity::from_seed(&[2; 32]).account_id();
        let tx = Tx {
            chain: chain(),
            from: alice.account_id(),
            nonce: 0,
            fee: Amount::from_units(5),
            kind: TxKind::Transfer {
                to: bob,
                amount: Amount::from_units(10),
            },
        };
        let signed = tx.clone().sign(&alice);
        assert!(signed.verify());
        let mut other = signed.clone();
        other.tx.nonce = 1;
        assert!(!other.verify());
        let mut other = signed.clone();
        other.tx.fee = Amount::from_units(4);
        assert!(!other.verify(), "the fee is signed");
        let mut other = signed.clone();
        other.tx.chain = ChainId([6; 32]);
        assert!(!other.verify(), "replay on another chain");
        let forged = Tx { from: bob, ..tx }.sign(&alice);
        assert!(!forged.verify(), "signed by someone else");
    }

    #[test]
    fn receipt_and_tx_signatures_do_not_mix() {
        let alice = Identity::from_seed(&[1; 32]);
        let relay = Identity::from_seed(&[3; 32]).account_id();
        let channel = ChannelId::derive(&chain(), &alice.account_id(), &relay, 0);
        let receipt = ReceiptBody {
            chain: chain(),
            channel,
            cum_bytes: 1,
            cum_amount: Amount::from_units(1),
        }
        .sign(&alice);
        assert!(receipt.verify());
        let mut tampered = receipt.clone();
        tampered.body.cum_amount = Amount::from_units(2);
        assert!(!tampered.verify());
        assert_ne!(
            channel,
            ChannelId::derive(&chain(), &alice.account_id(), &relay, 1)
        );
    }
}
