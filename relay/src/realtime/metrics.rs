//! The realtime pipes' counters on `/metrics`: pipes, datagrams carried and every reason one was
//! dropped.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of realtime pipes.
#[derive(Default)]
pub struct RealtimeMetrics {
    /// Realtime pipes open through this relay now.
    pub pipes: Gauge,
    /// Datagrams forwarded.
    pub forwarded: Counter,
    /// Datagrams too short to carry a flow id.
    pub dropped_malformed: Counter,
    /// Datagrams under a flow id this relay did not hand out on that connection.
    pub dropped_unknown: Counter,
    /// Datagrams dropped because the queue towards the next hop was full.
    pub dropped_queue: Counter,
    /// Datagrams larger than the next hop's path carries.
    pub dropped_too_large: Counter,
    /// Datagrams dropped because a payer's unpaid usage exceeds the credit window.
    pub dropped_unpaid: Counter,
}

impl RealtimeMetrics {
    /// Registers every counter under `realtime_`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "realtime_pipes",
            "Realtime pipes open through this relay",
            self.pipes.clone(),
        );
        let counters: [(&str, &str, &Counter); 6] = [
            (
                "realtime_forwarded",
                "Realtime datagrams forwarded",
                &self.forwarded,
            ),
            (
                "realtime_dropped_malformed",
                "Realtime datagrams without a flow id",
                &self.dropped_malformed,
            ),
            (
                "realtime_dropped_unknown",
                "Realtime datagrams under an unknown flow id",
                &self.dropped_unknown,
            ),
            (
                "realtime_dropped_queue",
                "Realtime datagrams dropped at a full queue",
                &self.dropped_queue,
            ),
            (
                "realtime_dropped_too_large",
                "Realtime datagrams too large for the next hop",
                &self.dropped_too_large,
            ),
            (
                "realtime_dropped_unpaid",
                "Realtime datagrams dropped for lack of payment",
                &self.dropped_unpaid,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
    }
}
