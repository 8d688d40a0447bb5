//! An exit's IPv6 side: its client pool (a ULA prefix behind NAT66, or a routed prefix),
//! the ranges tunnels may not reach, and the forwarding and NAT rules, in their own table.

use ipnet::Ipv6Net;

use crate::NetError;
use crate::cmd::Cmd;

/// The nftables table of an exit's IPv6 rules.
pub const EXIT_TABLE6: &str = "top_exit6";
/// The kernel's IPv6 forwarding switch.
pub const FORWARD6_SYSCTL: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Special-purpose IPv6 ranges no client traffic may reach (IANA IPv6 Special-Purpose Address
/// Registry: not globally reachable, or a way around the IPv4 rules).
pub fn special_ranges6() -> Vec<Ipv6Net> {
    [
        "::/96",          // unspecified, loopback and the deprecated IPv4-compatible block
        "::ffff:0:0/96",  // IPv4-mapped: the IPv4 rules decide those
        "64:ff9b::/96",   // NAT64: would reach IPv4 ranges around the IPv4 rules
        "64:ff9b:1::/48", // local-use NAT64
        "100::/64",       // discard-only
        "2001::/23",      // IETF protocol assignments
        "2001:db8::/32",  // documentation
        "2002::/16",      // 6to4: embeds IPv4 addresses
        "3fff::/20",      // documentation
        "5f00::/16",      // segment routing (SRv6) SIDs
        "fe80::/10",      // link-local
        "fec0::/10",      // site-local (deprecated)
        "ff00::/8",       // multicast
    ]
    .iter()
    .filter_map(|p| p.parse().ok())
    .collect()
}

/// Unique local addresses (RFC 4193): refused unless the exit's config allows private
/// destinations.
pub fn private_ranges6() -> Vec<Ipv6Net> {
    ["fc00::/7"].iter().filter_map(|p| p.parse().ok()).collect()
}

/// The IPv6 rules of an exit whose clients come from `pool` on `tun`: masquerade when `nat`
/// (a ULA pool), tunnels apart from each other, kept from `deny` and from the exit itself.
pub fn exit_ruleset6(tun: &str, pool: Ipv6Net, deny: &[Ipv6Net], nat: bool) -> String {
    let masquerade = if nat {
        format!(
            "\tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip6 saddr {pool} oifname != \"{tun}\" masquerade\n\t}}\n"
        )
    } else {
        String::new()
    };
    let mut deny_rule = String::new();
    if !deny.is_empty() {
        let list: Vec<String> = deny.iter().map(|n| n.to_string()).collect();
        deny_rule = format!(
            "\t\tiifname \"{tun}\" ip6 daddr {{ {} }} drop\n",
            list.join(", ")
        );
    }
    format!(
        "{}table ip6 {EXIT_TABLE6} {{\n\
         {masquerade}\
         \tchain forward {{ type filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{tun}\" oifname \"{tun}\" drop\n\
         \t\tiifname \"{tun}\" ip6 saddr != {pool} drop\n\
         {deny_rule}\
         \t\tiifname \"{tun}\" accept\n\
         \t\toifname \"{tun}\" ct state established,related accept\n\
         \t\toifname \"{tun}\" drop\n\t}}\n\
         \tchain input {{ type filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{tun}\" meta l4proto ipv6-icmp accept\n\
         \t\tiifname \"{tun}\" drop\n\t}}\n\
         }}\n",
        crate::cmd::replace_table("ip6", EXIT_TABLE6)
    )
}

/// Whether this host can carry its tunnels' IPv6: it has an IPv6 default route, and turning
/// forwarding on will not lose it (a route learned from router advertisements stays only where
/// `accept_ra` is 2: with forwarding on, 1 means ignore them). `Err` says why not.
pub fn ipv6_usable() -> Result<(), String> {
    let out = Cmd::ip(&["-6", "route", "show", "default"])
        .run()
        .map_err(|e| e.to_string())?;
    let Some(route) = out.lines().find(|l| !l.trim().is_empty()) else {
        return Err("this host has no IPv6 default route".into());
    };
    let words: Vec<&str> = route.split_whitespace().collect();
    let after = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1).copied()
    };
    if after("proto") == Some("ra")
        && let Some(dev) = after("dev")
    {
        let sysctl = format!("/proc/sys/net/ipv6/conf/{dev}/accept_ra");
        let accept_ra = std::fs::read_to_string(&sysctl).unwrap_or_default();
        if accept_ra.trim() != "2" && !forwarding6_on() {
            return Err(format!(
                "the IPv6 default route via {dev} comes from router advertisements, which \
                 forwarding would stop: `sysctl -w net.ipv6.conf.{dev}.accept_ra=2` first"
            ));
        }
    }
    Ok(())
}

fn forwarding6_on() -> bool {
    std::fs::read_to_string(FORWARD6_SYSCTL).is_ok_and(|v| v.trim() == "1")
}

/// Turns IPv6 forwarding on; returns the previous setting when it changed it.
pub fn enable_forwarding6() -> Result<Option<String>, NetError> {
    let io = |source| NetError::Io {
        what: FORWARD6_SYSCTL.into(),
        source,
    };
    let previous = std::fs::read_to_string(FORWARD6_SYSCTL)
        .map_err(io)?
        .trim()
        .to_string();
    if previous == "1" {
        return Ok(None);
    }
    std::fs::write(FORWARD6_SYSCTL, "1").map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            NetError::NeedsRights {
                commands: "sysctl -w net.ipv6.conf.all.forwarding=1".into(),
            }
        }
        _ => io(source),
    })?;
    Ok(Some(previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_a_ula_pool_and_keeps_tunnels_from_the_denied_ranges() {
        let pool: Ipv6Net = "fd54:6f70:7670::/64".parse().unwrap();
        let deny = special_ranges6();
        let rules = exit_ruleset6("topx0", pool, &deny, true);
        assert!(rules.contains("ip6 saddr fd54:6f70:7670::/64 oifname != \"topx0\" masquerade"));
        assert!(
            rules.contains("iifname \"topx0\" ip6 daddr { ::/96, "),
            "{rules}"
        );
        assert!(rules.contains("iifname \"topx0\" ip6 saddr != fd54:6f70:7670::/64 drop"));
        assert!(!exit_ruleset6("topx0", pool, &deny, false).contains("masquerade"));
        assert!(
            !rules.contains("icmpv6 type"),
            "related errors only, by conntrack"
        );
        for denied in [
            "::ffff:127.0.0.1",
            "::1",
            "::7f00:1",
            "fec0::1",
            "5f00::1",
            "64:ff9b::a00:1",
        ] {
            let ip: std::net::Ipv6Addr = denied.parse().unwrap();
            assert!(deny.iter().any(|n| n.contains(&ip)), "{denied}");
        }
    }
}
