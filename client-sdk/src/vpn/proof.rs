//! Proof of relay, the client's side: the exit's signed counts of its QUIC connection with this
//! client (`top_proto::vpn::received`) are checked against the exit's key and this session, and
//! kept for the entry of a 2-hop route ([`super::hop`]), which is paid by no more than they and
//! the client's own acknowledged count prove.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use tokio_util::codec::FramedRead;
use top_proto::frame::FrameCodec;
use top_proto::id::AccountId;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received};

use super::tunnel::TunnelStats;

/// The counts are looked at no more often than this (they are cumulative: the newest is enough).
const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a counts statement was not taken.
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
    latest: Option<Received>,
}

impl ReceivedProof {
    /// Statements by `exit` about session `session` (the tunnel's handshake hash).
    pub fn new(exit: AccountId, session: [u8; 32]) -> Self {
        Self {
            exit,
            session,
            latest: None,
        }
    }

    /// The latest statement taken.
    pub fn latest(&self) -> Option<&Received> {
        self.latest.as_ref()
    }

    /// Takes a statement: the exit's, for this session, neither count lower than before.
    pub fn take(&mut self, received: &Received) -> Result<(), ProofError> {
        if !received.check(&self.exit, &self.session) {
            return Err(ProofError::Forged);
        }
        if let Some(l) = &self.latest
            && (received.body.delivered < l.body.delivered
                || received.body.received < l.body.received)
        {
            return Err(ProofError::Backwards);
        }
        self.latest = Some(received.clone());
        Ok(())
    }
}

/// The exit's latest valid statement, shared with the 2-hop reporter.
pub(crate) type LatestCounts = Arc<Mutex<Option<Received>>>;

/// Reads the exit's statements from the stream it opens, until it ends: each valid one goes to
/// `latest` and `stats.bytes_acked`.
pub(crate) async fn read_received(
    conn: quinn::Connection,
    mut proof: ReceivedProof,
    stats: Arc<TunnelStats>,
    latest: LatestCounts,
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
        match proof.take(&newest) {
            Ok(()) => {
                stats
                    .bytes_acked
                    .store(newest.body.received, Ordering::Relaxed);
                *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(newest);
            }
            Err(ProofError::Backwards) => {}
            Err(e @ ProofError::Forged) => {
                // Another session's, or not the exit's: skipped (and looked at no more often
                // than the counts come, so a flood of them costs little).
                tracing::debug!("skipping the exit's counts: {e}");
            }
        }
        tokio::time::sleep(READ_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::identity::Identity;
    use top_proto::vpn::received::ReceivedBody;

    const SESSION: [u8; 32] = [3; 32];

    fn stated(exit: &Identity, delivered: u64, received: u64) -> Received {
        let body = ReceivedBody {
            session: SESSION,
            delivered,
            received,
        };
        Received::sign(exit, body)
    }

    #[test]
    fn only_the_exits_counts_for_this_session_are_taken_and_never_backwards() {
        let exit = Identity::from_seed(&[1; 32]);
        let entry = Identity::from_seed(&[2; 32]);
        let mut proof = ReceivedProof::new(exit.account_id(), SESSION);
        assert_eq!(proof.take(&stated(&exit, 10_000, 20_000)), Ok(()));
        // The entry signing counts itself, or passing on another session's: refused.
        assert_eq!(
            proof.take(&stated(&entry, 40_000, 40_000)),
            Err(ProofError::Forged)
        );
        let other = Received::sign(
            &exit,
            ReceivedBody {
                session: [4; 32],
                delivered: 40_000,
                received: 40_000,
            },
        );
        assert_eq!(proof.take(&other), Err(ProofError::Forged));
        // Old statements take nothing back.
        assert_eq!(
            proof.take(&stated(&exit, 5_000, 30_000)),
            Err(ProofError::Backwards)
        );
        assert_eq!(proof.latest().map(|r| r.body.delivered), Some(10_000));
        assert_eq!(proof.take(&stated(&exit, 12_000, 30_000)), Ok(()));
        assert_eq!(proof.latest().map(|r| r.body.received), Some(30_000));
    }
}
