//! Proof of relay on 2-hop routes, the entry's side: it holds the client's credit for each
//! datagram it forwards to the exit, passes the exit's signed received counts on to the client
//! ([`super::received`]) and bills by them, not by its own count; what settled unacknowledged
//! (lost) it lets go of, within an allowance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_proto::frame::FrameCodec;
use top_proto::id::AccountId;
use top_proto::vpn::received::{MAX_RECEIVED_FRAME, Received};

use super::metrics::VpnMetrics;
use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;

/// How long after it was forwarded a datagram the exit has not acknowledged counts as lost.
const SETTLE_AFTER: Duration = Duration::from_secs(2);
/// How often the entry notes how much it has forwarded (to tell what has settled).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Checkpoints kept: those of the settling time, and a few more.
const CHECKPOINTS: usize = 32;
/// Lost bytes the entry lets go of whatever was acknowledged (small: it is per connection)...
const LOSS_ALLOWANCE: u64 = 64 * 1024;
/// ... and the share of what was acknowledged (1/8). A path that loses more keeps its credit
/// held until the client's credit window is used up: then the entry stops (an exit that never
/// acknowledges stops the route there too).
const LOSS_SHARE: u64 = 8;
/// The entry looks at the exit's counts at most this often (they are cumulative: the newest
/// is all that matters), so a flood of them costs one signature check per interval.
const READ_EVERY: Duration = Duration::from_millis(25);
/// How long passing the counts on to the client may wait for it.
const PASS_ON_WAIT: Duration = Duration::from_secs(1);

/// How much an entry forwarded upstream, and when (shared by its two halves).
#[derive(Default)]
pub struct ForwardLog {
    bytes: AtomicU64,
    checkpoints: Mutex<VecDeque<(Instant, u64)>>,
}

impl ForwardLog {
    /// Bytes forwarded `SETTLE_AFTER` ago or earlier (what the exit has had time to receive).
    fn settled(&self) -> u64 {
        let now = Instant::now();
        let checkpoints = crate::util::lock(&self.checkpoints);
        // Whatever came after the newest checkpoint came within an interval of it.
        if checkpoints
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) >= SETTLE_AFTER + CHECKPOINT_EVERY)
        {
            return self.bytes.load(Ordering::Relaxed);
        }
        checkpoints
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= SETTLE_AFTER)
            .map_or(0, |(_, bytes)| *bytes)
    }
}

/// The forwarding half of an entry's upstream: credit is held for each datagram (the client's
/// credit window and credit book apply) until the exit's counts prove or settle it.
pub struct UpstreamBudget {
    budget: Budget,
    log: Arc<ForwardLog>,
    next_checkpoint: Instant,
}

impl UpstreamBudget {
    /// Whether a datagram of `bytes` may go to the exit now (counted as forwarded if so).
    pub fn allow(&mut self, bytes: usize, metrics: &VpnMetrics) -> bool {
        if !self.budget.allow(bytes) {
            metrics.dropped_unpaid.inc();
            return false;
        }
        let total = self.log.bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        let now = Instant::now();
        if now >= self.next_checkpoint {
            self.next_checkpoint = now + CHECKPOINT_EVERY;
            let mut checkpoints = crate::util::lock(&self.log.checkpoints);
            if checkpoints.len() == CHECKPOINTS {
                checkpoints.pop_front();
            }
            checkpoints.push_back((now, total));
        }
        true
    }
}

/// The billing half of an entry's upstream: bills what the exit acknowledged, lets go of what
/// it settled as lost (within an allowance), across the sessions of one connection.
pub struct UpstreamProof {
    meter: Option<Arc<ClientMeter>>,
    log: Arc<ForwardLog>,
    /// Acknowledged by sessions before the current one.
    earlier: u64,
    /// Acknowledged by the current session.
    current: u64,
    proven: u64,
    released: u64,
}

/// The two halves of an entry's upstream billing on `meter` (`None`: a free entry).
pub fn upstream(meter: Option<Arc<ClientMeter>>) -> (UpstreamBudget, UpstreamProof) {
    let log = Arc::new(ForwardLog::default());
    let budget = UpstreamBudget {
        budget: Budget::held(meter.clone()),
        log: log.clone(),
        next_checkpoint: Instant::now(),
    };
    let proof = UpstreamProof {
        meter,
        log,
        earlier: 0,
        current: 0,
        proven: 0,
        released: 0,
    };
    (budget, proof)
}

