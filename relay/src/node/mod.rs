//! The node itself: creating a relay's data directory, starting its roles and shutting them down
//! gracefully; the QUIC endpoint's accept loop ([`accept`]), links kept up ([`dialer`], [`peers`]),
//! configuration, the HTTP port, metrics and status.

pub mod accept;
pub mod config;
pub mod config_check;
pub mod core;
pub mod dashboard;
pub mod dialer;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod peers;
pub mod process_metrics;
pub mod recent_errors;
pub mod registration;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use top_proto::addr::RelayAddr;
use top_proto::id::RelayId;
use top_proto::identity::{Identity, KeyFileError};
use tracing::info;

use crate::msg::mailbox::{Mailbox, StoreError};
use crate::node::accept::accept_loop;
use crate::node::config::{ConfigError, DataDir, RelayConfig};
use crate::node::state::Shared;
use crate::util::unix_now;

/// How often expired mailbox messages are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long shutdown waits for tasks to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Why a relay could not be created or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The data directory already holds a relay.
    #[error("{0} already holds a relay configuration; use another --data-dir or remove it")]
    AlreadyInitialized(String),
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Key file problem.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Store problem (e.g. another relay already runs on this data directory).
    #[error("{0} (is another relay running on this data directory?)")]
    Store(#[from] StoreError),
    /// A socket could not be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] top_proto::tls::TlsError),
    /// File system error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The receipt store failed to open.
    #[error(transparent)]
    Receipts(#[from] crate::billing::receipts::ReceiptStoreError),
    /// The chain store failed to open.
    #[error("chain: {0}")]
    Chain(#[from] ledger_lite::StoreError),
    /// The VPN exit could not set up its TUN device, forwarding or NAT.
    #[error("VPN exit: {0}")]
    Vpn(#[from] top_netconf::NetError),
    /// The forwarding port of 2-hop routes could not be bound.
    #[error("forwarding port: {0}")]
    Forward(std::io::Error),
}

/// What `toprelay init` writes.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// QUIC address.
    pub listen: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Advertised `host:port`, when it differs from `listen`.
    pub public_addr: Option<String>,
    /// Relays to link to.
    pub peers: Vec<RelayAddr>,
    /// Relays to join the network through (control plane; the first is the default upstream).
    pub bootstrap: Vec<RelayAddr>,
    /// Create a dev chain with this relay as its validator and a faucet.
    pub dev: bool,
    /// Join this chain (a network's genesis, from `toprelay genesis new`).
    pub genesis: Option<ledger_lite::Genesis>,
    /// Offer to validate a chain whose validators change by stake (see
    /// [`crate::node::config::LedgerConfig::validate`]).
    pub validate: bool,
}

impl InitOptions {
    /// QUIC and HTTP on loopback with ports the OS picks, no peers: for tests and examples.
    pub fn loopback() -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: any_port,
            http: any_port,
            public_addr: None,
            peers: Vec::new(),
            bootstrap: Vec::new(),
            dev: false,
            genesis: None,
            validate: false,
        }
    }

    /// [`InitOptions::loopback`] with a dev chain.
    pub fn loopback_dev() -> Self {
        Self {
            dev: true,
            ..Self::loopback()
        }
    }
}

/// Creates a data directory: a new identity key (mode 0600) and `config.toml`.
pub fn init(data_dir: &Path, opts: InitOptions) -> Result<(RelayId, RelayConfig), RelayError> {
    let dir = DataDir(data_dir.to_path_buf());
    if data_dir.join(crate::node::config::CONFIG_FILE).exists() || dir.key().exists() {
        return Err(RelayError::AlreadyInitialized(
            data_dir.display().to_string(),
        ));
    }
    std::fs::create_dir_all(data_dir)?;
    let identity = Identity::generate();
    identity.save(&dir.key())?;
    let mut config = RelayConfig::new(opts.listen, opts.http);
    config.public_addr = opts.public_addr;
    config.peers = opts.peers;
    config.control.bootstrap = opts.bootstrap;
    if opts.dev {
        crate::ledger::setup::create_dev_chain(&dir, &identity)?;
        config.billing.stake = "1000".into();
    } else if let Some(genesis) = &opts.genesis {
        crate::ledger::network::use_genesis(&dir, genesis, None)
            .map_err(|e| RelayError::Io(std::io::Error::other(e.to_string())))?;
        // A validator stakes (a genesis validator is funded for it; a relay offering to
        // validate later must be funded first) at least the chain's validator stake.
        let validator_stake = genesis
            .epochs
            .map_or(ledger_lite::Amount::ZERO, |rule| rule.min_stake);
        let stake = ledger_lite::Amount::from_top(1000)
            .unwrap_or(ledger_lite::Amount::ZERO)
            .max(validator_stake);
        if opts.validate {
            if genesis.epochs.is_none() {
                return Err(RelayError::Io(std::io::Error::other(
                    "--validate needs a chain whose validators change by stake (genesis new --epoch-blocks)",
                )));
            }
            config.ledger.validate = true;
        }
        if opts.validate || genesis.validators.contains(&identity.account_id()) {
            config.billing.stake = stake.to_string();
        }
    }
    config.save(data_dir)?;
    Ok((identity.relay_id(), config))
}

