//! Bad messages from other validators, dropped and counted: the engine blocks a peer whose
//! vote or certificate does not decode or verify (counted as it is blocked), and the gossip of
//! transactions counts batches that do not decode and transactions whose signatures are forged.

use std::sync::Arc;

use commonware_actor::Feedback;
use commonware_p2p::Blocker;

/// One bad message (or peer) seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A peer the engine blocked for a message that did not decode or verify.
    PeerBlocked,
    /// A gossiped batch of transactions that did not decode (or was too large).
    MalformedBatch,
    /// A gossiped transaction whose signature did not verify.
    ForgedTx,
}

/// Where misbehaviour is reported (a metrics counter, say).
pub type Report = Arc<dyn Fn(Misbehaviour) + Send + Sync>;

/// A report that goes nowhere.
pub fn ignore() -> Report {
    Arc::new(|_| {})
}

/// A blocker that reports each peer blocked before blocking it.
#[derive(Clone)]
pub struct Counting<B> {
    inner: B,
    report: Report,
}

impl<B> Counting<B> {
    /// Counts what `inner` is asked to block.
    pub fn new(inner: B, report: Report) -> Self {
        Self { inner, report }
    }
}

impl<B: Blocker> Blocker for Counting<B> {
    type PublicKey = B::PublicKey;

    fn block(&mut self, peer: Self::PublicKey) -> Feedback {
        (self.report)(Misbehaviour::PeerBlocked);
        #[allow(clippy::disallowed_methods)]
        self.inner.block(peer)
    }
}
