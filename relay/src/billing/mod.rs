//! The billing role: per-connection meters and terms ([`meter`]), the billing stream that takes
//! receipts ([`stream`]), the durable receipt store ([`receipts`]) and settlement on the chain
//! ([`settle`]).

pub mod live;
pub mod meter;
pub mod receipts;
pub mod settle;
pub mod stream;

use std::sync::Arc;

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
}

impl std::ops::Deref for Billing {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
