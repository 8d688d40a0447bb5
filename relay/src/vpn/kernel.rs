//! Kernel forwarding of 2-hop routes (Linux nftables, stateless): instead of receiving each
//! packet and sending it on, the entry has the kernel rewrite a route's packets on the way
//! through (client → forwarding port becomes route port → exit, and back). The user-space
//! forwarder ([`super::forward`]) stays for routes the kernel cannot take, and carries a
//! route's first packets until its rules are in.
//!
//! The kernel forwards only what credit is held for: each direction's rule has a quota whose
//! limit is the credit held ahead ([`Allowance`]); packets over it are dropped (counted as
//! unpaid), as user space drops packets beyond a client's credit. Every [`POLL_EVERY`] the
//! kernel's counts are read (what it forwarded goes to the route's [`ForwardLog`], the same log
//! acknowledgements are billed against) and the allowances are topped up from the client's
//! credit: half as much again as the last interval was offered, so a steady flow never meets
//! the limit.
//!
//! Needs CAP_NET_ADMIN, the `nft` command and `net.ipv4.ip_forward = 1`; IPv4 routes only
//! (client, exit and both entry addresses IPv4, none loopback). A relay without them forwards
//! in user space.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::allowance::{Allowance, Counts};
use super::metrics::VpnMetrics;
use super::nft::{NftError, NftSession, handles, nft, parse_counters};
use crate::billing::meter::ClientMeter;

/// How often the kernel's counts are read and its allowances topped up.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

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

    /// The nftables rules of route `id` (in chains `pre` and `post`), tagged with its comment.
    fn rules(&self, table: &str, id: u64) -> String {
        let m = |from: SocketAddrV4, to: SocketAddrV4| {
            format!(
                "ip saddr {} udp sport {} ip daddr {} udp dport {}",
                from.ip(),
                from.port(),
                to.ip(),
                to.port()
            )
        };
        let (c, f, b, x) = (self.client, self.front, self.back, self.exit);
        // Per direction: counted as seen, within the quota counted as forwarded and rewritten,
        // over it dropped; on the way out the source is rewritten.
        let way_in = |dir: &str, matched: String, to: SocketAddrV4| {
            format!(
                "add rule ip {table} pre {matched} counter name \"s{dir}{id}\" \
                 quota name \"{dir}{id}\" counter name \"c{dir}{id}\" \
                 ip daddr set {} udp dport set {} notrack comment \"r{id}\"\n\
                 add rule ip {table} pre {matched} drop comment \"r{id}\"\n",
                to.ip(),
                to.port()
            )
        };
        let way_out = |matched: String, from: SocketAddrV4| {
            format!(
                "add rule ip {table} post {matched} ip saddr set {} udp sport set {} \
                 comment \"r{id}\"\n",
                from.ip(),
                from.port()
            )
        };
        [
            way_in("u", m(c, f), x),
            way_in("d", m(x, b), c),
            way_out(m(c, x), b),
            way_out(m(x, c), f),
        ]
        .concat()
    }
}

/// Why the kernel cannot forward (a route, or at all).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `net.ipv4.ip_forward` is not 1.
    #[error("net.ipv4.ip_forward is off")]
    ForwardingOff,
    /// `nft` could not be run, or failed.
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// A route the kernel forwards.
struct KernelRoute {
    /// Its rules' chains and handles (empty once it ended).
    rules: Vec<(String, u64)>,
    up: Allowance<ClientMeter>,
    down: Allowance<ClientMeter>,
    /// The quota limits set last.
    limits: (u64, u64),
    /// Packets dropped over the quotas so far.
    dropped: u64,
    ended: bool,
}

/// The entry's kernel forwarding: its own nftables table and the routes in it.
pub struct KernelPath {
    table: String,
    next_id: AtomicU64,
    routes: Mutex<HashMap<u64, KernelRoute>>,
}

