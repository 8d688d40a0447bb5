//! Transactions waiting for a block at one validator: each once, a bounded number per account
//! and in all, checked cheaply before their signatures, and dropped once they can never go in.

use std::collections::{HashMap, VecDeque};

use ledger_lite::{SignedTx, State, TxError, TxHash, TxKind};
use top_proto::id::AccountId;

/// Transactions waiting, at most.
pub const MAX_PENDING: usize = 100_000;
/// Transactions waiting per sending account, at most (its next nonces).
pub const PER_ACCOUNT: u64 = 64;

/// The waiting transactions, oldest first.
#[derive(Default)]
pub struct Pending {
    order: VecDeque<TxHash>,
    txs: HashMap<TxHash, SignedTx>,
    per_account: HashMap<AccountId, usize>,
}

/// Whether `tx` may be worth a place, judged on `state` (the last finalized one): for this
/// chain, paying at least the minimum fee, one of its sender's next nonces, of a size and
/// claim count a block can hold, and only then signed by its sender.
pub fn plausible(tx: &SignedTx, state: &State) -> bool {
    cheap_checks(tx, state) && ledger_lite::verify::verify_tx(tx).is_ok()
}

/// [`plausible`] but the signature: [`well_formed`], from an account that exists (no other
/// can pay a fee), within its window of next nonces.
pub fn cheap_checks(tx: &SignedTx, state: &State) -> bool {
    let Some(account) = state.account(&tx.tx.from) else {
        return false;
    };
    let next = account.nonce;
    well_formed(tx, state) && tx.tx.nonce >= next && tx.tx.nonce < next.saturating_add(PER_ACCOUNT)
}

/// For this chain, paying at least the minimum fee, with a claim count and a size a block can
/// hold: what no later block changes.
pub fn well_formed(tx: &SignedTx, state: &State) -> bool {
    let claims = match &tx.tx.kind {
        TxKind::Settle { receipts } => receipts.len(),
        TxKind::SettleEgress { claims } => claims.len(),
        _ => 0,
    };
    tx.tx.chain == state.chain
        && tx.tx.fee >= state.params.min_fee
        && claims <= ledger_lite::apply::MAX_SETTLE_CLAIMS
        && postcard::to_stdvec(tx).is_ok_and(|b| b.len() <= ledger_lite::chain::MAX_BLOCK_BYTES)
}

