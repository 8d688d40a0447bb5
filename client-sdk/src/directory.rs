//! The relay directory: the chain's registry of relays with the round trip measured from here,
//! and the choice of a relay for a service — nearby first, then cheapest, then most staked.

use std::time::Duration;

use futures::StreamExt;
use ledger_lite::Amount;
use ledger_lite::wire::RelayEntry;
use top_proto::addr::RelayAddr;
use top_proto::id::RelayId;

use crate::error::ClientError;
use crate::probe::round_trip;
use crate::wallet::Wallet;

/// Relays whose round trip is measured at once.
const PROBES_AT_ONCE: usize = 16;
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most relays probed (the rest are listed without a round trip, and never picked).
pub const MAX_PROBED: usize = 256;
/// Relays count as near when their round trip is within this factor of the nearest one's...
const NEAR_FACTOR: u32 = 2;
/// ...plus this much (so that on a LAN a relay 0.2 ms away does not rule out one 0.5 ms away).
const NEAR_SLACK: Duration = Duration::from_millis(20);

/// One registered relay and the round trip to it, if it answered.
#[derive(Clone, Debug)]
pub struct Listed {
    /// What the registry holds.
    pub entry: RelayEntry,
    /// The round trip measured from here (`None`: not probed, or no answer).
    pub rtt: Option<Duration>,
}

impl Listed {
    /// Its id as a relay.
    pub fn id(&self) -> RelayId {
        RelayId::from_wire(*self.entry.id.as_bytes())
    }

    /// Where to dial it (its first address).
    pub fn addr(&self) -> Option<RelayAddr> {
        dial_addr(&self.entry)
    }

    /// The networks its addresses lie in (see [`Network`]).
    pub fn networks(&self) -> Vec<Network> {
        self.entry
            .record
            .addrs
            .iter()
            .filter_map(|a| network_of(a))
            .collect()
    }

    /// Its price per MiB of `service` (as named by `Services::names`), if it offers it.
    pub fn price(&self, service: &str) -> Option<Amount> {
        let record = &self.entry.record;
        if !record.services.offers(service) {
            return None;
        }
        let prices = &record.prices;
        Some(match service {
            "messaging" => prices.msg,
            "mailbox" => prices.mailbox,
            "pipes" => prices.pipe,
            "vpn" => prices.vpn,
            "cdn" => prices.cdn,
            _ => return None,
        })
    }
}

/// The network an address lies in, for telling operators apart: the /16 of a public IPv4
/// address or the /32 of a public IPv6 one (as Tor does: one operator's relays share a network
/// far more often than strangers' do, and an address is where the relay must answer, not a
/// claim). Names and loopback, private and link-local addresses have none: a LAN or test
/// network is not told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// The first two bytes of a public IPv4 address.
    V4([u8; 2]),
    /// The first four bytes of a public IPv6 address.
    V6([u8; 4]),
}

/// The [`Network`] of `host:port`, if its host is a public IP address.
pub fn network_of(host_port: &str) -> Option<Network> {
    let (host, _) = host_port.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(ip) => {
            // 100.64.0.0/10 is carrier-grade NAT: shared, not one operator's.
            let shared = ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64;
            let local = ip.is_loopback()
                || shared
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast();
            let [a, b, _, _] = ip.octets();
            (!local).then_some(Network::V4([a, b]))
        }
        std::net::IpAddr::V6(ip) => {
            let o = ip.octets();
            let unique_local = o[0] & 0xfe == 0xfc;
            let link_local = o[0] == 0xfe && o[1] & 0xc0 == 0x80;
            if let Some(v4) = ip.to_ipv4_mapped() {
                return network_of(&format!("{v4}:0"));
            }
            let local = ip.is_loopback() || ip.is_unspecified() || unique_local || link_local;
            (!local).then_some(Network::V6([o[0], o[1], o[2], o[3]]))
        }
    }
}

/// Where to dial a registered relay: its first address.
fn dial_addr(entry: &RelayEntry) -> Option<RelayAddr> {
    Some(RelayAddr {
        id: RelayId::from_wire(*entry.id.as_bytes()),
        host_port: entry.record.addrs.first()?.clone(),
    })
}

/// What a pick must satisfy.
#[derive(Clone, Debug, Default)]
pub struct Criteria {
    /// Only relays declaring this region.
    pub region: Option<String>,
    /// Never these relays (the other hop of a two-hop route, say).
    pub avoid: Vec<RelayId>,
    /// Relays outside these regions are preferred; one inside is picked only when no other
    /// qualifies (the other hop's region, for a route that crosses two).
    pub avoid_regions: Vec<String>,
    /// Only relays charging at most this per MiB.
    pub max_price: Option<Amount>,
    /// Never relays with an address in these networks (the other hop's: likely its operator).
    pub avoid_networks: Vec<Network>,
}