impl KernelPath {
    /// Sets up kernel forwarding for the forwarding port `port` (a table of its own, emptied of
    /// anything a previous run left), if this host allows it.
    pub async fn open(port: u16) -> Result<Arc<Self>, KernelError> {
        let on = tokio::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .await
            .map_err(|_| KernelError::ForwardingOff)?;
        if on.trim() != "1" {
            return Err(KernelError::ForwardingOff);
        }
        let table = format!("toprelay_{port}");
        nft(
            &format!(
                "add table ip {table}\ndelete table ip {table}\nadd table ip {table}\n\
                 add chain ip {table} pre {{ type filter hook prerouting priority raw; \
                 policy accept; }}\n\
                 add chain ip {table} post {{ type filter hook postrouting priority srcnat; \
                 policy accept; }}\n"
            ),
            &[],
        )
        .await?;
        Ok(Arc::new(Self {
            table,
            next_id: AtomicU64::new(1),
            routes: Mutex::default(),
        }))
    }

    /// Has the kernel forward `tuple`, each direction within its allowance; returns the
    /// route's id (for [`KernelPath::remove`]).
    pub async fn add(
        &self,
        tuple: Tuple,
        mut up: Allowance<ClientMeter>,
        mut down: Allowance<ClientMeter>,
    ) -> Result<u64, KernelError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let limits = (up.update(Counts::default()), down.update(Counts::default()));
        let t = &self.table;
        let mut script = String::new();
        for (name, limit) in [("u", limits.0), ("d", limits.1)] {
            let _ = writeln!(
                script,
                "add quota ip {t} {name}{id} {{ until {limit} bytes }}\n\
                 add counter ip {t} c{name}{id}\nadd counter ip {t} s{name}{id}"
            );
        }
        script.push_str(&tuple.rules(t, id));
        let echoed = match nft(&script, &["-e", "-a"]).await {
            Ok(out) => out,
            Err(e) => {
                up.end(Counts::default());
                down.end(Counts::default());
                // Whatever part of the script ran goes too.
                nft(&objects(t, id, "delete"), &[]).await.ok();
                return Err(e.into());
            }
        };
        let rules = handles(&echoed);
        crate::util::lock(&self.routes).insert(
            id,
            KernelRoute {
                rules,
                up,
                down,
                limits,
                dropped: 0,
                ended: false,
            },
        );
        debug!(?tuple, id, "route forwarded in the kernel");
        Ok(id)
    }

    /// Takes route `id` out of the kernel (its last counts are read at the next poll).
    pub async fn remove(&self, id: u64) {
        let rules = {
            let mut routes = crate::util::lock(&self.routes);
            let Some(route) = routes.get_mut(&id) else {
                return;
            };
            route.ended = true;
            std::mem::take(&mut route.rules)
        };
        let mut script = String::new();
        for (chain, handle) in rules {
            let _ = writeln!(
                script,
                "delete rule ip {} {chain} handle {handle}",
                self.table
            );
        }
        if let Err(e) = nft(&script, &[]).await {
            warn!("taking a route out of the kernel: {e}");
        }
    }

    /// Routes in the kernel now.
    pub fn routes(&self) -> usize {
        crate::util::lock(&self.routes).len()
    }

    /// Reads the kernel's counts: notes what it forwarded, tops up allowances, and lets go of
    /// ended routes.
    pub async fn poll(&self, nft: &mut NftSession, m: &VpnMetrics) -> Result<(), KernelError> {
        if crate::util::lock(&self.routes).is_empty() {
            return Ok(());
        }
        let t = &self.table;
        let counters = nft.list(&format!("list counters table ip {t}")).await?;
        let counters = parse_counters(&counters);
        let counts = |dir: &str, id: u64| {
            let (bytes, packets) = counters.get(&format!("c{dir}{id}")).copied()?;
            let (seen, seen_packets) = counters.get(&format!("s{dir}{id}")).copied()?;
            Some((
                Counts {
                    forwarded: bytes,
                    packets,
                    seen,
                },
                seen_packets.saturating_sub(packets),
            ))
        };
        let mut script = String::new();
        {
            let mut routes = crate::util::lock(&self.routes);
            routes.retain(|&id, route| {
                let (Some((up, up_dropped)), Some((down, down_dropped))) =
                    (counts("u", id), counts("d", id))
                else {
                    // Not listed yet (added since): next time.
                    return true;
                };
                let packets = (up.packets - route.up.last().packets.min(up.packets))
                    + (down.packets - route.down.last().packets.min(down.packets));
                m.forwarded.inc_by(packets);
                m.forwarded_bytes.inc_by(
                    Allowance::<ClientMeter>::payload_between(route.up.last(), up)
                        + Allowance::<ClientMeter>::payload_between(route.down.last(), down),
                );
                m.kernel_forwarded.inc_by(packets);
                let dropped = up_dropped + down_dropped;
                m.dropped_unpaid
                    .inc_by(dropped.saturating_sub(route.dropped));
                route.dropped = route.dropped.max(dropped);
                if route.ended {
                    route.up.end(up);
                    route.down.end(down);
                    script.push_str(&objects(t, id, "delete"));
                    return false;
                }
                let limits = (route.up.update(up), route.down.update(down));
                for (name, new, old) in [
                    ("u", limits.0, route.limits.0),
                    ("d", limits.1, route.limits.1),
                ] {
                    if new != old {
                        let _ = writeln!(
                            script,
                            "add quota ip {t} {name}{id} {{ until {new} bytes }}"
                        );
                    }
                }
                route.limits = limits;
                true
            });
            m.kernel_routes.set(routes.len() as i64);
        }
        if !script.is_empty() {
            nft.send(&script).await?;
        }
        Ok(())
    }

    /// Polls until `stop`, then takes the table out of the kernel.
    pub async fn run(self: Arc<Self>, m: &VpnMetrics, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut session = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => break,
            }
            if session.is_none() {
                session = NftSession::start()
                    .map_err(|e| warn!("starting nft: {e}"))
                    .ok();
            }
            let Some(nft) = &mut session else { continue };
            if let Err(e) = self.poll(nft, m).await {
                // A session that failed is not trusted to be in step: a new one next time.
                warn!("reading the kernel's forwarding counts: {e}");
                session = None;
            }
        }
        if let Err(e) = nft(&format!("delete table ip {}\n", self.table), &[]).await {
            warn!("taking kernel forwarding down: {e}");
        }
        info!("kernel forwarding stopped");
    }
}

