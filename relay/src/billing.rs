//! Billing on the relay: per-connection meters, the billing stream, durable receipts, staking
//! and automatic settlement.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ledger_lite::{Amount, ChannelId, ChannelStatus, TxKind};
use tokio::sync::Notify;
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::wire::{ClientBilling, ExistingChannel, MAX_BILLING_FRAME, Offer, RelayBilling};
use top_billing::{Meter, Prices, Service};
use top_proto::frame::{FrameCodec, FrameError};
use top_proto::id::AccountId;
use tracing::{debug, info, warn};

use crate::config::BillingConfig;
use crate::state::{Shared, lock};

/// Receipts settled in one transaction, at most.
const SETTLE_BATCH: usize = 1000;

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
    meter: Mutex<Meter>,
    /// Signalled when a receipt lands (credit freed).
    paid: Notify,
    /// Signalled when a payment request is due.
    ask: Notify,
    ask_at: Amount,
    /// Set when a delivery was held back for lack of payment (re-push once paid).
    held: std::sync::atomic::AtomicBool,
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

    /// Records usage already carried (e.g. mailbox storage once a message is stored).
    pub fn record(&self, service: Service, bytes: u64) {
        lock(&self.meter).record(service, bytes);
        self.ask.notify_one();
    }
}

/// A meter for a new client connection, when this relay bills.
pub fn new_meter(shared: &Shared) -> Option<Arc<ClientMeter>> {
    let terms = &shared.terms;
    let chain = shared.chain.get()?;
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
    }))
}

/// Serves a client's billing stream: offer, channel, then receipts for payment requests.
pub async fn serve_billing<C>(
    shared: Arc<Shared>,
    client: AccountId,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<C>>,
) -> Result<(), FrameError> {
    let mut frames = frames.map_decoder(|c| c.retype::<ClientBilling>(MAX_BILLING_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
    let (Some(meter), Some(chain)) = (meter, shared.chain.get().cloned()) else {
        out.send(RelayBilling::Free).await?;
        return Ok(());
    };
    let me = shared.identity.account_id();
    let (chain_id, existing) = chain.with_state(|s| {
        let existing = s
            .channels()
            .filter(|(_, c)| c.relay == me && c.signer == client && c.status == ChannelStatus::Open)
            .filter(|(id, _)| !shared.egress.backs(id))
            .map(|(id, c)| {
                let latest = shared.receipts.get(id).ok().flatten();
                let used = latest
                    .as_ref()
                    .map_or(c.settled, |r| r.body.cum_amount.max(c.settled));
                (c.lock.saturating_sub(used), *id, c.lock, latest)
            })
            .filter(|(left, ..)| !left.is_zero())
            .max_by_key(|(left, ..)| *left)
            .map(|(_, channel, lock, latest)| ExistingChannel {
                channel,
                lock,
                latest,
            });
        (s.chain, existing)
    });
    out.send(RelayBilling::Offer(Box::new(Offer {
        relay: me,
        chain: chain_id,
        prices: shared.terms.prices,
        credit_window: shared.terms.credit_window,
        existing: existing.clone(),
    })))
    .await?;
    // Small usage never reaches half the window: ask for it anyway once a second, so that
    // quiet sessions get paid (and settled) too.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = tick.tick() => {
                let request = lock(&meter.meter).pay_request(true);
                if let Some((usage, cum_amount)) = request {
                    out.send(RelayBilling::PayRequest { usage, cum_amount }).await?;
                }
                continue;
            }
            _ = meter.ask.notified() => {
                let request = lock(&meter.meter).pay_request(false);
                if let Some((usage, cum_amount)) = request {
                    out.send(RelayBilling::PayRequest { usage, cum_amount }).await?;
                }
                continue;
            }
            _ = shared.shutdown.cancelled() => return Ok(()),
        };
        let reply = match frame {
            None => return Ok(()),
            Some(Err(e)) => {
                frames.get_mut().stop(1u32.into()).ok();
                return Err(e);
            }
            Some(Ok(ClientBilling::Open(tx))) => {
                open_channel(&shared, &chain, client, &meter, tx).await
            }
            Some(Ok(ClientBilling::Resume(channel))) => match &existing {
                Some(e) if e.channel == channel => {
                    let (cum_amount, cum_bytes) = e
                        .latest
                        .as_ref()
                        .map_or((Amount::ZERO, 0), |r| (r.body.cum_amount, r.body.cum_bytes));
                    lock(&meter.meter).attach(channel, client, e.lock, e.latest.clone());
                    meter.paid.notify_waiters();
                    RelayBilling::Ready {
                        channel,
                        cum_amount,
                        cum_bytes,
                    }
                }
                _ => RelayBilling::Refused("that channel cannot be resumed here".into()),
            },
            Some(Ok(ClientBilling::Receipt(receipt))) => {
                let checked = lock(&meter.meter).check(&receipt);
                match checked {
                    Err(e) => RelayBilling::Refused(format!("receipt refused: {e}")),
                    Ok(()) => {
                        // Durable before it counts: a crash must not lose what we were paid.
                        let store = shared.receipts.clone();
                        let r = receipt.clone();
                        let stored = tokio::task::spawn_blocking(move || store.put(&r)).await;
                        match stored {
                            Ok(Ok(())) => {
                                lock(&meter.meter).accept(receipt);
                                shared.metrics.receipts.inc();
                                meter.paid.notify_waiters();
                                if meter.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                    resume_deliveries(&shared, client);
                                }
                                continue;
                            }
                            _ => RelayBilling::Refused("cannot store the receipt".into()),
                        }
                    }
                }
            }
        };
        out.send(reply).await?;
    }
}

