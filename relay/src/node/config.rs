//! The relay's data directory and its TOML configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use top_proto::addr::RelayAddr;

/// File names inside a relay's data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The relay's identity key (mode 0600).
pub const KEY_FILE: &str = "identity.key";
/// The relay's durable store (mailboxes; later the CDN index).
pub const STORE_FILE: &str = "store.redb";
/// The chain's store (blocks, ledger state, receipts the relay holds).
pub const CHAIN_FILE: &str = "chain.redb";
/// The chain's genesis (written by `toprelay init --dev`, or fetched from the upstream relay).
pub const GENESIS_FILE: &str = "genesis.json";
/// The dev chain's faucet key (validator only).
pub const FAUCET_KEY_FILE: &str = "faucet.key";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The data directory has no configuration.
    #[error("no relay configuration in {0}; create one with `toprelay init --data-dir {0}`")]
    Missing(String),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a relay configuration.
    #[error("invalid configuration in {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// An environment override does not parse.
    #[error("environment variable {name}={value:?} is invalid: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

/// Mailbox limits for offline recipients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MailboxConfig {
    /// Longest time a message waits for its recipient, in seconds (senders may ask for less).
    pub ttl_secs: u32,
    /// Most messages waiting per recipient.
    pub max_messages: u64,
    /// Most sealed bytes waiting per recipient.
    pub max_bytes: u64,
    /// How many relays (the recipient's homes, drawn over the registry) keep a copy. Senders
    /// pay for [`top_billing::STORED_COPIES`]; more copies are this relay's own expense.
    pub home_replicas: usize,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 7 * 24 * 3600,
            max_messages: 10_000,
            max_bytes: 64 << 20,
            home_replicas: top_billing::STORED_COPIES as usize,
        }
    }
}

/// How the relay takes part in the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Validator only: milliseconds between blocks.
    pub block_interval_ms: u64,
    /// Follower: the relay blocks come from (default: the first peer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<RelayAddr>,
    /// On a chain whose validators change by stake: run the consensus engine, voting in the
    /// epochs whose validator set names this relay (its stake, `billing.stake`, must be at
    /// least the chain's validator stake and among the largest), following otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validate: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            block_interval_ms: 1000,
            upstream: None,
            validate: false,
        }
    }
}

/// What the relay charges and how it gets paid. Amounts are TOP in decimal ("0.01").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Whether sessions must pay (needs a chain).
    pub enabled: bool,
    /// Stake the relay keeps locked; topped up from its balance on start.
    pub stake: String,
    /// Price per MiB of messages sent, and again delivered (both paid by the sender).
    pub msg_price_per_mib: String,
    /// Extra price per MiB of messages stored in a mailbox.
    pub mailbox_price_per_mib: String,
    /// Price per MiB carried through a pipe.
    pub pipe_price_per_mib: String,
    /// Price per MiB of VPN traffic (as exit or as entry of a 2-hop route).
    pub vpn_price_per_mib: String,
    /// Price per MiB of CDN chunks fetched by SDK clients or published, and served through the
    /// HTTP gateway against a publisher's allowance.
    pub cdn_price_per_mib: String,
    /// Unpaid usage the relay carries before it waits for a receipt.
    pub credit_window: String,
    /// Unpaid usage carried for one payer account over all its sessions (recently ended ones
    /// included).
    pub credit_per_payer: String,
    /// Unpaid usage carried for one client address over all its sessions (recently ended ones
    /// included); member relays' connections count only against their payers.
    pub credit_per_address: String,
    /// Settle a channel once its unsettled receipts reach this much.
    pub settle_threshold: String,
    /// What a channel to another relay locks (this relay pays the relays it forwards to).
    pub link_lock: String,
    /// Deposit kept for channels to other relays (topped up from the faucet on a dev chain).
    pub link_deposit: String,
    /// How long traffic waits for a receipt once the credit window is used up, in milliseconds.
    pub pay_wait_ms: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stake: "0".into(),
            msg_price_per_mib: "0.01".into(),
            mailbox_price_per_mib: "0.05".into(),
            pipe_price_per_mib: "0.002".into(),
            vpn_price_per_mib: "0.001".into(),
            cdn_price_per_mib: "0.001".into(),
            credit_window: "0.05".into(),
            credit_per_payer: "0.2".into(),
            credit_per_address: "0.8".into(),
            settle_threshold: "0.01".into(),
            link_lock: "1".into(),
            link_deposit: "10".into(),
            pay_wait_ms: 5_000,
        }
    }
}

