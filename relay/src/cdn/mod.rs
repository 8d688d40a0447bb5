//! The CDN role: content-addressed chunks on disk, served to clients and over HTTP.

pub mod chunks;
pub mod egress;
pub mod gateway;
pub mod metrics;
pub mod serve;
pub mod store;

use std::sync::Arc;

use crate::billing::meter::Terms;
use crate::ledger::ChainSlot;
use crate::msg::Messaging;
use crate::node::core::Core;

/// The CDN role's handle: its store and egress allowances, and what it uses of other roles.
pub struct Cdn {
    /// The node's core.
    pub core: Arc<Core>,
    /// Manifests and chunks on disk.
    pub store: Arc<store::CdnStore>,
    /// Publishers' allowances for HTTP egress, and what was served under them.
    pub egress: Arc<egress::EgressBook>,
    /// The chain (to check allowances against channels).
    pub chain: ChainSlot,
    /// The relay's prices (HTTP egress is charged at the CDN price).
    pub terms: Terms,
    /// Linked relays, to fetch what is missing here.
    pub msg: Arc<Messaging>,
    /// The control plane: which relays hold a content, and telling it which this one holds.
    pub control: Arc<crate::control::Control>,
    /// Upload bytes held in memory at once, in KiB (see [`UPLOAD_BUDGET_KIB`]).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

/// Chunk bytes of uploads held in memory at once, in KiB: 64 MiB across every publisher.
pub const UPLOAD_BUDGET_KIB: usize = 64 << 10;

impl std::ops::Deref for Cdn {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
