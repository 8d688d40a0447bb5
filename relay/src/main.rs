//! `toprelay`: run a TOP relay node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_relay::config::{DataDir, RelayConfig};
use top_relay::status::RelayStatus;
use top_relay::{InitOptions, Relay, init};

mod cli_tools;
mod systemd;

/// Run a relay node of the TOP network.
#[derive(Parser)]
#[command(name = "toprelay", version, about)]
struct Cli {
    /// Log at debug level and show full error reports.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: identity key (mode 0600) and config.toml.
    Init {
        /// Where the relay keeps its key, config and store.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
        /// UDP address of the QUIC endpoint.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// TCP address of the HTTP port (/health, /metrics, /api/status).
        #[arg(long, default_value = "127.0.0.1:7780")]
        http: SocketAddr,
        /// host:port others use to reach this relay, if not the listen address.
        #[arg(long)]
        public_addr: Option<String>,
        /// A relay to link to, as <relay-id>@<host>:<port> (repeatable).
        #[arg(long = "peer", value_name = "ID@ADDR")]
        peers: Vec<RelayAddr>,
        /// A relay to join the network through, as <relay-id>@<host>:<port> (repeatable): the
        /// rest is found through it; blocks and the genesis of a dev chain come from the first.
        #[arg(long = "bootstrap", value_name = "ID@ADDR")]
        bootstrap: Vec<RelayAddr>,
        /// Create a dev chain: this relay is its validator, and a faucet hands out test TOP.
        #[arg(long, conflicts_with = "genesis")]
        dev: bool,
        /// Join the chain of this genesis (made by `toprelay genesis new`).
        #[arg(long, value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// Offer to validate (a chain whose validators change by stake): run the consensus
        /// engine and stake the chain's validator stake (fund this relay first).
        #[arg(long, requires = "genesis")]
        validate: bool,
    },
    /// Make or use the genesis of a network of several validators.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    Run {
        /// The data directory made by `toprelay init`.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Register the running relay on the chain (or update its record), staking what the config
    /// asks (`billing.stake`, at least the chain's minimum; a dev chain's faucet funds it).
    Register {
        /// The data directory made by `toprelay init`.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Remove the running relay from the registry; its stake starts unbonding. Set
    /// `auto_register = false` in the config, or the next start registers it again.
    Deregister {
        /// The data directory made by `toprelay init`.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Check a relay's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `toprelay completions bash > /etc/bash_completion.d/toprelay`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `toprelay man | man -l -`).
    Man,
    /// Show the relay's id, address and, when it runs, live figures.
    Status {
        /// The data directory made by `toprelay init`.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and explain each problem (exit status 1 when there is one).
    Check {
        /// The data directory whose config.toml to check.
        #[arg(long, env = "TOPRELAY_DATA_DIR", conflicts_with = "file")]
        data_dir: Option<PathBuf>,
        /// A config file to check instead.
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GenesisCommand {
    /// Write a new chain's genesis: the named relays are its validators, each funded to stake.
    New {
        /// The chain's name.
        #[arg(long)]
        chain_id: String,
        /// A validator's relay id (repeatable; `toprelay init` prints it).
        #[arg(long = "validator", value_name = "RELAY_ID", required = true)]
        validators: Vec<top_proto::id::RelayId>,
        /// Also make a faucet handing out test TOP; its key is written to faucet.key beside
        /// the genesis (give it to one relay with `toprelay genesis use --faucet-key`).
        #[arg(long)]
        faucet: bool,
        /// Blocks a stake takes to unbond.
        #[arg(long, default_value_t = top_relay::ledger::network::UNBONDING_BLOCKS)]
        unbonding_blocks: u64,
        /// Blocks in an epoch: at each epoch's end the relays staking most become the next
        /// epoch's validators (0: the named validators stay validators for good).
        #[arg(long, default_value_t = 0)]
        epoch_blocks: u64,
        /// The most validators an epoch has (default: as many as are named).
        #[arg(long)]
        max_validators: Option<u32>,
        /// The least stake of a validator, in TOP.
        #[arg(long, default_value = "10000")]
        validator_stake: String,
        /// A relay to join the network through, as <relay-id>@<host>:<port> (repeatable): a
        /// relay or `top init` given only the genesis starts from these.
        #[arg(long = "bootstrap", value_name = "ID@ADDR")]
        bootstrap: Vec<RelayAddr>,
        /// Where to write the genesis (never over an existing file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a genesis in a relay's data directory (made by `toprelay init`).
    Use {
        /// The relay's data directory.
        #[arg(long, env = "TOPRELAY_DATA_DIR")]
        data_dir: PathBuf,
        /// This relay also serves the network's faucet with this key.
        #[arg(long, value_name = "FILE")]
        faucet_key: Option<PathBuf>,
        /// The genesis file.
        genesis: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let filter = if verbose {
        "debug,quinn=info"
    } else {
        "info,quinn=warn"
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(top_relay::node::recent_errors::RecentErrors)
        .init();
    match run_cli(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line; the backtrace (RUST_BACKTRACE) only with -v.
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    // Commands that need no runtime.
    match &cli.command {
        Command::Completions { shell } => {
            cli_tools::completions::<Cli>(*shell);
            return Ok(());
        }
        Command::Man => return cli_tools::man::<Cli>(),
        Command::Config(ConfigCommand::Check { data_dir, file }) => {
            let path = match (data_dir, file) {
                (_, Some(file)) => file.clone(),
                (Some(dir), None) => dir.join("config.toml"),
                (None, None) => bail!("give a config file or --data-dir"),
            };
            return cli_tools::config_check(&path);
        }
        _ => {}
    }
    // Worker threads: TOPRELAY_WORKER_THREADS, else one less than the cores (at least one), so
    // the kernel's packet work (TUN, forwarding, NAT) keeps a core: on 2 cores that carried 25%
    // more VPN traffic than a worker per core (scripts/bench-vpn.sh).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match std::env::var("TOPRELAY_WORKER_THREADS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .context("TOPRELAY_WORKER_THREADS must be a positive number")?,
        Err(_) => cores.saturating_sub(1).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Init {
                data_dir,
                listen,
                http,
                public_addr,
                peers,
                bootstrap,
                dev,
                genesis,
                validate,
            } => {
                let genesis = match genesis {
                    Some(path) => Some(top_relay::ledger::network::read_genesis(&path)?),
                    None => None,
                };
                let (id, config) = init(
                    &data_dir,
                    InitOptions {
                        listen,
                        http,
                        public_addr,
                        peers,
                        bootstrap,
                        dev,
                        genesis,
                        validate,
                    },
                )?;
                let addr = RelayAddr {
                    id,
                    host_port: config.advertised(config.listen),
                };
                println!("{addr}");
                eprintln!(
                    "relay initialised in {}; start it with: toprelay run --data-dir {}",
                    data_dir.display(),
                    data_dir.display()
                );
                Ok(())
            }
            Command::Genesis(command) => genesis(command),
            Command::Run { data_dir } => run(&data_dir).await,
            Command::Status { data_dir, json } => status(&data_dir, json).await,
            Command::Register { data_dir } => registration(&data_dir, false).await,
            Command::Deregister { data_dir } => registration(&data_dir, true).await,
            Command::Config(_) | Command::Completions { .. } | Command::Man => Ok(()),
        }
    })
}

fn genesis(command: GenesisCommand) -> Result<()> {
    use top_relay::ledger::network;
    match command {
        GenesisCommand::New {
            chain_id,
            validators,
            faucet,
            unbonding_blocks,
            epoch_blocks,
            max_validators,
            validator_stake,
            bootstrap,
            out,
        } => {
            let epochs = match epoch_blocks {
                0 => None,
                blocks => Some(ledger_lite::EpochRule {
                    blocks,
                    max_validators: max_validators.unwrap_or(validators.len() as u32),
                    min_stake: validator_stake
                        .parse::<ledger_lite::Amount>()
                        .map_err(|e| anyhow::anyhow!("--validator-stake {validator_stake}: {e}"))?,
                }),
            };
            let opts = network::GenesisOptions {
                chain_id,
                validators,
                faucet,
                unbonding_blocks,
                epochs,
                bootstrap,
            };
            let (genesis, faucet) = network::new_genesis(&opts)?;
            let key_path = out.with_file_name("faucet.key");
            if faucet.is_some() && key_path.exists() {
                bail!("{} exists already", key_path.display());
            }
            if out.exists() {
                bail!("{} exists already", out.display());
            }
            // The key first: a genesis whose faucet key was lost would hold its TOP for good.
            if let Some(faucet) = faucet {
                faucet
                    .save(&key_path)
                    .with_context(|| format!("writing {}", key_path.display()))?;
                eprintln!(
                    "faucet key: {} (give it to one relay only; keep it out of the genesis you share)",
                    key_path.display()
                );
            }
            network::write_genesis(&out, &genesis)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
            eprintln!(
                "chain {} with {} validators; give it to each relay with: toprelay genesis use --data-dir DIR {}",
                genesis.name,
                genesis.validators.len(),
                out.display()
            );
            Ok(())
        }
        GenesisCommand::Use {
            data_dir,
            faucet_key,
            genesis,
        } => {
            let parsed = network::read_genesis(&genesis)?;
            let dir = DataDir(data_dir.clone());
            network::use_genesis(&dir, &parsed, faucet_key.as_deref())?;
            // Validators find each other through their configured peers (the registry is
            // empty at first): say which this relay has no address for.
            let me = Identity::load(&dir.key())?.account_id();
            let config = RelayConfig::load(&data_dir)?;
            let known = |v: &top_proto::id::AccountId| {
                *v == me || config.peers.iter().any(|p| p.id.as_bytes() == v.as_bytes())
            };
            let missing: Vec<String> = parsed
                .validators
                .iter()
                .filter(|v| !known(v))
                .map(|v| top_proto::id::RelayId::from_wire(*v.as_bytes()).to_string())
                .collect();
            if !missing.is_empty() {
                eprintln!(
                    "warning: no address for {} validator(s) ({}): add them as peers \
                     (peers = [\"ID@HOST:PORT\", …] in config.toml) or this relay cannot reach them \
                     until they register",
                    missing.len(),
                    missing.join(", ")
                );
            }
            eprintln!(
                "{} joins chain {}; start it with: toprelay run --data-dir {}",
                data_dir.display(),
                parsed.name,
                data_dir.display()
            );
            Ok(())
        }
    }
}

async fn run(data_dir: &Path) -> Result<()> {
    let relay = Relay::start(data_dir).await?;
    println!("{}", relay.addr());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = systemd::report(&relay) => {}
    }
    systemd::stopping();
    tracing::info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

async fn registration(data_dir: &Path, deregister: bool) -> Result<()> {
    let config = RelayConfig::load(data_dir)?;
    let identity = Identity::load(&DataDir(data_dir.to_path_buf()).key())?;
    let live = fetch_status(&config).await.with_context(|| {
        format!(
            "the relay is not running (start it with: toprelay run --data-dir {})",
            data_dir.display()
        )
    })?;
    let addr: RelayAddr = live.addr.parse().context("the relay's address")?;
    let height =
        top_relay::node::registration::submit_from_cli(addr, identity, &config, deregister).await?;
    if deregister {
        println!("deregistered in block {height}; the stake is unbonding");
    } else {
        println!("registered in block {height}");
    }
    Ok(())
}

async fn status(data_dir: &Path, json: bool) -> Result<()> {
    let config = RelayConfig::load(data_dir)?;
    let identity = Identity::load(&DataDir(data_dir.to_path_buf()).key())?;
    let addr = RelayAddr {
        id: identity.relay_id(),
        host_port: config.advertised(config.listen),
    };
    let live = fetch_status(&config).await.ok();
    if json {
        let value = match &live {
            Some(s) => {
                let mut v = serde_json::to_value(s)?;
                v["running"] = true.into();
                v
            }
            None => {
                serde_json::json!({ "id": addr.id.to_string(), "addr": addr.to_string(), "running": false })
            }
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("id:      {}", addr.id);
    println!(
        "addr:    {}",
        live.as_ref()
            .map(|s| s.addr.clone())
            .unwrap_or(addr.to_string())
    );
    let Some(s) = live else {
        println!(
            "state:   not running (start it with: toprelay run --data-dir {})",
            data_dir.display()
        );
        return Ok(());
    };
    println!("state:   running for {}s (v{})", s.uptime_secs, s.version);
    println!("http:    {}", s.http);
    println!("clients: {} connected", s.sessions);
    println!(
        "links:   {} up of {} known",
        s.links.len(),
        s.known_relays.len()
    );
    let c = &s.control;
    let reach = match c.reachability {
        top_relay::control::Reachability::Off => "control plane off (no chain yet, or disabled)",
        top_relay::control::Reachability::Unknown => {
            "no relay has reached this one yet: if that lasts, it needs a public address \
             (--public-addr with its QUIC port open for UDP, and [control] listen open for TCP)"
        }
        top_relay::control::Reachability::Public => "reachable (relays connected to it)",
    };
    println!(
        "network: {} relays discovered, {} control peers; {reach}",
        c.discovered, c.connected
    );
    if !c.observed.is_empty() {
        println!("seen as: {}", c.observed.join(", "));
    }
    println!(
        "mailbox: {} messages, {} bytes waiting",
        s.mailbox.messages, s.mailbox.bytes
    );
    println!(
        "messages: {} received, {} delivered, {} stored, {} rejected",
        s.messages_received, s.messages_delivered, s.messages_stored, s.messages_rejected
    );
    println!("pipes:   {} opened, {} bytes", s.pipes_opened, s.pipe_bytes);
    match &s.ledger {
        None => println!("ledger:  none (no chain: no billing)"),
        Some(l) => {
            let role = if l.validator { "validator" } else { "follower" };
            println!("ledger:  {} at height {} ({role})", l.chain, l.height);
            println!(
                "chain:   finalized height {}, epoch {}, {} validator{}",
                l.finalized,
                l.epoch,
                l.validators.len(),
                if l.validators.len() == 1 { "" } else { "s" }
            );
            for v in &l.validators {
                let me = if *v == l.account { " (this relay)" } else { "" };
                println!("         validator {v}{me}");
            }
            if !l.validator {
                println!(
                    "txs:     {} by gossip, {} through the upstream",
                    l.txs_by_gossip, l.txs_upstream
                );
            }
            println!("account: {}", l.account);
            println!("balance: {} TOP, stake {} TOP", l.balance, l.stake);
            println!(
                "prices:  {} TOP/MiB messages, {} TOP/MiB mailbox, {} TOP/MiB pipes{}",
                l.prices.msg,
                l.prices.mailbox,
                l.prices.pipe,
                if l.billing { "" } else { " (billing off)" }
            );
            println!(
                "billing: {} bytes metered, {} receipts taken, {} pending ({} TOP)",
                l.billed_bytes, l.receipts_taken, l.pending_receipts, l.pending_amount
            );
            println!(
                "fees:    {} TOP earned, {} TOP burned",
                l.fees_earned, l.fees_burned
            );
        }
    }
    Ok(())
}

/// GET /api/status from a running relay (plain HTTP/1.0 on loopback or the configured address).
async fn fetch_status(config: &RelayConfig) -> Result<RelayStatus> {
    let auth = match &config.http_token {
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    let request = format!("GET /api/status HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n");
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(config.http).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), fetch).await??;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response")
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "status request failed: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(serde_json::from_str(body)?)
}
