//! What the consensus tests share: a chain where one user holds the coins, and transfers.
#![allow(dead_code)]

pub mod sim;

use ledger_lite::{Amount, ChainId, Genesis, Params, SignedTx, Tx, TxKind};
use top_proto::id::AccountId;
use top_proto::identity::Identity;

/// The minimum fee of the test chains.
pub const FEE: u128 = 10;

/// A chain named `name` where `user` holds 1,000,000 units (`validator` stands for the single
/// validator ledger-lite's genesis names; consensus does not use it).
pub fn genesis(name: &str, validator: &Identity, user: &Identity) -> Genesis {
    Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: name.into(),
        time_ms: 1,
        validator: validator.account_id(),
        validators: vec![],
        params: Params {
            unbonding_blocks: 3,
            max_block_txs: 1000,
            min_stake: Amount::from_units(1),
            min_fee: Amount::from_units(FEE),
        },
        faucet: None,
        allocations: vec![(user.account_id(), Amount::from_units(1_000_000))],
    }
}

/// Like [`genesis`], on a chain of the `validators` (the first stands first).
pub fn consensus_genesis(name: &str, validators: &[Identity], user: &Identity) -> Genesis {
    let mut genesis = genesis(name, &validators[0], user);
    genesis.validators = validators.iter().map(Identity::account_id).collect();
    genesis
}

/// `user`'s transfer of `amount` units to `to`, with `nonce`, on `chain`.
pub fn transfer(
    chain: ChainId,
    user: &Identity,
    to: AccountId,
    nonce: u64,
    amount: u128,
) -> SignedTx {
    Tx {
        chain,
        from: user.account_id(),
        nonce,
        fee: Amount::from_units(FEE),
        kind: TxKind::Transfer {
            to,
            amount: Amount::from_units(amount),
        },
    }
    .sign(user)
}
