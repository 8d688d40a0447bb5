//! Proof of relay, the client's side: the exit's signed received counts
//! (`top_proto::vpn::received`) are checked against the exit's key, this session and what this
//! client sent; on a 2-hop route only what they prove counts towards what the entry may claim
//! for datagrams it carried to the exit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{FutureExt, StreamExt};
use tokio_util::codec::FramedRead;
use top_proto::frame::FrameCodec;
use top_proto::id::AccountId;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received};

use super::tunnel::TunnelStats;
use crate::payment::UsageCounter;

/// The counts are looked at no more often than this (they are cumulative: the newest is enough).
const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

/// Why a received-counts statement was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not signed by the exit, or for another session.
    #[error("not signed by the exit for this session")]
    Forged,
    /// Lower than counts the exit signed before.
    #[error("counts went backwards")]
    Backwards,
}

/// The exit's statements about one session, as far as they go.
#[derive(Debug)]
pub struct ReceivedProof {
    exit: AccountId,
    session: [u8; 32],
    /// Bytes the exit acknowledged (its latest valid statement).
    acked: u64,
    /// Of those, bytes credited so far (never more than this client sent).
    credited: u64,
}

impl ReceivedProof {
    /// Statements by `exit` about session `session` (the tunnel's handshake hash).
    pub fn new(exit: AccountId, session: [u8; 32]) -> Self {
        Self {
            exit,
            session,
            acked: 0,
            credited: 0,
        }
    }

    /// Bytes the exit acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Takes a statement, with `sent` the bytes this client has sent so far; returns the bytes
    /// newly proven (a colluding exit cannot prove more than the client sent).
    pub fn take(&mut self, received: &Received, sent: u64) -> Result<u64, ProofError> {
        if !received.check(&self.exit, &self.session) {
            return Err(ProofError::Forged);
        }
        if received.body.bytes < self.acked {
            return Err(ProofError::Backwards);
        }
        self.acked = received.body.bytes;
        let proven = self.acked.min(sent);
        let new = proven.saturating_sub(self.credited);
        self.credited = self.credited.max(proven);
        Ok(new)
    }
}

/// Reads the exit's statements from the stream the first hop opens, until it ends: each valid
/// one updates `stats.bytes_acked` and credits `entry` (on a 2-hop route) with what it proves.
pub(crate) async fn read_received(
    conn: quinn::Connection,
    mut proof: ReceivedProof,
    stats: Arc<TunnelStats>,
    entry: Option<Arc<UsageCounter>>,
) {
    let Ok(recv) = conn.accept_uni().await else {
        return;
    };
    let mut frames = FramedRead::new(recv, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    while let Some(Ok(mut newest)) = frames.next().await {
        // Counts are cumulative: only the newest of those waiting is checked.
        while let Some(Some(Ok(next))) = frames.next().now_or_never() {
            newest = next;
        }
        let sent = stats.bytes_sent.load(Ordering::Relaxed);
        match proof.take(&newest, sent) {
            Ok(new) => {
                stats.bytes_acked.store(proof.acked(), Ordering::Relaxed);
                if let Some(entry) = &entry {
                    entry.vpn_proven(new);
                }
            }
            Err(ProofError::Backwards) => {}
            Err(e @ ProofError::Forged) => {
                // Altered on the way, or another session's: skipped (and looked at no more
                // often than the counts come, so a flood of them costs little).
                tracing::debug!("skipping the exit's received counts: {e}");
            }
        }
        tokio::time::sleep(READ_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_billing::{Payer, Prices, Usage};
    use top_proto::identity::Identity;
    use top_proto::vpn::received::ReceivedBody;

    const SESSION: [u8; 32] = [3; 32];

    fn stated(exit: &Identity, bytes: u64) -> Received {
        let body = ReceivedBody {
            session: SESSION,
            datagrams: bytes / 1000,
            bytes,
        };
        Received::sign(exit, body)
    }

    #[test]
    fn only_the_exits_counts_for_this_session_prove_and_never_beyond_what_was_sent() {
        let exit = Identity::from_seed(&[1; 32]);
        let entry = Identity::from_seed(&[2; 32]);
        let mut proof = ReceivedProof::new(exit.account_id(), SESSION);
        assert_eq!(proof.take(&stated(&exit, 10_000), 50_000), Ok(10_000));
        // The entry signing counts itself, or replaying another session's: refused.
        assert_eq!(
            proof.take(&stated(&entry, 40_000), 50_000),
            Err(ProofError::Forged)
        );
        let other = Received::sign(
            &exit,
            ReceivedBody {
                session: [4; 32],
                datagrams: 40,
                bytes: 40_000,
            },
        );
        assert_eq!(proof.take(&other, 50_000), Err(ProofError::Forged));
        // Old statements prove nothing more.
        assert_eq!(
            proof.take(&stated(&exit, 5_000), 50_000),
            Err(ProofError::Backwards)
        );
        assert_eq!(proof.take(&stated(&exit, 10_000), 50_000), Ok(0));
        // An exit stating more than was sent (colluding with the entry) proves only what was sent.
        assert_eq!(proof.take(&stated(&exit, 90_000), 50_000), Ok(40_000));
        assert_eq!(proof.take(&stated(&exit, 95_000), 60_000), Ok(10_000));
    }

    #[test]
    fn an_entry_claiming_its_own_count_beyond_the_exits_is_not_paid() {
        let (client, exit) = (Identity::from_seed(&[5; 32]), Identity::from_seed(&[6; 32]));
        let prices = Prices {
            vpn: ledger_lite::Amount::from_units(1 << 20),
            ..Prices::default()
        };
        let lock = ledger_lite::Amount::from_units(1 << 40);
        let channel = ledger_lite::ChannelId([7; 32]);
        let mut payer = Payer::new(
            ledger_lite::ChainId([8; 32]),
            channel,
            prices,
            lock,
            ledger_lite::Amount::ZERO,
            0,
        );
        // The client sent 8 MiB through the entry; the exit got 4 MiB of it.
        let counter = UsageCounter::default();
        let mut proof = ReceivedProof::new(exit.account_id(), SESSION);
        counter.vpn_proven(proof.take(&stated(&exit, 4 << 20), 8 << 20).unwrap());
        let counted = counter.snapshot();
        let slack = counter.slack(&counted);
        let claim = |bytes: u64| {
            let usage = Usage {
                vpn: bytes,
                ..Usage::default()
            };
            let amount = usage.cost(&prices).unwrap();
            (usage, amount)
        };
        // Its own count (all 8 MiB), or what was lost beyond a fixed 64 KiB in flight: refused.
        for dropped in [4 << 20, 200 * 1024] {
            let (usage, amount) = claim((4 << 20) + dropped);
            assert_eq!(
                payer.sign(&client, &usage, amount, &counted, slack),
                Err(top_billing::PayError::Overclaimed),
                "paid for {dropped} bytes the exit never received"
            );
        }
        // What the exit acknowledged: paid.
        let (usage, amount) = claim(4 << 20);
        let receipt = payer
            .sign(&client, &usage, amount, &counted, slack)
            .unwrap();
        assert_eq!(receipt.body.cum_amount, amount);
    }
}
