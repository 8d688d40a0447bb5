//! `top vpn up|down|status` and `top proxy`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::device::{self, VpnOptions};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;
use top_client::vpn::socks::{self, TunnelSlot};
use top_client::vpn::tunnel::TunnelOptions;
use top_client::{Amount, BillingOptions, RelayAddr};

use crate::choose::{self, RelayChoice};
use crate::home::Home;

/// Which relays carry the tunnel.
#[derive(Args, Clone)]
pub struct RouteArgs {
    /// Exit relay, or `auto`: the VPN exit chosen by price, stake and round trip from here
    /// (default: your default relay).
    #[arg(long, value_name = "ID@ADDR|auto")]
    exit: Option<RelayChoice>,
    /// With `--exit auto`: only exits declaring this region.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Entry relay for a 2-hop route, or `auto` (never the exit, outside its region when one
    /// answers): it never sees where your traffic goes, and the exit never sees your address.
    #[arg(long, value_name = "ID@ADDR|auto")]
    via: Option<RelayChoice>,
    /// TOP each new channel locks (one channel per relay that charges).
    #[arg(long, default_value = "1")]
    lock: Amount,
}

/// The `vpn` subcommands.
#[derive(Subcommand)]
// Parsed once per run: the size of a variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
pub enum VpnCommand {
    /// Bring the VPN up (needs root) and keep it up until Ctrl-C or `top vpn down`.
    Up {
        #[command(flatten)]
        route: RouteArgs,
        /// Only send this prefix through the tunnel (repeatable): split tunnelling.
        #[arg(long = "route", value_name = "CIDR")]
        routes: Vec<Ipv4Net>,
        /// DNS resolver to use through the tunnel (default: the one the exit offers).
        #[arg(long)]
        dns: Option<Ipv4Addr>,
        /// Let traffic leave outside the tunnel while it is down (the kill switch is on by default).
        #[arg(long)]
        no_kill_switch: bool,
        /// Keep the local network reachable while the kill switch is on.
        #[arg(long)]
        allow_lan: bool,
        /// TUN device name.
        #[arg(long, default_value = "top0")]
        tun: String,
    },
    /// Take the VPN down: routes, DNS and firewall exactly as they were.
    Down,
    /// Show exit, routes, bytes, cost so far and state.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn tunnel_options(
    home: &Home,
    relay: Option<RelayAddr>,
    route: RouteArgs,
) -> Result<TunnelOptions> {
    let auto = route.exit == Some(RelayChoice::Auto) || route.via == Some(RelayChoice::Auto);
    let exit = match route.exit {
        Some(e) => e,
        None => RelayChoice::Relay(
            home.relay(relay.clone())
                .context("choose an exit with --exit ID@ADDR or --exit auto")?,
        ),
    };
    let chosen = if auto {
        let through = home.relay(relay).context("run `top init` first")?;
        let directory = choose::directory(&home.identity()?, &[through]).await?;
        let chosen = choose::route(&directory, exit, route.via, route.region)?;
        eprintln!(
            "route: exit {}{}",
            chosen.exit,
            chosen
                .via
                .as_ref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default()
        );
        chosen
    } else {
        let RelayChoice::Relay(exit) = exit else {
            bail!("no exit");
        };
        let via = match route.via {
            Some(RelayChoice::Relay(v)) => Some(v),
            _ => None,
        };
        choose::Route { exit, via }
    };
    Ok(TunnelOptions {
        exit: chosen.exit,
        via: chosen.via,
        billing: BillingOptions {
            lock: route.lock,
            sponsor: None,
        },
    })
}

/// Runs a `vpn` subcommand.
pub async fn run(home: &Home, relay: Option<RelayAddr>, cmd: VpnCommand) -> Result<()> {
    let state_dir = home.0.join("vpn");
    match cmd {
        VpnCommand::Up {
            route,
            routes,
            dns,
            no_kill_switch,
            allow_lan,
            tun,
        } => {
            if !top_netconf::cmd::is_root() {
                bail!(
                    "`top vpn up` changes routes, DNS and the firewall: run it as root \
                     (without root, `top proxy` gives a SOCKS5 proxy over the same tunnel)"
                );
            }
            let identity = home.identity()?;
            let opts = VpnOptions {
                tunnel: tunnel_options(home, relay, route).await?,
                tun,
                routes,
                dns,
                kill_switch: !no_kill_switch,
                allow_lan,
                state_dir,
            };
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            eprintln!("bringing the VPN up through {} …", opts.tunnel.exit);
            device::run(identity, opts, shutdown).await?;
            eprintln!("VPN down; routes and DNS restored");
        }
        VpnCommand::Down => {
            let what = device::down(&state_dir).await?;
            println!("{what}");
        }
        VpnCommand::Status { json } => {
            let status = device::read_status(&state_dir);
            if json {
                let value = match &status {
                    Some(s) => serde_json::to_value(s)?,
                    None => serde_json::json!({ "state": "down" }),
                };
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            let Some(s) = status else {
                println!("VPN is down");
                return Ok(());
            };
            println!("state:       {}", s.state);
            println!("exit:        {}", s.exit);
            if let Some(via) = &s.via {
                println!("via:         {via}");
            }
            println!("device:      {} ({})", s.tun, s.address);
            println!("routes:      {}", s.routes.join(", "));
            println!("dns:         {}", s.dns.as_deref().unwrap_or("unchanged"));
            println!("kill switch: {}", if s.kill_switch { "on" } else { "off" });
            println!("sent:        {} bytes", s.bytes_sent);
            println!(
                "acknowledged: {} bytes (of those sent, by the exit's signed count)",
                s.bytes_acked
            );
            println!("received:    {} bytes", s.bytes_received);
            println!("paid exit:   {} TOP", s.paid_exit);
            if s.via.is_some() {
                println!("paid entry:  {} TOP", s.paid_entry);
            }
            println!("reconnects:  {}", s.reconnects);
            if let Some(e) = &s.last_error {
                println!("last error:  {e}");
            }
        }
    }
    Ok(())
}

/// `top proxy`: a SOCKS5 proxy over the tunnel, without root.
pub async fn proxy(
    home: &Home,
    relay: Option<RelayAddr>,
    listen: SocketAddr,
    route: RouteArgs,
) -> Result<()> {
    let identity = home.identity()?;
    let options = tunnel_options(home, relay, route).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let exit = options.exit.to_string();
    let slot = Arc::new(TunnelSlot::new(identity, options));
    slot.get().await?;
    eprintln!(
        "SOCKS5 proxy on {} through exit {exit}; Ctrl-C to stop",
        listener.local_addr()?
    );
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    socks::serve(listener, slot, shutdown).await;
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        shutdown.cancel();
    });
}
