//! An exit relay's host setup: IPv4 forwarding on, NAT (masquerade) for the client pool, clients
//! kept apart from each other and from the exit's own services; all undone on shutdown.

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::NetError;
use crate::cmd::{Cmd, run_all};

const FORWARD_SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";
/// The nftables table an exit owns.
pub const EXIT_TABLE: &str = "top_exit";

/// Address ranges an exit keeps its tunnels away from unless its owner allows them: private,
/// shared (CGNAT), link-local and loopback networks.
/// Special-purpose IPv4 ranges no client traffic may reach, whatever the config (IANA IPv4
/// Special-Purpose Address Registry: the blocks that are not globally reachable and are not
/// private networks an operator might open on purpose; plus multicast and limited broadcast).
pub fn special_ranges() -> Vec<Ipv4Net> {
    [
        "0.0.0.0/8",          // "this network" (RFC 791)
        "127.0.0.0/8",        // loopback
        "192.0.0.0/24",       // IETF protocol assignments
        "192.0.2.0/24",       // documentation (TEST-NET-1)
        "192.88.99.0/24",     // deprecated 6to4 relay anycast
        "198.18.0.0/15",      // benchmarking
        "198.51.100.0/24",    // documentation (TEST-NET-2)
        "203.0.113.0/24",     // documentation (TEST-NET-3)
        "224.0.0.0/4",        // multicast
        "240.0.0.0/4",        // reserved
        "255.255.255.255/32", // limited broadcast
    ]
    .iter()
    .filter_map(|p| p.parse().ok())
    .collect()
}

/// Private and shared ranges (RFC 1918, RFC 6598, link-local, loopback): refused unless the
/// exit's config allows private destinations.
pub fn private_ranges() -> Vec<Ipv4Net> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
    ]
    .iter()
    .filter_map(|p| p.parse().ok())
    .collect()
}

