//! Prometheus metrics of the relay.

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use top_billing::Service;

/// The `service` label of a per-service family.
pub type ServiceLabel = [(&'static str, &'static str); 1];

/// The `reason` label of a family counted by reason.
pub type ReasonLabel = [(&'static str, &'static str); 1];

/// Why a receipt was refused: `top_billing::ReceiptError::reason`'s names, and `not_stored`
/// (the receipt store failed).
pub const RECEIPT_REFUSALS: [&str; 7] = [
    "no_channel",
    "bad_signature",
    "wrong_channel",
    "not_newer",
    "more_than_owed",
    "wrong_bytes",
    "not_stored",
];

/// Every billed service, in the order [`BilledBytes`] keeps them.
pub const SERVICES: [Service; 5] = [
    Service::Msg,
    Service::Mailbox,
    Service::Pipe,
    Service::Vpn,
    Service::Cdn,
];

/// A service's label value.
pub fn service_name(s: Service) -> &'static str {
    match s {
        Service::Msg => "msg",
        Service::Mailbox => "mailbox",
        Service::Pipe => "pipe",
        Service::Vpn => "vpn",
        Service::Cdn => "cdn",
    }
}

/// Bytes metered for payment, one counter per service (`toprelay_billed_bytes{service}`);
/// cloned into every meter, each clone counting into the same family.
#[derive(Clone, Debug, Default)]
pub struct BilledBytes {
    family: Family<ServiceLabel, Counter>,
    each: [Counter; 5],
}

impl BilledBytes {
    fn new() -> Self {
        let family = Family::<ServiceLabel, Counter>::default();
        let each = SERVICES.map(|s| {
            family
                .get_or_create(&[("service", service_name(s))])
                .clone()
        });
        Self { family, each }
    }

    /// Counts `bytes` of `service`.
    pub fn add(&self, service: Service, bytes: u64) {
        if let Some(i) = SERVICES.iter().position(|s| *s == service) {
            self.each[i].inc_by(bytes);
        }
    }

    /// Bytes of `service` so far.
    pub fn of(&self, service: Service) -> u64 {
        SERVICES
            .iter()
            .position(|s| *s == service)
            .map_or(0, |i| self.each[i].get())
    }

    /// Bytes of every service so far.
    pub fn total(&self) -> u64 {
        self.each.iter().map(Counter::get).sum()
    }
}

/// Counters, gauges and histograms exported on `/metrics`.
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
    /// Messages another relay sent through this one (a home of their recipient) to be
    /// forwarded on.
    pub messages_relayed: Counter,
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
    /// Answers dropped because the peer stopped reading (its queue was full).
    pub frames_dropped: Counter,
    /// Presence statements from linked relays not believed (forged, stale, another relay's).
    pub presence_refused: Counter,
    /// Links refused: the peer is not a registered relay.
    pub links_refused: Counter,
    /// Mailbox pushes from linked relays whose recipient's queue stayed full through a wait.
    pub pushes_stalled: Counter,
    /// Other validators blocked by this one's consensus engine for a vote or certificate that
    /// did not decode or verify.
    pub consensus_peers_blocked: Counter,
    /// Gossiped transaction batches that did not decode, and transactions in them whose
    /// signatures were forged.
    pub consensus_bad_gossip: Counter,
    /// Receipts taken (stored durably).
    pub receipts: Counter,
    /// Receipts refused, by reason ([`RECEIPT_REFUSALS`]).
    pub receipts_refused: Family<ReasonLabel, Counter>,
    /// Bytes metered for payment, per service.
    pub billed: BilledBytes,
    /// Latency histograms.
    pub latency: crate::node::latency::Latencies,
    /// Traffic refused for lack of payment.
    pub unpaid_refusals: Counter,
    /// The VPN's counters.
    pub vpn: crate::vpn::metrics::VpnMetrics,
    /// The CDN's counters.
    pub cdn: crate::cdn::metrics::CdnMetrics,
    /// Realtime pipes' counters.
    pub realtime: crate::realtime::metrics::RealtimeMetrics,
    registry: std::sync::Mutex<Registry>,
    /// The standard `process_*` metrics (no `toprelay_` prefix).
    process: Registry,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut m = Self {
            billed: BilledBytes::new(),
            ..Self::default()
        };
        let mut r = Registry::with_prefix("toprelay");
        let build: Family<[(&'static str, &'static str); 1], Gauge> = Family::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        r.register("build_info", "The relay's version (the value is 1)", build);
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
        r.register(
            "messages_relayed",
            "Messages other relays sent through this one, a home of their recipient",
            m.messages_relayed.clone(),
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
        r.register(
            "frames_dropped",
            "Answers dropped because the peer stopped reading",
            m.frames_dropped.clone(),
        );
        r.register(
            "presence_refused",
            "Presence statements from linked relays not believed",
            m.presence_refused.clone(),
        );
        r.register(
            "links_refused",
            "Links refused because the peer is not a registered relay",
            m.links_refused.clone(),
        );
        r.register(
            "pushes_stalled",
            "Pushes from linked relays that waited in vain for a client that does not read",
            m.pushes_stalled.clone(),
        );
        r.register("receipts", "Receipts taken", m.receipts.clone());
        // Each reason shows from the start, at 0.
        for reason in RECEIPT_REFUSALS {
            drop(m.receipts_refused.get_or_create(&[("reason", reason)]));
        }
        r.register(
            "receipts_refused",
            "Receipts refused, by reason",
            m.receipts_refused.clone(),
        );
        r.register(
            "billed_bytes",
            "Bytes metered for payment, per service",
            m.billed.family.clone(),
        );
        m.latency.register(&mut r);
        r.register(
            "unpaid_refusals",
            "Traffic refused for lack of payment",
            m.unpaid_refusals.clone(),
        );
        r.register(
            "consensus_peers_blocked",
            "Validators blocked for a vote or certificate that did not decode or verify",
            m.consensus_peers_blocked.clone(),
        );
        r.register(
            "consensus_bad_gossip",
            "Gossiped transaction batches that did not decode, and forged transactions in them",
            m.consensus_bad_gossip.clone(),
        );
        m.vpn.register(&mut r);
        m.cdn.register(&mut r);
        m.realtime.register(&mut r);
        m.registry = std::sync::Mutex::new(r);
        m.process.register_collector(Box::new(
            crate::node::process_metrics::ProcessCollector::default(),
        ));
        m
    }

    /// Registers more metrics (a part of the node that starts later, such as the control
    /// plane).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let encoded = encode_registry(&mut out, &registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

/// Converts an OpenMetrics exposition to the Prometheus text format 0.0.4: a counter family is
/// named after its samples there (`x_total`, where OpenMetrics names the family `x`), `# UNIT`
/// lines do not exist, and there is no `# EOF`.
pub fn openmetrics_to_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 8 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counter_families_after_their_samples() {
        let m = Metrics::new();
        m.messages_received.inc();
        let text = openmetrics_to_text(&m.render());
        assert!(text.contains("# HELP toprelay_messages_received_total Messages received"));
        assert!(text.contains("# TYPE toprelay_messages_received_total counter\n"));
        assert!(text.contains("toprelay_messages_received_total 1\n"));
        assert!(text.contains("# TYPE toprelay_sessions gauge\n"));
        assert!(!text.contains("# EOF"));
    }
}
