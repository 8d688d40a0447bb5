//! The state transition: one transaction at a time, each either applied whole or not at all.
//!
//! Every handler reads what it needs, computes every new value with checked arithmetic and only
//! then writes, so a transaction that fails changes nothing. Signatures are checked by the caller
//! (one by one for the mempool, in batches for blocks): see [`crate::verify`].

use std::collections::BTreeMap;

use top_proto::id::AccountId;

use crate::amount::{Amount, AmountError};
use crate::fees::FeeFrom;
use crate::registry::{RecordError, RelayRecord};
use crate::state::{Account, Channel, ChannelStatus, Grant, SettleKind, State, Touched, Unbond};
use crate::tx::{ChainId, ChannelId, EgressClaim, Receipt, SignedTx, TxKind};

/// Why a transaction was refused. The state is unchanged whenever one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// Signed for another chain.
    #[error("transaction is for another chain")]
    WrongChain,
    /// The transaction signature does not verify.
    #[error("bad transaction signature")]
    BadSignature,
    /// The sender has never held anything on this chain.
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    /// The nonce is not the sender's next one.
    #[error("wrong nonce: expected {expected}, got {got}")]
    WrongNonce {
        /// The sender's next nonce.
        expected: u64,
        /// What the transaction carried.
        got: u64,
    },
    /// Zero amounts move nothing and are refused.
    #[error("amount must be more than zero")]
    ZeroAmount,
    /// Not enough in the named place.
    #[error("insufficient {what}: have {have}, need {need}")]
    Insufficient {
        /// balance, deposit, stake or grant.
        what: &'static str,
        /// What there is.
        have: Amount,
        /// What the transaction needs.
        need: Amount,
    },
    /// A sum would overflow.
    #[error("amount overflow")]
    Overflow,
    /// No such channel.
    #[error("unknown channel")]
    UnknownChannel,
    /// The channel closed; nothing settles on it any more.
    #[error("channel is closed")]
    ChannelClosed,
    /// The channel is already closing.
    #[error("channel is already closing")]
    AlreadyClosing,
    /// Only the payer or the signer may close a channel.
    #[error("only the channel's payer or signer can close it")]
    NotChannelParty,
    /// A channel to oneself.
    #[error("a channel cannot pay its own payer")]
    ChannelToSelf,
    /// Settled by an account that is not the channel's relay.
    #[error("only the channel's relay can settle it")]
    NotChannelRelay,
    /// The receipt's signature does not verify.
    #[error("bad receipt signature")]
    BadReceiptSignature,
    /// The receipt is not signed by the channel's signer.
    #[error("receipt signed by {0}, not the channel's signer")]
    WrongReceiptSigner(AccountId),
    /// The receipt names another chain.
    #[error("receipt is for another chain")]
    ReceiptWrongChain,
    /// The receipt is not newer than what was already settled.
    #[error("old receipt: amount {cum} is not above the settled {settled}")]
    OldReceipt {
        /// The receipt's cumulative amount.
        cum: Amount,
        /// Already settled on the channel.
        settled: Amount,
    },
    /// An egress claim above the allowance's cap.
    #[error("claim of {claimed} is above the allowance's cap of {cap}")]
    AboveAllowance {
        /// The claimed cumulative amount.
        claimed: Amount,
        /// The publisher's cap.
        cap: Amount,
    },
    /// Everything locked in the channel has been paid out.
    #[error("channel lock is spent")]
    ChannelSpent,
    /// A settlement with no receipts, or two for one channel.
    #[error("a settlement needs one receipt per channel, at least one")]
    BadSettlement,
    /// No grant from the sponsor to the signer.
    #[error("{app} has granted {user} nothing")]
    NoGrant {
        /// The sponsor named.
        app: AccountId,
        /// The signer.
        user: AccountId,
    },
    /// The grant expired.
    #[error("grant expired")]
    GrantExpired,
    /// A grant to oneself.
    #[error("an account cannot grant itself")]
    GrantToSelf,
    /// The relay record is malformed.
    #[error(transparent)]
    BadRecord(#[from] RecordError),
    /// A registered relay's stake would fall below the chain's minimum.
    #[error("a registered relay stakes at least {need}; it would have {have}")]
    StakeBelowMinimum {
        /// The stake it would have.
        have: Amount,
        /// The chain's minimum stake.
        need: Amount,
    },
    /// The transaction's fee is below the chain's minimum.
    #[error("fee {have} is below the chain's minimum fee {need}")]
    FeeTooLow {
        /// The fee it offers.
        have: Amount,
        /// The chain's minimum fee.
        need: Amount,
    },
    /// A fee an app pays for its sponsored user is exactly the chain's minimum.
    #[error("a sponsored transaction's fee is the chain's minimum, {need}")]
    SponsoredFee {
        /// The chain's minimum fee.
        need: Amount,
    },
    /// Deregistering an account that is not a registered relay.
    #[error("not a registered relay")]
    NotRegistered,
    /// Egress claims on a channel that settled session receipts, or the other way round.
    #[error("this channel settles the other kind of claim (receipts and egress never mix)")]
    MixedSettlement,
    /// The transaction alone is larger than a block may be.
    #[error("transaction larger than a block")]
    TooLarge,
}

