//! Prometheus metrics of the relay.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters and gauges exported on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Messages received from clients.
    pub messages_received: Counter,
    /// Messages acknowledged by their recipients.
    pub messages_delivered: Counter,
    /// Messages committed to this relay's mailboxes.
    pub messages_stored: Counter,
    /// Messages refused (quota, size, unavailable).
    pub messages_rejected: Counter,
    /// Client sessions open now.
    pub sessions: Gauge,
    /// Relay links up now.
    pub links: Gauge,
    /// QUIC connections accepted.
    pub connections: Counter,
    /// QUIC connections refused (connection limit or per-address rate).
    pub connections_refused: Counter,
    /// Pipes opened through this relay.
    pub pipes_opened: Counter,
    /// Bytes spliced through pipes (both directions).
    pub pipe_bytes: Counter,
    /// Streams closed for malformed or unexpected frames.
    pub bad_frames: Counter,
    /// Receipts taken (stored durably).
    pub receipts: Counter,
    /// Bytes metered for payment (all services).
    pub billed_bytes: Counter,
    /// Traffic refused for lack of payment.
    pub unpaid_refusals: Counter,
    /// The VPN's counters.
    pub vpn: crate::vpn::metrics::VpnMetrics,
    /// The CDN's counters.
    pub cdn: crate::cdn::metrics::CdnMetrics,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut m = Self::default();
        let mut r = Registry::with_prefix("toprelay");
        r.register(
            "messages_received",
            "Messages received from clients",
            m.messages_received.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages acknowledged by recipients",
            m.messages_delivered.clone(),
        );
        r.register(
            "messages_stored",
            "Messages committed to mailboxes",
            m.messages_stored.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages refused",
            m.messages_rejected.clone(),
        );
        r.register("sessions", "Client sessions open", m.sessions.clone());
        r.register("links", "Relay links up", m.links.clone());
        r.register(
            "connections",
            "QUIC connections accepted",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "QUIC connections refused by limits",
            m.connections_refused.clone(),
        );
        r.register("pipes_opened", "Pipes opened", m.pipes_opened.clone());
        r.register(
            "pipe_bytes",
            "Bytes spliced through pipes",
            m.pipe_bytes.clone(),
        );
        r.register(
            "bad_frames",
            "Streams closed for bad frames",
            m.bad_frames.clone(),
        );
        r.register("receipts", "Receipts taken", m.receipts.clone());
        r.register(
            "billed_bytes",
            "Bytes metered for payment",
            m.billed_bytes.clone(),
        );
        r.register(
            "unpaid_refusals",
            "Traffic refused for lack of payment",
            m.unpaid_refusals.clone(),
        );
        m.vpn.register(&mut r);
        m.cdn.register(&mut r);
        m.registry = r;
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
