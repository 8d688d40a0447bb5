//! Frames of the `Open::Billing` stream between a client and its relay.

use ledger_lite::{Amount, ChainId, ChannelId, Receipt, SignedTx};
use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;

use crate::prices::{Prices, Usage};

/// Largest billing frame.
pub const MAX_BILLING_FRAME: usize = 16 * 1024;

/// The relay's terms, sent first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The relay's account (channels must pay it).
    pub relay: AccountId,
    /// The chain receipts are for.
    pub chain: ChainId,
    /// Prices per MiB.
    pub prices: Prices,
    /// Unpaid usage the relay carries before it waits for a receipt.
    pub credit_window: Amount,
    /// An open channel of this client to this relay with lock left, to resume.
    pub existing: Option<ExistingChannel>,
}

impl Offer {
    /// What `payer` signed on `channel` before this session: zero for a new channel, else the
    /// latest receipt the relay shows, which must carry `payer`'s valid signature for this
    /// chain and channel (`None`: it does not, and the relay's word is not taken).
    pub fn signed_before(&self, channel: ChannelId, payer: &AccountId) -> Option<(Amount, u64)> {
        let latest = match &self.existing {
            Some(existing) if existing.channel == channel => existing.latest.as_ref(),
            _ => None,
        };
        let Some(receipt) = latest else {
            return Some((Amount::ZERO, 0));
        };
        let mine = receipt.signer == *payer
            && receipt.body.chain == self.chain
            && receipt.body.channel == channel
            && receipt.verify();
        mine.then_some((receipt.body.cum_amount, receipt.body.cum_bytes))
    }
}

/// A channel the client may resume, with the latest receipt the relay holds for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingChannel {
    /// The channel.
    pub channel: ChannelId,
    /// Its lock.
    pub lock: Amount,
    /// The latest receipt the client signed on it (none yet: start from zero).
    pub latest: Option<Receipt>,
}

/// Relay → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayBilling {
    /// Sessions here must pay: the terms.
    Offer(Box<Offer>),
    /// Nothing to pay on this relay.
    Free,
    /// The channel is accepted; the session is billed to it from `cum_amount` / `cum_bytes`.
    Ready {
        /// The channel.
        channel: ChannelId,
        /// Amount already signed for on it.
        cum_amount: Amount,
        /// Bytes already signed for on it.
        cum_bytes: u64,
    },
    /// Please sign a receipt for this session's usage so far.
    PayRequest {
        /// This session's usage per service, as the relay metered it.
        usage: Usage,
        /// The cumulative amount owed on the channel.
        cum_amount: Amount,
    },
    /// The request was refused.
    Refused(String),
}

/// Client → relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientBilling {
    /// Open a new channel with this signed transaction.
    Open(SignedTx),
    /// Resume the existing channel the offer named.
    Resume(ChannelId),
    /// A signed cumulative receipt.
    Receipt(Receipt),
}