/// Pushes held-back messages again once the recipient paid: from this relay's mailbox, and by
/// announcing the client to linked relays (which push theirs).
fn resume_deliveries(shared: &Arc<Shared>, client: AccountId) {
    for (_, link) in shared.linked() {
        crate::delivery::send_or_spawn(
            &link.tx,
            top_proto::frame::LinkFrame::Presence {
                client,
                online: true,
            },
        );
    }
    crate::delivery::request_push(shared, client);
}

async fn open_channel(
    shared: &Shared,
    chain: &crate::chain::ChainNode,
    client: AccountId,
    meter: &ClientMeter,
    tx: ledger_lite::SignedTx,
) -> RelayBilling {
    let me = shared.identity.account_id();
    let TxKind::OpenChannel { relay, amount, .. } = &tx.tx.kind else {
        return RelayBilling::Refused("expected an OpenChannel transaction".into());
    };
    if *relay != me || tx.tx.from != client {
        return RelayBilling::Refused(
            "the channel must be signed by you and pay this relay".into(),
        );
    }
    let (lock_amount, nonce, chain_id) = (*amount, tx.tx.nonce, tx.tx.chain);
    // Serve on the signed open before it is in a block, within the credit window.
    if let Err(e) = chain.submit(tx, false).await {
        return RelayBilling::Refused(format!("channel refused: {e}"));
    }
    let channel = ChannelId::derive(&chain_id, &client, &me, nonce);
    lock(&meter.meter).attach(channel, client, lock_amount, None);
    meter.paid.notify_waiters();
    debug!("channel opened by {}", client.short());
    RelayBilling::Ready {
        channel,
        cum_amount: Amount::ZERO,
        cum_bytes: 0,
    }
}

/// Once the chain is open: stake what the config asks for, then settle receipts as they come.
pub fn on_chain_open(shared: &Arc<Shared>) {
    shared.tasks.spawn(stake_from_config(shared.clone()));
    shared.tasks.spawn(settle_loop(shared.clone()));
}

async fn stake_from_config(shared: Arc<Shared>) {
    let Some(chain) = shared.chain.get().cloned() else {
        return;
    };
    let want = shared.terms.stake;
    let me = shared.identity.account_id();
    let mut heights = chain.subscribe();
    // A follower stakes once it has caught up enough to see its own account.
    while !chain.is_validator() && chain.with_state(|s| s.account(&me).is_none()) {
        tokio::select! {
            r = heights.changed() => if r.is_err() { return },
            _ = shared.shutdown.cancelled() => return,
        }
    }
    let have = chain.with_state(|s| s.account(&me).map_or(Amount::ZERO, |a| a.stake));
    let Ok(missing) = want.checked_sub(have) else {
        return;
    };
    if missing.is_zero() {
        return;
    }
    let kind = TxKind::Stake { amount: missing };
    match chain.submit_own(&shared.identity, kind, true).await {
        Ok((_, height)) => info!("staked {missing} TOP (block {height:?})"),
        Err(e) => warn!("cannot stake {missing} TOP from the config: {e}"),
    }
}

