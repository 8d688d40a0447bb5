//! `top relays`: the registered relays (the chain's registry), with stake, prices, services and
//! the round trip measured from here.

use anyhow::Result;
use serde_json::json;
use top_client::{Directory, RelayAddr, Wallet};

use crate::home::Home;

/// Lists registered relays, optionally only those offering `service`.
pub async fn run(
    home: &Home,
    relay: Option<RelayAddr>,
    service: Option<String>,
    json: bool,
) -> Result<()> {
    let identity = home.identity()?;
    let relay = home.relay(relay)?;
    let wallet = Wallet::connect(&relay, identity).await?;
    let directory = Directory::fetch(&wallet).await;
    wallet.close().await;
    let mut listed = directory?.relays().to_vec();
    if let Some(service) = &service {
        listed.retain(|r| r.entry.record.services.offers(service));
    }
    let (relays, probes): (Vec<_>, Vec<_>) = listed.into_iter().map(|l| (l.entry, l.rtt)).unzip();
    if json {
        let list: Vec<_> = relays
            .iter()
            .zip(&probes)
            .map(|(r, rtt)| {
                let id = top_client::RelayId::from_wire(*r.id.as_bytes());
                json!({
                    "id": id.to_string(),
                    "addr": r.record.addrs.first().map(|a| format!("{id}@{a}")),
                    "addrs": r.record.addrs,
                    "stake": r.stake.units().to_string(),
                    "services": r.record.services.names(),
                    "prices_per_mib": {
                        "msg": r.record.prices.msg.units().to_string(),
                        "mailbox": r.record.prices.mailbox.units().to_string(),
                        "pipe": r.record.prices.pipe.units().to_string(),
                        "vpn": r.record.prices.vpn.units().to_string(),
                        "cdn": r.record.prices.cdn.units().to_string(),
                    },
                    "region": r.record.region,
                    "rtt_ms": rtt.map(|d| d.as_secs_f64() * 1000.0),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if relays.is_empty() {
        println!(
            "no registered relays{}",
            service
                .map(|s| format!(" offering {s}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<18} {:<22} {:>10} {:>9} {:>9} {:<8} {:>8}  services",
        "relay", "address", "stake", "msg/MiB", "vpn/MiB", "region", "rtt"
    );
    for (r, rtt) in relays.iter().zip(&probes) {
        let rtt = rtt.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        });
        println!(
            "{:<18} {:<22} {:>10} {:>9} {:>9} {:<8} {:>8}  {}",
            top_client::RelayId::from_wire(*r.id.as_bytes()).short(),
            r.record.addrs.first().map_or("", String::as_str),
            r.stake.to_string(),
            r.record.prices.msg.to_string(),
            r.record.prices.vpn.to_string(),
            if r.record.region.is_empty() {
                "-"
            } else {
                &r.record.region
            },
            rtt,
            r.record.services.names().join(","),
        );
    }
    Ok(())
}