/// The registry with round trips.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    relays: Vec<Listed>,
}

impl Directory {
    /// Reads the registry through `wallet`'s relay and measures the round trip to each relay
    /// (at most [`MAX_PROBED`], [`PROBES_AT_ONCE`] at a time, each within a few seconds).
    pub async fn fetch(wallet: &Wallet) -> Result<Self, ClientError> {
        let entries = wallet.relays().await?;
        let rtts: Vec<Option<Duration>> = futures::stream::iter(entries.iter().enumerate())
            .map(|(i, entry)| async move {
                let addr = dial_addr(entry).filter(|_| i < MAX_PROBED)?;
                tokio::time::timeout(PROBE_TIMEOUT, round_trip(&addr))
                    .await
                    .ok()?
                    .ok()
            })
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        Ok(Self::from_measured(entries.into_iter().zip(rtts).collect()))
    }

    /// A directory of `relays` with the round trips measured to them.
    pub fn from_measured(relays: Vec<(RelayEntry, Option<Duration>)>) -> Self {
        Self {
            relays: relays
                .into_iter()
                .map(|(entry, rtt)| Listed { entry, rtt })
                .collect(),
        }
    }

    /// Every relay, in registry order.
    pub fn relays(&self) -> &[Listed] {
        &self.relays
    }

    /// The relay to use for `service`: among those offering it that answered and meet
    /// `criteria` (none in an avoided network; outside its avoided regions if any such is
    /// left), the near ones (round trip
    /// within twice the nearest's plus 20 ms); of those the cheapest, then the most staked,
    /// then the nearest. `None` when none qualifies.
    pub fn pick(&self, service: &str, criteria: &Criteria) -> Option<&Listed> {
        let qualified: Vec<&Listed> = self
            .relays
            .iter()
            .filter(|r| r.rtt.is_some() && r.addr().is_some())
            .filter(|r| {
                r.price(service)
                    .is_some_and(|p| criteria.max_price.is_none_or(|m| p <= m))
            })
            .filter(|r| {
                criteria
                    .region
                    .as_ref()
                    .is_none_or(|g| &r.entry.record.region == g)
            })
            .filter(|r| !criteria.avoid.contains(&r.id()))
            .filter(|r| {
                !r.networks()
                    .iter()
                    .any(|n| criteria.avoid_networks.contains(n))
            })
            .collect();
        let elsewhere: Vec<&Listed> = qualified
            .iter()
            .copied()
            .filter(|r| !criteria.avoid_regions.contains(&r.entry.record.region))
            .collect();
        let pool = if elsewhere.is_empty() {
            qualified
        } else {
            elsewhere
        };
        let nearest = pool.iter().filter_map(|r| r.rtt).min()?;
        let near = nearest
            .checked_mul(NEAR_FACTOR)
            .and_then(|d| d.checked_add(NEAR_SLACK))
            .unwrap_or(Duration::MAX);
        pool.into_iter()
            .filter(|r| r.rtt.is_some_and(|t| t <= near))
            .min_by(|a, b| {
                a.price(service)
                    .cmp(&b.price(service))
                    .then(b.entry.stake.cmp(&a.entry.stake))
                    .then(a.rtt.cmp(&b.rtt))
                    .then(a.entry.id.cmp(&b.entry.id))
            })
    }
}

#[cfg(test)]
mod tests {
    use ledger_lite::registry::{Prices, RelayRecord, Services};
    use top_proto::id::AccountId;

    use super::*;

    fn relay(
        n: u8,
        region: &str,
        vpn_price: u128,
        stake: u128,
        rtt_ms: Option<u64>,
    ) -> (RelayEntry, Option<Duration>) {
        let entry = RelayEntry {
            id: AccountId::from_wire([n; 32]),
            stake: Amount::from_units(stake),
            record: RelayRecord {
                addrs: vec![format!("10.0.0.{n}:4433")],
                services: Services {
                    vpn_exit: true,
                    messaging: n.is_multiple_of(2),
                    ..Services::default()
                },
                prices: Prices {
                    vpn: Amount::from_units(vpn_price),
                    ..Prices::default()
                },
                region: region.into(),
            },
        };
        (entry, rtt_ms.map(Duration::from_millis))
    }

    fn picked(d: &Directory, service: &str, c: &Criteria) -> Option<u8> {
        d.pick(service, c).map(|r| r.entry.id.as_bytes()[0])
    }

