//! Gossiped blocks as bytes: the message of a committed block, and the check of one received
//! ([`ChainNode::take_gossiped`]), whose verdict says whether it is passed on.

use std::sync::Arc;

use ledger_lite::wire::FinalizedBlock;
use libp2p::gossipsub::MessageAcceptance;
use tracing::debug;

use crate::ledger::chain::ChainNode;
use crate::ledger::gossiped::Gossiped;

/// The gossip message of a committed block.
pub fn block_message(entry: &FinalizedBlock) -> Option<Vec<u8>> {
    postcard::to_allocvec(entry).ok()
}

/// Checks (and, on a follower, takes) a gossiped block: whether to pass it on, and whether this
/// node took it.
pub async fn check_block(chain: Arc<ChainNode>, data: Vec<u8>) -> (MessageAcceptance, bool) {
    // Decoding up to a block's size is work: off the async workers, with the check.
    let verdict =
        tokio::task::spawn_blocking(
            move || match postcard::from_bytes::<FinalizedBlock>(&data) {
                Ok(entry) => chain.take_gossiped(&entry),
                Err(e) => Gossiped::Invalid(format!("not a block: {e}")),
            },
        )
        .await
        .unwrap_or_else(|e| Gossiped::Failed(e.to_string()));
    match verdict {
        Gossiped::Taken => (MessageAcceptance::Accept, true),
        Gossiped::Invalid(why) => {
            debug!("refused a gossiped block: {why}");
            (MessageAcceptance::Reject, false)
        }
        Gossiped::Failed(why) => {
            debug!("could not check a gossiped block: {why}");
            (MessageAcceptance::Ignore, false)
        }
        // Held already (another validator's copy, or taken from the upstream): not passed on,
        // so a block cannot be sent around again under new proof bytes.
        Gossiped::Known | Gossiped::Ahead | Gossiped::Unproven | Gossiped::NotMine => {
            (MessageAcceptance::Ignore, false)
        }
    }
}
