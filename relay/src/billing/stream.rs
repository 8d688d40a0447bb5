//! The billing stream of a client connection: the relay's offer, the channel that pays, then a
//! receipt for every payment request, stored durably before it counts.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ledger_lite::{Amount, ChannelId, ChannelStatus, TxKind};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use top_billing::wire::{ClientBilling, ExistingChannel, MAX_BILLING_FRAME, Offer, RelayBilling};
use top_proto::frame::{FrameCodec, FrameError};
use top_proto::id::AccountId;
use tracing::debug;

use super::Billing;
use super::meter::ClientMeter;
use crate::util::lock;

/// Serves a client's billing stream: offer, channel, then receipts for payment requests.
pub async fn serve_billing<C>(
    billing: Arc<Billing>,
    conn: quinn::Connection,
    client: AccountId,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<C>>,
) -> Result<(), FrameError> {
    let mut billed = None;
    let result = serve(
        &billing,
        &conn,
        client,
        meter.clone(),
        send,
        frames,
        &mut billed,
    )
    .await;
    if let (Some(channel), Some(meter)) = (billed, meter) {
        billing.live.release(&channel, &conn, &meter);
    }
    result
}

async fn serve<C>(
    billing: &Arc<Billing>,
    conn: &quinn::Connection,
    client: AccountId,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<C>>,
    billed: &mut Option<ChannelId>,
) -> Result<(), FrameError> {
    let mut frames = frames.map_decoder(|c| c.retype::<ClientBilling>(MAX_BILLING_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
    let (Some(meter), Some(chain)) = (meter, billing.chain.get().cloned()) else {
        out.send(RelayBilling::Free).await?;
        return Ok(());
    };
    let me = billing.identity.account_id();
    let (chain_id, existing) = chain.with_state(|s| {
        let existing = s
            .channels()
            .filter(|(_, c)| c.relay == me && c.signer == client && c.status == ChannelStatus::Open)
            .filter(|(id, _)| !billing.egress.backs(id))
            .map(|(id, c)| {
                let latest = billing.receipts.get(id).ok().flatten();
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
        // The one this relay opened for the client and served before its block, if the chain
        // has no open channel to offer yet.
        let pending = || {
            let (channel, lock, at) = *crate::util::lock(&billing.opened).get(&client)?;
            if s.channel(&channel).is_some() || at.elapsed() > super::OPENED_OFFERED {
                return None;
            }
            let latest = billing.receipts.get(&channel).ok().flatten();
            let used = latest.as_ref().map_or(Amount::ZERO, |r| r.body.cum_amount);
            (!lock.saturating_sub(used).is_zero()).then_some(ExistingChannel {
                channel,
                lock,
                latest,
            })
        };
        (s.chain, existing.or_else(pending))
    });
    out.send(RelayBilling::Offer(Box::new(Offer {
        relay: me,
        chain: chain_id,
        prices: billing.terms.prices,
        credit_window: billing.terms.credit_window,
        existing: existing.clone(),
    })))
    .await?;
    // Small usage never reaches half the window: ask for it anyway once a second, so that
    // quiet sessions get paid (and settled) too.
    let mut taken = CancellationToken::new();
    // When the oldest payment request not answered yet went out (the receipt's round trip).
    let mut asked: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            // Payment is asked for on the stream whose channel the meter is attached to (a
            // member relay's meter is shared by its streams).
            _ = tick.tick(), if billed.is_some() => {
                let request = lock(&meter.meter).pay_request(true);
                if let Some((usage, cum_amount)) = request {
                    asked.get_or_insert_with(std::time::Instant::now);
                    out.send(RelayBilling::PayRequest { usage, cum_amount }).await?;
                }
                continue;
            }
            _ = meter.ask.notified(), if billed.is_some() => {
                let request = lock(&meter.meter).pay_request(false);
                if let Some((usage, cum_amount)) = request {
                    asked.get_or_insert_with(std::time::Instant::now);
                    out.send(RelayBilling::PayRequest { usage, cum_amount }).await?;
                }
                continue;
            }
            _ = billing.shutdown.cancelled() => return Ok(()),
            _ = taken.cancelled() => {
                out.send(RelayBilling::Refused("a newer session took this channel".into())).await.ok();
                return Ok(());
            }
        };
        let reply = match frame {
            None => return Ok(()),
            Some(Err(e)) => {
                frames.get_mut().stop(1u32.into()).ok();
                return Err(e);
            }
            // One channel per session: attaching another would start its metering afresh.
            Some(Ok(ClientBilling::Open(_) | ClientBilling::Resume(_))) if billed.is_some() => {
                RelayBilling::Refused("this session already has its channel".into())
            }
            Some(Ok(ClientBilling::Open(tx))) => {
                open_channel(billing, &chain, client, &meter, tx).await
            }
            Some(Ok(ClientBilling::Resume(channel))) => match &existing {
                Some(e) if e.channel == channel => {
                    let (cum_amount, cum_bytes) = e
                        .latest
                        .as_ref()
                        .map_or((Amount::ZERO, 0), |r| (r.body.cum_amount, r.body.cum_bytes));
                    meter.attach(channel, client, e.lock, e.latest.clone());
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
                let reason = match &checked {
                    Err(e) => e.reason(),
                    Ok(()) => {
                        // Durable before it counts: a crash must not lose what we were paid.
                        let store = billing.receipts.clone();
                        let r = receipt.clone();
                        let stored = tokio::task::spawn_blocking(move || store.put(&r)).await;
                        if let Ok(Ok(())) = stored {
                            if !meter.accept(receipt) {
                                // Stored for its own channel, but another stream of this
                                // meter attached a channel or took a newer receipt meanwhile.
                                debug!("a receipt no longer the newest of the attached channel");
                            }
                            billing.metrics.receipts.inc();
                            if let Some(at) = asked.take() {
                                let rtt = &billing.metrics.latency.receipt_rtt;
                                crate::node::latency::observe(rtt, at.elapsed());
                            }
                            meter.on_paid();
                            continue;
                        }
                        "not_stored"
                    }
                };
                billing
                    .metrics
                    .receipts_refused
                    .get_or_create(&[("reason", reason)])
                    .inc();
                RelayBilling::Refused(match checked {
                    Err(e) => format!("receipt refused: {e}"),
                    Ok(()) => "cannot store the receipt".into(),
                })
            }
        };
        // One live session per channel: this one takes it (a session before it ends).
        if let RelayBilling::Ready { channel, .. } = &reply
            && billed.is_none()
        {
            taken = billing.live.take(*channel, conn, &meter);
            *billed = Some(*channel);
        }
        out.send(reply).await?;
    }
}

async fn open_channel(
    billing: &Billing,
    chain: &crate::ledger::chain::ChainNode,
    client: AccountId,
    meter: &ClientMeter,
    tx: ledger_lite::SignedTx,
) -> RelayBilling {
    let me = billing.identity.account_id();
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
    crate::util::lock(&billing.opened)
        .put(client, (channel, lock_amount, std::time::Instant::now()));
    meter.attach(channel, client, lock_amount, None);
    meter.paid.notify_waiters();
    debug!("channel opened by {}", client.short());
    RelayBilling::Ready {
        channel,
        cum_amount: Amount::ZERO,
        cum_bytes: 0,
    }
}
