//! Kernel forwarding of 2-hop routes (Linux nftables, stateless): instead of receiving each
//! packet and sending it on, the entry has the kernel rewrite a route's packets on the way
//! through (client → forwarding port becomes route port → exit, and back). The user-space
//! forwarder ([`super::forward`]) stays: it serves whatever the kernel does not (routes it cannot
//! take, and packets beyond the kernel's allowance).
//!
//! The kernel forwards only what credit is held for: each direction's rule has a quota whose
//! limit is the credit held ahead ([`Allowance`]); packets over it fall through to user space,
//! which holds credit per packet. Every [`POLL_EVERY`] the kernel's counts are read (what it
//! forwarded goes to the route's [`ForwardLog`], the same log acknowledgements are billed
//! against) and the allowances are topped up from the client's credit.
//!
//! Needs CAP_NET_ADMIN, the `nft` command and `net.ipv4.ip_forward = 1`; IPv4 routes only
//! (client, exit and both entry addresses IPv4, none loopback). A relay without them forwards
//! in user space.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::held::ForwardLog;
use super::metrics::VpnMetrics;
use crate::billing::meter::ClientMeter;

/// How often the kernel's counts are read and its allowances topped up.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// Credit held ahead for the kernel, per direction: at least this...
const AHEAD_MIN: u64 = 1 << 20;
/// ... and at most this (twice what it forwarded in the last poll, in between) ...
const AHEAD_MAX: u64 = 32 << 20;
/// ... held in steps of this (a client's credit window is overdrawn by one step at most).
const HOLD_STEP: u64 = 256 * 1024;
/// A free entry's allowance (no meter): the kernel forwards without limit.
const UNLIMITED: u64 = 1 << 60;
/// IPv4 and UDP headers: the kernel counts whole packets, the log counts UDP payload.
const HEADERS: u64 = 28;
/// How long one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// Credit the kernel's allowance is held on (a client's meter).
pub trait Credit {
    /// Holds `bytes` if the credit allows; whether it did.
    fn try_hold(&self, bytes: u64) -> bool;
    /// Lets go of `bytes` held and never used.
    fn release(&self, bytes: u64);
}

impl Credit for ClientMeter {
    fn try_hold(&self, bytes: u64) -> bool {
        ClientMeter::try_hold(self, bytes)
    }
    fn release(&self, bytes: u64) {
        ClientMeter::release(self, bytes)
    }
}

/// The kernel's counts for one direction of a route, read together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes (whole IP packets) the kernel forwarded.
    pub forwarded: u64,
    /// Packets it forwarded.
    pub packets: u64,
    /// Bytes its quota saw: those forwarded, and those over the limit (left to user space).
    pub seen: u64,
}

/// One direction's allowance in the kernel: credit held ahead of what the kernel forwards, so
/// it never forwards a byte nobody holds credit for.
pub struct Allowance<C> {
    credit: Option<Arc<C>>,
    log: Arc<ForwardLog>,
    /// Credit held for the kernel in all.
    held: u64,
    /// What the kernel had forwarded at the last count.
    last: Counts,
}

impl<C: Credit> Allowance<C> {
    /// An allowance drawing on `credit` (`None`: free), noting what it forwards in `log`.
    pub fn new(credit: Option<Arc<C>>, log: Arc<ForwardLog>) -> Self {
        Self {
            credit,
            log,
            held: 0,
            last: Counts::default(),
        }
    }

