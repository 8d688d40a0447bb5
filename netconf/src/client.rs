//! A VPN client's host changes: the kill switch (an nftables table dropping everything that
//! leaves outside the tunnel), routes through the tunnel (the default route as two /1 halves, or
//! only the split-tunnel prefixes) with a host route keeping the relay itself outside, and DNS.
//! [`Applied`] records each change so that [`Applied::undo`] restores the host exactly, also
//! from another process after a crash.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::NetError;
use crate::cmd::{Cmd, run_all};

/// The nftables table of the client's kill switch.
pub const KILL_SWITCH_TABLE: &str = "top_vpn";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the tunnel should carry and how the host should behave around it.
#[derive(Debug, Clone)]
pub struct ClientNetPlan {
    /// The TUN device.
    pub tun: String,
    /// The relay the tunnel's packets go to (it must stay outside the tunnel)...
    pub relay: Ipv4Addr,
    /// ... and its UDP ports they go to (QUIC, and the forwarding port of a 2-hop route).
    pub relay_ports: Vec<u16>,
    /// Prefixes to send through the tunnel; empty means everything (the default route).
    pub routes: Vec<Ipv4Net>,
    /// DNS resolver to use through the tunnel, if any.
    pub dns: Option<Ipv4Addr>,
    /// Drop every packet that would leave outside the tunnel.
    pub kill_switch: bool,
    /// With the kill switch, still allow the directly connected local networks.
    pub allow_lan: bool,
    /// Whether the tunnel carries IPv6. With the default route taken, IPv6 goes through the
    /// tunnel when it does, and is refused (unreachable) when it does not: never around it.
    pub ipv6: bool,
}

/// A copy of `/etc/resolv.conf` as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ResolvBackup {
    /// A regular file with this content.
    File(String),
    /// A symbolic link to this target.
    Link(String),
    /// There was none.
    Absent,
}

/// Every change made, in order, so it can be undone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    /// `ip route add` arguments of each route added (deleted again with `ip route del`).
    pub routes: Vec<Vec<String>>,
    /// The resolver configuration before it was replaced.
    pub resolv: Option<ResolvBackup>,
    /// Whether the kill switch table is installed.
    pub kill_switch: bool,
}

/// The route the host uses now to reach `dst`: `(gateway, device)`; `None` when it is local.
pub fn route_to(dst: Ipv4Addr) -> Result<Option<(Option<Ipv4Addr>, String)>, NetError> {
    let out = Cmd::ip(&["-4", "route", "get", &dst.to_string()]).run()?;
    parse_route_get(&out)
}

fn parse_route_get(out: &str) -> Result<Option<(Option<Ipv4Addr>, String)>, NetError> {
    let words: Vec<&str> = out.split_whitespace().collect();
    if words.first() == Some(&"local") || words.contains(&"lo") {
        return Ok(None);
    }
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let dev = after("dev").ok_or_else(|| NetError::Parse(format!("no device in {out:?}")))?;
    let via = match after("via") {
        Some(v) => Some(
            v.parse()
                .map_err(|_| NetError::Parse(format!("bad gateway in {out:?}")))?,
        ),
        None => None,
    };
    Ok(Some((via, dev.to_string())))
}

/// The directly connected IPv4 networks (the LAN), except on `skip`.
pub fn local_networks(skip: &str) -> Result<Vec<Ipv4Net>, NetError> {
    let out = Cmd::ip(&["-4", "route", "show", "scope", "link"]).run()?;
    Ok(out
        .lines()
        .filter(|l| !l.split_whitespace().any(|w| w == skip))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.parse::<Ipv4Net>().ok())
        .collect())
}

/// The kill switch's nftables rules.
pub fn kill_switch_ruleset(tun: &str, relay: Ipv4Addr, ports: &[u16], lan: &[Ipv4Net]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut allow = String::new();
    if !lan.is_empty() {
        let list: Vec<String> = lan.iter().map(|n| n.to_string()).collect();
        allow = format!(
            "\t\tip daddr {{ {} }} accept\n\t\tip6 daddr fe80::/10 accept\n",
            list.join(", ")
        );
    }
    format!(
        "{}table inet {KILL_SWITCH_TABLE} {{\n\
         \tchain output {{ type filter hook output priority filter; policy drop;\n\
         \t\toifname \"lo\" accept\n\
         \t\toifname \"{tun}\" accept\n\
         \t\tip daddr {} udp dport {{ {} }} accept\n\
         {allow}\
         \t\tcounter drop\n\t}}\n\
         }}\n",
        crate::cmd::replace_table("inet", KILL_SWITCH_TABLE),
        relay,
        ports.join(", ")
    )
}