/// A running relay.
pub struct Relay {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    /// Whether a chain will open, and whether it has.
    chain_open: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Relay {
    /// Starts the relay whose data directory is `data_dir`.
    pub async fn start(data_dir: &Path) -> Result<Self, RelayError> {
        let dir = DataDir(data_dir.to_path_buf());
        let config = RelayConfig::load(data_dir)?;
        let identity = Identity::load(&dir.key())?;
        let mailbox = Mailbox::open(&dir.store(), config.mailbox.clone())?;
        let receipts = crate::billing::receipts::ReceiptStore::open(&dir.receipts())?;
        let cdn = crate::cdn::store::CdnStore::open(&dir.cdn(), config.cdn_cache_bytes)
            .map_err(|e| RelayError::Io(std::io::Error::other(e.to_string())))?;
        let egress = crate::cdn::egress::EgressBook::open(&dir.egress())?;
        let server = top_proto::tls::server_config(&identity)?;
        let endpoint =
            top_proto::net::endpoint::server_endpoint(server.clone(), config.listen, &identity)
                .map_err(|source| RelayError::Bind {
                    what: "QUIC",
                    addr: config.listen,
                    source,
                })?;
        let bound = endpoint.local_addr()?;
        let addr = RelayAddr {
            id: identity.relay_id(),
            host_port: config.advertised(bound),
        };
        let http = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| RelayError::Bind {
                what: "HTTP",
                addr: config.http,
                source,
            })?;
        let http_addr = http.local_addr()?;
        let shared = Arc::new(Shared::new(
            identity,
            addr,
            config,
            (endpoint, server),
            mailbox,
            receipts,
            (cdn, egress),
        ));

        shared.tasks.spawn(accept_loop(shared.clone()));
        shared
            .tasks
            .spawn(crate::node::dialer::run_dialers(shared.clone()));
        let router = crate::node::http::router(shared.clone(), http_addr.to_string());
        let stop = shared.shutdown.clone();
        shared.tasks.spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(http, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!("http server: {e}");
            }
        });
        shared.tasks.spawn(sweep_loop(shared.clone()));
        // Once the chain is open, the relay registers and follows the registry, and billing
        // settles on it.
        let opened = shared.clone();
        let (opened_tx, opened_rx) = tokio::sync::watch::channel(false);
        let on_open = Box::new(move || {
            opened_tx.send_replace(true);
            crate::node::registration::on_chain_open(&opened);
            if let Some(chain) = opened.chain.get() {
                crate::control::start(&opened.core, &opened.control, chain.clone());
                crate::ledger::block_times::on_chain_open(&opened.core, chain.clone());
            }
            crate::billing::settle::on_chain_open(&opened.billing);
            crate::billing::link_close::on_chain_open(&opened.billing);
        });
        let chain_open =
            crate::ledger::setup::start_chain(&shared.core, &shared.chain, &dir, on_open)?
                .then_some(opened_rx);
        if shared.config.vpn_exit {
            let exit = match crate::vpn::exit::Exit::start(&shared.core) {
                Ok(exit) => exit,
                Err(e) => {
                    shared.shutdown.cancel();
                    shared.endpoint.close(0u32.into(), b"relay failed to start");
                    return Err(RelayError::Vpn(e));
                }
            };
            shared.vpn_exit.set(exit).ok();
        }
        match start_forwarder(&shared) {
            Ok(forwarder) => {
                if shared.config.kernel_forward {
                    match forwarder.enable_kernel(&shared.core).await {
                        Ok(()) => info!("2-hop routes are forwarded in the kernel"),
                        Err(e) => info!("2-hop routes are forwarded in user space ({e})"),
                    }
                } else {
                    // What a previous run left in the kernel goes all the same.
                    crate::vpn::kernel::KernelPath::clear(&shared.core.id).await;
                }
                shared.forwarder.set(forwarder).ok();
            }
            Err(e) => {
                shared.shutdown.cancel();
                shared.endpoint.close(0u32.into(), b"relay failed to start");
                return Err(RelayError::Forward(e));
            }
        }
        info!(addr = %shared.addr, http = %http_addr, "relay running");
        Ok(Self {
            shared,
            http_addr,
            chain_open,
        })
    }

    /// Waits until the relay serves all it will: its QUIC endpoint and HTTP port are up once
    /// [`Relay::start`] returns; its chain (when it has one) once opened. False if the relay
    /// stopped first.
    pub async fn ready(&self) -> bool {
        let Some(mut open) = self.chain_open.clone() else {
            return true;
        };
        tokio::select! {
            opened = open.wait_for(|o| *o) => opened.is_ok(),
            _ = self.shared.shutdown.cancelled() => false,
        }
    }

    /// Whether the relay works as it should: not stopping, its chain (when it has one) open.
    pub fn healthy(&self) -> bool {
        !self.shared.shutdown.is_cancelled() && self.chain_open.as_ref().is_none_or(|o| *o.borrow())
    }

    /// The relay's id.
    pub fn id(&self) -> RelayId {
        self.shared.id
    }

    /// `<relay-id>@<host>:<port>` of the running relay.
    pub fn addr(&self) -> RelayAddr {
        self.shared.addr.clone()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Adds a relay to the configured ones: linked with (both ways) where configured relays
    /// count as members (no chain, or a dev chain), else only once it is registered.
    pub fn add_peer(&self, peer: RelayAddr) {
        self.shared.peers.configure([peer]);
    }

    /// The relays that keep `client`'s mailbox, as this relay computes them now.
    pub fn home_relays(&self, client: &top_proto::id::AccountId) -> Vec<RelayId> {
        self.shared.peers.home_relays(client)
    }

    /// Waits until a link to `peer` is up (in either direction).
    pub async fn wait_linked(&self, peer: &RelayId) {
        self.shared.msg.wait_link(peer).await
    }

    /// Starts closing this relay's channels to relays it has not linked with for `idle` (the
    /// daemon does so every few minutes for an hour's idleness); returns the channels.
    pub async fn close_idle_link_channels(
        &self,
        idle: std::time::Duration,
    ) -> Vec<ledger_lite::ChannelId> {
        let Some(chain) = self.shared.chain.get().cloned() else {
            return Vec::new();
        };
        crate::billing::link_close::close_idle(&self.shared.billing, &chain, idle).await
    }

    /// The linked relay believed to serve `client` now (on the client's own statement), if
    /// any.
    pub fn serving_relay(&self, client: &top_proto::id::AccountId) -> Option<RelayId> {
        self.shared.msg.link_for_client(client).map(|l| l.relay)
    }

    /// Ids of the relays linked now.
    pub fn linked(&self) -> Vec<RelayId> {
        self.shared
            .msg
            .linked()
            .into_iter()
            .map(|l| l.relay)
            .collect()
    }

    /// The relay's chain node, once open.
    pub fn chain(&self) -> Option<Arc<crate::ledger::chain::ChainNode>> {
        self.shared.chain.get().cloned()
    }

    /// The relay's control plane (discovery, providers, gossip).
    pub fn control(&self) -> &Arc<crate::control::Control> {
        &self.shared.control
    }

    /// The relay's metrics, as `/metrics` serves them (OpenMetrics text).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// A snapshot of the relay's status.
    pub fn status(&self) -> crate::node::status::RelayStatus {
        crate::node::status::RelayStatus::of(&self.shared, &self.http_addr.to_string())
    }

    /// Stops accepting, closes every connection, waits for tasks and flushes the store.
    pub async fn shutdown(self) {
        let shared = self.shared;
        shared.shutdown.cancel();
        if let Some(exit) = shared.vpn_exit.get() {
            exit.stop();
        }
        shared.endpoint.close(0u32.into(), b"relay shutting down");
        shared.tasks.close();
        if tokio::time::timeout(DRAIN_DEADLINE, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not finish within {DRAIN_DEADLINE:?}");
        }
        tokio::time::timeout(Duration::from_secs(2), shared.endpoint.wait_idle())
            .await
            .ok();
        let mailbox = shared.msg.mailbox.clone();
        drop(shared);
        tokio::task::spawn_blocking(move || mailbox.close())
            .await
            .ok();
        info!("relay stopped");
    }
}

async fn sweep_loop(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let n = shared.msg.mailbox.sweep(unix_now()).await;
                if n > 0 {
                    info!("deleted {n} expired mailbox messages");
                }
            }
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// Binds the forwarding port of 2-hop routes: `forward_port`, or else the QUIC port + 1 (any
/// free port if that one is taken).
fn start_forwarder(shared: &Shared) -> std::io::Result<Arc<crate::vpn::forward::Forwarder>> {
    let mut addr = shared.endpoint.local_addr()?;
    match shared.config.forward_port {
        Some(port) => addr.set_port(port),
        None => {
            let next = addr.port().checked_add(1).unwrap_or(0);
            addr.set_port(if addr.port() == 0 { 0 } else { next });
            if let Ok(forwarder) = crate::vpn::forward::Forwarder::start(
                &shared.core,
                addr,
                shared.config.forward_routes,
            ) {
                return Ok(forwarder);
            }
            tracing::warn!("forwarding port {addr} is taken: using any free port");
            addr.set_port(0);
        }
    }
    crate::vpn::forward::Forwarder::start(&shared.core, addr, shared.config.forward_routes)
}
