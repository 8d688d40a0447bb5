//! Paying relays from the client: a channel per relay and receipts signed automatically for
//! usage this client counted itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use ledger_lite::{Amount, ChannelId, TxKind};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::wire::{ClientBilling, MAX_BILLING_FRAME, RelayBilling};
use top_billing::{Payer, Usage};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::id::AccountId;
use top_proto::identity::Identity;

use crate::error::{BillingError, ClientError};
use crate::wallet::Wallet;

/// How many times (10 ms apart) a payment request above this client's own count waits for it.
const CATCH_UP_POLLS: u32 = 50;

/// How a client pays the relay it connects to.
#[derive(Clone, Debug)]
pub struct BillingOptions {
    /// How much of the deposit a new channel locks for the relay.
    pub lock: Amount,
    /// The app that pays (it must have granted this client), or `None` to pay from one's own
    /// deposit.
    pub sponsor: Option<AccountId>,
}

impl Default for BillingOptions {
    fn default() -> Self {
        Self {
            lock: Amount::from_units(ledger_lite::UNITS_PER_TOP),
            sponsor: None,
        }
    }
}

/// Bytes a relay may claim beyond this client's count whatever the count: traffic in flight.
const SLACK_BYTES: u64 = 64 * 1024;

/// Bytes this client sent and received per service, counted on its own side.
#[derive(Debug, Default)]
pub struct UsageCounter {
    msg: AtomicU64,
    mailbox: AtomicU64,
    pipe: AtomicU64,
    vpn: AtomicU64,
    cdn: AtomicU64,
    /// Of the VPN bytes, those proven by a third party's signed count (an exit's, for an entry):
    /// exact, so they earn no slack.
    proven: AtomicU64,
}

