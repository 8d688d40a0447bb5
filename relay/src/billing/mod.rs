//! The billing role: per-connection meters and terms ([`meter`]), the billing stream that takes
//! receipts ([`stream`]), datagram metering ([`budget`]), the durable receipt store ([`receipts`]) and settlement on the chain
//! ([`settle`]).

pub mod budget;
pub mod credit;
pub mod link_close;
pub mod link_count;
pub mod link_deposit;
pub mod link_payer;
pub mod links;
pub mod live;
pub mod meter;
pub mod receipts;
pub mod settle;
pub mod stream;
pub mod wind_down;

use std::sync::Arc;

use top_proto::id::AccountId;

use crate::cdn::egress::EgressBook;
use crate::ledger::ChainSlot;
use crate::node::core::Core;

/// The billing role's handle: terms, receipts, and what it settles.
pub struct Billing {
    /// The node's core.
    pub core: Arc<Core>,
    /// Prices and payment terms.
    pub terms: meter::Terms,
    /// Latest receipts by channel.
    pub receipts: receipts::ReceiptStore,
    /// The chain (channels, settlement).
    pub chain: ChainSlot,
    /// HTTP egress allowances, settled like receipts.
    pub egress: Arc<EgressBook>,
    /// The one live session of each channel.
    pub live: live::LiveChannels,
    /// Credit per payer account and per address, across sessions.
    pub credit: Arc<credit::CreditBook>,
    /// The meters of linked relays that ask this one to deliver or keep messages.
    pub link_meters: links::LinkMeters,
    /// Held while the link deposit is topped up (on start and before a link channel opens).
    pub funding_links: tokio::sync::Mutex<()>,
    /// The channel this relay last opened for each client (with its lock and when), served
    /// before it is in a block: a client back before then resumes it rather than opening
    /// another.
    pub opened: std::sync::Mutex<lru::LruCache<AccountId, OpenedChannel>>,
}

/// Channels remembered as opened before their block (one per client).
pub const OPENS_REMEMBERED: usize = 10_000;
/// How long a channel opened here is offered before the chain has it (an open that never
/// makes it into a block is not offered for ever).
pub const OPENED_OFFERED: std::time::Duration = std::time::Duration::from_secs(30);

/// A channel this relay opened for a client, before its block.
pub type OpenedChannel = (
    ledger_lite::ChannelId,
    ledger_lite::Amount,
    std::time::Instant,
);

impl std::ops::Deref for Billing {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
