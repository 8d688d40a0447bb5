//! Blocks by gossip: validators publish each block they commit with its finality proof;
//! every relay checks one before it is passed on ([`super::blocks::check_block`]), so a forged
//! or conflicting block stops at the first honest relay and costs its sender its score. Checks
//! run off the swarm's task, a bounded number at once; the rest are ignored (not passed on),
//! never queued without bound.

use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use tracing::debug;

use super::blocks::{block_message, check_block};
use super::checks::{Checked, MAX_CHECKS};
use super::task::Task;

impl Task {
    /// Validators of this epoch publish the blocks committed since the last call, each with its
    /// proof.
    pub(super) async fn publish_blocks(&mut self) {
        let height = self.chain.height();
        // Only a validator of this epoch publishes (others would be refused as forgers).
        let publishes = self.validators.contains(self.swarm.local_peer_id());
        if !publishes || height <= self.published {
            self.published = self.published.max(height);
            return;
        }
        let from = self.published + 1;
        let max = u32::try_from(height - self.published)
            .unwrap_or(u32::MAX)
            .min(64);
        let run = match self.chain.finalized_blocks(from, max, Duration::ZERO).await {
            Ok(run) => run,
            Err(e) => return debug!("reading blocks to gossip: {e}"),
        };
        // What the read left out (a byte budget, the 64 cap) goes out with the next block.
        if let Some(last) = run.last() {
            self.published = last.block.header.height;
        }
        for entry in run {
            let Some(data) = block_message(&entry) else {
                continue;
            };
            let topic = self.topics.blocks.clone();
            if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, data) {
                debug!("gossiping block {}: {e}", entry.block.header.height);
            }
        }
    }

    pub(super) fn on_verdict(
        &mut self,
        id: MessageId,
        from: PeerId,
        verdict: MessageAcceptance,
        checked: Checked,
    ) {
        let taken = match checked {
            Checked::Block { taken } => {
                self.checks = self.checks.saturating_sub(1);
                taken
            }
            Checked::Tx => {
                self.tx_checks = self.tx_checks.saturating_sub(1);
                false
            }
        };
        let refused = matches!(verdict, MessageAcceptance::Reject);
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&id, &from, verdict);
        if refused || taken {
            self.control.update(|s| {
                s.refused_gossip += u64::from(refused);
                s.gossiped_blocks += u64::from(taken);
            });
        }
    }

    pub(super) fn on_gossip(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        if message.topic == self.topics.relays.hash() {
            let verdict = self.on_gossiped_announcement(from, message.source, message.data);
            self.swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&id, &from, verdict);
            return;
        }
        if message.topic == self.topics.txs.hash() {
            return self.on_gossiped_tx(from, id, message.source, message.data);
        }
        // Only a validator publishes blocks: anything else is refused before it is read (an
        // honest relay never passes such a message on, so whoever did pays for it).
        let from_validator = message
            .source
            .is_some_and(|source| self.validators.contains(&source));
        if message.topic != self.topics.blocks.hash() || !from_validator {
            self.swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&id, &from, MessageAcceptance::Reject);
            self.control.update(|s| s.refused_gossip += 1);
            return;
        }
        if self.checks >= MAX_CHECKS {
            self.swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            return;
        }
        self.checks += 1;
        let (chain, verdicts) = (self.chain.clone(), self.verdicts.clone());
        self.core.tasks.spawn(async move {
            let (verdict, taken) = check_block(chain, message.data).await;
            let checked = Checked::Block { taken };
            verdicts.send((id, from, verdict, checked)).await.ok();
        });
    }
}
