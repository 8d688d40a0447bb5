//! The ledger's state: accounts, channels and grants, with the supply invariant and the state root.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;

use crate::amount::Amount;
use crate::registry::RelayRecord;
use crate::tx::{ChainId, ChannelId};

/// One account's money and nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// Resource deposit not locked in any channel.
    pub deposit: Amount,
    /// Relay stake.
    pub stake: Amount,
    /// Withdrawn deposit and unstaked stake waiting out the unbonding period.
    pub unbonding: Vec<Unbond>,
    /// Relays: fees received from settlements (already in the balance; a statistic).
    pub fees_earned: Amount,
    /// Relays: fees burned from their settlements (a statistic).
    pub fees_burned: Amount,
    /// Relays: the registry record, while registered.
    pub relay: Option<RelayRecord>,
    /// Relays: the height of the block that first registered it (updates, and leaving and
    /// registering again, keep it; 0: never registered). That block's hash draws where the
    /// relay stands in choosing homes, which no one could grind a key for in advance.
    pub relay_since: u64,
}

/// An amount on its way back to the balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbond {
    /// How much.
    pub amount: Amount,
    /// The height of the block that returns it to the balance.
    pub release_height: u64,
}

impl Account {
    /// The sum of everything this account holds, in every form.
    pub fn total(&self) -> Option<Amount> {
        let mut sum = self.balance.checked_add(self.deposit).ok()?;
        sum = sum.checked_add(self.stake).ok()?;
        for unbond in &self.unbonding {
            sum = sum.checked_add(unbond.amount).ok()?;
        }
        Some(sum)
    }

    /// Amount still unbonding.
    pub fn unbonding_total(&self) -> Amount {
        self.unbonding
            .iter()
            .fold(Amount::ZERO, |sum, u| sum.saturating_add(u.amount))
    }
}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelStatus {
    /// Receipts settle; the relay serves.
    Open,
    /// Closing: receipts still settle until the block at `final_height` closes it.
    Closing {
        /// The height of the block that closes it.
        final_height: u64,
    },
    /// Closed: the unspent lock went back to the payer; nothing settles any more.
    Closed,
}

/// A payment channel from a payer to one relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Whose deposit the lock came from.
    pub payer: AccountId,
    /// Who signs receipts (the payer, or a user the payer granted access).
    pub signer: AccountId,
    /// The only account that can settle.
    pub relay: AccountId,
    /// Locked for this relay.
    pub lock: Amount,
    /// Already paid out of the lock (relay share plus burn).
    pub settled: Amount,
    /// Bytes in the latest settled receipt.
    pub settled_bytes: u64,
    /// Open, closing or closed.
    pub status: ChannelStatus,
    /// What its settlements are, fixed by the first one: session receipts or egress claims.
    /// Both count cumulatively from zero, so one channel never settles both (each would be
    /// paid only past the other's total).
    pub settles: Option<SettleKind>,
}

/// What a channel pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettleKind {
    /// Session receipts (`Settle`).
    Receipts,
    /// HTTP egress claims under allowances (`SettleEgress`).
    Egress,
}

impl Channel {
    /// What is still locked and unpaid.
    pub fn remaining(&self) -> Amount {
        self.lock.saturating_sub(self.settled)
    }
}

/// An app's permission for one user to open channels paid from the app's deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The most the user may have locked plus spent.
    pub cap: Amount,
    /// Locked in the user's open channels plus settled out of them.
    pub used: Amount,
    /// Block time (unix milliseconds) after which no new channel opens under it.
    pub expires_ms: u64,
}

/// Chain parameters fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Blocks a withdrawal, unstake or channel close waits before it completes.
    pub unbonding_blocks: u64,
    /// The most transactions a block may hold.
    pub max_block_txs: u32,
    /// The least stake a registered relay holds (a genesis must name it).
    pub min_stake: Amount,
    /// The least fee a transaction pays, burned (a genesis must name it; never zero).
    pub min_fee: Amount,
}

/// The whole ledger state after some block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The chain.
    pub chain: ChainId,
    /// Fixed parameters.
    pub params: Params,
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Time of the last applied block, unix milliseconds.
    pub time_ms: u64,
    /// Everything created at genesis; never changes.
    pub genesis_supply: Amount,
    /// Burned so far.
    pub burned: Amount,
    /// How the validator set changes (none: it never does).
    pub epochs: Option<crate::epochs::EpochRule>,
    /// The current epoch (0 on a chain without epochs).
    pub epoch: u64,
    /// The validators of the current epoch.
    pub validators: Vec<AccountId>,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) channels: BTreeMap<ChannelId, Channel>,
    pub(crate) grants: BTreeMap<(AccountId, AccountId), Grant>,
    /// Derived index: (release height, account) of every unbonding entry.
    pub(crate) releases: BTreeSet<(u64, AccountId)>,
    /// Derived index: (final height, channel) of every closing channel.
    pub(crate) closings: BTreeSet<(u64, ChannelId)>,
    /// Derived index: every registered relay.
    pub(crate) registered: BTreeSet<AccountId>,
}

/// The parts of the state one block changed: what the store writes in the block's transaction.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    /// Accounts written.
    pub accounts: BTreeSet<AccountId>,
    /// Channels written.
    pub channels: BTreeSet<ChannelId>,
    /// Grants written, as (app, user).
    pub grants: BTreeSet<(AccountId, AccountId)>,
}

