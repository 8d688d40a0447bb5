//! What the fuzz targets share: a chain state where one account holds plenty.

use std::sync::LazyLock;

use ledger_lite::{Genesis, Params, State};
use top_proto::identity::Identity;

/// A small chain (minimum fee 3, minimum stake 10) where seed 3's account holds 2^40 units.
pub static STATE: LazyLock<State> = LazyLock::new(|| {
    GENESIS.state().expect("the fuzz genesis")
});

/// The genesis of [`STATE`]; [`CONSENSUS_GENESIS`] names four validators (seeds 4 to 7).
pub static GENESIS: LazyLock<Genesis> = LazyLock::new(|| {
    let rich = Identity::from_seed(&[3; 32]);
    Genesis {
bootstrap: Vec::new(),
        epochs: None,
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
});

/// [`GENESIS`] with four validators agreeing through consensus.
pub static CONSENSUS_GENESIS: LazyLock<Genesis> = LazyLock::new(|| {
    let mut genesis = GENESIS.clone();
    genesis.validators = (4..8u8)
        .map(|seed| Identity::from_seed(&[seed; 32]).account_id())
        .collect();
    genesis
});
