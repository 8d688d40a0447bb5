//! Choosing relays for the user from the chain's registry, with round trips measured from here:
//! a home relay for `top init` without `--relay` (the nearest offering messages and mailboxes),
//! and the exit and entry of a VPN route for `--exit auto` / `--via auto` (by price, stake and
//! round trip; an automatic entry is never the exit and is outside the exit's region when one
//! such answers).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use top_client::{Criteria, Directory, Identity, RelayAddr, RelayId, Wallet, network_of};

/// Relays `top init` asks for the registry when none is given (none is built in until a public
/// network runs): `--bootstrap` and the genesis' (`--genesis`), then `TOP_BOOTSTRAP`
/// (comma-separated `ID@HOST:PORT`).
pub const BUILT_IN_BOOTSTRAP: &[&str] = &[];
/// The environment variable naming bootstrap relays.
pub const BOOTSTRAP_ENV: &str = "TOP_BOOTSTRAP";

/// A relay named on the command line, or `auto`: chosen from the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayChoice {
    /// Chosen by price, stake and round trip.
    Auto,
    /// This relay.
    Relay(RelayAddr),
}

impl FromStr for RelayChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        s.parse()
            .map(Self::Relay)
            .map_err(|e| format!("{e} (or `auto`)"))
    }
}

/// Bootstrap relays: those given, else `TOP_BOOTSTRAP`, else the built-in list.
pub fn bootstrap_relays(given: Vec<RelayAddr>) -> Result<Vec<RelayAddr>> {
    if !given.is_empty() {
        return Ok(given);
    }
    let listed = std::env::var(BOOTSTRAP_ENV).unwrap_or_default();
    let relays = listed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .chain(BUILT_IN_BOOTSTRAP.iter().copied())
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad bootstrap relay {s:?}"))
        })
        .collect::<Result<Vec<RelayAddr>>>()?;
    if relays.is_empty() {
        bail!(
            "no relay to start from: pass --relay ID@ADDR, or --bootstrap ID@ADDR (any relay of \
             the network), or set {BOOTSTRAP_ENV}"
        );
    }
    Ok(relays)
}

/// The bootstrap relays a genesis file lists.
pub fn genesis_bootstrap(path: &std::path::Path) -> Result<Vec<RelayAddr>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the genesis {}", path.display()))?;
    let genesis: ledger_lite::Genesis = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a genesis", path.display()))?;
    if genesis.bootstrap.is_empty() {
        bail!("the genesis {} lists no bootstrap relay", path.display());
    }
    Ok(genesis.bootstrap)
}