    /// Takes the kernel's counts: notes what it newly forwarded, holds more credit ahead, and
    /// returns the quota's limit. The quota counts every byte it sees, forwarded or not; those
    /// it did not forward went to user space, so the limit is what is held plus those. (Bytes
    /// seen after this count only lower what the kernel may still forward.)
    pub fn update(&mut self, now: Counts) -> u64 {
        let forwarded = now.forwarded.max(self.last.forwarded);
        let packets = now.packets.max(self.last.packets);
        let new_bytes = forwarded - self.last.forwarded;
        let new_packets = packets - self.last.packets;
        self.log
            .record(new_bytes.saturating_sub(new_packets * HEADERS));
        self.last = Counts {
            forwarded,
            packets,
            seen: now.seen.max(self.last.seen),
        };
        let Some(credit) = &self.credit else {
            return UNLIMITED;
        };
        let want = new_bytes.saturating_mul(2).clamp(AHEAD_MIN, AHEAD_MAX);
        while self.held.saturating_sub(forwarded) < want && credit.try_hold(HOLD_STEP) {
            self.held += HOLD_STEP;
        }
        let others = self.last.seen.saturating_sub(forwarded);
        self.held + others
    }

    /// The route left the kernel (its final counts): notes the rest and lets go of the credit
    /// held and never used.
    pub fn end(&mut self, last: Counts) {
        self.update_without_holding(last);
        if let Some(credit) = &self.credit {
            let unused = self.held.saturating_sub(self.last.forwarded);
            if unused > 0 {
                credit.release(unused);
            }
            self.held = self.last.forwarded;
        }
    }

    fn update_without_holding(&mut self, now: Counts) {
        let credit = self.credit.take();
        self.update(now);
        self.credit = credit;
    }

    /// Credit held for the kernel in all (what it may forward).
    pub fn held(&self) -> u64 {
        self.held
    }
}

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
    /// The tuple of a route, if the kernel can forward it (every address IPv4 and none
    /// loopback or unspecified).
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
        Some(Self {
            client: SocketAddrV4::new(v4(client.ip())?, client.port()),
            front: SocketAddrV4::new(v4(front.0?)?, front.1),
            back: SocketAddrV4::new(v4(back.ip())?, back.port()),
            exit: SocketAddrV4::new(v4(exit.ip())?, exit.port()),
        })
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
        format!(
            "add rule ip {table} pre {} quota name \"u{id}\" counter name \"cu{id}\" \
             ip daddr set {} udp dport set {} notrack comment \"r{id}\"\n\
             add rule ip {table} pre {} quota name \"d{id}\" counter name \"cd{id}\" \
             ip daddr set {} udp dport set {} notrack comment \"r{id}\"\n\
             add rule ip {table} post {} ip saddr set {} udp sport set {} comment \"r{id}\"\n\
             add rule ip {table} post {} ip saddr set {} udp sport set {} comment \"r{id}\"\n",
            m(c, f),
            x.ip(),
            x.port(),
            m(x, b),
            c.ip(),
            c.port(),
            m(c, x),
            b.ip(),
            b.port(),
            m(x, c),
            f.ip(),
            f.port(),
        )
    }
}

/// Why the kernel cannot forward (a route, or at all).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `net.ipv4.ip_forward` is not 1.
    #[error("net.ipv4.ip_forward is off")]
    ForwardingOff,
    /// `nft` could not be run, or failed.
    #[error("nft: {0}")]
    Nft(String),
}

