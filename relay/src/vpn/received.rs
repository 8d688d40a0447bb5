//! Proof of relay on 2-hop routes (`top_proto::vpn::received`), the exit's side: it signs, on a
//! stream of each tunnel's connection, what its QUIC connection with the client counts (what
//! the client acknowledged of the exit's packets, what arrived). The client checks them and
//! passes them to the entry, which bills by them ([`super::hop`]).

use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio_util::codec::FramedWrite;
use top_proto::frame::FrameCodec;
use top_proto::vpn::forward::AckedBytes;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received, ReceivedBody};

use crate::node::core::Core;

/// How often an exit looks at the counts, and states them when they grew by [`STATE_BYTES`]...
const STATE_EVERY: Duration = Duration::from_millis(25);
/// ... this much (together) ...
const STATE_BYTES: u64 = 4 * 1024;
/// ... or, at most this often, by more than [`OWN_TRAFFIC`]...
const STATE_SLOWLY: Duration = Duration::from_secs(1);
/// ... what a statement itself adds to the counts (its packet, the client's ACK), so that an
/// idle connection goes quiet instead of stating its own statements for ever.
const OWN_TRAFFIC: u64 = 512;

/// Signs and sends the session's counts for as long as the stream takes them.
pub async fn send_received(core: &Core, conn: &quinn::Connection, session: [u8; 32]) {
    let Ok(send) = conn.open_uni().await else {
        return;
    };
    let mut out = FramedWrite::new(send, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    let mut tick = tokio::time::interval(STATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acked = AckedBytes::default();
    let (mut stated, mut stated_at) = (0u64, Instant::now());
    loop {
        tick.tick().await;
        let stats = conn.stats();
        let now = Instant::now();
        let body = ReceivedBody {
            session,
            delivered: acked.update(&stats, now),
            received: stats.udp_rx.bytes,
        };
        let grown = body
            .delivered
            .saturating_add(body.received)
            .saturating_sub(stated);
        let slow_due = now.duration_since(stated_at) >= STATE_SLOWLY && grown > OWN_TRAFFIC;
        if grown < STATE_BYTES && !slow_due {
            continue;
        }
        stated = body.delivered.saturating_add(body.received);
        stated_at = now;
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
