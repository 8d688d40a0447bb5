//! Proof of relay on 2-hop routes (`top_proto::vpn::received`): an exit counts each session's
//! authenticated datagrams and signs the counts on a stream of the tunnel's connection; an entry
//! passes them on to the client and bills its upstream datagrams by them, not by its own count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::Service;
use top_proto::frame::FrameCodec;
use top_proto::id::AccountId;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received, ReceivedBody};

use super::metrics::VpnMetrics;
use crate::billing::meter::ClientMeter;
use crate::node::core::Core;

/// How often an exit states its counts while datagrams arrive.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes received that make an exit state its counts before the interval is over.
const ACK_BYTES: u64 = 2 << 20;
/// UpstreamBilling bytes an entry forwards beyond what the exit acknowledged; more are dropped. It
/// covers an interval of traffic at several Gbit/s, and bounds what an entry carries unpaid
/// for a client whose exit never acknowledges.
pub const UNACKED_LIMIT: u64 = 32 << 20;

/// A session's authenticated datagrams at the exit.
#[derive(Default)]
pub struct ReceivedCounts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    due: Notify,
}

impl ReceivedCounts {
    /// Adds a batch of received datagrams (once per batch, by the tunnel's reader).
    pub fn add(&self, datagrams: u64, bytes: u64) {
        self.datagrams.fetch_add(datagrams, Ordering::Relaxed);
        let before = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if before / ACK_BYTES != before.saturating_add(bytes) / ACK_BYTES {
            self.due.notify_one();
        }
    }
}

/// Signs and sends the session's counts for as long as the stream takes them: each interval
/// when they changed, and at once when [`ACK_BYTES`] more arrived.
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

/// An entry's upstream datagrams on one client connection: forwarded within
/// [`UNACKED_LIMIT`] of what the exit acknowledged, billed to the client as it acknowledges.
pub struct UpstreamBilling {
    meter: Option<Arc<ClientMeter>>,
    forwarded: AtomicU64,
    billed: AtomicU64,
    /// Whether the client's credit allowed more when last looked at.
    open: AtomicBool,
}

impl UpstreamBilling {
    /// UpstreamBilling datagrams billed on `meter` (`None`: a free entry, which forwards everything).
    pub fn new(meter: Option<Arc<ClientMeter>>) -> Self {
        Self {
            meter,
            forwarded: AtomicU64::new(0),
            billed: AtomicU64::new(0),
            open: AtomicBool::new(true),
        }
    }

    /// Whether a datagram of `bytes` may go to the exit now; counts it as forwarded if so, and
    /// what it drops by reason. Called by the one upstream reader.
    pub fn allow(&self, bytes: usize, metrics: &VpnMetrics) -> bool {
        let Some(meter) = &self.meter else {
            return true;
        };
        let forwarded = self.forwarded.load(Ordering::Relaxed);
        if forwarded.saturating_sub(self.billed.load(Ordering::Relaxed)) >= UNACKED_LIMIT {
            metrics.dropped_unacked.inc();
            return false;
        }
        if !self.open.load(Ordering::Relaxed) {
            if !meter.may_carry() {
                metrics.dropped_unpaid.inc();
                return false;
            }
            self.open.store(true, Ordering::Relaxed);
        }
        self.forwarded
            .store(forwarded.saturating_add(bytes as u64), Ordering::Relaxed);
        true
    }

    /// The exit acknowledged `bytes` in all: bills what is newly acknowledged, never more than
    /// was forwarded. Called by the one reader of the exit's counts.
    pub fn acknowledged(&self, bytes: u64) {
        let Some(meter) = &self.meter else {
            return;
        };
        let proven = bytes.min(self.forwarded.load(Ordering::Relaxed));
        let billed = self.billed.load(Ordering::Relaxed);
        if proven <= billed {
            return;
        }
        self.billed.store(proven, Ordering::Relaxed);
        let more = meter.record_carried(Service::Vpn, proven - billed);
        self.open.store(more, Ordering::Relaxed);
    }
}

/// Passes the exit's signed counts on to the client, billing upstream datagrams by them (only
/// counts the exit really signed: the client will check them too).
pub async fn relay_received(
    exit: &quinn::Connection,
    exit_id: AccountId,
    client: &quinn::Connection,
    upstream: &UpstreamBilling,
) {
    let Ok(recv) = exit.accept_uni().await else {
        return;
    };
    let Ok(send) = client.open_uni().await else {
        return;
    };
    let mut frames = FramedRead::new(recv, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    while let Some(Ok(ack)) = frames.next().await {
        if !ack.check(&exit_id, &ack.body.session) {
            return;
        }
        upstream.acknowledged(ack.body.bytes);
        if out.send(ack).await.is_err() {
            return;
        }
    }
}
