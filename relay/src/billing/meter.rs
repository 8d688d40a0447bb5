//! A connection's meter: what its client used, how much credit is left, and the relay's terms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_lite::Amount;
use tokio::sync::Notify;
use top_billing::{Meter, Prices, Service};

use crate::ledger::chain::ChainNode;
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
    /// Unsettled amount on a channel that triggers settlement.
    pub settle_threshold: Amount,
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
            settle_threshold: amount(&c.settle_threshold),
            stake: amount(&c.stake),
            pay_wait: Duration::from_millis(c.pay_wait_ms),
        }
    }
}

/// One connection's meter, shared by its session, pipes and billing stream.
pub struct ClientMeter {
    pub(super) meter: Mutex<Meter>,
    /// Signalled when a receipt lands (credit freed).
    pub(super) paid: Notify,
    /// Signalled when a payment request is due.
    pub(super) ask: Notify,
    pub(super) ask_at: Amount,
    /// Set when a delivery was held back for lack of payment (re-push once paid).
    held: std::sync::atomic::AtomicBool,
    /// Signalled when a payment lands after a delivery was held back: whoever delivers to this
    /// client (its messaging session) pushes again.
    resumed: Notify,
    /// How long traffic waits for a receipt once the credit window is used up.
    pub pay_wait: Duration,
}

impl ClientMeter {
    /// Records usage if the credit allows; returns whether it did.
    pub fn try_carry(&self, service: Service, bytes: u64) -> bool {
        let mut m = lock(&self.meter);
        if !m.may_carry() {
            self.ask.notify_one();
            return false;
        }
        m.record(service, bytes);
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

    /// Records a delivery if the credit allows; otherwise remembers to push again once paid.
    pub fn try_deliver(&self, bytes: u64) -> bool {
        let ok = self.try_carry(Service::Msg, bytes);
        if !ok {
            self.held.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        ok
    }

    /// Whether a channel is attached (the client can pay).
    pub fn has_channel(&self) -> bool {
        lock(&self.meter).channel().is_some()
    }

    /// A receipt landed: credit is freed, and deliveries held back may go on.
    pub(super) fn on_paid(&self) {
        self.paid.notify_waiters();
        if self.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.resumed.notify_one();
        }
    }

    /// Resolves once a payment lands after a delivery to this client was held back.
    pub async fn resumed(&self) {
        self.resumed.notified().await
    }

    /// Records usage already carried (e.g. mailbox storage once a message is stored).
    pub fn record(&self, service: Service, bytes: u64) {
        lock(&self.meter).record(service, bytes);
        self.ask.notify_one();
    }
}

/// A meter for a new client connection, when this relay bills (it has terms and a chain).
pub fn new_meter(terms: &Terms, chain: Option<&ChainNode>) -> Option<Arc<ClientMeter>> {
    let chain = chain?;
    if !terms.enabled || terms.prices.is_free() {
        return None;
    }
    let chain_id = chain.with_state(|s| s.chain);
    Some(Arc::new(ClientMeter {
        meter: Mutex::new(Meter::new(chain_id, terms.prices, terms.credit_window)),
        paid: Notify::new(),
        ask: Notify::new(),
        // Ask early (a quarter of the window) so the receipt lands before the window runs out.
        ask_at: Amount::from_units(terms.credit_window.units() / 4),
        pay_wait: terms.pay_wait,
        held: std::sync::atomic::AtomicBool::new(false),
        resumed: Notify::new(),
    }))
}
