//! The relay's side of one client session: usage metered, receipts taken, credit left.

use ledger_lite::{Amount, ChainId, ChannelId, Receipt};
use top_proto::id::AccountId;

use crate::prices::{Prices, Service, Usage};

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No channel yet.
    #[error("no channel is attached to this session")]
    NoChannel,
    /// Signature or signer wrong.
    #[error("receipt is not signed by the channel's signer")]
    BadSignature,
    /// For another chain or channel.
    #[error("receipt is for another chain or channel")]
    WrongChannel,
    /// Not above the last receipt.
    #[error("receipt amount {0} is not above the last one")]
    NotNewer(Amount),
    /// More than is owed (a relay never asks for that).
    #[error("receipt amount {0} is more than owed")]
    MoreThanOwed(Amount),
    /// Bytes disagree with the usage.
    #[error("receipt bytes do not match the usage")]
    WrongBytes,
}

impl ReceiptError {
    /// A short name of the reason (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoChannel => "no_channel",
            Self::BadSignature => "bad_signature",
            Self::WrongChannel => "wrong_channel",
            Self::NotNewer(_) => "not_newer",
            Self::MoreThanOwed(_) => "more_than_owed",
            Self::WrongBytes => "wrong_bytes",
        }
    }
}

/// The channel a session is billed to.
#[derive(Clone, Debug)]
struct Attached {
    id: ChannelId,
    signer: AccountId,
    lock: Amount,
    base_amount: Amount,
    base_bytes: u64,
    latest: Option<Receipt>,
}

/// Metering of one client session on a relay.
#[derive(Clone, Debug)]
pub struct Meter {
    chain: ChainId,
    prices: Prices,
    credit_window: Amount,
    usage: Usage,
    owed: Amount,
    /// VPN bytes carried whose billing waits for a third party's proof (an exit's received
    /// counts, for an entry): they use credit but are not asked for until proven.
    held: u64,
    /// What `held` would cost.
    held_cost: Amount,
    channel: Option<Attached>,
    asked: Amount,
    /// A newer session took the channel: nothing more is carried here.
    stopped: bool,
    /// Carried within the credit window before a channel is attached (a member relay's link,
    /// whose registration stands for it while its channel opens).
    credit_before_channel: bool,
}

impl Meter {
    /// A session with no channel yet: it may use `credit_window` before paying.
    pub fn new(chain: ChainId, prices: Prices, credit_window: Amount) -> Self {
        Self {
            chain,
            prices,
            credit_window,
            usage: Usage::default(),
            owed: Amount::ZERO,
            held: 0,
            held_cost: Amount::ZERO,
            channel: None,
            asked: Amount::ZERO,
            stopped: false,
            credit_before_channel: false,
        }
    }

    /// Lets this meter carry up to the credit window before a channel is attached: for a
    /// member relay's link, whose staked registration stands for it while its channel opens.
    pub fn credit_before_channel(&mut self) {
        self.credit_before_channel = true;
    }

    /// Bills the session to `channel` from its latest receipt (`cum_amount`, `cum_bytes`).
    /// Usage is measured from here: what was carried before (credit before a channel, or under
    /// an earlier channel) is not billed again to this one.
    pub fn attach(
        &mut self,
        id: ChannelId,
        signer: AccountId,
        lock: Amount,
        latest: Option<Receipt>,
    ) {
        let (base_amount, base_bytes) = latest
            .as_ref()
            .map_or((Amount::ZERO, 0), |r| (r.body.cum_amount, r.body.cum_bytes));
        self.channel = Some(Attached {
            id,
            signer,
            lock,
            base_amount,
            base_bytes,
            latest,
        });
        // Held bytes stay held: once proven they are billed to this channel.
        self.usage = Usage::default();
        self.asked = Amount::ZERO;
        self.recompute();
    }

    fn recompute(&mut self) {
        let base = self
            .channel
            .as_ref()
            .map_or(Amount::ZERO, |c| c.base_amount);
        // A cost that overflows is unpayable: treat it as the largest amount (never carried).
        self.owed = self
            .usage
            .cost(&self.prices)
            .and_then(|c| base.checked_add(c))
            .unwrap_or(Amount::from_units(u128::MAX));
        let held = Usage {
            vpn: self.held,
            ..Usage::default()
        };
        self.held_cost = held
            .cost(&self.prices)
            .unwrap_or(Amount::from_units(u128::MAX));
    }

    /// Another session took the channel: this one carries nothing more (receipts are
    /// cumulative per channel, so two sessions on one would be paid for one).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Adds usage.
    pub fn record(&mut self, service: Service, bytes: u64) {
        self.usage.add(service, bytes);
        self.recompute();
    }

    /// Adds VPN bytes carried whose billing waits for proof: they count against the credit
    /// window now, and are asked for only once [`Meter::prove`]n.
    pub fn hold(&mut self, bytes: u64) {
        self.held = self.held.saturating_add(bytes);
        self.recompute();
    }

