//! A small chain for tests: funded accounts, a validator, helpers to sign and apply.
#![allow(dead_code)]

use ledger_lite::*;
use top_proto::id::AccountId;
use top_proto::identity::Identity;

pub const UNBONDING: u64 = 3;
/// The least stake of a registered relay, in TOP.
pub const MIN_STAKE: u128 = 10;
/// Every test transaction's fee, in base units.
pub const MIN_FEE: u128 = 1_000;

pub struct World {
    pub validator: Identity,
    pub people: Vec<Identity>,
    pub genesis: Genesis,
    pub state: State,
    pub head: BlockHash,
    /// The block `run` or `tick` made last.
    pub last_block: Option<Block>,
}

pub fn top(n: u128) -> Amount {
    Amount::from_top(n).unwrap()
}

impl World {
    /// `n` accounts with 1000 TOP each.
    pub fn new(n: u8) -> Self {
        let validator = Identity::from_seed(&[200; 32]);
        let people: Vec<_> = (0..n).map(|i| Identity::from_seed(&[i + 1; 32])).collect();
        let genesis = Genesis {
            bootstrap: Vec::new(),
            epochs: None,
            name: "test".into(),
            time_ms: 1_000,
            validator: validator.account_id(),
            validators: vec![],
            params: Params {
                unbonding_blocks: UNBONDING,
                max_block_txs: 10_000,
                min_stake: top(MIN_STAKE),
                min_fee: Amount::from_units(MIN_FEE),
            },
            faucet: None,
            allocations: people.iter().map(|p| (p.account_id(), top(1000))).collect(),
        };
        let state = genesis.state().unwrap();
        Self {
            validator,
            people,
            genesis,
            state,
            head: BlockHash::default(),
            last_block: None,
        }
    }

    pub fn id(&self, i: usize) -> AccountId {
        self.people[i].account_id()
    }

    pub fn chain(&self) -> ChainId {
        self.state.chain
    }

    /// A transaction from person `i` with its next nonce in the current state.
    pub fn tx(&self, i: usize, kind: TxKind) -> SignedTx {
        let from = self.id(i);
        let nonce = self.state.account(&from).map_or(0, |a| a.nonce);
        Tx {
            chain: self.chain(),
            from,
            nonce,
            fee: self.state.params.min_fee,
            kind,
        }
        .sign(&self.people[i])
    }

    /// Applies `stx` as a one-transaction block; returns the block's outcome or the tx error.
    pub fn run(&mut self, stx: SignedTx) -> Result<Vec<SettledFee>, TxError> {
        let time = self.state.time_ms + 1000;
        let built = self
            .state
            .build_block(vec![stx], time, self.head, &self.validator);
        self.head = built.block.hash();
        self.last_block = Some(built.block.clone());
        self.state.check_invariant().unwrap();
        match built.rejected.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(built.outcome.fees),
        }
    }

    /// An empty block (time passes, unbonding matures).
    pub fn tick(&mut self) {
        let time = self.state.time_ms + 1000;
        let built = self
            .state
            .build_block(vec![], time, self.head, &self.validator);
        self.head = built.block.hash();
        self.last_block = Some(built.block);
    }

    /// Opens a channel from person `payer` to person `relay`; returns its id.
    pub fn open(&mut self, payer: usize, relay: usize, lock: Amount) -> ChannelId {
        let nonce = self.state.account(&self.id(payer)).unwrap().nonce;
        let tx = self.tx(
            payer,
            TxKind::OpenChannel {
                relay: self.id(relay),
                amount: lock,
                sponsor: None,
            },
        );
        self.run(tx).unwrap();
        ChannelId::derive(&self.chain(), &self.id(payer), &self.id(relay), nonce)
    }

    pub fn receipt(&self, signer: usize, channel: ChannelId, cum: Amount) -> Receipt {
        ReceiptBody {
            chain: self.chain(),
            channel,
            cum_bytes: cum.units() as u64,
            cum_amount: cum,
        }
        .sign(&self.people[signer])
    }

    pub fn settle(
        &mut self,
        relay: usize,
        receipts: Vec<Receipt>,
    ) -> Result<Vec<SettledFee>, TxError> {
        let tx = self.tx(relay, TxKind::Settle { receipts });
        self.run(tx)
    }

    /// Fees person `i` signed for so far (every committed transaction pays `MIN_FEE`).
    pub fn fees(&self, i: usize) -> Amount {
        let nonce = self.state.account(&self.id(i)).map_or(0, |a| a.nonce);
        Amount::from_units(u128::from(nonce) * MIN_FEE)
    }

    /// `amount` less the fees person `i` paid so far.
    pub fn less_fees(&self, i: usize, amount: Amount) -> Amount {
        amount.checked_sub(self.fees(i)).unwrap()
    }

    /// Fees every person paid so far (all burned).
    pub fn all_fees(&self) -> Amount {
        (0..self.people.len()).fold(Amount::ZERO, |sum, i| {
            sum.checked_add(self.fees(i)).unwrap()
        })
    }

    pub fn balance(&self, i: usize) -> Amount {
        self.state
            .account(&self.id(i))
            .map_or(Amount::ZERO, |a| a.balance)
    }
}
