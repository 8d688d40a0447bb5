//! What this machine's sessions have cost, per channel and per service, as its own count says
//! (`spending.json` in the home directory): the relay's word is not needed to know it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use top_billing::{Prices, Usage};
use top_client::{Amount, BillingState};

use crate::home::Home;

/// File name in the home directory.
const FILE: &str = "spending.json";
/// Largest record read (a few hundred bytes a channel).
const MAX_FILE: u64 = 16 << 20;

/// What a channel's sessions used and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpending {
    /// The relay the channel pays.
    pub relay: String,
    /// Bytes used per service, over every session recorded.
    pub usage: Usage,
    /// What that usage cost per service (`msg`, `mailbox`, `pipe`, `vpn`, `cdn`), at the
    /// prices of each session's relay, in base units.
    pub cost: BTreeMap<String, Amount>,
    /// The cumulative amount signed on the channel, as of the last session.
    pub signed: Amount,
    /// When a session last recorded, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// Every channel this home has paid through, by channel id (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spending {
    /// The channels.
    pub channels: BTreeMap<String, ChannelSpending>,
}

/// Each service's share of `usage`, costed at `prices`.
fn cost_per_service(usage: &Usage, prices: &Prices) -> BTreeMap<&'static str, Amount> {
    let only = |f: fn(&mut Usage, u64), bytes: u64| {
        let mut u = Usage::default();
        f(&mut u, bytes);
        u.cost(prices).unwrap_or(Amount::ZERO)
    };
    BTreeMap::from([
        ("msg", only(|u, b| u.msg = b, usage.msg)),
        ("mailbox", only(|u, b| u.mailbox = b, usage.mailbox)),
        ("pipe", only(|u, b| u.pipe = b, usage.pipe)),
        ("vpn", only(|u, b| u.vpn = b, usage.vpn)),
        ("cdn", only(|u, b| u.cdn = b, usage.cdn)),
    ])
}

fn add(a: &Usage, b: &Usage) -> Usage {
    Usage {
        msg: a.msg.saturating_add(b.msg),
        mailbox: a.mailbox.saturating_add(b.mailbox),
        pipe: a.pipe.saturating_add(b.pipe),
        vpn: a.vpn.saturating_add(b.vpn),
        cdn: a.cdn.saturating_add(b.cdn),
    }
}

impl Spending {
    /// Reads the record (empty when there is none yet).
    pub fn load(home: &Home) -> Result<Self> {
        use std::io::Read;
        let path = home.0.join(FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes the record through a fresh temporary file (created exclusively: a link planted
    /// in its place is never followed, which matters when `sudo top vpn up` writes into a
    /// user's home), owned by the home directory's owner, renamed over the old record.
    fn save(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(FILE);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("writing in {}", dir.display()))?;
        tmp.write_all(&serde_json::to_vec_pretty(self)?)?;
        let owner = std::fs::metadata(dir)?;
        // As root (the VPN), hand the file to the home's owner; otherwise it is ours already.
        std::os::unix::fs::fchown(tmp.as_file(), Some(owner.uid()), Some(owner.gid())).ok();
        tmp.persist(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Adds one session's usage, billed through `billing` to `relay`.
    pub fn add_session(&mut self, relay: &str, billing: &BillingState, usage: &Usage, now_ms: u64) {
        let entry = self.channels.entry(hex(&billing.channel.0)).or_default();
        entry.relay = relay.to_string();
        entry.usage = add(&entry.usage, usage);
        for (service, cost) in cost_per_service(usage, &billing.prices) {
            let total = entry.cost.entry(service.to_string()).or_default();
            *total = total.checked_add(cost).unwrap_or(*total);
        }
        let signed = billing.signed.load(std::sync::atomic::Ordering::Relaxed);
        entry.signed = entry.signed.max(Amount::from_units(u128::from(signed)));
        entry.updated_ms = now_ms;
    }
}

/// Records what a session cost, when its relay charges (a failure to record is only said).
pub fn record(home: &Home, relay: &str, billing: Option<&BillingState>, usage: &Usage) {
    let Some(billing) = billing else {
        return;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let recorded = Spending::load(home).and_then(|mut s| {
        s.add_session(relay, billing, usage, now_ms);
        s.save(&home.0)
    });
    if let Err(e) = recorded {
        eprintln!("warning: cannot record what this session cost: {e:#}");
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    #[test]
    fn sessions_add_up_per_channel_and_service() {
        let prices = Prices {
            msg: "0.01".parse().unwrap(),
            mailbox: "0.02".parse().unwrap(),
            pipe: Amount::ZERO,
            vpn: "0.001".parse().unwrap(),
            cdn: Amount::ZERO,
        };
        let billing = BillingState {
            channel: top_client::ChannelId([7; 32]),
            paying: Arc::new(AtomicBool::new(true)),
            signed: Arc::new(AtomicU64::new(5_000)),
            prices,
        };
        let mib = 1 << 20;
        let session = Usage {
            msg: mib,
            vpn: 10 * mib,
            ..Usage::default()
        };
        let mut s = Spending::default();
        s.add_session("relay1x@h:1", &billing, &session, 1);
        s.add_session("relay1x@h:1", &billing, &session, 2);
        let c = &s.channels[&hex(&[7; 32])];
        assert_eq!(c.usage.msg, 2 * mib);
        assert_eq!(c.cost["msg"], "0.02".parse().unwrap());
        assert_eq!(c.cost["vpn"], "0.02".parse().unwrap());
        assert_eq!(c.cost["mailbox"], Amount::ZERO);
        assert_eq!(c.signed, Amount::from_units(5_000));
        assert_eq!(c.updated_ms, 2);
    }
}