/// The nftables rules of an exit whose clients come from `pool` on device `tun`; tunnels may
/// not reach `deny`, except the offered resolver `dns` on port 53.
pub fn exit_ruleset(tun: &str, pool: Ipv4Net, deny: &[Ipv4Net], dns: Option<Ipv4Addr>) -> String {
    let mut deny_rule = String::new();
    if let Some(dns) = dns {
        deny_rule.push_str(&format!(
            "\t\tiifname \"{tun}\" ip daddr {dns} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        ));
    }
    if !deny.is_empty() {
        let list: Vec<String> = deny.iter().map(|n| n.to_string()).collect();
        deny_rule.push_str(&format!(
            "\t\tiifname \"{tun}\" ip daddr {{ {} }} drop\n",
            list.join(", ")
        ));
    }
    format!(
        "{}table ip {EXIT_TABLE} {{\n\
         \tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pool} oifname != \"{tun}\" masquerade\n\t}}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{tun}\" oifname \"{tun}\" drop\n\
         {deny_rule}\
         \t\tiifname \"{tun}\" accept\n\
         \t\toifname \"{tun}\" ct state established,related accept\n\
         \t\toifname \"{tun}\" drop\n\t}}\n\
         \tchain input {{ type filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{tun}\" ip protocol icmp accept\n\
         \t\tiifname \"{tun}\" drop\n\t}}\n\
         }}\n",
        crate::cmd::replace_table("ip", EXIT_TABLE)
    )
}

/// An exit's IPv6 side: its client pool and the ranges tunnels may not reach.
#[derive(Debug, Clone)]
pub struct Exit6Plan {
    /// The client pool: a unique local prefix is masqueraded (NAT66), any other is routed.
    pub pool: Ipv6Net,
    /// Destinations refused to tunnels.
    pub deny: Vec<Ipv6Net>,
}

impl Exit6Plan {
    fn nat(&self) -> bool {
        crate::exit6::private_ranges6()
            .iter()
            .any(|ula| ula.contains(&self.pool))
    }

    fn command(&self, tun: &str) -> Cmd {
        Cmd::nft_script(crate::exit6::exit_ruleset6(
            tun,
            self.pool,
            &self.deny,
            self.nat(),
        ))
    }
}

/// What [`ExitNet::setup`] changed, to undo it.
#[derive(Debug)]
pub struct ExitNet {
    previous_forward: Option<String>,
    /// Whether the IPv6 table is installed, and the IPv6 forwarding setting it replaced.
    v6: Option<Option<String>>,
}

impl ExitNet {
    /// The commands setup runs, for users who prefer to run them by hand.
    pub fn commands(
        tun: &str,
        pool: Ipv4Net,
        deny: &[Ipv4Net],
        dns: Option<Ipv4Addr>,
        v6: Option<&Exit6Plan>,
    ) -> Vec<Cmd> {
        let mut cmds = vec![Cmd::nft_script(exit_ruleset(tun, pool, deny, dns))];
        cmds.extend(v6.map(|p| p.command(tun)));
        cmds
    }

    /// Turns forwarding on and installs the NAT and isolation rules (IPv6 too with `v6`).
    pub fn setup(
        tun: &str,
        pool: Ipv4Net,
        deny: &[Ipv4Net],
        dns: Option<Ipv4Addr>,
        v6: Option<&Exit6Plan>,
    ) -> Result<Self, NetError> {
        let previous = std::fs::read_to_string(FORWARD_SYSCTL)
            .map_err(|source| NetError::Io {
                what: FORWARD_SYSCTL.into(),
                source,
            })?
            .trim()
            .to_string();
        let cmds = Self::commands(tun, pool, deny, dns, v6);
        if previous != "1"
            && let Err(source) = std::fs::write(FORWARD_SYSCTL, "1")
        {
            let mut all = vec![format!("sysctl -w net.ipv4.ip_forward=1")];
            all.extend(cmds.iter().map(Cmd::display));
            return Err(match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    NetError::NeedsRights {
                        commands: all.join("\n"),
                    }
                }
                _ => NetError::Io {
                    what: FORWARD_SYSCTL.into(),
                    source,
                },
            });
        }
        let undo_forward = (previous != "1").then_some(previous);
        let undo = |forward6: Option<String>| {
            if let Some(p) = &undo_forward {
                std::fs::write(FORWARD_SYSCTL, p).ok();
            }
            if let Some(p) = forward6 {
                std::fs::write(crate::exit6::FORWARD6_SYSCTL, p).ok();
            }
        };
        let forward6 = match v6 {
            Some(_) => match crate::exit6::enable_forwarding6() {
                Ok(previous) => Some(previous),
                Err(e) => {
                    undo(None);
                    return Err(e);
                }
            },
            None => None,
        };
        if let Err(e) = run_all(&cmds) {
            undo(forward6.flatten());
            return Err(e);
        }
        Ok(Self {
            previous_forward: undo_forward,
            v6: forward6,
        })
    }

    /// Removes the rules and restores the forwarding setting.
    pub fn teardown(self) {
        if let Err(e) = Cmd::nft(&["delete", "table", "ip", EXIT_TABLE]).run() {
            tracing::warn!("removing the exit's nftables table: {e}");
        }
        if let Some(p) = self.previous_forward
            && let Err(e) = std::fs::write(FORWARD_SYSCTL, p)
        {
            tracing::warn!("restoring {FORWARD_SYSCTL}: {e}");
        }
        if let Some(previous6) = self.v6 {
            let table = crate::exit6::EXIT_TABLE6;
            if let Err(e) = Cmd::nft(&["delete", "table", "ip6", table]).run() {
                tracing::warn!("removing the exit's IPv6 nftables table: {e}");
            }
            let sysctl = crate::exit6::FORWARD6_SYSCTL;
            if let Some(p) = previous6
                && let Err(e) = std::fs::write(sysctl, p)
            {
                tracing::warn!("restoring {sysctl}: {e}");
            }
        }
    }
}