impl Pending {
    /// Whether `hash` waits here.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.txs.contains_key(hash)
    }

    /// Adds `tx` (its signature checked) unless it waits already, its sender has its share,
    /// or the pool is full.
    pub fn insert(&mut self, tx: SignedTx) -> bool {
        let hash = tx.hash();
        if self.txs.contains_key(&hash) || self.txs.len() >= MAX_PENDING {
            return false;
        }
        let count = self.per_account.entry(tx.tx.from).or_default();
        if *count as u64 >= PER_ACCOUNT {
            return false;
        }
        *count += 1;
        self.order.push_back(hash);
        self.txs.insert(hash, tx);
        true
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether one more from `account` would be taken.
    pub fn has_room_for(&self, account: &AccountId) -> bool {
        self.txs.len() < MAX_PENDING
            && (self.per_account.get(account).copied().unwrap_or(0) as u64) < PER_ACCOUNT
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The oldest `max` waiting, for a proposal.
    pub fn candidates(&self, max: usize) -> Vec<SignedTx> {
        self.order
            .iter()
            .filter_map(|h| self.txs.get(h))
            .take(max)
            .cloned()
            .collect()
    }

    /// Keeps only the transactions `keep` picks (given each one's hash and itself).
    pub fn retain(&mut self, mut keep: impl FnMut(&TxHash, &SignedTx) -> bool) {
        let per_account = &mut self.per_account;
        self.txs.retain(|hash, tx| {
            let kept = keep(hash, tx);
            if !kept && let Some(n) = per_account.get_mut(&tx.tx.from) {
                *n = n.saturating_sub(1);
            }
            kept
        });
        per_account.retain(|_, n| *n > 0);
        let txs = &self.txs;
        self.order.retain(|h| txs.contains_key(h));
    }
}

/// This validator's own transactions held back while their sender's share of [`Pending`] is
/// taken (nonces beyond the window), or its account is yet to be funded: they move in as
/// blocks use up the nonces before them (or fund it).
/// Only transactions the relay verified come here (never gossiped ones), at most
/// [`MAX_HELD`].
#[derive(Default)]
pub struct Held {
    txs: VecDeque<SignedTx>,
    hashes: std::collections::HashSet<TxHash>,
}

/// Held transactions, at most.
pub const MAX_HELD: usize = 20_000;

impl Held {
    /// Holds `tx` when it is for this chain and ahead of its sender's next nonce; false when
    /// it never can go in or there is no room.
    pub fn hold(&mut self, tx: SignedTx, state: &State) -> bool {
        let next = state.account(&tx.tx.from).map_or(0, |a| a.nonce);
        if !well_formed(&tx, state) || tx.tx.nonce < next || self.txs.len() >= MAX_HELD {
            return false;
        }
        if self.hashes.insert(tx.hash()) {
            self.txs.push_back(tx);
        }
        true
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// After a block: what used nonces shut out goes; what is now within its sender's window
    /// moves into `pending` (if it takes it); the rest waits.
    pub fn release(&mut self, state: &State, pending: &mut Pending) {
        let mut kept = VecDeque::with_capacity(self.txs.len());
        for tx in self.txs.drain(..) {
            let next = state.account(&tx.tx.from).map_or(0, |a| a.nonce);
            if tx.tx.nonce < next {
                self.hashes.remove(&tx.hash());
                continue;
            }
            let in_window = tx.tx.nonce < next.saturating_add(PER_ACCOUNT);
            // Verified by the relay before it was held: the cheap checks again only.
            if in_window && pending.has_room_for(&tx.tx.from) && cheap_checks(&tx, state) {
                self.hashes.remove(&tx.hash());
                pending.insert(tx);
            } else {
                kept.push_back(tx);
            }
        }
        self.txs = kept;
    }
}

/// Whether a transaction a block left out for `error` can never go in (so it goes): all but a
/// nonce ahead of its turn and funds that may yet come.
pub fn never_valid(error: &TxError) -> bool {
    !matches!(
        error,
        TxError::WrongNonce { .. } | TxError::Insufficient { .. } | TxError::UnknownAccount(_)
    )
}

#[cfg(test)]
mod tests {
    use ledger_lite::{Amount, Genesis, Params, Tx};
    use top_proto::identity::Identity;

    use super::*;

    fn state(rich: &Identity) -> State {
        Genesis {
            bootstrap: Vec::new(),
            epochs: None,
            name: "t".into(),
            time_ms: 1,
            validator: rich.account_id(),
            validators: vec![],
            params: Params {
                unbonding_blocks: 3,
                max_block_txs: 10,
                min_stake: Amount::from_units(1),
                min_fee: Amount::from_units(5),
            },
            faucet: None,
            allocations: vec![(rich.account_id(), Amount::from_units(1_000_000))],
        }
        .state()
        .unwrap()
    }

    fn transfer(from: &Identity, state: &State, nonce: u64, fee: u128) -> SignedTx {
        Tx {
            chain: state.chain,
            from: from.account_id(),
            nonce,
            fee: Amount::from_units(fee),
            kind: TxKind::Transfer {
                to: from.account_id(),
                amount: Amount::from_units(1),
            },
        }
        .sign(from)
    }

    #[test]
    fn each_once_a_bounded_share_per_account_and_cheap_checks_first() {
        let rich = Identity::from_seed(&[1; 32]);
        let s = state(&rich);
        let mut pending = Pending::default();
        let tx = transfer(&rich, &s, 0, 5);
        assert!(plausible(&tx, &s));
        assert!(pending.insert(tx.clone()));
        assert!(!pending.insert(tx), "twice");
        for nonce in 1..PER_ACCOUNT + 10 {
            pending.insert(transfer(&rich, &s, nonce, 5));
        }
        assert_eq!(pending.len() as u64, PER_ACCOUNT, "one account's share");
        // Too cheap, too far ahead, another chain's, or signed by someone else: not taken.
        assert!(!plausible(&transfer(&rich, &s, 0, 4), &s));
        assert!(!plausible(&transfer(&rich, &s, PER_ACCOUNT, 5), &s));
        let mut forged = transfer(&rich, &s, 1, 5);
        forged.tx.nonce = 2;
        assert!(!plausible(&forged, &s));
        pending.retain(|_, tx| tx.tx.nonce >= 10);
        assert_eq!(pending.len() as u64, PER_ACCOUNT - 10);
        assert_eq!(pending.candidates(3)[0].tx.nonce, 10, "oldest first");
        assert!(pending.insert(transfer(&rich, &s, 200, 5)), "room again");
    }

    #[test]
    fn own_transactions_beyond_the_window_wait_for_their_turn() {
        let rich = Identity::from_seed(&[1; 32]);
        let mut s = state(&rich);
        let mut pending = Pending::default();
        let mut held = Held::default();
        for nonce in 0..PER_ACCOUNT + 10 {
            let tx = transfer(&rich, &s, nonce, 5);
            if !(pending.has_room_for(&rich.account_id()) && pending.insert(tx.clone())) {
                assert!(held.hold(tx.clone(), &s));
                assert!(held.hold(tx, &s), "held once, asking again is no error");
            }
        }
        assert_eq!((pending.len() as u64, held.len()), (PER_ACCOUNT, 10));
        // A block uses up nonces 0..10: those go from pending, the ten held move in.
        let used: Vec<SignedTx> = (0..10).map(|n| transfer(&rich, &s, n, 5)).collect();
        let built = s.build_block(used, 2, ledger_lite::BlockHash::default(), &rich);
        assert!(built.rejected.is_empty());
        pending.retain(|_, tx| tx.tx.nonce >= 10);
        held.release(&s, &mut pending);
        assert!(held.is_empty());
        assert_eq!(pending.len() as u64, PER_ACCOUNT);
        // From an account not funded yet: not taken in pending (nothing to pay its fee with,
        // and a stranger's fresh keys must not fill it), held when it is this relay's own.
        let stranger = Identity::from_seed(&[9; 32]);
        let unfunded = transfer(&stranger, &s, 0, 5);
        assert!(!cheap_checks(&unfunded, &s));
        assert!(held.hold(unfunded, &s));
        // Another chain's, or one whose nonce is used: never held.
        assert!(!held.hold(transfer(&rich, &s, 3, 5), &s));
        let mut other = transfer(&rich, &s, 30, 5);
        other.tx.chain = ledger_lite::ChainId([9; 32]);
        assert!(!held.hold(other, &s));
    }
}
