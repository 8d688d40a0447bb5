//! Times between committed blocks, from their timestamps, for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::chain::ChainNode;
use crate::node::core::Core;

/// Once the chain is open: observe the interval between each block and the one before it.
pub fn on_chain_open(core: &Arc<Core>, chain: Arc<ChainNode>) {
    let (metrics, stop) = (core.metrics.clone(), core.shutdown.clone());
    core.tasks.spawn(async move {
        let mut heights = chain.subscribe();
        let head = chain.summary();
        let mut last = (head.height, head.time_ms);
        loop {
            tokio::select! {
                changed = heights.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            let head = chain.summary();
            // Only consecutive blocks: a jump (catching up) says nothing of one block's time.
            if head.height == last.0.saturating_add(1) {
                let ms = head.time_ms.saturating_sub(last.1);
                let interval = Duration::from_millis(ms);
                crate::node::latency::observe(&metrics.latency.block_interval, interval);
            }
            last = (head.height, head.time_ms);
        }
    });
}
