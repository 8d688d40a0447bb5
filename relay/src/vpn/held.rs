//! Proof of relay on 2-hop routes, the entry's billing of one direction: it holds the client's
//! credit for each byte it forwards, bills what the far end acknowledged (counts the client
//! passes on: [`super::hop`]), never more than it forwarded, and lets go of what settled
//! unacknowledged (lost), within an allowance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;

/// How long after it was forwarded a byte nobody acknowledged counts as lost.
pub const SETTLE_AFTER: Duration = Duration::from_secs(2);
/// How often the entry notes how much it has forwarded (to tell what has settled).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Checkpoints kept: those of the settling time, and a few more.
const CHECKPOINTS: usize = 32;
/// Lost bytes the entry lets go of whatever was acknowledged (small: it is per route)...
const LOSS_ALLOWANCE: u64 = 64 * 1024;
/// ... and the share of what was acknowledged (1/8). A path that loses more (or a client that
/// states less than arrived) keeps its credit held until the client's credit window is used
/// up: then the entry stops forwarding.
const LOSS_SHARE: u64 = 8;

/// How much an entry forwarded one way, and when (shared by the two halves).
pub struct ForwardLog {
    bytes: AtomicU64,
    checkpoints: Mutex<VecDeque<(Instant, u64)>>,
    /// When the log was started, and when (in ms since) the next checkpoint is due.
    start: Instant,
    next_checkpoint_ms: AtomicU64,
}

impl Default for ForwardLog {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            checkpoints: Mutex::default(),
            start: Instant::now(),
            next_checkpoint_ms: AtomicU64::new(0),
        }
    }
}

impl ForwardLog {
    /// Notes `bytes` more forwarded (by this process or by the kernel for it).
    pub fn record(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let now = Instant::now();
        let ms = now.duration_since(self.start).as_millis() as u64;
        let due = self.next_checkpoint_ms.load(Ordering::Relaxed);
        if ms < due {
            return;
        }
        let next = ms + CHECKPOINT_EVERY.as_millis() as u64;
        if self
            .next_checkpoint_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut checkpoints = crate::util::lock(&self.checkpoints);
        if checkpoints.len() == CHECKPOINTS {
            checkpoints.pop_front();
        }
        checkpoints.push_back((now, total));
    }

    /// Bytes forwarded so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes forwarded `SETTLE_AFTER` ago or earlier (what the far end has had time to get).
    fn settled(&self) -> u64 {
        let now = Instant::now();
        let checkpoints = crate::util::lock(&self.checkpoints);
        // Whatever came after the newest checkpoint came within an interval of it.
        if checkpoints
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) >= SETTLE_AFTER + CHECKPOINT_EVERY)
        {
            return self.bytes();
        }
        checkpoints
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= SETTLE_AFTER)
            .map_or(0, |(_, bytes)| *bytes)
    }
}

/// The forwarding half: credit is held for each byte (the client's credit window and credit
/// book apply) until acknowledgements prove or settle it.
pub struct HeldBudget {
    budget: Budget,
    log: Arc<ForwardLog>,
}

impl HeldBudget {
    /// Whether `bytes` may be forwarded now (counted as forwarded if so).
    pub fn allow(&mut self, bytes: usize) -> bool {
        if !self.budget.allow(bytes) {
            return false;
        }
        self.log.record(bytes as u64);
        true
    }

    /// The log of what this direction forwarded (the kernel's part is noted there too).
    pub fn log(&self) -> Arc<ForwardLog> {
        self.log.clone()
    }

    /// The meter credit is held on (`None`: a free entry).
    pub fn meter(&self) -> Option<Arc<ClientMeter>> {
        self.budget.meter().cloned()
    }
}

/// The billing half: bills what was acknowledged, lets go of what settled as lost.
pub struct HeldProof {
    meter: Option<Arc<ClientMeter>>,
    log: Arc<ForwardLog>,
    acked: u64,
    proven: u64,
    released: u64,
}

/// The two halves of one direction's billing on `meter` (`None`: a free entry).
pub fn held(meter: Option<Arc<ClientMeter>>) -> (HeldBudget, HeldProof) {
    let log = Arc::new(ForwardLog::default());
    let budget = HeldBudget {
        budget: Budget::held(meter.clone()),
        log: log.clone(),
    };
    let proof = HeldProof {
        meter,
        log,
        acked: 0,
        proven: 0,
        released: 0,
    };
    (budget, proof)
}

/// Bytes a [`HeldProof`] newly billed and newly let go of.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Billed: acknowledged.
    pub proven: u64,
    /// Let go of: lost.
    pub released: u64,
}

impl HeldProof {
    /// The far end acknowledged `acked` bytes in all: bills what is newly proven (never more
    /// than was forwarded), then settles.
    pub fn acknowledged(&mut self, acked: u64) -> Settled {
        self.acked = self.acked.max(acked);
        let mut done = Settled::default();
        let Some(meter) = &self.meter else {
            return done;
        };
        let proven = self.acked.min(self.log.bytes());
        if proven > self.proven {
            meter.prove(proven - self.proven);
            done.proven = proven - self.proven;
            self.proven = proven;
        }
        done.released = self.settle();
        done
    }

    /// Lets go of what was forwarded long enough ago and never acknowledged (within the
    /// allowance); run on every count and while none come. Returns the bytes newly let go of.
    pub fn settle(&mut self) -> u64 {
        let Some(meter) = &self.meter else {
            return 0;
        };
        let acked = self.acked.min(self.log.bytes());
        let lost = self.log.settled().saturating_sub(acked);
        let releasable = (LOSS_ALLOWANCE + acked / LOSS_SHARE).min(lost);
        if releasable <= self.released {
            return 0;
        }
        meter.release(releasable - self.released);
        let new = releasable - self.released;
        self.released = releasable;
        new
    }
}