impl From<AmountError> for TxError {
    fn from(_: AmountError) -> Self {
        TxError::Overflow
    }
}

/// Most receipts (or egress claims) one settlement carries.
pub const MAX_SETTLE_CLAIMS: usize = 4096;

/// A sponsored user, or a relay settling its first fees, may never have held anything: that
/// transaction creates its account.
fn may_create(kind: &TxKind) -> bool {
    matches!(
        kind,
        TxKind::OpenChannel {
            sponsor: Some(_),
            ..
        } | TxKind::Settle { .. }
            | TxKind::SettleEgress { .. }
    )
}

impl State {
    /// The checks that need no signature: chain, sender, nonce, the record's shape, and every
    /// settlement claim against its channel. Run before the (costly) signature checks, so a
    /// forged transaction from nowhere costs a lookup, not thousands of verifications.
    pub fn precheck(&self, stx: &SignedTx) -> Result<(), TxError> {
        let tx = &stx.tx;
        if tx.chain != self.chain {
            return Err(TxError::WrongChain);
        }
        let expected = match self.accounts.get(&tx.from) {
            Some(a) => a.nonce,
            None if may_create(&tx.kind) => 0,
            None => return Err(TxError::UnknownAccount(tx.from)),
        };
        if tx.nonce != expected {
            return Err(TxError::WrongNonce {
                expected,
                got: tx.nonce,
            });
        }
        self.fee_floor(tx.fee)?;
        let balance = self
            .accounts
            .get(&tx.from)
            .map_or(Amount::ZERO, |a| a.balance);
        match &tx.kind {
            TxKind::Settle { receipts } => {
                let updates = self.check_settlement(&tx.from, receipts)?;
                need("balance", balance.checked_add(earnings(&updates)?)?, tx.fee)?;
            }
            TxKind::SettleEgress { claims } => {
                let updates = self.check_egress(&tx.from, claims)?;
                need("balance", balance.checked_add(earnings(&updates)?)?, tx.fee)?;
            }
            TxKind::OpenChannel {
                sponsor: Some(app), ..
            } if *app != tx.from => {
                self.fee_from(tx, self.accounts.get(&tx.from))?;
                let deposit = self.accounts.get(app).map_or(Amount::ZERO, |a| a.deposit);
                need("sponsor deposit", deposit, tx.fee)?;
            }
            kind => {
                if let TxKind::RegisterRelay { record, .. } = kind {
                    record.check()?;
                }
                self.fee_from(tx, self.accounts.get(&tx.from))?;
            }
        }
        Ok(())
    }

    /// Refuses a fee below the chain's minimum.
    fn fee_floor(&self, fee: Amount) -> Result<(), TxError> {
        let need = self.params.min_fee;
        if fee < need {
            return Err(TxError::FeeTooLow { have: fee, need });
        }
        Ok(())
    }

    /// Refuses a registered relay's stake below the chain's minimum.
    fn min_stake(&self, stake: Amount) -> Result<(), TxError> {
        let need = self.params.min_stake;
        if stake < need {
            return Err(TxError::StakeBelowMinimum { have: stake, need });
        }
        Ok(())
    }
}

/// What a relay keeps of a settlement (the fees less their burn).
fn earnings(updates: &[(ChannelId, Channel, SettledFee)]) -> Result<Amount, TxError> {
    let mut earned = Amount::ZERO;
    for (_, _, fee) in updates {
        earned = earned.checked_add(fee.fee.checked_sub(fee.burned)?)?;
    }
    Ok(earned)
}

fn need(what: &'static str, have: Amount, need: Amount) -> Result<Amount, TxError> {
    have.checked_sub(need)
        .map_err(|_| TxError::Insufficient { what, have, need })
}