impl UpstreamProof {
    /// A new session's counts start (from zero) on this connection.
    fn next_session(&mut self) {
        self.earlier = self.earlier.saturating_add(self.current);
        self.current = 0;
    }

    /// The current session's exit acknowledged `bytes` in all: bills what is newly proven
    /// (never more than was forwarded), then settles.
    fn acknowledged(&mut self, bytes: u64, metrics: &VpnMetrics) {
        let Some(meter) = &self.meter else {
            return;
        };
        self.current = self.current.max(bytes);
        let proven = self.acked().min(self.log.bytes.load(Ordering::Relaxed));
        if proven > self.proven {
            meter.prove(proven - self.proven);
            metrics.upstream_proven_bytes.inc_by(proven - self.proven);
            self.proven = proven;
        }
        self.settle(metrics);
    }

    /// Lets go of what was forwarded long enough ago and never acknowledged (within the
    /// allowance); run on every count and while none come.
    fn settle(&mut self, metrics: &VpnMetrics) {
        let Some(meter) = &self.meter else {
            return;
        };
        let acked = self.acked();
        let lost = self.log.settled().saturating_sub(acked);
        let releasable = (LOSS_ALLOWANCE + acked / LOSS_SHARE).min(lost);
        if releasable > self.released {
            meter.release(releasable - self.released);
            metrics
                .upstream_lost_bytes
                .inc_by(releasable - self.released);
            self.released = releasable;
        }
    }

    fn acked(&self) -> u64 {
        self.earlier.saturating_add(self.current)
    }
}

/// Passes the exits' signed counts on to the client (one stream per tunnel session) and bills
/// upstream datagrams by them; counts not signed by the exit end it (the client would refuse
/// them too).
pub async fn relay_received(
    exit: &quinn::Connection,
    exit_id: AccountId,
    client: &quinn::Connection,
    proof: &mut UpstreamProof,
    metrics: &VpnMetrics,
) {
    while let Ok(recv) = exit.accept_uni().await {
        // A client that grants no stream only goes without the counts: billing goes on.
        let send = tokio::time::timeout(PASS_ON_WAIT, client.open_uni())
            .await
            .ok()
            .and_then(Result::ok);
        proof.next_session();
        if !pass_on(recv, send, exit_id, proof, metrics).await {
            return;
        }
    }
}

/// Passes one session's counts on: the newest of those waiting, checked, at most once per
/// [`READ_EVERY`]; false when the exit sent something it did not sign.
async fn pass_on(
    recv: quinn::RecvStream,
    send: Option<quinn::SendStream>,
    exit_id: AccountId,
    proof: &mut UpstreamProof,
    metrics: &VpnMetrics,
) -> bool {
    let mut frames = FramedRead::new(recv, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME));
    // Passing them on is for the client's sake: if it stops reading, billing goes on.
    let mut out =
        send.map(|s| FramedWrite::new(s, FrameCodec::<Received>::new(MAX_RECEIVED_FRAME)));
    // Every count of one stream is about the session its first names.
    let mut session = None;
    loop {
        let mut newest = match tokio::time::timeout(SETTLE_AFTER / 4, frames.next()).await {
            Ok(Some(Ok(received))) => received,
            Ok(_) => return true,
            Err(_) => {
                // No news: what was forwarded meanwhile may have settled as lost.
                proof.settle(metrics);
                continue;
            }
        };
        while let Some(Some(Ok(next))) = frames.next().now_or_never() {
            newest = next;
        }
        let first = *session.get_or_insert(newest.body.session);
        if !newest.check(&exit_id, &first) {
            return false;
        }
        let bytes = newest.body.bytes;
        // The client hears of it before it is asked to pay for it.
        if let Some(sink) = &mut out
            && !matches!(
                tokio::time::timeout(PASS_ON_WAIT, sink.send(newest)).await,
                Ok(Ok(()))
            )
        {
            out = None;
        }
        proof.acknowledged(bytes, metrics);
        tokio::time::sleep(READ_EVERY).await;
    }
}
