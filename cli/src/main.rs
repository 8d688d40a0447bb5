//! `top`: the TOP network's end-user command line (identity, messages, wallet, CDN, VPN, proxy).

mod cdn;
mod choose;
mod device;
mod home;
mod relays;
mod spending;
mod status;
mod vpn;
mod wallet;
mod write_out;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use home::Home;
use top_client::{AccountId, Client, Identity, Outcome, RelayAddr};

/// Use the TOP relay network: end-to-end encrypted messages through relays.
#[derive(Parser)]
#[command(name = "top", version, about)]
struct Cli {
    /// Where your identity, settings and inbox live.
    #[arg(long, env = "TOP_HOME", default_value_os_t = default_home(), global = true)]
    home: PathBuf,
    /// Relay to use for this command, as <relay-id>@<host>:<port> (overrides the stored default).
    #[arg(long, global = true, value_name = "ID@ADDR")]
    relay: Option<RelayAddr>,
    /// Log what happens (debug level) and show full error reports.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".top")
}

#[derive(Subcommand)]
enum Command {
    /// Create your identity (and remember --relay as your default relay).
    Init {
        /// Relays to read the registry through when no --relay is given (repeatable; default:
        /// TOP_BOOTSTRAP, comma-separated): the nearest relay offering messages is chosen and
        /// remembered.
        #[arg(long = "bootstrap", value_name = "ID@ADDR")]
        bootstrap: Vec<RelayAddr>,
        /// The network's genesis file: its bootstrap relays are asked too.
        #[arg(long, value_name = "FILE")]
        genesis: Option<std::path::PathBuf>,
    },
    /// Print your id: give it to people who want to message you.
    Id,
    /// Send and read messages.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// Your TOP tokens: balance, faucet, transfers, deposits, grants.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// The CDN: publish files, fetch content by id.
    #[command(subcommand)]
    Cdn(cdn::CdnCommand),
    /// The VPN: all (or some) of this machine's traffic through an exit relay.
    #[command(subcommand)]
    Vpn(vpn::VpnCommand),
    /// The registered relays: stake, prices, services, region and round trip from here.
    Relays {
        /// Only relays offering this service (messaging, mailbox, pipes, vpn, cdn).
        #[arg(long)]
        service: Option<String>,
        /// Print JSON (amounts in base units).
        #[arg(long)]
        json: bool,
    },
    /// A SOCKS5 proxy through an exit relay (no root needed): `curl --socks5-hostname ADDR`.
    Proxy {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:1080")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        route: vpn::RouteArgs,
    },
    /// Your relay, balance, deposit, what each channel cost per service, and the VPN's state.
    Status {
        /// Print JSON (amounts in base units).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `top completions bash > ~/.local/share/bash-completion/completions/top`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `top man | man -l -`).
    Man,
}

#[derive(Subcommand)]
enum MsgCommand {
    /// Send TEXT to PEER_ID (delivered at once, or stored until the peer connects).
    Send {
        /// The recipient's id (acct1…).
        peer: AccountId,
        /// The message.
        text: String,
        /// How long the message may wait for an offline peer, in seconds.
        #[arg(long, default_value_t = top_client::DEFAULT_TTL_SECS)]
        ttl: u32,
    },
    /// Fetch waiting messages, then show your inbox.
    Inbox {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print messages as they arrive, until Ctrl-C.
    Listen {
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
}

/// Keeps freed memory in the heap for reuse. By default glibc maps each 1 MiB chunk buffer of a
/// fetch afresh and returns it on free: a profile of `top cdn get` spent 13% of the client's
/// time in page faults, page clearing and unmapping for them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reuse_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    // A parameter it refuses (0) keeps glibc's default: slower, nothing else.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reuse_freed_memory() {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(&cli.command, Command::Cdn(_)) {
        reuse_freed_memory();
    }
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "top", &mut std::io::stdout());
            return std::process::ExitCode::SUCCESS;
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let verbose = cli.verbose;
    let filter = if verbose { "debug,quinn=info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread: a client is a pipeline (TUN → tunnel → TUN). Measured on 2 cores with
    // scripts/bench-vpn.sh: hopping between worker threads cost 25% of VPN throughput, and a
    // one-worker runtime still ran the command (the pump) on the main thread and quinn's drivers
    // on the worker, a thread switch per batch: the current-thread runtime carried 10% more.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
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

async fn run(cli: Cli) -> Result<()> {
    let home = Home(cli.home.clone());
    match cli.command {
        Command::Init {
            mut bootstrap,
            genesis,
        } => {
            home.check_new()?;
            if let Some(path) = genesis {
                bootstrap.extend(choose::genesis_bootstrap(&path)?);
            }
            let relay = match cli.relay {
                Some(relay) => relay,
                None => choose_home_relay(bootstrap).await?,
            };
            let identity = home.init(Some(relay))?;
            println!("{}", identity.account_id());
            eprintln!("identity created in {}", home.0.display());
        }
        Command::Id => println!("{}", home.identity()?.account_id()),
        Command::Msg(cmd) => msg(&home, cli.relay, cmd).await?,
        Command::Wallet(cmd) => wallet::run(&home, cli.relay, cmd).await?,
        Command::Cdn(cmd) => cdn::run(&home, cli.relay, cmd).await?,
        Command::Vpn(cmd) => vpn::run(&home, cli.relay, cmd).await?,
        Command::Relays { service, json } => relays::run(&home, cli.relay, service, json).await?,
        Command::Proxy { listen, route } => vpn::proxy(&home, cli.relay, listen, route).await?,
        Command::Status { json } => status::run(&home, cli.relay, json).await?,
        Command::Completions { .. } | Command::Man => {}
    }
    Ok(())
}

/// The nearest relay offering messages, read through the bootstrap relays (with a throwaway
/// key: the registry is public).
async fn choose_home_relay(bootstrap: Vec<RelayAddr>) -> Result<RelayAddr> {
    let through = choose::bootstrap_relays(bootstrap)?;
    let directory = choose::directory(&Identity::generate(), &through).await?;
    let (relay, rtt) = choose::home_relay(&directory)?;
    eprintln!(
        "chose relay {relay} ({} relays listed; round trip {})",
        directory.relays().len(),
        rtt.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "unknown".into())
    );
    Ok(relay)
}

async fn connect(home: &Home, relay: Option<RelayAddr>) -> Result<Client> {
    let relay = home.relay(relay)?;
    let identity = home.identity()?;
    Ok(Client::connect(&relay, identity).await?)
}

async fn msg(home: &Home, relay: Option<RelayAddr>, cmd: MsgCommand) -> Result<()> {
    match cmd {
        MsgCommand::Send { peer, text, ttl } => {
            let mut client = connect(home, relay).await?;
            client.set_ttl(ttl);
            // Accepted is enough: a relay holds it durably; a busy recipient does not stall us.
            let outcome = client
                .send_tracked(&peer, text.as_bytes())
                .await
                .context("sending")?
                .accepted()
                .await
                .context("sending")?;
            match outcome {
                Outcome::Delivered => println!("delivered to {peer}"),
                Outcome::Stored => {
                    println!("stored for {peer} (offline); delivered when they connect")
                }
                Outcome::Durable => {
                    println!("accepted for {peer} (stored by the relay; delivery in progress)")
                }
            }
            record_spending(home, &client);
            client.close().await;
        }
        MsgCommand::Inbox { json } => {
            let client = connect(home, relay).await?;
            let mut fresh = Vec::new();
            tokio::select! {
                r = client.synced() => r?,
                _ = collect(&client, &mut fresh) => {}
            }
            // Messages pushed just before `Synced` may still be queued behind it.
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), client.recv()).await
            {
                fresh.push(m);
            }
            let new = home.append_inbox(&fresh)?.len();
            for m in &fresh {
                client.ack(m).await?;
            }
            record_spending(home, &client);
            client.close().await;
            let inbox = home.inbox()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inbox)?);
            } else if inbox.is_empty() {
                println!("inbox empty");
            } else {
                for e in &inbox {
                    println!("{}  {}", e.from, e.text);
                }
                eprintln!("{} message(s), {new} new", inbox.len());
            }
        }
        MsgCommand::Listen { json } => {
            let client = connect(home, relay).await?;
            let mut live = false;
            loop {
                let msg = tokio::select! {
                    // Once synced, every relay knows where to deliver: say that we listen.
                    r = client.synced(), if !live => {
                        r?;
                        live = true;
                        eprintln!("listening as {} (Ctrl-C to stop)", client.id());
                        continue;
                    }
                    m = client.recv() => m,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let Some(msg) = msg else {
                    anyhow::bail!("connection to the relay was lost");
                };
                let new = !home.append_inbox(std::slice::from_ref(&msg))?.is_empty();
                client.ack(&msg).await?;
                if !new {
                    continue; // a copy of a message already shown
                }
                if json {
                    let entry = serde_json::json!({ "from": msg.from.to_string(), "sent_ms": msg.sent_ms, "text": String::from_utf8_lossy(&msg.body) });
                    println!("{entry}");
                } else {
                    println!("{}  {}", msg.from, String::from_utf8_lossy(&msg.body));
                }
            }
            record_spending(home, &client);
            client.close().await;
        }
    }
    Ok(())
}

/// Adds what this session cost to the home's record (`top status` shows it).
fn record_spending(home: &Home, client: &Client) {
    let relay = client.relay().to_string();
    spending::record(home, &relay, client.billing(), &client.usage());
}

async fn collect(client: &Client, out: &mut Vec<top_client::Message>) {
    while let Some(m) = client.recv().await {
        out.push(m);
    }
}