fn positive(amount: Amount) -> Result<Amount, TxError> {
    if amount.is_zero() {
        Err(TxError::ZeroAmount)
    } else {
        Ok(amount)
    }
}

/// Old values of everything a block wrote, so a failed block can be undone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Journal {
    accounts: BTreeMap<AccountId, Option<Account>>,
    channels: BTreeMap<ChannelId, Option<Channel>>,
    grants: BTreeMap<(AccountId, AccountId), Option<Grant>>,
    burned: Amount,
    height: u64,
    time_ms: u64,
    epoch: u64,
    validators: Vec<AccountId>,
}

impl Journal {
    pub(crate) fn touched(&self) -> Touched {
        Touched {
            accounts: self.accounts.keys().copied().collect(),
            channels: self.channels.keys().copied().collect(),
            grants: self.grants.keys().copied().collect(),
        }
    }
}

/// One settled receipt's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledFee {
    /// The channel.
    pub channel: ChannelId,
    /// Paid out of the lock.
    pub fee: Amount,
    /// Of which burned.
    pub burned: Amount,
}

impl State {
    /// Starts recording old values (before a block).
    pub(crate) fn begin_journal(&mut self) -> Journal {
        Journal {
            burned: self.burned,
            height: self.height,
            time_ms: self.time_ms,
            epoch: self.epoch,
            validators: self.validators.clone(),
            ..Journal::default()
        }
    }

    /// Puts back every value `journal` recorded.
    pub(crate) fn rollback(&mut self, journal: Journal) {
        for (id, old) in journal.accounts {
            match old {
                Some(a) => self.accounts.insert(id, a),
                None => self.accounts.remove(&id),
            };
        }
        for (id, old) in journal.channels {
            match old {
                Some(c) => self.channels.insert(id, c),
                None => self.channels.remove(&id),
            };
        }
        for (id, old) in journal.grants {
            match old {
                Some(g) => self.grants.insert(id, g),
                None => self.grants.remove(&id),
            };
        }
        self.burned = journal.burned;
        self.height = journal.height;
        self.time_ms = journal.time_ms;
        self.epoch = journal.epoch;
        self.validators = journal.validators;
        self.reindex();
    }

    fn put_account(&mut self, j: &mut Option<&mut Journal>, id: AccountId, account: Account) {
        if account.relay.is_some() {
            self.registered.insert(id);
        } else {
            self.registered.remove(&id);
        }
        let old = self.accounts.insert(id, account);
        if let Some(j) = j {
            j.accounts.entry(id).or_insert(old);
        }
    }

    fn put_channel(&mut self, j: &mut Option<&mut Journal>, id: ChannelId, channel: Channel) {
        let old = self.channels.insert(id, channel);
        if let Some(j) = j {
            j.channels.entry(id).or_insert(old);
        }
    }

    fn put_grant(&mut self, j: &mut Option<&mut Journal>, key: (AccountId, AccountId), g: Grant) {
        let old = self.grants.insert(key, g);
        if let Some(j) = j {
            j.grants.entry(key).or_insert(old);
        }
    }

    /// Opens block `height` at `time_ms`: returns matured unbonding to balances and closes
    /// channels whose closing period ended.
    pub(crate) fn begin_block(&mut self, mut j: Option<&mut Journal>, height: u64, time_ms: u64) {
        self.height = height;
        self.time_ms = time_ms;
        let due: Vec<_> = self
            .releases
            .range(..=(height, AccountId::from_wire([0xff; 32])))
            .copied()
            .collect();
        for entry in due {
            self.releases.remove(&entry);
            let Some(mut account) = self.accounts.get(&entry.1).cloned() else {
                continue;
            };
            let (ready, waiting): (Vec<_>, Vec<_>) = account
                .unbonding
                .into_iter()
                .partition(|u| u.release_height <= height);
            account.unbonding = waiting;
            for unbond in ready {
                // Unbonding came out of this account's own holdings, so it fits back.
                account.balance = account.balance.saturating_add(unbond.amount);
            }
            self.put_account(&mut j, entry.1, account);
        }
        let closing: Vec<_> = self
            .closings
            .range(..=(height, ChannelId([0xff; 32])))
            .copied()
            .collect();
        for entry in closing {
            self.closings.remove(&entry);
            self.finalize_channel(&mut j, entry.1);
        }
    }