/// The VPN exit's settings (used when `vpn_exit = true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct VpnConfig {
    /// Client tunnel addresses; the first host is the exit's own TUN address.
    pub pool: ipnet::Ipv4Net,
    /// Carry IPv6 too (when this host has an IPv6 default route).
    pub ipv6: bool,
    /// Client IPv6 addresses: a unique local prefix is masqueraded (NAT66); a prefix routed
    /// to this host is handed out as is. Each client gets the host number of its IPv4 address.
    pub pool6: ipnet::Ipv6Net,
    /// Name of the exit's TUN device.
    pub tun: String,
    /// Largest IP packet carried (the TUN device's MTU).
    pub mtu: u16,
    /// DNS resolver offered to clients (reached through the tunnel); default: the first
    /// non-loopback `nameserver` of the exit's `/etc/resolv.conf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<std::net::Ipv4Addr>,
    /// Set up forwarding and NAT on start (and undo on shutdown); off when the owner does it.
    pub nat: bool,
    /// Let clients reach private, link-local and shared address ranges (off: the exit's own
    /// networks stay unreachable from tunnels).
    pub allow_private: bool,
}

impl Default for VpnConfig {
    fn default() -> Self {
        Self {
            pool: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 77, 0, 0), 24)
                .unwrap_or_default(),
            ipv6: true,
            pool6: ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::new(0xfd54, 0x6f70, 0x7670, 0, 0, 0, 0, 0),
                64,
            )
            .unwrap_or_default(),
            tun: "topx0".into(),
            mtu: 1380,
            dns: None,
            nat: true,
            allow_private: false,
        }
    }
}

/// A relay's configuration file (`config.toml` in the data directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// TCP address of the HTTP port (`/` dashboard, `/health`, `/metrics`, `/api/…`, `/cdn/…`).
    pub http: SocketAddr,
    /// Secret that `/api/…` and `/metrics` require (`Authorization: Bearer …`); needed when
    /// `http` is not a loopback address. `/`, `/health` and `/cdn/…` stay open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_token: Option<String>,
    /// `host:port` others use to reach this relay, when `listen` is a wildcard or behind NAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<String>,
    /// Relays to link to: members where there is no chain or a dev chain; on a real chain
    /// only once registered (addresses then come from the registry).
    #[serde(default)]
    pub peers: Vec<RelayAddr>,
    /// Where this relay says it is, published in its registry record (self-declared).
    #[serde(default)]
    pub region: String,
    /// Register on the chain (or update the record) on every start, staking `billing.stake`
    /// (dev chains fund it from the faucet). Off: only `toprelay register` does.
    #[serde(default = "default_true")]
    pub auto_register: bool,
    /// Most concurrent QUIC connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// New connections accepted per second from one IP address (bursts of twice that).
    #[serde(default = "default_connections_per_ip")]
    pub new_connections_per_ip: u32,
    /// Most connections open at once from one IP address.
    #[serde(default = "default_open_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Mailbox limits.
    #[serde(default)]
    pub mailbox: MailboxConfig,
    /// Chain participation.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Prices, stake and settlement.
    #[serde(default)]
    pub billing: BillingConfig,
    /// UDP port that forwards 2-hop routes' packets (entry role; a firewall must let it
    /// through). Unset: the QUIC port + 1, or any free port if that one is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_port: Option<u16>,
    /// Most 2-hop routes forwarded at once (each holds 128 KiB of buffers).
    #[serde(default = "default_forward_routes")]
    pub forward_routes: usize,
    /// Forward 2-hop routes in the kernel (nftables) where it can: it needs CAP_NET_ADMIN, the
    /// `nft` command and `net.ipv4.ip_forward = 1`, and takes IPv4 routes only. Otherwise (and
    /// for packets beyond a client's held credit) they are forwarded in user space.
    #[serde(default = "default_true")]
    pub kernel_forward: bool,
    /// Serve as a VPN exit: open a TUN device and carry clients' packets to the internet.
    #[serde(default)]
    pub vpn_exit: bool,
    /// VPN exit settings.
    #[serde(default)]
    pub vpn: VpnConfig,
    /// Most bytes of CDN chunks cached for others (least recently used evicted first).
    #[serde(default = "default_cdn_cache_bytes")]
    pub cdn_cache_bytes: u64,
    /// CDN gateway requests per second from one IP address (bursts of twice that).
    #[serde(default = "default_http_requests_per_ip")]
    pub cdn_http_requests_per_ip: u32,
    /// Most bytes one publisher may keep published on this relay.
    #[serde(default = "default_cdn_publish_quota_bytes")]
    pub cdn_publish_quota_bytes: u64,
    /// The control plane (discovery, content providers, gossip).
    #[serde(default)]
    pub control: crate::control::config::ControlConfig,
    /// Seconds a link to another relay stays up unused once nothing needs it (links are made
    /// on demand: to the home relays of this relay's clients, and where traffic goes).
    #[serde(default = "default_link_idle_secs")]
    pub link_idle_secs: u64,
}

