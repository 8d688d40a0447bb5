//! The paying side of a link: this relay opens (or resumes) a channel to the linked relay from
//! its own deposit, and signs the linked relay's payment requests when its own [`LinkCount`]
//! covers them, at the prices that relay published in the registry.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ledger_lite::{Amount, TxKind};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::wire::{ClientBilling, MAX_BILLING_FRAME, Offer, RelayBilling};
use top_billing::{PayError, Payer};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::id::AccountId;
use tracing::{debug, info, warn};

use super::Billing;
use super::link_count::{LinkCount, plus};
use super::wind_down::wind_down;

/// The most a linked relay may charge per MiB, as a multiple of this relay's own price for the
/// same service (its registry record could name any price).
const MAX_PRICE_FACTOR: u128 = 10;
/// A new channel to one relay at most this often (a relay that refuses or drops the stream
/// after each open must not lock this relay's whole deposit).
const OPEN_INTERVAL: Duration = Duration::from_secs(60);

/// Why this relay does not pay a linked relay.
#[derive(Debug, thiserror::Error)]
enum LinkPayError {
    #[error("billing stream: {0}")]
    Stream(String),
    #[error("the relay's offer does not match the registry or the chain: {0}")]
    BadOffer(&'static str),
    #[error("the relay refused the channel: {0}")]
    Refused(String),
    #[error("the deposit for paying other relays is {have}, below billing.link_lock {need}")]
    NoDeposit { have: Amount, need: Amount },
    #[error("the channel's lock is spent")]
    Spent,
    #[error("opening a channel: {0}")]
    Chain(#[from] crate::ledger::error::ChainError),
}

/// Longest wait before trying again to pay a linked relay (e.g. while this relay's deposit is
/// being funded).
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Pays `peer` for what this relay asks of it over the link on `conn`, until the link ends;
/// what keeps it from paying (no deposit yet, a refused channel) is tried again. `on_paying`
/// runs each time a channel starts paying.
pub async fn pay_link(
    billing: Arc<Billing>,
    conn: quinn::Connection,
    peer: AccountId,
    count: Arc<LinkCount>,
    on_paying: impl Fn(),
) {
    let mut retry = Duration::from_millis(500);
    loop {
        // One payer per linked relay, whichever of its links it runs on: another link's
        // payer takes over when this one's link ends.
        if let Some(_paying) = billing.start_paying(peer) {
            let started = tokio::time::Instant::now();
            let result = run(&billing, &conn, peer, &count, &on_paying).await;
            let spent = matches!(result, Err(LinkPayError::Spent));
            match result {
                Ok(()) => return debug!("link billing ended"),
                Err(LinkPayError::Spent) => info!("the channel to {} is spent", peer.short()),
                Err(e) => warn!("not paying {} for the link yet: {e}", peer.short()),
            }
            // A channel that served a good while, or ran out: a fresh one soon.
            if started.elapsed() > MAX_RETRY || spent {
                retry = Duration::from_millis(100);
            }
        } else {
            retry = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = conn.closed() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

async fn run(
    billing: &Billing,
    conn: &quinn::Connection,
    peer: AccountId,
    count: &LinkCount,
    on_paying: &impl Fn(),
) -> Result<(), LinkPayError> {
    let stream = |e: &dyn std::fmt::Display| LinkPayError::Stream(e.to_string());
    let (mut send, recv) = conn.open_bi().await.map_err(|e| stream(&e))?;
    let open = encode_frame(&Open::LinkBilling).map_err(|e| stream(&e))?;
    send.write_all(&open).await.map_err(|e| stream(&e))?;
    let mut out = FramedWrite::new(send, FrameCodec::<ClientBilling>::new(MAX_BILLING_FRAME));
    let mut frames = FramedRead::new(recv, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
    let offer = match frames.next().await {
        Some(Ok(RelayBilling::Offer(offer))) => offer,
        // The linked relay does not charge.
        Some(Ok(RelayBilling::Free)) | None => return Ok(()),
        Some(Ok(other)) => return Err(stream(&format!("unexpected {other:?}"))),
        Some(Err(e)) => return Err(stream(&e)),
    };
    let Some(chain) = billing.chain.get().cloned() else {
        return Err(LinkPayError::BadOffer("this relay has no chain"));
    };
    check_offer(&offer, peer, &chain, &billing.terms.prices)?;
    let me = billing.identity.account_id();
    let offered = resumable(&offer, &chain, me, peer)?
        .filter(|(channel, _)| !billing.is_spent_link_channel(channel));
    let (request, lock_amount) = match offered {
        Some((channel, lock)) => (ClientBilling::Resume(channel), lock),
        None => {
            // Only when the chain shows no other open channel of ours to it with room left,
            // and not again within a minute.
            let offered = offer.existing.as_ref().map(|e| e.channel);
            let ours = chain.with_state(|s| {
                s.channels().any(|(id, c)| {
                    c.signer == me
                        && c.relay == peer
                        && c.status == ledger_lite::ChannelStatus::Open
                        && has_room(c.lock, c.settled)
                        && Some(*id) != offered
                        && !billing.is_spent_link_channel(id)
                })
            });
            if ours {
                return Err(LinkPayError::BadOffer("it does not offer our open channel"));
            }
            if billing.opened_link_channel_within(&peer, OPEN_INTERVAL) {
                return Err(LinkPayError::BadOffer(
                    "a channel to it was opened a moment ago",
                ));
            }
            let lock = billing.terms.link_lock;
            // Topped up once registered (registering funds it first, from the same balance).
            let deposit = || {
                chain.with_state(|s| {
                    let account = s.account(&me);
                    let deposit = account.map_or(Amount::ZERO, |a| a.deposit);
                    (deposit, account.is_some_and(|a| a.relay.is_some()))
                })
            };
            if let (have, true) = deposit()
                && have < lock
            {
                super::link_deposit::keep_link_deposit(billing, &chain).await;
            }
            let (have, _) = deposit();
            if have < lock {
                return Err(LinkPayError::NoDeposit { have, need: lock });
            }
            let kind = TxKind::OpenChannel {
                relay: peer,
                amount: lock,
                sponsor: None,
            };
            let (tx, _, _) = chain.submit_own_tx(&billing.identity, kind, false).await?;
            billing.opened_link_channel(peer);
            (ClientBilling::Open(tx), lock)
        }
    };
    out.send(request).await.map_err(|e| stream(&e))?;
    let (channel, cum_amount, cum_bytes) = loop {
        match frames.next().await {
            Some(Ok(RelayBilling::Ready {
                channel,
                cum_amount,
                cum_bytes,
            })) => break (channel, cum_amount, cum_bytes),
            Some(Ok(RelayBilling::Refused(why))) => return Err(LinkPayError::Refused(why)),
            // Asked before this stream has a channel: nothing here to pay it from.
            Some(Ok(RelayBilling::PayRequest { .. })) => continue,
            Some(Ok(other)) => return Err(stream(&format!("unexpected {other:?}"))),
            Some(Err(e)) => return Err(stream(&e)),
            None => return Ok(()),
        }
    };
    // What was paid before is what this relay signed, never the other's word.
    let Some(signed_before) = offer.signed_before(channel, &me) else {
        return Err(LinkPayError::BadOffer(
            "the channel's latest receipt is not ours",
        ));
    };
    if (cum_amount, cum_bytes) != signed_before {
        return Err(LinkPayError::BadOffer(
            "it claims another amount paid before",
        ));
    }
    info!("paying {} for the link through a channel", peer.short());
    on_paying();
    close_spent(billing, &chain, peer).await;
    // The other relay bills this channel only what it carries from its attach on: on top of
    // everything signed before, on any channel, all within this relay's own count.
    let signed_before_run = count.signed();
    let mut payer = Payer::new(
        offer.chain,
        channel,
        offer.prices,
        lock_amount,
        cum_amount,
        cum_bytes,
    );
    // The amount of the last receipt sent and not refused: asked for again while traffic waits
    // for it, it is already on its way on this (ordered) stream.
    let mut sent = None;
    while let Some(Ok(frame)) = frames.next().await {
        match frame {
            RelayBilling::PayRequest {
                usage: claimed,
                cum_amount,
            } => {
                if sent == Some(cum_amount) {
                    continue;
                }
                let total = plus(&signed_before_run, &claimed);
                if !count.covers(&total) {
                    warn!("{} claims more than this relay handed it", peer.short());
                    continue;
                }
                match payer.sign(&billing.identity, &claimed, cum_amount, &claimed, 0) {
                    Ok(receipt) => {
                        count.signed_up_to(total);
                        out.send(ClientBilling::Receipt(receipt))
                            .await
                            .map_err(|e| stream(&e))?;
                        sent = Some(cum_amount);
                        // Nearly spent: a fresh channel while this one still carries (this
                        // stream winds down: the receipt just sent must still be read).
                        if !has_room(lock_amount, payer.signed()) {
                            billing.spent_link_channel(&peer, channel);
                            wind_down(
                                &billing.tasks,
                                billing.shutdown.clone(),
                                out.into_inner(),
                                frames,
                            );
                            return Err(LinkPayError::Spent);
                        }
                    }
                    // This channel is spent, on service paid for: a fresh one at once (the
                    // link goes on meanwhile).
                    Err(PayError::BeyondLock) => {
                        billing.spent_link_channel(&peer, channel);
                        wind_down(
                            &billing.tasks,
                            billing.shutdown.clone(),
                            out.into_inner(),
                            frames,
                        );
                        return Err(LinkPayError::Spent);
                    }
                    Err(e) => warn!("not signing {}'s payment request: {e}", peer.short()),
                }
            }
            RelayBilling::Refused(why) => {
                // Asked for again, it is signed again.
                sent = None;
                warn!("{} refused a receipt: {why}", peer.short());
            }
            other => debug!("ignoring billing frame {other:?}"),
        }
    }
    Ok(())
}

/// A channel worth resuming has at least an eighth of its lock left: a nearly spent one would
/// be given up at the next payment request.
fn has_room(lock: ledger_lite::Amount, spent: ledger_lite::Amount) -> bool {
    lock.saturating_sub(spent).units() >= lock.units() / 8
}

/// The channel offered for resuming and its lock, when it is ours to `peer` on the chain, open,
/// with the lock it says, and has room by the latest receipt we signed on it (`None`: a new
/// one is needed).
fn resumable(
    offer: &Offer,
    chain: &crate::ledger::chain::ChainNode,
    me: AccountId,
    peer: AccountId,
) -> Result<Option<(ledger_lite::ChannelId, ledger_lite::Amount)>, LinkPayError> {
    let Some(e) = &offer.existing else {
        return Ok(None);
    };
    let genuine = chain.with_state(|s| {
        s.channel(&e.channel).is_some_and(|c| {
            c.signer == me
                && c.relay == peer
                && c.lock == e.lock
                && c.status == ledger_lite::ChannelStatus::Open
        })
    });
    if !genuine {
        return Err(LinkPayError::BadOffer(
            "its channel is not ours on the chain",
        ));
    }
    let Some((signed, _)) = offer.signed_before(e.channel, &me) else {
        return Err(LinkPayError::BadOffer(
            "the channel's latest receipt is not ours",
        ));
    };
    Ok(has_room(e.lock, signed).then_some((e.channel, e.lock)))
}

/// The offer must come from `peer` on this chain, at the prices `peer` published (when it is
/// registered; configured relays on a dev chain publish none).
fn check_offer(
    offer: &Offer,
    peer: AccountId,
    chain: &crate::ledger::chain::ChainNode,
    own: &ledger_lite::registry::Prices,
) -> Result<(), LinkPayError> {
    if offer.relay != peer {
        return Err(LinkPayError::BadOffer("offered by another account"));
    }
    let cap = |own: ledger_lite::Amount| own.units().saturating_mul(MAX_PRICE_FACTOR);
    if offer.prices.msg.units() > cap(own.msg) || offer.prices.mailbox.units() > cap(own.mailbox) {
        return Err(LinkPayError::BadOffer("prices far above this relay's own"));
    }
    let (chain_id, published) = chain.with_state(|s| (s.chain, s.relay(&peer).map(|r| r.prices)));
    if offer.chain != chain_id {
        return Err(LinkPayError::BadOffer("another chain"));
    }
    if published.is_some_and(|p| p != offer.prices) {
        return Err(LinkPayError::BadOffer(
            "prices other than its registry record",
        ));
    }
    Ok(())
}

/// Starts closing this relay's spent channels to `peer` now that a fresh one pays: what is left
/// in them returns to the deposit (the other relay settles what it was paid meanwhile).
async fn close_spent(billing: &Billing, chain: &crate::ledger::chain::ChainNode, peer: AccountId) {
    for channel in billing.take_spent_link_channels(&peer) {
        let worth = chain.with_state(|s| {
            s.channel(&channel).is_some_and(|c| {
                c.status == ledger_lite::ChannelStatus::Open && c.remaining() > s.params.min_fee
            })
        });
        if !worth {
            continue;
        }
        let kind = TxKind::CloseChannel { channel };
        if let Err(e) = chain.submit_own(&billing.identity, kind, false).await {
            warn!("cannot close a spent channel to {}: {e}", peer.short());
        }
    }
}