    fn finalize_channel(&mut self, j: &mut Option<&mut Journal>, id: ChannelId) {
        let Some(mut channel) = self.channels.get(&id).cloned() else {
            return;
        };
        let refund = channel.remaining();
        channel.status = ChannelStatus::Closed;
        let mut payer = self
            .accounts
            .get(&channel.payer)
            .cloned()
            .unwrap_or_default();
        payer.deposit = payer.deposit.saturating_add(refund);
        let grant_key = (channel.payer, channel.signer);
        if channel.payer != channel.signer
            && let Some(mut grant) = self.grants.get(&grant_key).cloned()
        {
            grant.used = grant.used.saturating_sub(refund);
            self.put_grant(j, grant_key, grant);
        }
        self.put_account(j, channel.payer, payer);
        self.put_channel(j, id, channel);
    }

    /// Applies one transaction whose signatures the caller has verified.
    pub(crate) fn apply_verified(
        &mut self,
        mut j: Option<&mut Journal>,
        stx: &SignedTx,
    ) -> Result<Vec<SettledFee>, TxError> {
        let tx = &stx.tx;
        if tx.chain != self.chain {
            return Err(TxError::WrongChain);
        }
        let mut sender = match self.accounts.get(&tx.from) {
            Some(a) => a.clone(),
            None if may_create(&tx.kind) => Account::default(),
            None => return Err(TxError::UnknownAccount(tx.from)),
        };
        if tx.nonce != sender.nonce {
            return Err(TxError::WrongNonce {
                expected: sender.nonce,
                got: tx.nonce,
            });
        }
        sender.nonce = sender.nonce.checked_add(1).ok_or(TxError::Overflow)?;
        self.fee_floor(tx.fee)?;
        // The sender's own fee first, before anything else happens. A sponsor's is charged
        // with its grant or once the close is checked, a settling relay's out of what it earns
        // (all below): nothing is written before a transaction is known to apply.
        let fee_from = self.fee_from(tx, Some(&sender))?;
        match fee_from {
            FeeFrom::Balance => sender.balance = need("balance", sender.balance, tx.fee)?,
            FeeFrom::Deposit => sender.deposit = need("deposit", sender.deposit, tx.fee)?,
            FeeFrom::Sponsor(_) | FeeFrom::Earnings => {}
        }
        let release_height = self
            .height
            .checked_add(self.params.unbonding_blocks)
            .ok_or(TxError::Overflow)?;
        let mut settled = Vec::new();
        match &tx.kind {
            TxKind::Transfer { to, amount } => {
                let amount = positive(*amount)?;
                sender.balance = need("balance", sender.balance, amount)?;
                if *to == tx.from {
                    sender.balance = sender.balance.checked_add(amount)?;
                } else {
                    let mut recipient = self.accounts.get(to).cloned().unwrap_or_default();
                    recipient.balance = recipient.balance.checked_add(amount)?;
                    self.put_account(&mut j, *to, recipient);
                }
            }
            TxKind::Deposit { amount } => {
                let amount = positive(*amount)?;
                sender.balance = need("balance", sender.balance, amount)?;
                sender.deposit = sender.deposit.checked_add(amount)?;
            }
            TxKind::Stake { amount } => {
                let amount = positive(*amount)?;
                sender.balance = need("balance", sender.balance, amount)?;
                sender.stake = sender.stake.checked_add(amount)?;
            }
            TxKind::Withdraw { amount } | TxKind::Unstake { amount } => {
                let amount = positive(*amount)?;
                if matches!(tx.kind, TxKind::Withdraw { .. }) {
                    sender.deposit = need("deposit", sender.deposit, amount)?;
                } else {
                    sender.stake = need("stake", sender.stake, amount)?;
                    if sender.relay.is_some() {
                        self.min_stake(sender.stake)?;
                    }
                }
                sender.unbonding.push(Unbond {
                    amount,
                    release_height,
                });
                self.releases.insert((release_height, tx.from));
            }
            TxKind::RegisterRelay { record, stake } => {
                record.check()?;
                if !stake.is_zero() {
                    sender.balance = need("balance", sender.balance, *stake)?;
                    sender.stake = sender.stake.checked_add(*stake)?;
                }
                self.min_stake(sender.stake)?;
                // A key's first registration draws its place for good: leaving and registering
                // again does not draw anew.
                if sender.relay_since == 0 {
                    sender.relay_since = self.height;
                }
                sender.relay = Some(RelayRecord::clone(record));
            }
            TxKind::DeregisterRelay => {
                if sender.relay.take().is_none() {
                    return Err(TxError::NotRegistered);
                }
                let amount = std::mem::take(&mut sender.stake);
                if !amount.is_zero() {
                    sender.unbonding.push(Unbond {
                        amount,
                        release_height,
                    });
                    self.releases.insert((release_height, tx.from));
                }
            }
            TxKind::OpenChannel {
                relay,
                amount,
                sponsor,
            } => {
                let amount = positive(*amount)?;
                let payer_id = sponsor.unwrap_or(tx.from);
                if *relay == payer_id || *relay == tx.from {
                    return Err(TxError::ChannelToSelf);
                }
                let id = ChannelId::derive(&self.chain, &tx.from, relay, tx.nonce);
                let channel = Channel {
                    payer: payer_id,
                    signer: tx.from,
                    relay: *relay,
                    lock: amount,
                    settled: Amount::ZERO,
                    settled_bytes: 0,
                    status: ChannelStatus::Open,
                    settles: None,
                };
                if payer_id == tx.from {
                    sender.deposit = need("deposit", sender.deposit, amount)?;
                } else {
                    let key = (payer_id, tx.from);
                    let mut grant = self.grants.get(&key).cloned().ok_or(TxError::NoGrant {
                        app: payer_id,
                        user: tx.from,
                    })?;
                    if self.time_ms > grant.expires_ms {
                        return Err(TxError::GrantExpired);
                    }
                    // The fee counts against the grant like the lock: a user cannot make the
                    // app pay more than it granted.
                    let charged = amount.checked_add(tx.fee)?;
                    let used = grant.used.checked_add(charged)?;
                    need("grant", grant.cap, used)?;
                    grant.used = used;
                    let mut payer = self
                        .accounts
                        .get(&payer_id)
                        .cloned()
                        .ok_or(TxError::UnknownAccount(payer_id))?;
                    payer.deposit = need("sponsor deposit", payer.deposit, charged)?;
                    self.put_grant(&mut j, key, grant);
                    self.put_account(&mut j, payer_id, payer);
                }
                self.put_channel(&mut j, id, channel);
            }
            TxKind::CloseChannel { channel: id } => {
                let mut channel = self
                    .channels
                    .get(id)
                    .cloned()
                    .ok_or(TxError::UnknownChannel)?;
                if tx.from != channel.payer && tx.from != channel.signer {
                    return Err(TxError::NotChannelParty);
                }
                match channel.status {
                    ChannelStatus::Open => {}
                    ChannelStatus::Closing { .. } => return Err(TxError::AlreadyClosing),
                    ChannelStatus::Closed => return Err(TxError::ChannelClosed),
                }
                if let FeeFrom::Sponsor(app) = fee_from {
                    let mut sponsor = self
                        .accounts
                        .get(&app)
                        .cloned()
                        .ok_or(TxError::UnknownAccount(app))?;
                    sponsor.deposit = need("sponsor deposit", sponsor.deposit, tx.fee)?;
                    let key = (app, tx.from);
                    let mut grant = self
                        .grants
                        .get(&key)
                        .cloned()
                        .ok_or(TxError::NoGrant { app, user: tx.from })?;
                    grant.used = grant.used.checked_add(tx.fee)?;
                    need("grant", grant.cap, grant.used)?;
                    self.put_grant(&mut j, key, grant);
                    self.put_account(&mut j, app, sponsor);
                }
                channel.status = ChannelStatus::Closing {
                    final_height: release_height,
                };
                self.closings.insert((release_height, *id));
                self.put_channel(&mut j, *id, channel);
            }
            TxKind::Settle { .. } | TxKind::SettleEgress { .. } => {
                let updates = match &tx.kind {
                    TxKind::Settle { receipts } => self.check_settlement(&tx.from, receipts)?,
                    TxKind::SettleEgress { claims } => self.check_egress(&tx.from, claims)?,
                    _ => return Err(TxError::BadSettlement),
                };
                let earned = earnings(&updates)?;
                let mut burned = Amount::ZERO;
                for (_, _, fee) in &updates {
                    burned = burned.checked_add(fee.burned)?;
                    settled.push(fee.clone());
                }
                sender.balance = sender.balance.checked_add(earned)?;
                sender.balance = need("balance", sender.balance, tx.fee)?;
                sender.fees_earned = sender.fees_earned.checked_add(earned)?;
                sender.fees_burned = sender.fees_burned.checked_add(burned)?;
                self.burned = self.burned.checked_add(burned)?;
                for (id, channel, _) in updates {
                    self.put_channel(&mut j, id, channel);
                }
            }
            TxKind::Grant {
                user,
                cap,
                expires_ms,
            } => {
                if *user == tx.from {
                    return Err(TxError::GrantToSelf);
                }
                let key = (tx.from, *user);
                let used = self.grants.get(&key).map_or(Amount::ZERO, |g| g.used);
                self.put_grant(
                    &mut j,
                    key,
                    Grant {
                        cap: *cap,
                        used,
                        expires_ms: *expires_ms,
                    },
                );
            }
        }
        self.burned = self.burned.checked_add(tx.fee)?;
        self.put_account(&mut j, tx.from, sender);
        Ok(settled)
    }