fn default_link_idle_secs() -> u64 {
    60
}

fn default_cdn_cache_bytes() -> u64 {
    4 << 30
}

fn default_http_requests_per_ip() -> u32 {
    100
}

fn default_cdn_publish_quota_bytes() -> u64 {
    1 << 30
}

fn default_max_connections() -> usize {
    10_000
}

fn default_connections_per_ip() -> u32 {
    50
}

fn default_open_connections_per_ip() -> usize {
    256
}

impl RelayConfig {
    /// A configuration with defaults for the given addresses.
    pub fn new(listen: SocketAddr, http: SocketAddr) -> Self {
        Self {
            listen,
            http,
            http_token: None,
            public_addr: None,
            peers: Vec::new(),
            region: String::new(),
            auto_register: true,
            max_connections: default_max_connections(),
            new_connections_per_ip: default_connections_per_ip(),
            max_connections_per_ip: default_open_connections_per_ip(),
            mailbox: MailboxConfig::default(),
            ledger: LedgerConfig::default(),
            billing: BillingConfig::default(),
            forward_port: None,
            forward_routes: default_forward_routes(),
            kernel_forward: true,
            vpn_exit: false,
            vpn: VpnConfig::default(),
            cdn_cache_bytes: default_cdn_cache_bytes(),
            cdn_http_requests_per_ip: default_http_requests_per_ip(),
            cdn_publish_quota_bytes: default_cdn_publish_quota_bytes(),
            link_idle_secs: default_link_idle_secs(),
            control: Default::default(),
        }
    }

    /// Reads `config.toml` from `data_dir`, then applies `TOPRELAY_LISTEN` / `TOPRELAY_HTTP`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let name = path.display().to_string();
        if !path.exists() {
            return Err(ConfigError::Missing(data_dir.display().to_string()));
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: name.clone(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: name.clone(),
            message: e.to_string(),
        })?;
        config.apply_env()?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: name,
            message,
        })?;
        Ok(config)
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        for (name, slot) in [
            ("TOPRELAY_LISTEN", &mut self.listen),
            ("TOPRELAY_HTTP", &mut self.http),
        ] {
            if let Ok(value) = std::env::var(name) {
                *slot = value
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        name,
                        value: value.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Writes the configuration as TOML.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let text = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(data_dir.join(CONFIG_FILE), text)
    }

    /// The `host:port` to advertise to users and peers.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        match &self.public_addr {
            Some(a) => a.clone(),
            None => bound.to_string(),
        }
    }
}

/// Paths inside a relay data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// The identity key file.
    pub fn key(&self) -> PathBuf {
        self.0.join(KEY_FILE)
    }
    /// The store file.
    pub fn store(&self) -> PathBuf {
        self.0.join(STORE_FILE)
    }
    /// The receipts store file.
    pub fn receipts(&self) -> PathBuf {
        self.0.join("receipts.redb")
    }
    /// The chain store file.
    pub fn chain(&self) -> PathBuf {
        self.0.join(CHAIN_FILE)
    }
    /// Where a validator of a chain of several keeps its consensus engine's storage (it
    /// belongs with the chain store: back them up and restore them together).
    pub fn consensus(&self) -> PathBuf {
        self.0.join("consensus")
    }
    /// The genesis file.
    pub fn genesis(&self) -> PathBuf {
        self.0.join(GENESIS_FILE)
    }
    /// The faucet key file.
    pub fn faucet_key(&self) -> PathBuf {
        self.0.join(FAUCET_KEY_FILE)
    }
    /// The CDN store directory (manifests and chunks).
    pub fn cdn(&self) -> PathBuf {
        self.0.join("cdn")
    }
    /// Publishers' egress allowances and what was served under them.
    pub fn egress(&self) -> PathBuf {
        self.0.join("egress")
    }
}

fn default_true() -> bool {
    true
}

fn default_forward_routes() -> usize {
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = RelayConfig::new(
            "127.0.0.1:7700".parse().unwrap(),
            "127.0.0.1:7780".parse().unwrap(),
        );
        config.save(dir.path()).unwrap();
        assert_eq!(RelayConfig::load(dir.path()).unwrap(), config);
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\nlisten_typo = 1\n",
        )
        .unwrap();
        let err = RelayConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("listen_typo"), "{err}");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = \"nowhere\"\nhttp = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        assert!(RelayConfig::load(dir.path()).is_err());
    }

    #[test]
    fn missing_config_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = RelayConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("toprelay init"), "{err}");
    }
}