/// The registry with round trips, read through the first of `through` that answers.
pub async fn directory(identity: &Identity, through: &[RelayAddr]) -> Result<Directory> {
    let mut last_error = None;
    for relay in through {
        match Wallet::connect(relay, identity.clone()).await {
            Ok(wallet) => {
                let directory = Directory::fetch(&wallet).await;
                wallet.close().await;
                match directory {
                    Ok(d) => return Ok(d),
                    Err(e) => last_error = Some(anyhow::Error::from(e)),
                }
            }
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error
        .unwrap_or_else(|| anyhow::anyhow!("no relay given"))
        .context("reading the relay registry"))
}

/// The relay to call home: the nearest offering messaging and mailboxes (then the cheapest).
pub fn home_relay(directory: &Directory) -> Result<(RelayAddr, Option<Duration>)> {
    let keeping_mailboxes = Directory::from_measured(
        directory
            .relays()
            .iter()
            .filter(|r| r.price("mailbox").is_some())
            .map(|r| (r.entry.clone(), r.rtt))
            .collect(),
    );
    let criteria = Criteria::default();
    let listed = keeping_mailboxes
        .pick("messaging", &criteria)
        .or_else(|| directory.pick("messaging", &criteria))
        .context("no registered relay offering messages answered")?;
    let addr = listed.addr().context("the chosen relay lists no address")?;
    Ok((addr, listed.rtt))
}

/// A VPN route: the exit and, for two hops, the entry.
#[derive(Clone, Debug)]
pub struct Route {
    /// Where traffic leaves.
    pub exit: RelayAddr,
    /// The first hop, if two.
    pub via: Option<RelayAddr>,
}

/// Resolves `auto` in a route: the exit among VPN exits (in `region` if given, avoiding a
/// named entry and its network), the entry among relays carrying pipes (never the exit nor a
/// relay in its network; outside the exit's region when one such answers).
pub fn route(
    directory: &Directory,
    exit: RelayChoice,
    via: Option<RelayChoice>,
    region: Option<String>,
) -> Result<Route> {
    let named_via = match &via {
        Some(RelayChoice::Relay(r)) => Some(r.id),
        _ => None,
    };
    // Networks are those of the addresses dialed, not of every address a relay lists (an
    // exit listing others' networks must not steer the entry).
    let via_network = match &via {
        Some(RelayChoice::Relay(r)) => network_of(&r.host_port),
        _ => None,
    };
    let (exit, exit_region) = match exit {
        RelayChoice::Relay(r) => {
            let region = region_of(directory, &r.id);
            (r, region)
        }
        RelayChoice::Auto => {
            let criteria = Criteria {
                region: region.clone(),
                avoid: named_via.into_iter().collect(),
                avoid_networks: via_network.into_iter().collect(),
                ..Criteria::default()
            };
            let listed = directory.pick("vpn", &criteria).with_context(|| {
                format!(
                    "no VPN exit{} answered",
                    region
                        .map(|r| format!(" in region {r}"))
                        .unwrap_or_default()
                )
            })?;
            let addr = listed.addr().context("the chosen exit lists no address")?;
            (addr, Some(listed.entry.record.region.clone()))
        }
    };
    let via = match via {
        None => None,
        Some(RelayChoice::Relay(r)) => Some(r),
        Some(RelayChoice::Auto) => {
            // Another relay, in another network (likely another operator's: see
            // `top_client::Network`), outside the exit's region if one such answers.
            let criteria = Criteria {
                avoid: vec![exit.id],
                avoid_regions: exit_region.into_iter().filter(|r| !r.is_empty()).collect(),
                avoid_networks: network_of(&exit.host_port).into_iter().collect(),
                ..Criteria::default()
            };
            let listed = directory
                .pick("pipes", &criteria)
                .context("no relay other than the exit answered to be the entry")?;
            Some(listed.addr().context("the chosen entry lists no address")?)
        }
    };
    if via.as_ref().is_some_and(|v| v.id == exit.id) {
        bail!("the entry and the exit are the same relay: a 2-hop route needs two");
    }
    Ok(Route { exit, via })
}

fn region_of(directory: &Directory, relay: &RelayId) -> Option<String> {
    directory
        .relays()
        .iter()
        .find(|l| l.id() == *relay)
        .map(|l| l.entry.record.region.clone())
}

#[cfg(test)]
mod tests {
    use ledger_lite::Amount;
    use ledger_lite::registry::{Prices, RelayRecord, Services};
    use ledger_lite::wire::RelayEntry;
    use top_client::AccountId;

    use super::*;

    /// Relay `n` in `region`, a VPN exit or not, at `rtt_ms` (None: no answer).
    fn relay(
        n: u8,
        region: &str,
        exit: bool,
        rtt_ms: Option<u64>,
    ) -> (RelayEntry, Option<Duration>) {
        let entry = RelayEntry {
            id: AccountId::from_wire(*id(n).as_bytes()),
            stake: Amount::from_units(1000),
            record: RelayRecord {
                addrs: vec![format!("10.0.0.{n}:4433")],
                services: Services {
                    vpn_exit: exit,
                    messaging: true,
                    mailbox: true,
                    pipes: true,
                    ..Services::default()
                },
                prices: Prices::default(),
                region: region.into(),
            },
        };
        (entry, rtt_ms.map(Duration::from_millis))
    }

    /// Relay `n`'s id (a real key: addresses naming it parse).
    fn id(n: u8) -> RelayId {
        Identity::from_seed(&[n; 32]).relay_id()
    }

    #[test]
    fn auto_exit_and_entry_are_two_relays_in_two_regions() {
        let directory = Directory::from_measured(vec![
            relay(1, "de", true, Some(5)),
            relay(2, "de", false, Some(4)),
            relay(3, "fr", false, Some(9)),
            relay(4, "us", true, None),
        ]);
        let chosen = route(&directory, RelayChoice::Auto, Some(RelayChoice::Auto), None).unwrap();
        assert_eq!(chosen.exit.id, id(1), "the one exit that answered");
        assert_eq!(
            chosen.via.map(|v| v.id),
            Some(id(3)),
            "the entry is outside the exit's region although relay 2 is nearer"
        );
        // An exit in a region none answers from is an error, not a silent other choice.
        let err = route(&directory, RelayChoice::Auto, None, Some("us".into())).unwrap_err();
        assert!(err.to_string().contains("region us"), "{err}");
    }

    #[test]
    fn an_automatic_entry_is_never_in_the_exits_network() {
        let public = |n: u8, addr: &str, exit: bool, rtt: u64| {
            let (mut entry, rtt) = relay(n, if n == 3 { "fr" } else { "de" }, exit, Some(rtt));
            entry.record.addrs = vec![addr.into()];
            (entry, rtt)
        };
        let directory = Directory::from_measured(vec![
            public(1, "203.0.113.7:4433", true, 5),
            // Another region than the exit's, but the exit's /16: likely its operator.
            (
                {
                    let (mut e, _) = public(2, "203.0.9.9:4433", false, 3);
                    e.record.region = "fr".into();
                    e
                },
                Some(Duration::from_millis(3)),
            ),
            public(3, "198.51.100.4:4433", false, 40),
        ]);
        let chosen = route(&directory, RelayChoice::Auto, Some(RelayChoice::Auto), None).unwrap();
        assert_eq!(chosen.exit.id, id(1));
        assert_eq!(chosen.via.map(|v| v.id), Some(id(3)));
        // A named entry keeps the automatic exit out of its network too.
        let entry: RelayAddr = format!("{}@203.0.113.7:4433", id(1)).parse().unwrap();
        let directory = Directory::from_measured(vec![
            public(1, "203.0.113.7:4433", false, 5),
            public(2, "203.0.9.9:4433", true, 3),
            public(3, "198.51.100.4:4433", true, 40),
        ]);
        let chosen = route(
            &directory,
            RelayChoice::Auto,
            Some(RelayChoice::Relay(entry)),
            None,
        )
        .unwrap();
        assert_eq!(chosen.exit.id, id(3));
    }

    #[test]
    fn a_named_entry_is_never_the_automatic_exit() {
        let directory = Directory::from_measured(vec![
            relay(1, "de", true, Some(5)),
            relay(2, "de", true, Some(50)),
        ]);
        let entry: RelayAddr = format!("{}@10.0.0.1:4433", id(1)).parse().unwrap();
        let chosen = route(
            &directory,
            RelayChoice::Auto,
            Some(RelayChoice::Relay(entry)),
            None,
        )
        .unwrap();
        assert_eq!(chosen.exit.id, id(2));
        // Naming one relay as both hops is refused.
        let same: RelayAddr = format!("{}@10.0.0.2:4433", id(2)).parse().unwrap();
        let both = route(
            &directory,
            RelayChoice::Relay(same.clone()),
            Some(RelayChoice::Relay(same)),
            None,
        );
        assert!(both.is_err());
    }

    #[test]
    fn home_is_the_nearest_relay_that_keeps_mailboxes() {
        let (mut far_no_mailbox, rtt) = relay(1, "de", false, Some(1));
        far_no_mailbox.record.services.mailbox = false;
        let directory = Directory::from_measured(vec![
            (far_no_mailbox, rtt),
            relay(2, "de", false, Some(2)),
            relay(3, "de", false, Some(90)),
        ]);
        let (home, rtt) = home_relay(&directory).unwrap();
        assert_eq!((home.id, rtt), (id(2), Some(Duration::from_millis(2))));
        assert_eq!(
            "auto".parse::<RelayChoice>().unwrap(),
            RelayChoice::Auto,
            "`auto` is a choice, not an address"
        );
        assert!("nonsense".parse::<RelayChoice>().is_err());
    }
}
