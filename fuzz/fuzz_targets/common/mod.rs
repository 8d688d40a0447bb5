//! What the fuzz targets share: a chain state where one account holds plenty.

use std::sync::LazyLock;

use ledger_lite::{Genesis, Params, State};
use top_proto::identity::Identity;

/// A small chain (minimum fee 3, minimum stake 10) where seed 3's account holds 2^40 units.
pub static STATE: LazyLock<State> = LazyLock::new(|| {
    let rich = Identity::from_seed(&[3; 32]);
    Genesis {
        name: "fuzz".into(),
        time_ms: 1,
        validator: Identity::from_seed(&[4; 32]).account_id(),
        validators: vec![],
        params: Params {
            unbonding_blocks: 3,
            max_block_txs: 100,
            min_stake: ledger_lite::Amount::from_units(10),
            min_fee: ledger_lite::Amount::from_units(3),
        },
        faucet: None,
        allocations: vec![(rich.account_id(), ledger_lite::Amount::from_units(1 << 40))],
    }
    .state()
    .expect("the fuzz genesis")
});
