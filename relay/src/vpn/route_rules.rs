//! The nftables of kernel forwarding ([`super::kernel`]): the entry's table, and each route's
//! chains, quotas and counters. A packet's four addresses are looked up once (a verdict map
//! per hook), so the cost per packet does not grow with the routes.
//!
//! Route `id` has, per direction (`u`: client → exit, `d`: exit → client), a chain `i{dir}{id}`
//! in prerouting (counter `s` of what is seen, quota `q`, counter `c` of what is forwarded,
//! the destination rewritten; over the quota, dropped) and a chain `o{dir}{id}` in
//! postrouting (the source rewritten).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

/// A route's four addresses, all IPv4: the client, the forwarding port it sends to (front),
/// the route's socket (back), and the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// The client's address.
    pub client: SocketAddrV4,
    /// The entry's address and forwarding port the client sends to.
    pub front: SocketAddrV4,
    /// The entry's address and port the exit sees (the route's socket).
    pub back: SocketAddrV4,
    /// The exit's address.
    pub exit: SocketAddrV4,
}

impl Tuple {
    /// The tuple of a route, if the kernel can forward it (every address IPv4, none loopback or
    /// unspecified, neither the client nor the exit on this host).
    pub fn of(
        client: SocketAddr,
        front: (Option<IpAddr>, u16),
        back: SocketAddr,
        exit: SocketAddr,
    ) -> Option<Self> {
        let v4 = |ip: IpAddr| match ip.to_canonical() {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
            _ => None,
        };
        let tuple = Self {
            client: SocketAddrV4::new(v4(client.ip())?, client.port()),
            front: SocketAddrV4::new(v4(front.0?)?, front.1),
            back: SocketAddrV4::new(v4(back.ip())?, back.port()),
            exit: SocketAddrV4::new(v4(exit.ip())?, exit.port()),
        };
        // A client or exit on this host would have its packets delivered here rather than
        // forwarded, their source never rewritten.
        if tuple.client.ip() == tuple.front.ip() || tuple.exit.ip() == tuple.back.ip() {
            return None;
        }
        Some(tuple)
    }
}

impl Tuple {
    /// The map keys of the route's packets: (into prerouting, into postrouting) per direction.
    fn keys(&self) -> [(String, String); 2] {
        let key = |from: SocketAddrV4, to: SocketAddrV4| {
            format!(
                "{} . {} . {} . {}",
                from.ip(),
                from.port(),
                to.ip(),
                to.port()
            )
        };
        let (c, f, b, x) = (self.client, self.front, self.back, self.exit);
        [(key(c, f), key(c, x)), (key(x, b), key(x, c))]
    }

    /// The script that puts route `id` in `table` with quota limits `limits` (up, down).
    pub fn add_script(&self, table: &str, id: u64, limits: (u64, u64)) -> String {
        let t = table;
        let (c, f, b, x) = (self.client, self.front, self.back, self.exit);
        let mut script = String::new();
        let ways = [("u", limits.0, x, b), ("d", limits.1, c, f)];
        for (dir, limit, to, from) in ways {
            // The counter of what is seen comes before the one of what is forwarded, in the
            // table and so in a listing: a packet between the two reads lowers the limit.
            let _ = write!(
                script,
                "add quota ip {t} q{dir}{id} {{ until {limit} bytes }}\n\
                 add counter ip {t} s{dir}{id}\n\
                 add counter ip {t} c{dir}{id}\n\
                 add chain ip {t} i{dir}{id}\n\
                 add rule ip {t} i{dir}{id} counter name \"s{dir}{id}\" quota name \"q{dir}{id}\" \
                 counter name \"c{dir}{id}\" ip daddr set {} udp dport set {} notrack accept\n\
                 add rule ip {t} i{dir}{id} drop\n\
                 add chain ip {t} o{dir}{id}\n\
                 add rule ip {t} o{dir}{id} ip saddr set {} udp sport set {} accept\n",
                to.ip(),
                to.port(),
                from.ip(),
                from.port(),
            );
        }
        let [(up_in, up_out), (down_in, down_out)] = self.keys();
        let _ = write!(
            script,
            "add element ip {t} in {{ {up_in} : jump iu{id}, {down_in} : jump id{id} }}\n\
             add element ip {t} out {{ {up_out} : jump ou{id}, {down_out} : jump od{id} }}\n"
        );
        script
    }

    /// The script that unlinks the route: its packets no longer reach its chains (an entry
    /// per line: one already gone does not keep the others).
    pub fn unlink_script(&self, table: &str) -> String {
        let [(up_in, up_out), (down_in, down_out)] = self.keys();
        format!(
            "delete element ip {table} in {{ {up_in} }}\n\
             delete element ip {table} in {{ {down_in} }}\n\
             delete element ip {table} out {{ {up_out} }}\n\
             delete element ip {table} out {{ {down_out} }}\n"
        )
    }
}