impl UsageCounter {
    pub(crate) fn msg(&self, bytes: usize) {
        self.msg.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn mailbox(&self, bytes: usize) {
        self.mailbox.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn pipe(&self, bytes: usize) {
        self.pipe.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Counts VPN bytes (tunnel datagrams, proxied stream bytes).
    pub(crate) fn vpn(&self, bytes: usize) {
        self.vpn.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Counts VPN bytes another party proved were carried (see `proven`).
    pub(crate) fn vpn_proven(&self, bytes: u64) {
        self.vpn.fetch_add(bytes, Ordering::Relaxed);
        self.proven.fetch_add(bytes, Ordering::Relaxed);
    }

    /// How far a relay's claim may run ahead of this count (traffic in flight): a fixed amount
    /// plus a sixteenth of what was counted, except what was proven by a signed count.
    pub(crate) fn slack(&self, counted: &Usage) -> u64 {
        let proven = self.proven.load(Ordering::Relaxed);
        SLACK_BYTES + counted.total().saturating_sub(proven) / 16
    }

    /// Counts bytes of `service`.
    pub(crate) fn count(&self, service: top_billing::Service, bytes: usize) {
        match service {
            top_billing::Service::Msg => self.msg(bytes),
            top_billing::Service::Mailbox => self.mailbox(bytes),
            top_billing::Service::Pipe => self.pipe(bytes),
            top_billing::Service::Vpn => self.vpn(bytes),
            top_billing::Service::Cdn => {
                self.cdn.fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> Usage {
        Usage {
            msg: self.msg.load(Ordering::Relaxed),
            mailbox: self.mailbox.load(Ordering::Relaxed),
            pipe: self.pipe.load(Ordering::Relaxed),
            vpn: self.vpn.load(Ordering::Relaxed),
            cdn: self.cdn.load(Ordering::Relaxed),
        }
    }
}

/// The client's channel with its relay.
#[derive(Clone, Debug)]
pub struct BillingState {
    /// The channel the session is billed to.
    pub channel: ChannelId,
    /// Whether receipts are signed when the relay asks (turn off to stop paying).
    pub paying: Arc<AtomicBool>,
    /// Cumulative amount signed on the channel so far, in base units.
    pub signed: Arc<AtomicU64>,
    /// The relay's prices for this session (what its usage costs).
    pub prices: top_billing::Prices,
}

/// Opens the billing stream: takes the relay's offer and resumes or opens a channel; then signs
/// receipts in the background. `Ok(None)` when the relay does not charge.
pub(crate) async fn start(
    conn: &quinn::Connection,
    identity: &Identity,
    opts: &BillingOptions,
    usage: Arc<UsageCounter>,
) -> Result<Option<BillingState>, ClientError> {
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&Open::Billing)?).await?;
    start_on(conn, (send, recv), identity, opts, usage).await
}

/// [`start`] on a stream already opened (and announced) to the relay that bills; `conn` reaches
/// any relay of the chain (to sign a channel opening).
async fn start_on(
    conn: &quinn::Connection,
    (send, recv): (quinn::SendStream, quinn::RecvStream),
    identity: &Identity,
    opts: &BillingOptions,
    usage: Arc<UsageCounter>,
) -> Result<Option<BillingState>, ClientError> {
    let mut out = FramedWrite::new(send, FrameCodec::<ClientBilling>::new(MAX_BILLING_FRAME));
    let mut frames = FramedRead::new(recv, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
    let offer = match frames.next().await {
        Some(Ok(RelayBilling::Offer(offer))) => offer,
        Some(Ok(RelayBilling::Free)) | None => return Ok(None),
        Some(Ok(other)) => return Err(BillingError::Unexpected(format!("{other:?}")).into()),
        Some(Err(e)) => return Err(e.into()),
    };
    let (request, lock) = match &offer.existing {
        Some(existing) => (ClientBilling::Resume(existing.channel), existing.lock),
        None => {
            let wallet = Wallet::open(conn, identity.clone()).await?;
            let kind = TxKind::OpenChannel {
                relay: offer.relay,
                amount: opts.lock,
                sponsor: opts.sponsor,
            };
            let (tx, _) = wallet.sign(kind).await?;
            (ClientBilling::Open(tx), opts.lock)
        }
    };
    out.send(request).await?;
    let (channel, cum_amount, cum_bytes) = match frames.next().await {
        Some(Ok(RelayBilling::Ready {
            channel,
            cum_amount,
            cum_bytes,
        })) => (channel, cum_amount, cum_bytes),
        Some(Ok(RelayBilling::Refused(why))) => {
            return Err(BillingError::Refused {
                relay: offer.relay.short(),
                msg_price: offer.prices.msg,
                vpn_price: offer.prices.vpn,
                why,
            }
            .into());
        }
        Some(Ok(other)) => return Err(BillingError::Unexpected(format!("{other:?}")).into()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ClientError::Closed),
    };
    // What was paid before is what this client signed, never the relay's word: a resumed
    // channel starts from the client's own latest receipt, which the relay must show.
    let signed_before = offer
        .signed_before(channel, &identity.account_id())
        .ok_or_else(|| {
            BillingError::Unexpected(
                "the relay's latest receipt for the channel is not this client's".into(),
            )
        })?;
    if (cum_amount, cum_bytes) != signed_before {
        return Err(BillingError::Unpaid {
            relay: offer.relay.short(),
            claimed: cum_amount,
            signed: signed_before.0,
        }
        .into());
    }
    let mut payer = Payer::new(
        offer.chain,
        channel,
        offer.prices,
        lock,
        cum_amount,
        cum_bytes,
    );
    let state = BillingState {
        channel,
        paying: Arc::new(AtomicBool::new(true)),
        signed: Arc::new(AtomicU64::new(cum_amount.units() as u64)),
        prices: offer.prices,
    };
    let (paying, signed) = (state.paying.clone(), state.signed.clone());
    let identity = identity.clone();
    tokio::spawn(async move {
        // The amount of the last receipt sent and not refused: the relay asks for it again
        // while traffic waits for it, but it is already on its way on this (ordered) stream.
        let mut sent: Option<Amount> = None;
        while let Some(Ok(frame)) = frames.next().await {
            match frame {
                RelayBilling::PayRequest {
                    usage: claimed,
                    cum_amount,
                } => {
                    if !paying.load(Ordering::Relaxed) || sent == Some(cum_amount) {
                        continue;
                    }
                    // Traffic in flight (a CDN chunk being verified, pipe framing) may be
                    // counted by the relay first: give this side's count a moment to catch up.
                    let mut waited = 0;
                    let signed_receipt = loop {
                        let counted = usage.snapshot();
                        let slack = usage.slack(&counted);
                        match payer.sign(&identity, &claimed, cum_amount, &counted, slack) {
                            Err(top_billing::PayError::Overclaimed) if waited < CATCH_UP_POLLS => {
                                waited += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            }
                            other => break other,
                        }
                    };
                    match signed_receipt {
                        Ok(receipt) => {
                            signed.store(cum_amount.units() as u64, Ordering::Relaxed);
                            if out.send(ClientBilling::Receipt(receipt)).await.is_err() {
                                return;
                            }
                            sent = Some(cum_amount);
                        }
                        Err(e) => tracing::warn!("not signing the relay's payment request: {e}"),
                    }
                }
                RelayBilling::Refused(why) => {
                    // Asked for again, it is signed again.
                    sent = None;
                    tracing::warn!("relay refused a receipt: {why}");
                }
                other => tracing::debug!("ignoring billing frame {other:?}"),
            }
        }
    });
    Ok(Some(state))
}
