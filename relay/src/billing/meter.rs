//! A connection's meter: what its client used, how much credit is left, and the relay's terms.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_lite::{Amount, ChannelId, Receipt};
use tokio::sync::Notify;
use top_billing::{Meter, Prices, Service};
use top_proto::id::AccountId;

use super::Billing;
use super::credit::{CreditBook, Debtor};
use crate::node::config::BillingConfig;
use crate::util::lock;

/// The relay's terms, parsed from its configuration.
#[derive(Clone, Debug)]
pub struct Terms {
    /// Whether sessions pay.
    pub enabled: bool,
    /// Prices per MiB.
    pub prices: Prices,
    /// Unpaid usage carried before waiting for a receipt.
    pub credit_window: Amount,
    /// Unpaid usage carried for one payer account over all its sessions.
    pub credit_per_payer: Amount,
    /// Unpaid usage carried for one address over all its sessions.
    pub credit_per_address: Amount,
    /// Unsettled amount on a channel that triggers settlement.
    pub settle_threshold: Amount,
    /// What a channel to another relay locks.
    pub link_lock: Amount,
    /// Deposit kept for channels to other relays.
    pub link_deposit: Amount,
    /// Stake to keep.
    pub stake: Amount,
    /// How long traffic waits for a receipt once the credit window is used up.
    pub pay_wait: Duration,
}

impl Terms {
    /// Parses the `[billing]` section (already validated when the config loaded).
    pub fn from_config(c: &BillingConfig) -> Self {
        let amount = |s: &String| s.parse::<Amount>().unwrap_or(Amount::ZERO);
        Self {
            enabled: c.enabled,
            prices: Prices {
                msg: amount(&c.msg_price_per_mib),
                mailbox: amount(&c.mailbox_price_per_mib),
                pipe: amount(&c.pipe_price_per_mib),
                vpn: amount(&c.vpn_price_per_mib),
                cdn: amount(&c.cdn_price_per_mib),
            },
            credit_window: amount(&c.credit_window),
            credit_per_payer: amount(&c.credit_per_payer),
            credit_per_address: amount(&c.credit_per_address),
            settle_threshold: amount(&c.settle_threshold),
            link_lock: amount(&c.link_lock),
            link_deposit: amount(&c.link_deposit),
            stake: amount(&c.stake),
            pay_wait: Duration::from_millis(c.pay_wait_ms),
        }
    }
}

/// A session's meter and its share of the credit its payer and address get across sessions.
pub struct Metered {
    meter: Meter,
    /// Who the credit counts against (known once a channel is attached).
    debtor: Option<Debtor>,
    /// Credit reserved in the book (units), at least what is unpaid while carrying.
    reserved: u128,
}

impl Deref for Metered {
    type Target = Meter;

    fn deref(&self) -> &Meter {
        &self.meter
    }
}

impl DerefMut for Metered {
    fn deref_mut(&mut self) -> &mut Meter {
        &mut self.meter
    }
}

/// One connection's meter, shared by its session, pipes and billing stream.
pub struct ClientMeter {
    pub(super) meter: Mutex<Metered>,
    /// Credit per payer and per address, across sessions.
    credit: Arc<CreditBook>,
    /// The client's address (`None`: a member relay's connection).
    addr: Option<IpAddr>,
    /// Credit is reserved from the book in steps of this many units.
    step: u128,
    /// Signalled when a receipt lands (credit freed).
    pub(super) paid: Notify,
    /// Signalled when a payment request is due.
    pub(super) ask: Notify,
    pub(super) ask_at: Amount,
    /// How long traffic waits for a receipt once the credit window is used up.
    pub pay_wait: Duration,
    /// The relay's per-service count of metered bytes.
    billed: crate::node::metrics::BilledBytes,
}

impl ClientMeter {
    /// Records usage if the credit allows; returns whether it did.
    pub fn try_carry(&self, service: Service, bytes: u64) -> bool {
        let mut m = lock(&self.meter);
        if !m.may_carry() || !self.reserve(&mut m) {
            self.ask.notify_one();
            return false;
        }
        m.record(service, bytes);
        self.billed.add(service, bytes);
        if m.unpaid() >= self.ask_at {
            self.ask.notify_one();
        }
        true
    }