/// The script that creates or deletes route `id`'s quotas and counters (`verb`: add/delete).
fn objects(table: &str, id: u64, verb: &str) -> String {
    let mut script = String::new();
    for dir in ["u", "d"] {
        let _ = write!(
            script,
            "{verb} quota ip {table} {dir}{id}\n{verb} counter ip {table} c{dir}{id}\n\
             {verb} counter ip {table} s{dir}{id}\n"
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
        assert!(
            Tuple::of(
                a([127, 0, 0, 1], 5000),
                front,
                a([10, 0, 1, 2], 1),
                a([10, 0, 1, 1], 2)
            )
            .is_none()
        );
        assert!(
            Tuple::of(
                a([10, 0, 0, 2], 5000),
                (None, 7701),
                a([10, 0, 1, 2], 1),
                a([10, 0, 1, 1], 2)
            )
            .is_none()
        );
        // On this host: the client (it sends from the address it sends to), or the exit (the
        // route's socket reaches it from its own address).
        let doc = SocketAddr::from((DOC, 5000));
        assert!(Tuple::of(doc, front, a([10, 0, 1, 2], 1), a([10, 0, 1, 1], 2)).is_none());
        assert!(
            Tuple::of(
                a([10, 0, 0, 2], 5000),
                front,
                a([10, 0, 1, 2], 1),
                a([10, 0, 1, 2], 2)
            )
            .is_none()
        );
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1));
        assert!(Tuple::of(a([10, 0, 0, 2], 5000), front, a([10, 0, 1, 2], 1), v6).is_none());
        let rules = ok.map(|t| t.rules("t", 3)).unwrap_or_default();
        assert_eq!(rules.lines().count(), 6);
        assert!(rules.contains("ip daddr set 10.0.1.1 udp dport set 7700"));
        assert!(rules.contains("ip saddr set 192.0.2.1 udp sport set 7701"));
    }
}
