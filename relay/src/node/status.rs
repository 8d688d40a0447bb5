//! The relay's status report, served as `/api/status` and printed by `toprelay status`.

use serde::{Deserialize, Serialize};

use ledger_lite::Amount;
use top_billing::Prices;

use crate::msg::mailbox::MailboxStats;
use crate::node::state::Shared;

/// A snapshot of what the relay is doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay's id.
    pub id: String,
    /// `<relay-id>@<host>:<port>` for users and peers.
    pub addr: String,
    /// The HTTP port.
    pub http: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Client sessions open.
    pub sessions: usize,
    /// Relays linked now.
    pub links: Vec<String>,
    /// Relays known (configured or learned).
    pub known_relays: Vec<String>,
    /// Mailbox totals.
    pub mailbox: MailboxStats,
    /// Messages received from clients.
    pub messages_received: u64,
    /// Messages acknowledged by recipients connected here.
    pub messages_delivered: u64,
    /// Messages committed to this relay's mailboxes.
    pub messages_stored: u64,
    /// Messages refused.
    pub messages_rejected: u64,
    /// Connections refused by the connection limit or the per-address rate.
    pub connections_refused: u64,
    /// Pipes opened through this relay.
    pub pipes_opened: u64,
    /// Bytes spliced through pipes.
    pub pipe_bytes: u64,
    /// Chain and earnings, when the relay has a chain.
    pub ledger: Option<LedgerStatus>,
    /// The control plane: discovery, reachability, gossip.
    #[serde(default)]
    pub control: crate::control::ControlStatus,
    /// Traffic per service, VPN tunnels and the CDN cache.
    #[serde(default)]
    pub services: ServiceStatus,
    /// The last warnings and errors this process logged, oldest first.
    #[serde(default)]
    pub recent_errors: Vec<crate::node::recent_errors::RecentError>,
}

/// What each service carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Bytes metered for payment, by service (`msg`, `mailbox`, `pipe`, `vpn`, `cdn`).
    pub billed_bytes: std::collections::BTreeMap<String, u64>,
    /// VPN tunnels open here (as exit).
    pub vpn_tunnels: i64,
    /// Two-hop routes forwarded here (as entry).
    pub vpn_forwards: i64,
    /// Packets carried through tunnels (both directions).
    pub vpn_packets: u64,
    /// Tunnel datagrams and packets dropped (malformed, replayed, forged, no route, unpaid).
    pub vpn_dropped: u64,
    /// Bytes of others' content cached here.
    pub cdn_cached_bytes: u64,
    /// The cache's size limit.
    pub cdn_cache_capacity: u64,
    /// Chunks served from this relay's disk.
    pub cdn_local_chunks: u64,
    /// Chunks fetched from peers on a miss.
    pub cdn_peer_chunks: u64,
    /// Bytes the HTTP gateway sent.
    pub cdn_http_bytes: u64,
    /// Chunk bytes sent over QUIC (to SDK clients and peer relays).
    #[serde(default)]
    pub cdn_quic_bytes: u64,
}

impl ServiceStatus {
    fn of(shared: &Shared) -> Self {
        let m = &shared.metrics;
        let v = &m.vpn;
        let billed_bytes = crate::node::metrics::SERVICES
            .iter()
            .map(|s| {
                (
                    crate::node::metrics::service_name(*s).to_string(),
                    m.billed.of(*s),
                )
            })
            .collect();
        let drops = [
            &v.dropped_malformed,
            &v.dropped_replay,
            &v.dropped_decrypt,
            &v.dropped_bad_packet,
            &v.dropped_no_route,
            &v.dropped_too_large,
            &v.dropped_unpaid,
        ];
        Self {
            billed_bytes,
            vpn_tunnels: v.sessions.get(),
            vpn_forwards: v.forwards.get(),
            vpn_packets: v.packets_in.get() + v.packets_out.get(),
            vpn_dropped: drops.iter().map(|c| c.get()).sum(),
            cdn_cached_bytes: shared.cdn.store.cached_bytes(),
            cdn_cache_capacity: shared.config.cdn_cache_bytes,
            cdn_local_chunks: m.cdn.local_chunks.get(),
            cdn_peer_chunks: m.cdn.peer_chunks.get(),
            cdn_http_bytes: m.cdn.bytes_http.get(),
            cdn_quic_bytes: m.cdn.bytes_quic.get(),
        }
    }
}