/// The script that (re)creates the entry's table `table`, empty of routes.
pub fn setup_script(table: &str) -> String {
    let t = table;
    let key = "ipv4_addr . inet_service . ipv4_addr . inet_service";
    let lookup = "ip saddr . udp sport . ip daddr . udp dport";
    format!(
        "add table ip {t}\ndelete table ip {t}\nadd table ip {t}\n\
         add map ip {t} in {{ type {key} : verdict; }}\n\
         add map ip {t} out {{ type {key} : verdict; }}\n\
         add chain ip {t} pre {{ type filter hook prerouting priority raw; policy accept; }}\n\
         add chain ip {t} post {{ type filter hook postrouting priority srcnat; policy accept; }}\n\
         add rule ip {t} pre ip protocol udp {lookup} vmap @in\n\
         add rule ip {t} post ip protocol udp {lookup} vmap @out\n"
    )
}

/// The script that stops route `id` forwarding anything more (whether or not it is unlinked).
pub fn freeze_script(table: &str, id: u64) -> String {
    format!(
        "add quota ip {table} qu{id} {{ until 1 bytes }}\n\
         add quota ip {table} qd{id} {{ until 1 bytes }}\n"
    )
}

/// The script that sets route `id`'s quota limit for `dir` (`u` or `d`).
pub fn limit_script(table: &str, id: u64, dir: &str, limit: u64) -> String {
    format!("add quota ip {table} q{dir}{id} {{ until {limit} bytes }}\n")
}

/// The script that deletes what is left of route `id` (of `tuple`, unlinked first if given; a
/// line per object: one failing does not keep the others).
pub fn delete_script(table: &str, id: u64, tuple: Option<&Tuple>) -> String {
    let t = table;
    let mut script = tuple.map(|r| r.unlink_script(t)).unwrap_or_default();
    for dir in ["u", "d"] {
        let _ = write!(
            script,
            "flush chain ip {t} i{dir}{id}\ndelete chain ip {t} i{dir}{id}\n\
             flush chain ip {t} o{dir}{id}\ndelete chain ip {t} o{dir}{id}\n\
             delete quota ip {t} q{dir}{id}\ndelete counter ip {t} s{dir}{id}\n\
             delete counter ip {t} c{dir}{id}\n"
        );
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An address for tests of [`Tuple::of`] (documentation range).
    const DOC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn only_routes_of_ipv4_addresses_that_are_not_loopback_go_to_the_kernel() {
        let a = |ip: [u8; 4], port| SocketAddr::from((ip, port));
        let ok = Tuple::of(
            a([10, 0, 0, 2], 5000),
            (Some(IpAddr::V4(DOC)), 7701),
            a([10, 0, 1, 2], 40000),
            a([10, 0, 1, 1], 7700),
        );
        assert!(ok.is_some());
        let mapped = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped(), 5000));
        let front = (Some(IpAddr::V4(DOC)), 7701);
        assert_eq!(
            Tuple::of(mapped, front, a([10, 0, 1, 2], 1), a([10, 0, 1, 1], 2)).map(|t| t.client),
            ok.map(|t| t.client)
        );
        let (back, exit) = (a([10, 0, 1, 2], 1), a([10, 0, 1, 1], 2));
        let client = a([10, 0, 0, 2], 5000);
        assert!(Tuple::of(a([127, 0, 0, 1], 5000), front, back, exit).is_none());
        assert!(Tuple::of(client, (None, 7701), back, exit).is_none());
        // On this host: the client (it sends from the address it sends to), or the exit (the
        // route's socket reaches it from its own address).
        assert!(Tuple::of(SocketAddr::from((DOC, 5000)), front, back, exit).is_none());
        assert!(Tuple::of(client, front, back, a([10, 0, 1, 2], 2)).is_none());
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1));
        assert!(Tuple::of(a([10, 0, 0, 2], 5000), front, a([10, 0, 1, 2], 1), v6).is_none());
        let script = ok
            .map(|t| t.add_script("t", 3, (10, 20)))
            .unwrap_or_default();
        assert!(script.contains("ip daddr set 10.0.1.1 udp dport set 7700"));
        assert!(script.contains("ip saddr set 192.0.2.1 udp sport set 7701"));
        assert!(script.contains("10.0.0.2 . 5000 . 192.0.2.1 . 7701 : jump iu3"));
        assert!(script.contains("10.0.1.1 . 7700 . 10.0.0.2 . 5000 : jump od3"));
        assert!(script.contains("add quota ip t qd3 { until 20 bytes }"));
    }
}