/// A route the kernel forwards.
struct KernelRoute {
    /// Its rules' chains and handles (empty once it ended).
    rules: Vec<(String, u64)>,
    up: Allowance<ClientMeter>,
    down: Allowance<ClientMeter>,
    /// The quota limits set last.
    limits: (u64, u64),
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
                 add counter ip {t} c{name}{id}"
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
                return Err(e);
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
    pub async fn poll(&self, m: &VpnMetrics) -> Result<(), KernelError> {
        if crate::util::lock(&self.routes).is_empty() {
            return Ok(());
        }
        let t = &self.table;
        // (`nft -j -f` prints no listing: the command goes on the command line.)
        let counters = nft("", &["-j", "list", "counters", "table", "ip", t]).await?;
        let quotas = nft("", &["-j", "list", "quotas", "table", "ip", t]).await?;
        let (counters, quotas) = (parse_objects(&counters), parse_objects(&quotas));
        let counts = |dir: &str, id: u64| {
            let (bytes, packets) = counters.get(&format!("c{dir}{id}")).copied()?;
            let (seen, _) = quotas.get(&format!("{dir}{id}")).copied()?;
            Some(Counts {
                forwarded: bytes,
                packets,
                seen,
            })
        };
        let mut script = String::new();
        {
            let mut routes = crate::util::lock(&self.routes);
            routes.retain(|&id, route| {
                let (Some(up), Some(down)) = (counts("u", id), counts("d", id)) else {
                    // Not listed yet (added since): next time.
                    return true;
                };
                let packets = (up.packets - route.up.last.packets.min(up.packets))
                    + (down.packets - route.down.last.packets.min(down.packets));
                m.forwarded.inc_by(packets);
                m.kernel_forwarded.inc_by(packets);
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
            nft(&script, &[]).await?;
        }
        Ok(())
    }

    /// Polls until `stop`, then takes the table out of the kernel.
    pub async fn run(self: Arc<Self>, m: &VpnMetrics, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.cancelled() => break,
            }
            if let Err(e) = self.poll(m).await {
                warn!("reading the kernel's forwarding counts: {e}");
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
    format!(
        "{verb} quota ip {table} u{id}\n{verb} quota ip {table} d{id}\n\
         {verb} counter ip {table} cu{id}\n{verb} counter ip {table} cd{id}\n"
    )
}

/// The chains and handles of the rules `nft -e -a` echoed (`add rule ip T CHAIN ... # handle N`).
fn handles(echoed: &str) -> Vec<(String, u64)> {
    echoed
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "add" || words.next()? != "rule" {
                return None;
            }
            let chain = words.nth(2)?.to_string();
            let (_, handle) = line.rsplit_once("# handle ")?;
            Some((chain, handle.trim().parse().ok()?))
        })
        .collect()
}

/// Counters (`bytes`, `packets`) or quotas (`used`, 0) by name, from `nft -j list` output.
fn parse_objects(json: &str) -> HashMap<String, (u64, u64)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return HashMap::new();
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            if let Some(c) = item.get("counter") {
                Some((
                    c["name"].as_str()?.to_string(),
                    (c["bytes"].as_u64()?, c["packets"].as_u64()?),
                ))
            } else {
                let q = item.get("quota")?;
                Some((q["name"].as_str()?.to_string(), (q["used"].as_u64()?, 0)))
            }
        })
        .collect()
}