/// The relay's chain, stake, prices and earnings. Amounts are integer base units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerStatus {
    /// Chain name.
    pub chain: String,
    /// Height of the last committed block.
    pub height: u64,
    /// Whether this relay is a validator (alone, or one of several).
    pub validator: bool,
    /// The validators' epoch.
    #[serde(default)]
    pub epoch: u64,
    /// The validator set of this epoch (account ids).
    #[serde(default)]
    pub validators: Vec<String>,
    /// Height of the last finalized block.
    #[serde(default)]
    pub finalized: u64,
    /// The relay's account.
    pub account: String,
    /// Its balance.
    pub balance: Amount,
    /// Its stake.
    pub stake: Amount,
    /// Whether the relay is in the chain's registry.
    #[serde(default)]
    pub registered: bool,
    /// Whether sessions here pay.
    pub billing: bool,
    /// Prices per MiB.
    pub prices: Prices,
    /// Unpaid usage carried per session.
    pub credit_window: Amount,
    /// Bytes metered for payment.
    pub billed_bytes: u64,
    /// Receipts taken.
    pub receipts_taken: u64,
    /// Fees earned (after the burn) by settlements.
    pub fees_earned: Amount,
    /// Fees burned from this relay's settlements.
    pub fees_burned: Amount,
    /// Channels with receipts not settled yet.
    pub pending_receipts: u64,
    /// Amount those receipts will settle (before the burn).
    pub pending_amount: Amount,
    /// Whether they earn more than a settlement's fee: the relay settles them soon; a smaller
    /// leftover waits for more.
    #[serde(default)]
    pub pending_worth_settling: bool,
    /// Users' transactions this relay gossiped and saw committed (a follower).
    #[serde(default)]
    pub txs_by_gossip: u64,
    /// Users' transactions this relay handed to its upstream (a follower).
    #[serde(default)]
    pub txs_upstream: u64,
}

impl LedgerStatus {
    fn of(shared: &Shared) -> Option<Self> {
        let chain = shared.chain.get()?;
        let me = shared.identity.account_id();
        let receipts = shared.billing.receipts.all().unwrap_or_default();
        let summary = chain.summary();
        let (txs_by_gossip, txs_upstream) = chain.gossip.txs_sent();
        chain.with_state(|s| {
            let account = s.account(&me).cloned().unwrap_or_default();
            let mut pending_receipts = 0;
            let mut pending_amount = Amount::ZERO;
            let mut unsettled_each = Vec::new();
            for r in &receipts {
                let Some(c) = s.channel(&r.body.channel) else {
                    continue;
                };
                let unsettled = r.body.cum_amount.min(c.lock).saturating_sub(c.settled);
                if !unsettled.is_zero() && c.status != ledger_lite::ChannelStatus::Closed {
                    pending_receipts += 1;
                    pending_amount = pending_amount.saturating_add(unsettled);
                    unsettled_each.push(unsettled);
                }
            }
            Some(Self {
                chain: summary.name.clone(),
                height: s.height,
                validator: chain.is_validator(),
                epoch: summary.epoch,
                validators: summary.validators.iter().map(|v| v.to_string()).collect(),
                finalized: summary.finalized,
                account: me.to_string(),
                balance: account.balance,
                stake: account.stake,
                registered: s.relay(&me).is_some(),
                billing: shared.billing.terms.enabled && !shared.billing.terms.prices.is_free(),
                prices: shared.billing.terms.prices,
                credit_window: shared.billing.terms.credit_window,
                billed_bytes: shared.metrics.billed.total(),
                receipts_taken: shared.metrics.receipts.get(),
                fees_earned: account.fees_earned,
                fees_burned: account.fees_burned,
                pending_receipts,
                pending_amount,
                pending_worth_settling: crate::billing::settle::worth_settling(
                    unsettled_each.into_iter(),
                    s.params.min_fee,
                ),
                txs_by_gossip,
                txs_upstream,
            })
        })
    }
}

impl RelayStatus {
    /// Takes a snapshot of `shared`.
    pub fn of(shared: &Shared, http: &str) -> Self {
        let m = &shared.metrics;
        Self {
            id: shared.id.to_string(),
            addr: shared.addr.to_string(),
            http: http.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: shared.started.elapsed().as_secs(),
            sessions: shared.msg.clients(),
            links: shared
                .msg
                .linked()
                .iter()
                .map(|l| l.relay.to_string())
                .collect(),
            known_relays: shared
                .peers
                .members()
                .iter()
                .map(ToString::to_string)
                .collect(),
            mailbox: shared.msg.mailbox.stats().unwrap_or_default(),
            messages_received: m.messages_received.get(),
            messages_delivered: m.messages_delivered.get(),
            messages_stored: m.messages_stored.get(),
            messages_rejected: m.messages_rejected.get(),
            connections_refused: m.connections_refused.get(),
            pipes_opened: m.pipes_opened.get(),
            pipe_bytes: m.pipe_bytes.get(),
            ledger: LedgerStatus::of(shared),
            control: shared.control.status(),
            services: ServiceStatus::of(shared),
            recent_errors: crate::node::recent_errors::recent(),
        }
    }
}