/// Settles stored receipts: when a channel's unsettled amount reaches the threshold, when its
/// payer starts closing it, or when its receipts stopped changing (session over).
async fn settle_loop(shared: Arc<Shared>) {
    let Some(chain) = shared.chain.get().cloned() else {
        return;
    };
    let mut heights = chain.subscribe();
    let mut last_seen: std::collections::HashMap<ChannelId, (Amount, u32)> = Default::default();
    loop {
        tokio::select! {
            r = heights.changed() => if r.is_err() { return },
            _ = shared.shutdown.cancelled() => return,
        }
        let receipts = match shared.receipts.all() {
            Ok(r) => r,
            Err(e) => {
                warn!("reading receipts: {e}");
                continue;
            }
        };
        let me = shared.identity.account_id();
        let threshold = shared.terms.settle_threshold;
        let due: Vec<_> = chain.with_state(|s| {
            receipts
                .into_iter()
                .filter(|r| {
                    let Some(c) = s.channel(&r.body.channel) else {
                        return false;
                    };
                    if c.relay != me || c.status == ChannelStatus::Closed {
                        return false;
                    }
                    let unsettled = r.body.cum_amount.min(c.lock).saturating_sub(c.settled);
                    if unsettled.is_zero() {
                        return false;
                    }
                    let idle = {
                        let seen = last_seen
                            .entry(r.body.channel)
                            .or_insert((r.body.cum_amount, 0));
                        if seen.0 == r.body.cum_amount {
                            seen.1 += 1;
                        } else {
                            *seen = (r.body.cum_amount, 0);
                        }
                        seen.1 >= 3
                    };
                    unsettled >= threshold
                        || matches!(c.status, ChannelStatus::Closing { .. })
                        || idle
                })
                .take(SETTLE_BATCH)
                .collect()
        });
        settle_egress(&shared, &chain, &mut last_seen).await;
        if due.is_empty() {
            continue;
        }
        let n = due.len();
        let kind = TxKind::Settle { receipts: due };
        match chain.submit_own(&shared.identity, kind, true).await {
            Ok((_, height)) => info!("settled {n} receipts (block {height:?})"),
            Err(e) => warn!("settlement of {n} receipts failed: {e}"),
        }
    }
}

/// Settles HTTP egress served under publishers' allowances, on the same rules as receipts:
/// at the threshold, when the publisher starts closing the channel, or once serving stopped.
async fn settle_egress(
    shared: &Shared,
    chain: &crate::chain::ChainNode,
    last_seen: &mut std::collections::HashMap<ChannelId, (Amount, u32)>,
) {
    shared.egress.persist();
    let threshold = shared.terms.settle_threshold;
    let due: Vec<_> = chain.with_state(|s| {
        shared
            .egress
            .claims(s, &shared.terms.prices)
            .into_iter()
            .filter(|claim| {
                let Some(c) = s.channel(&claim.allowance.body.channel) else {
                    return false;
                };
                let seen = last_seen
                    .entry(claim.allowance.body.channel)
                    .or_insert((claim.cum_amount, 0));
                if seen.0 == claim.cum_amount {
                    seen.1 += 1;
                } else {
                    *seen = (claim.cum_amount, 0);
                }
                claim.cum_amount.saturating_sub(c.settled) >= threshold
                    || matches!(c.status, ChannelStatus::Closing { .. })
                    || seen.1 >= 3
            })
            .take(SETTLE_BATCH)
            .collect()
    });
    if due.is_empty() {
        return;
    }
    let n = due.len();
    let kind = TxKind::SettleEgress { claims: due };
    match chain.submit_own(&shared.identity, kind, true).await {
        Ok((_, height)) => info!("settled {n} egress claims (block {height:?})"),
        Err(e) => warn!("settlement of {n} egress claims failed: {e}"),
    }
}