    #[test]
    fn near_first_then_cheapest_then_most_staked() {
        let d = Directory::from_measured(vec![
            relay(1, "eu", 50, 100, Some(10)),
            relay(2, "eu", 30, 100, Some(25)), // near (≤ 40 ms) and cheaper
            relay(3, "us", 10, 100, Some(120)), // cheapest, but far
            relay(4, "eu", 30, 500, Some(39)), // as cheap as 2, more stake
            relay(5, "eu", 1, 900, None),      // cheapest of all, never answered
        ]);
        assert_eq!(picked(&d, "vpn", &Criteria::default()), Some(4));
        // Only what offers the service.
        assert_eq!(picked(&d, "messaging", &Criteria::default()), Some(4));
        assert_eq!(picked(&d, "cdn", &Criteria::default()), None);
        // A region, a price cap, relays to avoid.
        let us = Criteria {
            region: Some("us".into()),
            ..Criteria::default()
        };
        assert_eq!(picked(&d, "vpn", &us), Some(3));
        let capped = Criteria {
            max_price: Some(Amount::from_units(29)),
            ..Criteria::default()
        };
        assert_eq!(picked(&d, "vpn", &capped), Some(3));
        let avoid = Criteria {
            avoid: vec![RelayId::from_wire([4; 32])],
            ..Criteria::default()
        };
        assert_eq!(picked(&d, "vpn", &avoid), Some(2));
    }

    #[test]
    fn a_second_hop_prefers_another_region_but_takes_the_same_when_nothing_else_answers() {
        let d = Directory::from_measured(vec![
            relay(1, "eu", 10, 100, Some(10)),
            relay(2, "eu", 10, 100, Some(12)),
            relay(3, "us", 90, 100, Some(150)),
        ]);
        let other = Criteria {
            avoid: vec![RelayId::from_wire([1; 32])],
            avoid_regions: vec!["eu".into()],
            ..Criteria::default()
        };
        assert_eq!(picked(&d, "vpn", &other), Some(3));
        let d = Directory::from_measured(vec![
            relay(1, "eu", 10, 100, Some(10)),
            relay(2, "eu", 10, 100, Some(12)),
            relay(3, "us", 90, 100, None),
        ]);
        assert_eq!(picked(&d, "vpn", &other), Some(2));
        // Round trips an app measured itself, however large, never overflow the choice.
        let d = Directory::from_measured(vec![
            (relay(1, "eu", 10, 100, None).0, Some(Duration::MAX)),
            (relay(2, "eu", 5, 100, None).0, Some(Duration::MAX)),
        ]);
        assert_eq!(picked(&d, "vpn", &Criteria::default()), Some(2));
        // No relay at all answers: none.
        let d = Directory::from_measured(vec![relay(1, "eu", 10, 100, None)]);
        assert_eq!(picked(&d, "vpn", &Criteria::default()), None);
    }

    #[test]
    fn a_second_hop_is_never_in_the_others_network() {
        let at = |n: u8, addr: &str, rtt: u64| {
            let (mut entry, rtt) = relay(n, "eu", 10, 100, Some(rtt));
            entry.record.addrs = vec![addr.into()];
            (entry, rtt)
        };
        let d = Directory::from_measured(vec![
            at(1, "203.0.113.7:4433", 10),
            // The exit's /16, and the nearest: the same operator's, likely. Never picked.
            at(2, "203.0.200.9:4433", 5),
            at(3, "[2001:db8:1:2::7]:4433", 30),
            at(4, "[2001:db8:ffff::9]:4433", 6),
            at(5, "198.51.100.4:4433", 30),
        ]);
        let exit = &d.relays()[0];
        let other = Criteria {
            avoid: vec![exit.id()],
            avoid_networks: exit.networks(),
            ..Criteria::default()
        };
        assert_eq!(picked(&d, "vpn", &other), Some(4));
        let v6 = &d.relays()[2];
        let other = Criteria {
            avoid: vec![v6.id(), exit.id()],
            avoid_networks: [exit.networks(), v6.networks()].concat(),
            ..Criteria::default()
        };
        assert_eq!(
            picked(&d, "vpn", &other),
            Some(5),
            "2001:db8::/32 is one network"
        );
        // Loopback, private and named hosts are not told apart (a test or LAN network).
        for host in [
            "127.0.0.1:1",
            "10.1.2.3:1",
            "192.168.0.1:1",
            "100.64.1.1:1",
            "[::1]:1",
            "[fd00::1]:1",
            "relay.example:1",
        ] {
            assert_eq!(network_of(host), None, "{host}");
        }
        assert_eq!(
            network_of("[::ffff:203.0.113.7]:1"),
            Some(Network::V4([203, 0]))
        );
    }
}
