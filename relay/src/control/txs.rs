//! Transactions by gossip (`/top/<chain>/txs/1`): a registered relay publishes the transactions
//! its users wait on ([`crate::ledger::tx_gossip`]), every relay checks one before it is passed
//! on, and validators queue it. Only registered relays publish: a message from anyone else is
//! dropped unread (a relay that registered a block ago is not blamed for it), and the checks
//! run off the swarm's task, a bounded number at once; the rest are ignored, never queued.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::oneshot;
use tracing::debug;

use super::checks::{Checked, MAX_TX_CHECKS};
use super::task::Task;
use crate::ledger::tx_gossip::GossipedTx;

impl Task {
    /// Publishes one of this relay's transactions; `sent` says whether it went out (a relay
    /// not registered yet does not publish: others would not read it).
    pub(super) fn publish_tx(&mut self, data: Vec<u8>, sent: oneshot::Sender<bool>) {
        if !self.is_me_registered() {
            sent.send(false).ok();
            return;
        }
        let topic = self.topics.txs.clone();
        let published = self.swarm.behaviour_mut().gossip.publish(topic, data);
        if let Err(e) = &published {
            debug!("gossiping a transaction: {e}");
        }
        sent.send(published.is_ok()).ok();
    }

    /// A transaction came by gossip: checked in a task of its own if its publisher is a
    /// registered relay within its quota and there is room.
    pub(super) fn on_gossiped_tx(
        &mut self,
        from: PeerId,
        id: MessageId,
        source: Option<PeerId>,
        data: Vec<u8>,
    ) {
        let registered = source.filter(|s| self.registered.contains_key(s));
        // A registered relay gets a quota of checks here (an honest one's users fall back to
        // the upstream when it is spent); more at once than there is room for are ignored.
        let room = self.tx_checks < MAX_TX_CHECKS;
        let within = room && registered.is_some_and(|s| self.tx_quota.take(s, Instant::now()));
        if !within {
            self.swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            return;
        }
        self.tx_checks += 1;
        let (chain, verdicts) = (self.chain.clone(), self.verdicts.clone());
        self.core.tasks.spawn(async move {
            let verdict = match chain.take_gossiped_tx(&data).await {
                GossipedTx::Checked => MessageAcceptance::Accept,
                GossipedTx::Invalid(why) => {
                    debug!("refused a gossiped transaction: {why}");
                    MessageAcceptance::Reject
                }
                GossipedTx::Skipped(why) => {
                    debug!("did not pass on a gossiped transaction: {why}");
                    MessageAcceptance::Ignore
                }
            };
            verdicts.send((id, from, verdict, Checked::Tx)).await.ok();
        });
    }
}