    /// Checks every receipt of a settlement by `relay`; returns the channels as they will be.
    fn check_settlement(
        &self,
        relay: &AccountId,
        receipts: &[Receipt],
    ) -> Result<Vec<(ChannelId, Channel, SettledFee)>, TxError> {
        let claims = receipts.iter().map(|r| Claim {
            chain: r.body.chain,
            channel: r.body.channel,
            signer: r.signer,
            cum_bytes: r.body.cum_bytes,
            cum_amount: r.body.cum_amount,
            cap: None,
        });
        self.check_claims(relay, claims)
    }

    /// Checks every egress claim of a settlement by `relay` against its allowance.
    fn check_egress(
        &self,
        relay: &AccountId,
        egress: &[EgressClaim],
    ) -> Result<Vec<(ChannelId, Channel, SettledFee)>, TxError> {
        let claims = egress.iter().map(|c| Claim {
            chain: c.allowance.body.chain,
            channel: c.allowance.body.channel,
            signer: c.allowance.signer,
            cum_bytes: c.cum_bytes,
            cum_amount: c.cum_amount,
            cap: Some(c.allowance.body.cap),
        });
        self.check_claims(relay, claims)
    }

    fn check_claims(
        &self,
        relay: &AccountId,
        claims: impl ExactSizeIterator<Item = Claim>,
    ) -> Result<Vec<(ChannelId, Channel, SettledFee)>, TxError> {
        if claims.len() == 0 || claims.len() > MAX_SETTLE_CLAIMS {
            return Err(TxError::BadSettlement);
        }
        let mut out: Vec<(ChannelId, Channel, SettledFee)> = Vec::with_capacity(claims.len());
        for claim in claims {
            if claim.chain != self.chain {
                return Err(TxError::ReceiptWrongChain);
            }
            let mut channel = self
                .channels
                .get(&claim.channel)
                .cloned()
                .ok_or(TxError::UnknownChannel)?;
            if channel.relay != *relay {
                return Err(TxError::NotChannelRelay);
            }
            if channel.status == ChannelStatus::Closed {
                return Err(TxError::ChannelClosed);
            }
            if claim.signer != channel.signer {
                return Err(TxError::WrongReceiptSigner(claim.signer));
            }
            if let Some(cap) = claim.cap
                && claim.cum_amount > cap
            {
                return Err(TxError::AboveAllowance {
                    claimed: claim.cum_amount,
                    cap,
                });
            }
            let kind = if claim.cap.is_some() {
                SettleKind::Egress
            } else {
                SettleKind::Receipts
            };
            if channel.settles.is_some_and(|k| k != kind) {
                return Err(TxError::MixedSettlement);
            }
            channel.settles = Some(kind);
            if claim.cum_amount <= channel.settled {
                return Err(TxError::OldReceipt {
                    cum: claim.cum_amount,
                    settled: channel.settled,
                });
            }
            let fee = claim
                .cum_amount
                .min(channel.lock)
                .checked_sub(channel.settled)?;
            if fee.is_zero() {
                return Err(TxError::ChannelSpent);
            }
            channel.settled = channel.settled.checked_add(fee)?;
            channel.settled_bytes = claim.cum_bytes;
            out.push((
                claim.channel,
                channel,
                SettledFee {
                    channel: claim.channel,
                    fee,
                    burned: fee.burn_share(),
                },
            ));
        }
        out.sort_by_key(|(id, _, _)| *id);
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(TxError::BadSettlement);
        }
        Ok(out)
    }
}

/// One payment claim on a channel: from a receipt, or from an egress allowance (with its cap).
struct Claim {
    chain: ChainId,
    channel: ChannelId,
    signer: AccountId,
    cum_bytes: u64,
    cum_amount: Amount,
    cap: Option<Amount>,
}