    /// Bills `bytes` of VPN bytes proven carried, no longer held (bytes released as lost and
    /// proven after all are billed too: they arrived).
    pub fn prove(&mut self, bytes: u64) {
        self.held -= bytes.min(self.held);
        self.usage.add(Service::Vpn, bytes);
        self.recompute();
    }

    /// Lets go of up to `bytes` of the held VPN bytes (proven lost: never billed).
    pub fn release(&mut self, bytes: u64) {
        self.held -= bytes.min(self.held);
        self.recompute();
    }

    /// VPN bytes held, waiting for proof.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Unpaid usage and what held bytes would cost: the credit in use.
    pub fn exposure(&self) -> Amount {
        self.unpaid()
            .checked_add(self.held_cost)
            .unwrap_or(Amount::from_units(u128::MAX))
    }

    /// The cumulative amount owed on the channel (base plus this session).
    pub fn owed(&self) -> Amount {
        self.owed
    }

    /// Paid so far: the latest receipt's amount (or the base).
    pub fn paid(&self) -> Amount {
        self.channel.as_ref().map_or(Amount::ZERO, |c| {
            c.latest
                .as_ref()
                .map_or(c.base_amount, |r| r.body.cum_amount)
        })
    }

    /// Owed and not yet covered by a receipt.
    pub fn unpaid(&self) -> Amount {
        self.owed.saturating_sub(self.paid())
    }

    /// This session's usage.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The channel, if attached.
    pub fn channel(&self) -> Option<ChannelId> {
        self.channel.as_ref().map(|c| c.id)
    }

    /// The latest receipt taken.
    pub fn latest(&self) -> Option<&Receipt> {
        self.channel.as_ref().and_then(|c| c.latest.as_ref())
    }

    /// Whether the relay may carry more: unpaid usage within the credit window, and what is owed
    /// within the channel's lock.
    pub fn may_carry(&self) -> bool {
        if self.stopped {
            return false;
        }
        if self.prices.is_free() {
            return true;
        }
        // Credit only against a channel: one the chain knows, or an open signed by an account
        // whose deposit covers it (checked before the channel is attached). A fresh key with
        // nothing on chain is carried for nothing.
        let Some(channel) = &self.channel else {
            return self.credit_before_channel && self.exposure() <= self.credit_window;
        };
        let owed_and_held = self
            .owed
            .checked_add(self.held_cost)
            .unwrap_or(Amount::from_units(u128::MAX));
        owed_and_held <= channel.lock && self.exposure() <= self.credit_window
    }

    /// A payment request when unpaid usage reached a quarter of the credit window (or any unpaid usage
    /// when `force`), unless the same amount was already asked for.
    pub fn pay_request(&mut self, force: bool) -> Option<(Usage, Amount)> {
        self.channel.as_ref()?;
        let unpaid = self.unpaid();
        let half = Amount::from_units(self.credit_window.units() / 4);
        let due = if force {
            !unpaid.is_zero()
        } else {
            unpaid >= half && !unpaid.is_zero()
        };
        // Ask again for the same amount only while traffic is held up waiting for it.
        if !due || (self.asked == self.owed && self.may_carry()) {
            return None;
        }
        self.asked = self.owed;
        Some((self.usage, self.owed))
    }

    /// Checks a receipt the client sent; on success the caller stores it durably and then calls
    /// [`Meter::accept`].
    pub fn check(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        let c = self.channel.as_ref().ok_or(ReceiptError::NoChannel)?;
        if receipt.body.chain != self.chain || receipt.body.channel != c.id {
            return Err(ReceiptError::WrongChannel);
        }
        if receipt.signer != c.signer {
            return Err(ReceiptError::BadSignature);
        }
        // Cheap checks first: the signature is verified only for a receipt that would count.
        if receipt.body.cum_amount <= self.paid() {
            return Err(ReceiptError::NotNewer(receipt.body.cum_amount));
        }
        if receipt.body.cum_amount > self.owed {
            return Err(ReceiptError::MoreThanOwed(receipt.body.cum_amount));
        }
        let max_bytes = c.base_bytes.saturating_add(self.usage.total());
        if receipt.body.cum_bytes < c.base_bytes || receipt.body.cum_bytes > max_bytes {
            return Err(ReceiptError::WrongBytes);
        }
        if !receipt.verify() {
            return Err(ReceiptError::BadSignature);
        }
        Ok(())
    }

    /// Takes a checked, durably stored receipt as the latest payment if it still is one: for
    /// the attached channel and above what was paid. Between the check and the store another
    /// stream of a shared meter (a member relay's) may have attached another channel or had a
    /// newer receipt taken; the receipt is not counted then (the store keeps it for its own
    /// channel). Returns whether it was taken.
    #[must_use]
    pub fn accept(&mut self, receipt: Receipt) -> bool {
        let paid = self.paid();
        match &mut self.channel {
            Some(c) if c.id == receipt.body.channel && receipt.body.cum_amount > paid => {
                c.latest = Some(receipt);
                true
            }
            _ => false,
        }
    }
}