    /// Records usage, waiting up to `wait` for a receipt if the credit window is used up.
    pub async fn carry(&self, service: Service, bytes: u64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.paid.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_carry(service, bytes) {
                return true;
            }
            // Without a channel no receipt can come: refuse at once rather than park the sender.
            if !self.has_channel() {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Makes sure the book holds more credit for this session than it has unpaid (another step
    /// when not); false when its payer or address has no more.
    fn reserve(&self, m: &mut Metered) -> bool {
        let unpaid = m.meter.exposure().units();
        if unpaid < m.reserved {
            return true;
        }
        let Some(who) = m.debtor else {
            // No channel: `may_carry` refused already.
            return false;
        };
        let more = unpaid - m.reserved + self.step;
        if !self.credit.reserve(&who, more) {
            return false;
        }
        m.reserved += more;
        true
    }

    /// Bills the session to `channel` signed by `signer` from its latest receipt; the credit
    /// it gets counts against `signer` (who owes what it does not sign; for a sponsored
    /// channel, the user, not the app that funds many users) and the client's address.
    pub fn attach(
        &self,
        channel: ChannelId,
        signer: AccountId,
        lock_amount: Amount,
        latest: Option<Receipt>,
    ) {
        let mut m = lock(&self.meter);
        let who = Debtor {
            payer: signer,
            addr: self.addr,
        };
        // Usage before this attach is not billed to the new channel: what it left unpaid
        // stays its signer's debt (a member relay's credit before its channel, say).
        let unpaid = m.meter.exposure().units();
        if let Some(before) = m.debtor.replace(who)
            && (before != who || unpaid > 0)
        {
            self.credit.end(&before, m.reserved, unpaid);
            m.reserved = 0;
        }
        m.meter.attach(channel, signer, lock_amount, latest);
    }

    /// Makes this the meter of member relay `member`'s links: carried within the window before
    /// its channel is attached, its credit counted against `member` in the book from the first
    /// byte (so reconnecting its links renews nothing).
    pub fn for_member(&self, member: AccountId) {
        let mut m = lock(&self.meter);
        m.meter.credit_before_channel();
        m.debtor = Some(Debtor {
            payer: member,
            addr: None,
        });
    }

    /// Takes a checked, stored receipt: the credit it paid goes back to the book (down to the
    /// step above what is still unpaid). Returns whether it was taken (see `Meter::accept`).
    #[must_use]
    pub fn accept(&self, receipt: Receipt) -> bool {
        let mut m = lock(&self.meter);
        if !m.meter.accept(receipt) {
            return false;
        }
        let unpaid = m.meter.exposure().units();
        let keep = unpaid.div_ceil(self.step).saturating_mul(self.step);
        if let Some(who) = m.debtor
            && m.reserved > keep
        {
            self.credit.release(&who, m.reserved - keep);
            m.reserved = keep;
        }
        true
    }

    /// Whether a channel is attached (the client can pay).
    pub fn has_channel(&self) -> bool {
        lock(&self.meter).channel().is_some()
    }

    /// A receipt landed: credit is freed.
    pub(super) fn on_paid(&self) {
        self.paid.notify_waiters();
    }

    /// Holds VPN bytes about to be carried whose billing waits for proof, if the credit
    /// allows (like [`ClientMeter::try_carry`]; see `Meter::hold`); returns whether it did.
    pub fn try_hold(&self, bytes: u64) -> bool {
        let mut m = lock(&self.meter);
        if !m.may_carry() || !self.reserve(&mut m) {
            self.ask.notify_one();
            return false;
        }
        m.hold(bytes);
        true
    }

    /// Bills up to `bytes` of the held VPN bytes, proven carried.
    pub fn prove(&self, bytes: u64) {
        let mut m = lock(&self.meter);
        let before = m.usage().vpn;
        m.prove(bytes);
        self.billed.add(Service::Vpn, m.usage().vpn - before);
        if m.unpaid() >= self.ask_at {
            self.ask.notify_one();
        }
    }

    /// Lets go of up to `bytes` of the held VPN bytes, proven lost (never billed).
    pub fn release(&self, bytes: u64) {
        lock(&self.meter).release(bytes);
        self.paid.notify_waiters();
    }

    /// Records usage already carried (e.g. mailbox storage once a message is stored).
    pub fn record(&self, service: Service, bytes: u64) {
        lock(&self.meter).record(service, bytes);
        self.billed.add(service, bytes);
        self.ask.notify_one();
    }
}

impl Drop for ClientMeter {
    /// The session ended: what it left unpaid counts against its payer and address a while.
    fn drop(&mut self) {
        let m = lock(&self.meter);
        if let Some(who) = m.debtor {
            self.credit
                .end(&who, m.reserved, m.meter.exposure().units());
        }
    }
}

/// A meter for a new client connection from `addr` (`None`: a member relay), when this relay
/// bills (it has terms and a chain).
pub fn new_meter(billing: &Billing, addr: Option<IpAddr>) -> Option<Arc<ClientMeter>> {
    let chain = billing.chain.get()?;
    let terms = &billing.terms;
    if !terms.enabled || terms.prices.is_free() {
        return None;
    }
    let chain_id = chain.with_state(|s| s.chain);
    Some(Arc::new(ClientMeter {
        meter: Mutex::new(Metered {
            meter: Meter::new(chain_id, terms.prices, terms.credit_window),
            debtor: None,
            reserved: 0,
        }),
        credit: billing.credit.clone(),
        addr: addr.map(super::credit::address_key),
        step: (terms.credit_window.units() / 8).max(1),
        paid: Notify::new(),
        ask: Notify::new(),
        // Ask early (a quarter of the window) so the receipt lands before the window runs out.
        ask_at: Amount::from_units(terms.credit_window.units() / 4),
        pay_wait: terms.pay_wait,
        billed: billing.core.metrics.billed.clone(),
    }))
}
