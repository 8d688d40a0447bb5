//! The VPN's counters on `/metrics`: traffic, sessions and every reason a packet was dropped.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the exit and entry roles.
#[derive(Default)]
pub struct VpnMetrics {
    /// Tunnels open now (as exit).
    pub sessions: Gauge,
    /// 2-hop routes forwarded now (as entry).
    pub forwards: Gauge,
    /// Packets from clients written to the TUN device.
    pub packets_in: Counter,
    /// Packets from the TUN device sent to clients.
    pub packets_out: Counter,
    /// UDP packets forwarded as entry (both directions, by this process or the kernel).
    pub forwarded: Counter,
    /// UDP payload bytes forwarded as entry (both directions, by this process or the kernel).
    pub forwarded_bytes: Counter,
    /// Of those packets, those the kernel forwarded (nftables; a GSO batch counts once).
    pub kernel_forwarded: Counter,
    /// Of the packets dropped unpaid, those the kernel dropped (over a route's quota).
    pub kernel_dropped: Counter,
    /// 2-hop routes the kernel forwards now.
    pub kernel_routes: Gauge,
    /// Packets at the forwarding port from an address no route is forwarded for.
    pub dropped_stranger: Counter,
    /// Forwarded packets a full socket buffer refused.
    pub dropped_send_full: Counter,
    /// Datagrams that were not packet datagrams or too short.
    pub dropped_malformed: Counter,
    /// Datagrams with a replayed or stale nonce.
    pub dropped_replay: Counter,
    /// Datagrams that failed authentication (wrong key, altered).
    pub dropped_decrypt: Counter,
    /// Packets that were not well-formed IPv4 or IPv6, or from another address than the
    /// client's lease.
    pub dropped_bad_packet: Counter,
    /// Packets to an address no tunnel holds.
    pub dropped_no_route: Counter,
    /// Datagrams too large for the connection's path at the time (exit and entry).
    pub dropped_too_large: Counter,
    /// Packets dropped because the client's unpaid usage exceeds the credit window.
    pub dropped_unpaid: Counter,
    /// Upstream bytes an entry billed because the exit acknowledged them.
    pub upstream_proven_bytes: Counter,
    /// Upstream bytes an entry let go of unbilled: forwarded, never acknowledged (lost).
    pub upstream_lost_bytes: Counter,
    /// Downstream bytes an entry billed because the client acknowledged them (exit's count).
    pub downstream_proven_bytes: Counter,
    /// Downstream bytes an entry let go of unbilled: forwarded, never acknowledged (lost).
    pub downstream_lost_bytes: Counter,
    /// Received-counts statements an exit signed.
    pub acks_signed: Counter,
    /// Proxied connections opened.
    pub connects: Counter,
}

impl VpnMetrics {
    /// Registers every counter under `vpn_`.
    pub fn register(&self, r: &mut Registry) {
        r.register("vpn_sessions", "VPN tunnels open", self.sessions.clone());
        r.register(
            "vpn_forwards",
            "2-hop routes forwarded as entry",
            self.forwards.clone(),
        );
        r.register(
            "vpn_kernel_routes",
            "2-hop routes the kernel forwards",
            self.kernel_routes.clone(),
        );
        let counters: [(&str, &str, &Counter); 21] = [
            (
                "vpn_packets_in",
                "Packets from clients to the TUN",
                &self.packets_in,
            ),
            (
                "vpn_packets_out",
                "Packets from the TUN to clients",
                &self.packets_out,
            ),
            (
                "vpn_forwarded",
                "UDP packets forwarded as entry",
                &self.forwarded,
            ),
            (
                "vpn_forwarded_bytes",
                "UDP payload bytes forwarded as entry",
                &self.forwarded_bytes,
            ),
            (
                "vpn_kernel_dropped",
                "Packets the kernel dropped over a route's quota (unpaid)",
                &self.kernel_dropped,
            ),
            (
                "vpn_kernel_forwarded",
                "UDP packets the kernel forwarded as entry",
                &self.kernel_forwarded,
            ),
            (
                "vpn_dropped_stranger",
                "Packets at the forwarding port from an address no route is for",
                &self.dropped_stranger,
            ),
            (
                "vpn_dropped_send_full",
                "Forwarded packets a full socket buffer refused",
                &self.dropped_send_full,
            ),
            (
                "vpn_dropped_too_large",
                "Datagrams too large for the path at the time",
                &self.dropped_too_large,
            ),
            (
                "vpn_dropped_malformed",
                "Malformed datagrams",
                &self.dropped_malformed,
            ),
            (
                "vpn_dropped_replay",
                "Replayed or stale nonces",
                &self.dropped_replay,
            ),
            (
                "vpn_dropped_decrypt",
                "Datagrams failing authentication",
                &self.dropped_decrypt,
            ),
            (
                "vpn_dropped_bad_packet",
                "Non-IPv4 or spoofed packets",
                &self.dropped_bad_packet,
            ),
            (
                "vpn_dropped_no_route",
                "Packets to an address no tunnel holds",
                &self.dropped_no_route,
            ),
            (
                "vpn_dropped_unpaid",
                "Packets dropped for lack of payment",
                &self.dropped_unpaid,
            ),
            (
                "vpn_upstream_proven_bytes",
                "Upstream bytes an entry billed as acknowledged by the exit",
                &self.upstream_proven_bytes,
            ),
            (
                "vpn_downstream_proven_bytes",
                "Downstream bytes an entry billed as acknowledged by the client",
                &self.downstream_proven_bytes,
            ),
            (
                "vpn_downstream_lost_bytes",
                "Downstream bytes an entry forwarded that the client never acknowledged",
                &self.downstream_lost_bytes,
            ),
            (
                "vpn_upstream_lost_bytes",
                "Upstream bytes an entry forwarded that the exit never acknowledged",
                &self.upstream_lost_bytes,
            ),
            (
                "vpn_acks_signed",
                "Delivery counts an exit signed for 2-hop billing",
                &self.acks_signed,
            ),
            ("vpn_connects", "Proxied connections opened", &self.connects),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
    }
}
