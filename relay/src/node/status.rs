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
                billing: shared.billing.terms.enabled && !shared.billing.terms.prices.is_free(),
                prices: shared.billing.terms.prices,
                credit_window: shared.billing.terms.credit_window,
                billed_bytes: shared.metrics.billed_bytes.get(),
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
        }
    }
}
