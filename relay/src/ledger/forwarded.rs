//! Transactions a follower forwarded upstream and has not yet seen in a block.
//!
//! A follower's own state lags the validator's by up to a block, and its mempool never holds
//! what it forwarded; without this, a client that sends two transactions through a follower in a
//! row is told the same next nonce twice and its second transaction is refused. The follower
//! remembers, per account, the nonce after the highest one it forwarded, and answers that as the
//! next nonce until its own state catches up (or the entry expires, should the validator have
//! dropped the transaction).

use std::collections::HashMap;

use ledger_lite::State;
use top_proto::id::AccountId;

/// Blocks after which a forwarded transaction not seen committed no longer counts.
pub const EXPIRY_BLOCKS: u64 = 10;
/// Accounts remembered at most (beyond that new entries are not recorded: nonces are then only
/// as fresh as the follower's state, which costs a client a retry, never money).
pub const MAX_ACCOUNTS: usize = 100_000;

/// Per account: the next nonce after what was forwarded, and the height it was forwarded at.
#[derive(Debug, Default)]
pub struct Forwarded {
    by_account: HashMap<AccountId, (u64, u64)>,
}

impl Forwarded {
    /// Records that `from`'s transaction with `nonce` was accepted upstream at local `height`.
    pub fn record(&mut self, from: AccountId, nonce: u64, height: u64) {
        let next = nonce.saturating_add(1);
        if let Some(entry) = self.by_account.get_mut(&from) {
            if next >= entry.0 {
                *entry = (next, height);
            }
            return;
        }
        if self.by_account.len() < MAX_ACCOUNTS {
            self.by_account.insert(from, (next, height));
        }
    }

    /// The next nonce of `from`: its committed one, or past what was forwarded for it.
    pub fn next_nonce(&self, state: &State, from: &AccountId) -> u64 {
        let committed = state.account(from).map_or(0, |a| a.nonce);
        match self.by_account.get(from) {
            Some(&(next, at)) if next > committed && !expired(at, state.height) => next,
            _ => committed,
        }
    }

    /// Forgets entries the committed state caught up with, and expired ones.
    pub fn prune(&mut self, state: &State) {
        self.by_account.retain(|id, &mut (next, at)| {
            let committed = state.account(id).map_or(0, |a| a.nonce);
            next > committed && !expired(at, state.height)
        });
    }

    /// Accounts remembered now.
    pub fn len(&self) -> usize {
        self.by_account.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }
}

fn expired(at: u64, height: u64) -> bool {
    height > at.saturating_add(EXPIRY_BLOCKS)
}

#[cfg(test)]
mod tests {
    use ledger_lite::{Amount, Genesis, Params, Tx, TxKind};
    use top_proto::identity::Identity;

    use super::*;

    fn state_with(user: &Identity) -> State {
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
                min_stake: ledger_lite::Amount::ZERO,
                min_fee: ledger_lite::Amount::from_units(1),
            },
            faucet: None,
            allocations: vec![(user.account_id(), Amount::from_top(10).unwrap())],
        }
        .state()
        .unwrap()
    }

    #[test]
    fn forwarded_nonces_count_until_committed_or_expired() {
        let user = Identity::from_seed(&[1; 32]);
        let id = user.account_id();
        let mut state = state_with(&user);
        let mut fwd = Forwarded::default();
        assert_eq!(fwd.next_nonce(&state, &id), 0);
        fwd.record(id, 0, state.height);
        fwd.record(id, 1, state.height);
        assert_eq!(
            fwd.next_nonce(&state, &id),
            2,
            "two forwarded, none committed"
        );
        fwd.record(id, 0, state.height);
        assert_eq!(
            fwd.next_nonce(&state, &id),
            2,
            "an older nonce never lowers it"
        );

        // The first lands in a block: still 2; once both land the entry is pruned.
        let chain = state.chain;
        let tx = |nonce| {
            Tx {
                chain,
                from: id,
                nonce,
                fee: Amount::from_units(1),
                kind: TxKind::Deposit {
                    amount: Amount::from_units(1),
                },
            }
            .sign(&user)
        };
        let validator = Identity::from_seed(&[9; 32]);
        state.build_block(vec![tx(0)], 2, Default::default(), &validator);
        assert_eq!(fwd.next_nonce(&state, &id), 2);
        state.build_block(vec![tx(1)], 3, Default::default(), &validator);
        fwd.prune(&state);
        assert!(fwd.is_empty());
        assert_eq!(fwd.next_nonce(&state, &id), 2);

        // A forwarded transaction the validator dropped stops counting after EXPIRY_BLOCKS.
        fwd.record(id, 2, state.height);
        for t in 0..=EXPIRY_BLOCKS {
            assert_eq!(fwd.next_nonce(&state, &id), 3);
            state.build_block(vec![], 4 + t, Default::default(), &validator);
        }
        assert_eq!(fwd.next_nonce(&state, &id), 2);
        fwd.prune(&state);
        assert!(fwd.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let state = state_with(&Identity::from_seed(&[1; 32]));
        let mut fwd = Forwarded::default();
        for i in 0..(MAX_ACCOUNTS as u64 + 10) {
            let mut seed = [0; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            fwd.record(AccountId::from_wire(seed), 0, state.height);
        }
        assert_eq!(fwd.len(), MAX_ACCOUNTS);
    }
}
