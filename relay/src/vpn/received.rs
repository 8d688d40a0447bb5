//! Proof of relay on 2-hop routes (`top_proto::vpn::received`), the exit's side: it counts
//! each session's authenticated datagrams and signs the counts on a stream of the tunnel's
//! connection (an entry bills by them: [`super::upstream`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::SinkExt;
use tokio::sync::Notify;
use tokio_util::codec::FramedWrite;
use top_proto::frame::FrameCodec;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received, ReceivedBody};

use crate::node::core::Core;

/// How often an exit states its counts while datagrams arrive.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes received that make an exit state its counts before the interval is over.
const ACK_BYTES: u64 = 2 << 20;
/// A session's authenticated datagrams at the exit.
#[derive(Default)]
pub struct ReceivedCounts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    /// [`ACK_BYTES`] more arrived: state the counts now.
    due: Notify,
    /// Datagrams arrived (an idle session's statements wait for it).
    arrived: Notify,
}

impl ReceivedCounts {
    /// Adds a batch of received datagrams (once per batch, by the tunnel's reader).
    pub fn add(&self, datagrams: u64, bytes: u64) {
        self.datagrams.fetch_add(datagrams, Ordering::Relaxed);
        let before = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if before / ACK_BYTES != before.saturating_add(bytes) / ACK_BYTES {
            self.due.notify_one();
        }
        if bytes > 0 {
            self.arrived.notify_one();
        }
    }
}

/// Signs and sends the session's counts for as long as the stream takes them: each interval
/// when they changed, and at once when [`ACK_BYTES`] more arrived; an idle session sleeps.
pub async fn send_received(
    core: &Core,
    conn: &quinn::Connection,
    session: [u8; 32],
    counts: &ReceivedCounts,
) {
    let Ok(send) = conn.open_uni().await else {
        return;
    };
    let mut out = FramedWrite::new(send, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    let mut tick = tokio::time::interval(ACK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stated = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = counts.due.notified() => {}
        }
        let body = ReceivedBody {
            session,
            datagrams: counts.datagrams.load(Ordering::Relaxed),
            bytes: counts.bytes.load(Ordering::Relaxed),
        };
        if body.bytes == stated {
            // Idle: nothing to state until datagrams arrive again.
            counts.arrived.notified().await;
            continue;
        }
        stated = body.bytes;
        core.metrics.vpn.acks_signed.inc();
        if out
            .send(Received::sign(&core.identity, body))
            .await
            .is_err()
        {
            return;
        }
    }
}