impl State {
    /// A state with no accounts yet.
    pub(crate) fn empty(chain: ChainId, params: Params, time_ms: u64) -> Self {
        Self {
            chain,
            params,
            height: 0,
            time_ms,
            genesis_supply: Amount::ZERO,
            burned: Amount::ZERO,
            epochs: None,
            epoch: 0,
            validators: Vec::new(),
            accounts: BTreeMap::new(),
            channels: BTreeMap::new(),
            grants: BTreeMap::new(),
            releases: BTreeSet::new(),
            closings: BTreeSet::new(),
            registered: BTreeSet::new(),
        }
    }

    /// The account, if it ever received anything.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// The channel, if it was ever opened.
    pub fn channel(&self, id: &ChannelId) -> Option<&Channel> {
        self.channels.get(id)
    }

    /// The grant `app` gave `user`, if any.
    pub fn grant(&self, app: &AccountId, user: &AccountId) -> Option<&Grant> {
        self.grants.get(&(*app, *user))
    }

    /// Every account, in id order.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// Every registered relay with its record, in id order.
    pub fn relays(&self) -> impl Iterator<Item = (&AccountId, &Account, &RelayRecord)> {
        self.registered.iter().filter_map(|id| {
            let account = self.accounts.get(id)?;
            Some((id, account, account.relay.as_ref()?))
        })
    }

    /// Registered relays with ids after `after` (all from the start if `None`), at most `max`.
    pub fn relays_after(
        &self,
        after: Option<&AccountId>,
        max: usize,
    ) -> Vec<(AccountId, Amount, RelayRecord)> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.registered
            .range((from, Bound::Unbounded))
            .filter_map(|id| {
                let account = self.accounts.get(id)?;
                Some((*id, account.stake, account.relay.clone()?))
            })
            .take(max)
            .collect()
    }

    /// The record of `id`, if it is a registered relay.
    pub fn relay(&self, id: &AccountId) -> Option<&RelayRecord> {
        self.accounts.get(id)?.relay.as_ref()
    }

    /// Every channel, in id order.
    pub fn channels(&self) -> impl Iterator<Item = (&ChannelId, &Channel)> {
        self.channels.iter()
    }

    /// Every grant, as ((app, user), grant).
    pub fn grants(&self) -> impl Iterator<Item = (&(AccountId, AccountId), &Grant)> {
        self.grants.iter()
    }

    /// Tokens in existence: genesis supply minus everything burned.
    pub fn total_supply(&self) -> Amount {
        self.genesis_supply.saturating_sub(self.burned)
    }

    /// Everything held anywhere plus everything burned; equals `genesis_supply` in a sound state.
    pub fn accounted(&self) -> Option<Amount> {
        let mut sum = self.burned;
        for account in self.accounts.values() {
            sum = sum.checked_add(account.total()?).ok()?;
        }
        for channel in self.channels.values() {
            if channel.status != ChannelStatus::Closed {
                sum = sum.checked_add(channel.remaining()).ok()?;
            }
        }
        Some(sum)
    }

    /// Checks the supply invariant: genesis supply = balances + deposits (free and locked in
    /// channels) + stakes + unbonding + burned.
    pub fn check_invariant(&self) -> Result<(), String> {
        match self.accounted() {
            Some(sum) if sum == self.genesis_supply => Ok(()),
            Some(sum) => Err(format!(
                "supply invariant broken: accounted {sum} != genesis {}",
                self.genesis_supply
            )),
            None => Err("supply invariant broken: sum overflows".into()),
        }
    }

    /// A hash committing to the whole state (every entry, in key order).
    pub fn root(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("top state root v1");
        let mut buf = Vec::with_capacity(256);
        let mut put = |h: &mut blake3::Hasher, value: &dyn erased::Encode| {
            buf.clear();
            value.encode_into(&mut buf);
            h.update(&(buf.len() as u64).to_le_bytes()).update(&buf);
        };
        put(&mut h, &(self.chain, self.height, self.time_ms));
        put(&mut h, &(self.genesis_supply, self.burned));
        // Only chains with epochs commit to the set (the others' roots stay as they were).
        if self.epochs.is_some() {
            put(&mut h, &(self.epoch, &self.validators));
        }
        for entry in &self.accounts {
            put(&mut h, &entry);
        }
        for entry in &self.channels {
            put(&mut h, &entry);
        }
        for entry in &self.grants {
            put(&mut h, &entry);
        }
        *h.finalize().as_bytes()
    }

    /// Rebuilds the derived indexes from the entries (after loading or rolling back).
    pub(crate) fn reindex(&mut self) {
        self.registered = self
            .accounts
            .iter()
            .filter_map(|(id, a)| a.relay.as_ref().map(|_| *id))
            .collect();
        self.releases = self
            .accounts
            .iter()
            .flat_map(|(id, a)| a.unbonding.iter().map(|u| (u.release_height, *id)))
            .collect();
        self.closings = self
            .channels
            .iter()
            .filter_map(|(id, c)| match c.status {
                ChannelStatus::Closing { final_height } => Some((final_height, *id)),
                _ => None,
            })
            .collect();
    }

    /// Puts entries loaded from the store (used by the store only).
    pub(crate) fn restore(
        &mut self,
        accounts: BTreeMap<AccountId, Account>,
        channels: BTreeMap<ChannelId, Channel>,
        grants: BTreeMap<(AccountId, AccountId), Grant>,
    ) {
        self.accounts = accounts;
        self.channels = channels;
        self.grants = grants;
        self.reindex();
    }
}

/// Postcard encoding behind a trait object, so the root hasher takes any entry type.
mod erased {
    use serde::Serialize;

    pub trait Encode {
        fn encode_into(&self, out: &mut Vec<u8>);
    }

    impl<T: Serialize> Encode for T {
        fn encode_into(&self, out: &mut Vec<u8>) {
            // Encoding in-memory state into a Vec cannot fail.
            let _ = postcard::to_io(self, out);
        }
    }
}
