//! `top status`: your relay, balance, deposit, the channels you pay through with what each
//! cost per service, and the VPN's state: "what is this costing me?" on one screen.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use top_client::{Amount, ChannelId, RelayAddr, Wallet};

use crate::home::Home;
use crate::spending::{ChannelSpending, Spending};

/// How long the relay gets to answer before `status` shows what it knows locally.
const RELAY_WAIT: Duration = Duration::from_secs(5);

/// What the chain says of the account and of each recorded channel.
struct OnChain {
    balance: Amount,
    deposit: Amount,
    height: u64,
    /// Per recorded channel: `open`, `closing`, `closed` or `unknown`, with lock and settled.
    channels: Vec<(String, Option<ledger_lite::Channel>)>,
}

async fn on_chain(wallet: &Wallet, spending: &Spending) -> Result<OnChain> {
    let view = wallet.account(None).await?;
    let account = view.account.unwrap_or_default();
    let mut channels = Vec::new();
    for id in spending.channels.keys() {
        let channel = match parse_channel(id) {
            Some(c) => wallet.channel(c).await?,
            None => None,
        };
        channels.push((id.clone(), channel));
    }
    Ok(OnChain {
        balance: account.balance,
        deposit: account.deposit,
        height: view.height,
        channels,
    })
}

fn parse_channel(hex: &str) -> Option<ChannelId> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(ChannelId(out))
}

fn state_of(channel: Option<&ledger_lite::Channel>) -> &'static str {
    match channel.map(|c| c.status) {
        Some(ledger_lite::ChannelStatus::Open) => "open",
        Some(ledger_lite::ChannelStatus::Closed) => "closed",
        Some(_) => "closing",
        None => "unknown",
    }
}

/// Text from elsewhere (a relay's error, a recorded name) without terminal control characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

fn total_cost(c: &ChannelSpending) -> Amount {
    c.cost
        .values()
        .fold(Amount::ZERO, |sum, a| sum.saturating_add(*a))
}

/// Prints the status (JSON with `json`; amounts there in base units).
pub async fn run(home: &Home, relay: Option<RelayAddr>, json: bool) -> Result<()> {
    let identity = home.identity()?;
    let relay = home.relay(relay)?;
    let spending = Spending::load(home)?;
    let vpn = crate::device::read_status(&home.0.join("vpn"));
    let reached = tokio::time::timeout(RELAY_WAIT, async {
        let wallet = Wallet::connect(&relay, identity.clone()).await?;
        let chain = on_chain(&wallet, &spending).await;
        wallet.close().await;
        chain
    })
    .await;
    let (chain, relay_error) = match reached {
        Ok(Ok(chain)) => (Some(chain), None),
        Ok(Err(e)) => (None, Some(format!("{e:#}"))),
        Err(_) => (None, Some("no answer in 5 s".to_string())),
    };
    let channel_state = |id: &str| {
        chain
            .as_ref()
            .and_then(|c| c.channels.iter().find(|(c, _)| c == id))
            .and_then(|(_, c)| c.clone())
    };
    if json {
        let channels: Vec<Value> = spending
            .channels
            .iter()
            .map(|(id, c)| {
                let on_chain = channel_state(id);
                json!({
                    "channel": id,
                    "relay": c.relay,
                    "state": state_of(on_chain.as_ref()),
                    "lock": on_chain.as_ref().map(|c| c.lock),
                    "settled": on_chain.as_ref().map(|c| c.settled),
                    "signed": c.signed,
                    "cost": c.cost,
                    "usage": c.usage,
                })
            })
            .collect();
        let value = json!({
            "account": identity.account_id().to_string(),
            "relay": relay.to_string(),
            "relay_reached": chain.is_some(),
            "relay_error": relay_error,
            "height": chain.as_ref().map(|c| c.height),
            "balance": chain.as_ref().map(|c| c.balance),
            "deposit": chain.as_ref().map(|c| c.deposit),
            "channels": channels,
            "vpn": vpn.as_ref().map_or(json!({ "state": "down" }), |v| json!(v)),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("account:  {}", identity.account_id());
    match (&chain, &relay_error) {
        (Some(c), _) => {
            println!("relay:    {relay} (block {})", c.height);
            println!("balance:  {} TOP", c.balance);
            println!("deposit:  {} TOP (not locked in channels)", c.deposit);
        }
        (None, e) => println!(
            "relay:    {relay} (not reached: {}; local figures only)",
            printable(e.as_deref().unwrap_or("unknown"))
        ),
    }
    let live: Vec<_> = spending
        .channels
        .iter()
        .filter(|(id, _)| state_of(channel_state(id).as_ref()) != "closed")
        .collect();
    if live.is_empty() {
        println!("channels: none open");
    }
    for (id, c) in &live {
        let on_chain = channel_state(id);
        let lock = on_chain
            .as_ref()
            .map_or("?".to_string(), |c| c.lock.to_string());
        println!(
            "channel {}… to {} ({}): cost {} TOP, signed {} of {lock} TOP locked",
            id.get(..12).unwrap_or(id),
            printable(&c.relay),
            state_of(on_chain.as_ref()),
            total_cost(c),
            c.signed,
        );
        let parts: Vec<String> = c
            .cost
            .iter()
            .filter(|(_, a)| !a.is_zero())
            .map(|(service, a)| format!("{service} {a} TOP"))
            .collect();
        if !parts.is_empty() {
            println!("    {}", parts.join(" · "));
        }
    }
    let closed = spending.channels.len() - live.len();
    if closed > 0 {
        println!("({closed} closed channel(s) not shown; --json lists them)");
    }
    match vpn {
        Some(v) => println!(
            "vpn:      {} via exit {}: {} bytes, {} TOP to the exit so far",
            printable(&v.state),
            printable(&v.exit),
            v.bytes_sent.saturating_add(v.bytes_received),
            v.paid_exit
        ),
        None => println!("vpn:      down"),
    }
    Ok(())
}
