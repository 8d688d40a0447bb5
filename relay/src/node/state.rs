//! The node's table of roles: its [`Core`] and each role's handle. Only the node (accept loop,
//! dialer, HTTP, status) holds it; roles get the core and the handles they need.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;

use super::core::Core;
use crate::billing::Billing;
use crate::cdn::Cdn;
use crate::ledger::ChainSlot;
use crate::msg::Messaging;
use crate::msg::driver::MessagingParts;
use crate::msg::link::LinkContext;
use crate::msg::mailbox::Mailbox;
use crate::msg::session::SessionContext;
use crate::node::config::RelayConfig;
use crate::node::metrics::Metrics;
use crate::node::peers::Peers;

/// The node's core and the handles of its roles.
pub struct Shared {
    /// What every role may use.
    pub core: Arc<Core>,
    /// The messaging role (sessions, links, mailboxes).
    pub msg: Arc<Messaging>,
    /// Relays known to this one.
    pub peers: Arc<Peers>,
    /// The chain node, once opened (followers open it after fetching the genesis).
    pub chain: ChainSlot,
    /// The billing role (terms, receipts, settlement).
    pub billing: Arc<Billing>,
    /// The CDN role (store, egress allowances, gateway).
    pub cdn: Arc<Cdn>,
    /// The VPN exit, when this relay is one.
    pub vpn_exit: std::sync::OnceLock<Arc<crate::vpn::exit::Exit>>,
    /// The forwarding port of 2-hop routes (entry role), once bound.
    pub forwarder: std::sync::OnceLock<Arc<crate::vpn::forward::Forwarder>>,
    /// The control plane (running once the chain is open).
    pub control: Arc<crate::control::Control>,
    /// Realtime pipes' flows through this relay.
    pub realtime: Arc<crate::realtime::flows::Flows>,
}

impl Shared {
    /// Shared state for a relay that is about to start.
    pub fn new(
        identity: Identity,
        addr: RelayAddr,
        config: RelayConfig,
        (endpoint, server_config): (quinn::Endpoint, quinn::ServerConfig),
        mailbox: Mailbox,
        receipts: crate::billing::receipts::ReceiptStore,
        (cdn, egress): (crate::cdn::store::CdnStore, crate::cdn::egress::EgressBook),
    ) -> Self {
        let id = identity.relay_id();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        // Configured relays are members until a chain that is not a dev chain opens.
        let peers = Arc::new(Peers::new(
            id,
            config.mailbox.home_replicas,
            &config.peers,
            true,
        ));
        let msg = Messaging::new(MessagingParts {
            me: id,
            mailbox,
            peers: peers.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            router: Default::default(),
            link_idle: std::time::Duration::from_secs(config.link_idle_secs),
        });
        let terms = crate::billing::meter::Terms::from_config(&config.billing);
        let core = Arc::new(Core {
            identity,
            id,
            addr,
            config,
            endpoint,
            server_config,
            metrics,
            shutdown,
            tasks,
            started: Instant::now(),
        });
        let chain = ChainSlot::default();
        let control = Arc::new(crate::control::Control::default());
        let egress = Arc::new(egress);
        let billing = Arc::new(Billing {
            core: core.clone(),
            terms: terms.clone(),
            receipts,
            chain: chain.clone(),
            egress: egress.clone(),
            live: Default::default(),
            link_meters: Default::default(),
            credit: Arc::new(crate::billing::credit::CreditBook::new(
                terms.credit_per_payer,
                terms.credit_per_address,
            )),
            funding_links: tokio::sync::Mutex::new(()),
            opened: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(crate::billing::OPENS_REMEMBERED)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        });
        let cdn = Arc::new(Cdn {
            core: core.clone(),
            store: Arc::new(cdn),
            egress,
            chain: chain.clone(),
            terms,
            msg: msg.clone(),
            control: control.clone(),
            uploads: Arc::new(tokio::sync::Semaphore::new(crate::cdn::UPLOAD_BUDGET_KIB)),
        });
        Self {
            msg,
            peers,
            chain,
            billing,
            cdn,
            vpn_exit: std::sync::OnceLock::new(),
            forwarder: std::sync::OnceLock::new(),
            control,
            realtime: Arc::new(crate::realtime::flows::Flows::new(core.clone())),
            core,
        }
    }

    /// What a client session needs.
    pub fn session_context(&self) -> SessionContext {
        SessionContext {
            msg: self.msg.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
        }
    }

    /// What a link needs.
    pub fn link_context(&self) -> LinkContext {
        LinkContext {
            msg: self.msg.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            billing: self.billing.clone(),
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