/// Packets the kill switch dropped so far (`None` when it is not installed).
pub fn kill_switch_drops() -> Option<u64> {
    let out = Cmd::nft(&["list", "table", "inet", KILL_SWITCH_TABLE])
        .run()
        .ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "packets")?;
    words.get(i + 1)?.parse().ok()
}

/// The routes the tunnel takes: the plan's prefixes, or the whole IPv4 space as two halves
/// (more specific than any default route, so the original one stays untouched).
fn tunnel_prefixes(plan: &ClientNetPlan) -> Vec<Ipv4Net> {
    if plan.routes.is_empty() {
        ["0.0.0.0/1", "128.0.0.0/1"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    } else {
        plan.routes.clone()
    }
}

/// The IPv6 space as two halves (more specific than any default route): through the tunnel
/// when it carries IPv6, unreachable when it does not (so nothing leaves around it).
fn ipv6_routes(plan: &ClientNetPlan) -> Vec<Vec<String>> {
    ["::/1", "8000::/1"]
        .iter()
        .map(|half| {
            let mut args = vec!["route".to_string(), "add".to_string()];
            if plan.ipv6 {
                args.extend([half.to_string(), "dev".into(), plan.tun.clone()]);
            } else {
                args.extend(["unreachable".into(), half.to_string()]);
            }
            args
        })
        .collect()
}

impl Applied {
    /// Applies `plan`, recording each step in `self` (and calling `save` after each, so a crash
    /// in between still leaves an exact record). On error, what was applied stays recorded.
    pub fn apply(
        &mut self,
        plan: &ClientNetPlan,
        mut save: impl FnMut(&Applied),
    ) -> Result<(), NetError> {
        if plan.kill_switch {
            let lan = if plan.allow_lan {
                local_networks(&plan.tun)?
            } else {
                Vec::new()
            };
            run_all(&[Cmd::nft_script(kill_switch_ruleset(
                &plan.tun,
                plan.relay,
                &plan.relay_ports,
                &lan,
            ))])?;
            self.kill_switch = true;
            save(self);
        }
        let prefixes = tunnel_prefixes(plan);
        let relay_ip = plan.relay;
        if prefixes.iter().any(|p| p.contains(&relay_ip))
            && let Some((via, dev)) = route_to(relay_ip)?
        {
            let mut args = vec!["route".into(), "add".into(), format!("{relay_ip}/32")];
            if let Some(gw) = via {
                args.extend(["via".into(), gw.to_string()]);
            }
            args.extend(["dev".into(), dev]);
            self.add_route(args, &mut save)?;
        }
        for p in &prefixes {
            let args = vec![
                "route".into(),
                "add".into(),
                p.to_string(),
                "dev".into(),
                plan.tun.clone(),
            ];
            self.add_route(args, &mut save)?;
        }
        if plan.routes.is_empty() {
            for args in ipv6_routes(plan) {
                self.add_route(args, &mut save)?;
            }
        }
        if let Some(dns) = plan.dns {
            if !prefixes.iter().any(|p| p.contains(&dns)) {
                let args = vec![
                    "route".into(),
                    "add".into(),
                    format!("{dns}/32"),
                    "dev".into(),
                    plan.tun.clone(),
                ];
                self.add_route(args, &mut save)?;
            }
            self.resolv = Some(backup_resolv(Path::new(RESOLV_CONF))?);
            save(self);
            write_resolv(Path::new(RESOLV_CONF), dns)?;
        }
        Ok(())
    }

    fn add_route(
        &mut self,
        args: Vec<String>,
        save: &mut impl FnMut(&Applied),
    ) -> Result<(), NetError> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Cmd::ip(&refs).run()?;
        self.routes.push(args);
        save(self);
        Ok(())
    }

    /// Undoes everything recorded, in reverse order: routes, DNS, then the kill switch last
    /// (so nothing leaks while the rest is restored). Returns the problems it met.
    pub fn undo(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(mut args) = self.routes.pop() {
            if let Some(verb) = args.get_mut(1) {
                *verb = "del".into();
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            match Cmd::ip(&refs).run() {
                Ok(_) => {}
                // Routes through the TUN device vanish with it.
                Err(NetError::Failed { stderr, .. })
                    if stderr.contains("No such process") || stderr.contains("Cannot find") => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        if let Some(backup) = self.resolv.take()
            && let Err(e) = restore_resolv(Path::new(RESOLV_CONF), &backup)
        {
            problems.push(e.to_string());
            self.resolv = Some(backup);
        }
        if self.kill_switch {
            match Cmd::nft(&["delete", "table", "inet", KILL_SWITCH_TABLE]).run() {
                Ok(_) => self.kill_switch = false,
                Err(NetError::Failed { stderr, .. }) if stderr.contains("No such file") => {
                    self.kill_switch = false
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Reads what `path` is now.
pub fn backup_resolv(path: &Path) -> Result<ResolvBackup, NetError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ResolvBackup::Absent),
        Err(e) => Err(io(path)(e)),
        Ok(m) if m.file_type().is_symlink() => Ok(ResolvBackup::Link(
            std::fs::read_link(path)
                .map_err(io(path))?
                .display()
                .to_string(),
        )),
        Ok(_) => Ok(ResolvBackup::File(
            std::fs::read_to_string(path).map_err(io(path))?,
        )),
    }
}

/// Points the resolver configuration at `dns` (replacing a symlink with a file).
pub fn write_resolv(path: &Path, dns: Ipv4Addr) -> Result<(), NetError> {
    let text = format!("# written by `top vpn up`; restored by `top vpn down`\nnameserver {dns}\n");
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(path).map_err(io(path))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// Puts back what [`backup_resolv`] read.
pub fn restore_resolv(path: &Path, backup: &ResolvBackup) -> Result<(), NetError> {
    match backup {
        ResolvBackup::File(text) => std::fs::write(path, text).map_err(io(path)),
        ResolvBackup::Link(target) => {
            std::fs::remove_file(path).ok();
            std::os::unix::fs::symlink(target, path).map_err(io(path))
        }
        ResolvBackup::Absent => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_goes_through_the_tunnel_or_nowhere() {
        let mut plan = ClientNetPlan {
            tun: "top0".into(),
            relay: "192.0.2.1".parse().unwrap(),
            relay_ports: vec![7700],
            routes: Vec::new(),
            dns: None,
            kill_switch: false,
            allow_lan: false,
            ipv6: true,
        };
        assert_eq!(
            ipv6_routes(&plan)[1],
            ["route", "add", "8000::/1", "dev", "top0"]
        );
        plan.ipv6 = false;
        assert_eq!(
            ipv6_routes(&plan)[0],
            ["route", "add", "unreachable", "::/1"]
        );
    }

    #[test]
    fn parses_route_get() {
        let (via, dev) =
            parse_route_get("10.0.2.2 via 10.0.1.1 dev eth0 src 10.0.1.2 uid 0 \n    cache")
                .unwrap()
                .unwrap();
        assert_eq!(
            (via, dev.as_str()),
            (Some(Ipv4Addr::new(10, 0, 1, 1)), "eth0")
        );
        let (via, dev) = parse_route_get("10.0.1.1 dev veth0 src 10.0.1.2 uid 0")
            .unwrap()
            .unwrap();
        assert_eq!((via, dev.as_str()), (None, "veth0"));
        assert_eq!(
            parse_route_get("local 127.0.0.1 dev lo table local src 127.0.0.1").unwrap(),
            None
        );
        assert!(parse_route_get("garbage").is_err());
    }

    #[test]
    fn resolv_conf_is_restored_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\noptions edns0\n").unwrap();
        let backup = backup_resolv(&path).unwrap();
        write_resolv(&path, Ipv4Addr::new(10, 0, 3, 2)).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("10.0.3.2"));
        restore_resolv(&path, &backup).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 192.0.2.53\noptions edns0\n"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/run/stub-resolv.conf", &path).unwrap();
        let backup = backup_resolv(&path).unwrap();
        write_resolv(&path, Ipv4Addr::new(10, 0, 3, 2)).unwrap();
        restore_resolv(&path, &backup).unwrap();
        assert_eq!(
            std::fs::read_link(&path).unwrap(),
            Path::new("/run/stub-resolv.conf")
        );
    }

    #[test]
    fn kill_switch_allows_only_the_tunnel_the_relay_and_the_lan() {
        let relay = "192.0.2.1".parse().unwrap();
        let rules = kill_switch_ruleset(
            "top0",
            relay,
            &[7700, 7701],
            &["10.0.1.0/24".parse().unwrap()],
        );
        assert!(rules.contains("policy drop"));
        assert!(rules.contains("oifname \"top0\" accept"));
        assert!(rules.contains("ip daddr 192.0.2.1 udp dport { 7700, 7701 } accept"));
        assert!(rules.contains("ip daddr { 10.0.1.0/24 } accept"));
        assert!(!kill_switch_ruleset("top0", relay, &[7700], &[]).contains("10.0.1.0"));
    }
}
