//! The relay registry: what a staked relay publishes about itself (addresses, services, prices,
//! region), signed by its key as a `RegisterRelay` transaction. The chain is the authority on
//! who is a relay; relays learn each other's addresses from here, never from a peer's word.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;

/// Most addresses a record may list.
pub const MAX_ADDRS: usize = 4;
/// Longest address (`host:port`) a record may list.
pub const MAX_ADDR_LEN: usize = 255;
/// Longest region name.
pub const MAX_REGION_LEN: usize = 32;

/// What a relay charges per MiB of each service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// Per MiB of messages.
    pub msg: Amount,
    /// Per MiB stored in mailboxes.
    pub mailbox: Amount,
    /// Per MiB through pipes.
    pub pipe: Amount,
    /// Per MiB of VPN traffic.
    #[serde(default)]
    pub vpn: Amount,
    /// Per MiB of CDN chunks.
    #[serde(default)]
    pub cdn: Amount,
}

impl Prices {
    /// Whether every price is zero (nothing to pay).
    pub fn is_free(&self) -> bool {
        self.msg.is_zero()
            && self.mailbox.is_zero()
            && self.pipe.is_zero()
            && self.vpn.is_zero()
            && self.cdn.is_zero()
    }
}

/// The services a relay offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// Carries messages between clients.
    pub messaging: bool,
    /// Keeps mailboxes for offline clients.
    pub mailbox: bool,
    /// Splices end-to-end encrypted pipes.
    pub pipes: bool,
    /// Is a VPN exit.
    pub vpn_exit: bool,
    /// Caches and serves CDN content.
    pub cdn: bool,
}

impl Services {
    /// Names of the services offered, for display.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.messaging, "messaging"),
            (self.mailbox, "mailbox"),
            (self.pipes, "pipes"),
            (self.vpn_exit, "vpn"),
            (self.cdn, "cdn"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// Whether the service named (as in [`Services::names`]) is offered.
    pub fn offers(&self, name: &str) -> bool {
        self.names().contains(&name)
    }
}

/// What a registered relay publishes; its id is the account that signed the registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// QUIC addresses, `host:port`, best first.
    pub addrs: Vec<String>,
    /// Services offered.
    pub services: Services,
    /// Prices per MiB.
    pub prices: Prices,
    /// Where the relay says it is (self-declared, unchecked).
    pub region: String,
}

/// Why a relay record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// No address, or more than [`MAX_ADDRS`].
    #[error("a relay record lists 1 to {MAX_ADDRS} addresses")]
    AddressCount,
    /// An address is not `host:port`, or too long.
    #[error("bad relay address {0:?}")]
    BadAddress(String),
    /// The region is too long or holds control characters.
    #[error("bad region (at most {MAX_REGION_LEN} printable characters)")]
    BadRegion,
}

impl RelayRecord {
    /// Checks the record's shape (bounded sizes, well-formed addresses).
    pub fn check(&self) -> Result<(), RecordError> {
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS {
            return Err(RecordError::AddressCount);
        }
        for addr in &self.addrs {
            if !well_formed_addr(addr) {
                return Err(RecordError::BadAddress(addr.chars().take(64).collect()));
            }
        }
        if self.region.len() > MAX_REGION_LEN || self.region.chars().any(char::is_control) {
            return Err(RecordError::BadRegion);
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host of hostname or IP characters and a non-zero port.
pub(crate) fn well_formed_addr(addr: &str) -> bool {
    if addr.len() > MAX_ADDR_LEN {
        return false;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    // A wildcard is where a relay listens, never where others reach it.
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    host_ok && !unspecified && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(addrs: &[&str]) -> RelayRecord {
        RelayRecord {
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            ..RelayRecord::default()
        }
    }

    #[test]
    fn records_are_bounded_and_well_formed() {
        assert_eq!(record(&["relay.example:4433"]).check(), Ok(()));
        assert_eq!(record(&["127.0.0.1:1", "[::1]:2"]).check(), Ok(()));
        assert_eq!(record(&[]).check(), Err(RecordError::AddressCount));
        assert_eq!(
            record(&["a:1", "a:2", "a:3", "a:4", "a:5"]).check(),
            Err(RecordError::AddressCount)
        );
        for bad in [
            "nohost",
            ":1",
            "h:0",
            "h:99999",
            "h/x:1",
            "h :1",
            "0.0.0.0:1",
            "[::]:1",
        ] {
            assert!(record(&[bad]).check().is_err(), "{bad}");
        }
        let long = format!("{}:1", "a".repeat(MAX_ADDR_LEN));
        assert!(record(&[&long]).check().is_err());
        let mut r = record(&["a:1"]);
        r.region = "x".repeat(MAX_REGION_LEN + 1);
        assert_eq!(r.check(), Err(RecordError::BadRegion));
        r.region = "eu\nwest".into();
        assert_eq!(r.check(), Err(RecordError::BadRegion));
    }

    #[test]
    fn services_by_name() {
        let s = Services {
            vpn_exit: true,
            cdn: true,
            ..Services::default()
        };
        assert_eq!(s.names(), ["vpn", "cdn"]);
        assert!(s.offers("vpn") && !s.offers("mailbox"));
    }
}