/// Runs `nft -f -` (with `flags`) on `script`, or `nft ARGS` if `script` is empty; returns
/// what it printed.
async fn nft(script: &str, args: &[&str]) -> Result<String, KernelError> {
    let run = async {
        let mut command = tokio::process::Command::new("nft");
        command.args(args);
        if !script.is_empty() {
            command.args(["-f", "-"]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| KernelError::Nft(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| KernelError::Nft(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| KernelError::Nft(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(KernelError::Nft(
                err.lines().next().unwrap_or("failed").into(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| KernelError::Nft("timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicU64;

    /// An address for tests of [`Tuple::of`] (documentation range).
    const DOC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// A client's credit: `room` bytes may be held.
    struct Room {
        room: AtomicU64,
        held: AtomicU64,
    }

    impl Credit for Room {
        fn try_hold(&self, bytes: u64) -> bool {
            let held = self.held.load(Ordering::Relaxed);
            if held >= self.room.load(Ordering::Relaxed) {
                return false;
            }
            self.held.store(held + bytes, Ordering::Relaxed);
            true
        }
        fn release(&self, bytes: u64) {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// The kernel's quota: passes a packet while what it saw (that packet too) stays within
    /// the limit; counts every packet it sees.
    struct Quota {
        limit: u64,
        seen: u64,
        forwarded: u64,
        packets: u64,
    }

    impl Quota {
        fn packet(&mut self, len: u64) -> bool {
            self.seen += len;
            if self.seen > self.limit {
                return false;
            }
            self.forwarded += len;
            self.packets += 1;
            true
        }
        fn counts(&self) -> Counts {
            Counts {
                forwarded: self.forwarded,
                packets: self.packets,
                seen: self.seen,
            }
        }
    }

    #[test]
    fn the_kernel_never_forwards_more_than_is_held() {
        let credit = Arc::new(Room {
            room: AtomicU64::new(4 << 20),
            held: AtomicU64::new(0),
        });
        let log = Arc::new(ForwardLog::default());
        let mut a = Allowance::new(Some(credit.clone()), log.clone());
        let mut q = Quota {
            limit: a.update(Counts::default()),
            seen: 0,
            forwarded: 0,
            packets: 0,
        };
        // A client that never pays: bursts of packets between polls, some between a count
        // and the limit it led to (counted only next time).
        for _ in 0..50 {
            for _ in 0..1000 {
                q.packet(1400);
            }
            let counts = q.counts();
            for _ in 0..100 {
                q.packet(1400);
            }
            q.limit = a.update(counts);
            assert!(q.forwarded <= a.held(), "{} > {}", q.forwarded, a.held());
        }
        // The credit ran out: the kernel stopped at what was held (within a packet of it).
        assert!(a.held() <= (4 << 20) + HOLD_STEP);
        assert!(q.forwarded + 1400 > a.held());
        // When the route ends, what was held and never forwarded goes back; everything the
        // kernel forwarded is in the log (as UDP payload).
        a.end(q.counts());
        assert_eq!(credit.held.load(Ordering::Relaxed), q.forwarded);
        assert_eq!(log.bytes(), q.forwarded - HEADERS * q.packets);
    }

    #[test]
    fn a_paying_client_keeps_its_allowance_ahead() {
        let credit = Arc::new(Room {
            room: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
        });
        let mut a = Allowance::new(Some(credit), Arc::new(ForwardLog::default()));
        let mut limit = a.update(Counts::default());
        assert_eq!(limit, AHEAD_MIN);
        let mut q = Quota {
            limit,
            seen: 0,
            forwarded: 0,
            packets: 0,
        };
        for _ in 0..10 {
            // 10 MiB per poll: the allowance grows to twice that ahead.
            while q.forwarded < limit && q.packet(1000) {}
            limit = a.update(q.counts());
            q.limit = limit;
        }
        assert!(a.held() - q.forwarded >= 2 * 1000 * 1000, "{}", a.held());
        assert!(a.held() - q.forwarded <= AHEAD_MAX + HOLD_STEP);
        // A free entry's kernel is unlimited.
        let mut free = Allowance::<Room>::new(None, Arc::new(ForwardLog::default()));
        assert_eq!(free.update(Counts::default()), UNLIMITED);
    }

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
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1));
        assert!(Tuple::of(a([10, 0, 0, 2], 5000), front, a([10, 0, 1, 2], 1), v6).is_none());
        let rules = ok.map(|t| t.rules("t", 3)).unwrap_or_default();
        assert_eq!(rules.lines().count(), 4);
        assert!(rules.contains("ip daddr set 10.0.1.1 udp dport set 7700"));
        assert!(rules.contains("ip saddr set 192.0.2.1 udp sport set 7701"));
    }

    #[test]
    fn handles_and_counts_are_read_from_nft_output() {
        let echoed = "add quota ip t u1 { until 5 bytes }\n\
                      add rule ip t pre ip saddr 1.2.3.4 quota name \"u1\" comment \"r1\" # handle 7\n\
                      add rule ip t post ip saddr 1.2.3.4 comment \"r1\" # handle 9\n";
        assert_eq!(
            handles(echoed),
            vec![("pre".to_string(), 7), ("post".to_string(), 9)]
        );
        let json = r#"{"nftables": [{"metainfo": {}}, {"counter": {"name": "cu1", "packets": 3, "bytes": 300}},
            {"quota": {"name": "u1", "bytes": 5000, "used": 700, "inv": false}}]}"#;
        let objects = parse_objects(json);
        assert_eq!(objects.get("cu1"), Some(&(300, 3)));
        assert_eq!(objects.get("u1"), Some(&(700, 0)));
        assert!(parse_objects("not json").is_empty());
    }
}
