//! `top wallet …`: balances and transactions. Amounts are TOP with decimals ("1.5"); `--json`
//! prints exact integer base units (1 TOP = 10^9).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use top_client::{AccountId, Amount, ChannelId, Committed, RelayAddr, Wallet};

use crate::home::Home;

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Show balance, deposit, stake and unbonding (yours, or ACCOUNT's).
    Balance {
        /// Another account to look at.
        account: Option<AccountId>,
        /// Print JSON (amounts in base units).
        #[arg(long)]
        json: bool,
    },
    /// Dev chains: get AMOUNT TOP from the faucet.
    Faucet {
        /// TOP, e.g. 100 or 1.5.
        amount: Amount,
    },
    /// Send AMOUNT TOP to TO.
    Transfer {
        /// The recipient (acct1…).
        to: AccountId,
        /// TOP, e.g. 1.5.
        amount: Amount,
    },
    /// Lock AMOUNT TOP as a resource deposit (what sessions are paid from).
    Deposit {
        /// TOP.
        amount: Amount,
    },
    /// Start returning AMOUNT TOP of free deposit to your balance (after unbonding).
    Withdraw {
        /// TOP.
        amount: Amount,
    },
    /// Let USER's traffic be paid from your deposit, up to --cap, until --expires.
    Grant {
        /// The end user (acct1…).
        user: AccountId,
        /// The most the user may spend (TOP).
        #[arg(long)]
        cap: Amount,
        /// How long the grant lasts: 30s, 10m, 12h, 7d.
        #[arg(long, value_parser = parse_duration)]
        expires: Duration,
    },
    /// Start closing CHANNEL (hex id): the relay settles what it is owed, the rest comes back
    /// to your deposit after unbonding.
    CloseChannel {
        /// The channel id, 64 hex digits.
        #[arg(value_parser = parse_channel)]
        channel: ChannelId,
    },
    /// Show the chain: height, supply, burned.
    Chain {
        /// Print JSON (amounts in base units).
        #[arg(long)]
        json: bool,
    },
}

fn parse_channel(s: &str) -> Result<ChannelId, String> {
    let bad = || format!("`{s}` is not a channel id (64 hex digits)");
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(ChannelId(id))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 30s, 10m, 12h, 7d)"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("unknown unit in `{s}` (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(home: &Home, relay: Option<RelayAddr>, cmd: WalletCommand) -> Result<()> {
    let relay = home.relay(relay)?;
    let wallet = Wallet::connect(&relay, home.identity()?)
        .await
        .with_context(|| format!("connecting to {relay}"))?;
    let result = execute(&wallet, cmd).await;
    wallet.close().await;
    result
}

fn committed(what: &str, c: Committed) {
    println!("{what} (block {}, tx {})", c.height, c.hash);
}

async fn execute(wallet: &Wallet, cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Balance { account, json } => {
            let view = wallet.account(account).await?;
            let a = view.account.clone().unwrap_or_default();
            let summary = wallet.summary().await?;
            if json {
                let v = json!({
                    "height": view.height,
                    "balance": a.balance,
                    "deposit": a.deposit,
                    "stake": a.stake,
                    "unbonding": a.unbonding.iter().map(|u| json!({
                        "amount": u.amount, "release_height": u.release_height })).collect::<Vec<_>>(),
                    "next_nonce": view.next_nonce,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("balance:  {} TOP", a.balance);
            println!("deposit:  {} TOP", a.deposit);
            if !a.stake.is_zero() {
                println!("stake:    {} TOP", a.stake);
            }
            for u in &a.unbonding {
                let blocks = u.release_height.saturating_sub(view.height);
                println!(
                    "unbonding: {} TOP, back in your balance at block {} (in {blocks} blocks)",
                    u.amount, u.release_height
                );
            }
            println!("chain:    {} at height {}", summary.name, view.height);
        }
        WalletCommand::Faucet { amount } => {
            let c = wallet.faucet(amount).await?;
            committed(&format!("received {amount} TOP from the faucet"), c);
        }
        WalletCommand::Transfer { to, amount } => {
            let c = wallet.transfer(to, amount).await?;
            committed(&format!("sent {amount} TOP to {to}"), c);
        }
        WalletCommand::Deposit { amount } => {
            let c = wallet.deposit(amount).await?;
            committed(&format!("deposited {amount} TOP"), c);
        }
        WalletCommand::Withdraw { amount } => {
            let c = wallet.withdraw(amount).await?;
            let unbonding = wallet.summary().await?.unbonding_blocks;
            committed(&format!("withdrawing {amount} TOP"), c);
            println!(
                "it returns to your balance at block {} (after {unbonding} blocks of unbonding)",
                c.height + unbonding
            );
        }
        WalletCommand::Grant { user, cap, expires } => {
            if cap.is_zero() {
                bail!("--cap must be more than zero");
            }
            let c = wallet.grant(user, cap, expires).await?;
            committed(
                &format!("{user} may spend up to {cap} TOP of your deposit for {expires:?}"),
                c,
            );
        }
        WalletCommand::CloseChannel { channel } => {
            let c = wallet.close_channel(channel).await?;
            committed("channel closing", c);
        }
        WalletCommand::Chain { json } => {
            let s = wallet.summary().await?;
            if json {
                let v = json!({
                    "chain": s.name, "height": s.height, "genesis_supply": s.genesis_supply,
                    "total_supply": s.total_supply, "burned": s.burned, "accounts": s.accounts,
                    "channels": s.channels, "invariant_ok": s.invariant_ok,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("chain:   {} at height {}", s.name, s.height);
                println!("supply:  {} TOP ({} TOP burned)", s.total_supply, s.burned);
                println!("accounts: {}, open channels: {}", s.accounts, s.channels);
                println!(
                    "invariant: {}",
                    if s.invariant_ok { "holds" } else { "BROKEN" }
                );
            }
        }
    }
    Ok(())
}
