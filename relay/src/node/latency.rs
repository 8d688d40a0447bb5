//! Latency histograms on `/metrics`: message delivery, receipt round trip, settlement and the
//! time between blocks.

use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The relay's latency histograms (seconds).
#[derive(Debug)]
pub struct Latencies {
    /// From a message reaching this relay to its recipient's acknowledgement (live deliveries).
    pub delivery: Histogram,
    /// From a payment request to the receipt that answers it.
    pub receipt_rtt: Histogram,
    /// From a settlement submitted to its commit on the chain.
    pub settlement: Histogram,
    /// Between consecutive committed blocks (their timestamps).
    pub block_interval: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // 1 ms to ~33 s.
            delivery: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            receipt_rtt: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 50 ms to ~14 min.
            settlement: Histogram::new(exponential_buckets(0.05, 2.0, 15)),
            block_interval: Histogram::new(exponential_buckets(0.05, 2.0, 15)),
        }
    }
}

impl Latencies {
    /// Registers every histogram.
    pub fn register(&self, r: &mut Registry) {
        let all = [
            (
                "message_delivery",
                "Time from a message reaching this relay to its recipient's acknowledgement",
                &self.delivery,
            ),
            (
                "receipt_round_trip",
                "Time from a payment request to the receipt that answers it",
                &self.receipt_rtt,
            ),
            (
                "settlement",
                "Time from a settlement submitted to its commit",
                &self.settlement,
            ),
            (
                "block_interval",
                "Time between consecutive committed blocks",
                &self.block_interval,
            ),
        ];
        for (name, help, h) in all {
            r.register_with_unit(name, help, Unit::Seconds, h.clone());
        }
    }
}

/// Records a duration in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}
