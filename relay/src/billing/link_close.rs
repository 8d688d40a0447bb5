//! Closing the channels this relay opened to relays it no longer links with: their unspent
//! lock returns to its deposit once the close matures (the other relay settles what it was
//! paid meanwhile).

use std::sync::Arc;
use std::time::Duration;

use ledger_lite::{ChannelId, ChannelStatus, TxKind};
use tracing::{info, warn};

use super::Billing;
use crate::ledger::chain::ChainNode;

/// A channel to a relay not linked for this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(3600);
/// How often idle channels are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Once the chain is open: close idle link channels from time to time.
pub fn on_chain_open(billing: &Arc<Billing>) {
    billing.tasks.spawn(sweep_loop(billing.clone()));
}

async fn sweep_loop(billing: Arc<Billing>) {
    let Some(chain) = billing.chain.get().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = billing.shutdown.cancelled() => return,
        }
        close_idle(&billing, &chain, IDLE_CLOSE).await;
    }
}

/// Starts closing every open channel this relay pays from to a relay it has not linked with
/// for `idle`, when more than a fee is left in it; returns the channels.
pub async fn close_idle(billing: &Billing, chain: &ChainNode, idle: Duration) -> Vec<ChannelId> {
    let me = billing.identity.account_id();
    chain.with_state(|s| {
        billing.forget_spent_link_channels(|id| {
            s.channel(id)
                .is_some_and(|c| c.status == ChannelStatus::Open)
        })
    });
    let ours: Vec<_> = chain.with_state(|s| {
        s.channels()
            .filter(|(_, c)| {
                c.payer == me
                    && c.signer == me
                    && c.status == ChannelStatus::Open
                    && c.remaining() > s.params.min_fee
            })
            .map(|(id, c)| (*id, c.relay))
            .collect()
    });
    let mut closed = Vec::new();
    for (channel, relay) in ours {
        if !billing.unlinked_since(&relay, idle) {
            continue;
        }
        let kind = TxKind::CloseChannel { channel };
        match chain.submit_own(&billing.identity, kind, false).await {
            Ok(_) => {
                info!(
                    "closing the channel to {}: not linked for a while",
                    relay.short()
                );
                closed.push(channel);
            }
            Err(e) => warn!("cannot close the idle channel to {}: {e}", relay.short()),
        }
    }
    closed
}
