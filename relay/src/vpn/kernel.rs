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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::allowance::{Allowance, Counts};
use super::metrics::VpnMetrics;
use super::nft::{NftError, NftSession, nft, parse_counters};
use super::route_rules::{Tuple, delete_script, freeze_script, limit_script, setup_script};
use crate::billing::meter::ClientMeter;
use top_proto::id::RelayId;

/// How often the kernel's counts are read and its allowances topped up.
pub const POLL_EVERY: Duration = Duration::from_millis(25);
/// Longest one poll may take (a session that does not answer is replaced).
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// An nft session is replaced this often (its command history grows).
const SESSION_FOR: Duration = Duration::from_secs(60);
/// A route whose counters a listing lacks this many times is given up (its table was altered
/// from outside): its credit is let go of, its objects deleted.
const MISSING_POLLS: u32 = 40;

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

/// Where a route is in leaving the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Forwarding.
    Live,
    /// Unlinked (or not: then its quotas are what stops it): frozen at the next poll.
    Ending,
    /// Frozen: the next listing holds its final counts.
    Frozen,
}

/// A route the kernel forwards.
struct KernelRoute {
    tuple: Tuple,
    up: Allowance<ClientMeter>,
    down: Allowance<ClientMeter>,
    /// The quota limits set last.
    limits: (u64, u64),
    /// Packets dropped over the quotas so far.
    dropped: u64,
    stage: Stage,
    /// Listings in a row that lacked its counters.
    missing: u32,
}

/// The entry's kernel forwarding: its own nftables table and the routes in it.
pub struct KernelPath {
    table: String,
    next_id: AtomicU64,
    routes: Mutex<HashMap<u64, KernelRoute>>,
    /// The table went missing (someone flushed the ruleset): set up again at the next poll.
    lost_table: AtomicBool,
}

impl KernelPath {
    /// The table of relay `id` (named for the relay, not its forwarding port: a table left by a
    /// run on another port is found all the same).
    fn table_of(id: &RelayId) -> String {
        let hex: String = id.as_bytes()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("toprelay_{hex}")
    }

    /// Deletes what a previous run of relay `id` left in the kernel (after a crash its routes
    /// would go on within their last quotas), whether or not this run forwards in the kernel.
    pub async fn clear(id: &RelayId) {
        nft(&format!("delete table ip {}\n", Self::table_of(id)), &[])
            .await
            .ok();
    }

    /// Sets up kernel forwarding for relay `id` (a table of its own, emptied of anything a
    /// previous run left), if this host allows it.
    pub async fn open(id: &RelayId) -> Result<Arc<Self>, KernelError> {
        let on = tokio::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .await
            .map_err(|_| KernelError::ForwardingOff)?;
        if on.trim() != "1" {
            return Err(KernelError::ForwardingOff);
        }
        let table = Self::table_of(id);
        nft(&setup_script(&table), &[]).await?;
        Ok(Arc::new(Self {
            table,
            next_id: AtomicU64::new(1),
            routes: Mutex::default(),
            lost_table: AtomicBool::new(false),
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
        if let Err(e) = nft(&tuple.add_script(&self.table, id, limits), &[]).await {
            // A script nft refused changed nothing (it is one transaction). One that timed out
            // may have been committed: what is this route's goes (not map entries another
            // route may hold).
            if e.timed_out() {
                for line in delete_script(&self.table, id, None).lines() {
                    nft(line, &[]).await.ok();
                }
            }
            up.end(Counts::default());
            down.end(Counts::default());
            return Err(e.into());
        }
        crate::util::lock(&self.routes).insert(
            id,
            KernelRoute {
                tuple,
                up,
                down,
                limits,
                dropped: 0,
                stage: Stage::Live,
                missing: 0,
            },
        );
        debug!(?tuple, id, "route forwarded in the kernel");
        Ok(id)
    }

    /// Takes route `id` (of `tuple`) out of the kernel: its packets no longer reach its rules
    /// when this returns; its last counts are read, and its rules deleted, at the next polls.
    pub async fn remove(&self, id: u64, tuple: Tuple) {
        if let Err(e) = nft(&tuple.unlink_script(&self.table), &[]).await {
            // Its quotas will stop it (frozen at the next poll).
            warn!("unlinking a route in the kernel: {e}");
        }
        if let Some(route) = crate::util::lock(&self.routes).get_mut(&id) {
            route.stage = Stage::Ending;
        }
    }

    /// Reads the kernel's counts: notes what it forwarded, tops up allowances, and lets go of
    /// ended routes.
    pub async fn poll(&self, nft: &mut NftSession, m: &VpnMetrics) -> Result<(), KernelError> {
        let t = &self.table;
        if self.lost_table.swap(false, Ordering::Relaxed) {
            warn!("the kernel forwarding table was gone: set up again");
            nft.send(&setup_script(t)).await?;
        }
        if crate::util::lock(&self.routes).is_empty() {
            return Ok(());
        }
        // Every table's counters: a listing of one missing table would answer nothing.
        let listing = nft.list("list counters ip").await?;
        let counters = parse_counters(&listing, t)
            .ok_or_else(|| NftError(format!("unexpected listing: {listing:.80}")))?;
        let counts = |dir: &str, id: u64| {
            let (seen, seen_packets) = counters.of(&format!("s{dir}{id}"))?;
            let (bytes, packets) = counters.of(&format!("c{dir}{id}"))?;
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
                    route.missing += 1;
                    if route.missing < MISSING_POLLS {
                        // Added since the listing, most likely: next time.
                        return true;
                    }
                    warn!(id, "a route's counters are gone from the kernel: given up");
                    route.up.end(route.up.last());
                    route.down.end(route.down.last());
                    script.push_str(&delete_script(t, id, Some(&route.tuple)));
                    if !counters.tables.contains(t) {
                        self.lost_table.store(true, Ordering::Relaxed);
                    }
                    return false;
                };
                route.missing = 0;
                let packets = (up.packets - route.up.last().packets.min(up.packets))
                    + (down.packets - route.down.last().packets.min(down.packets));
                m.forwarded.inc_by(packets);
                m.kernel_forwarded.inc_by(packets);
                m.forwarded_bytes.inc_by(
                    Allowance::<ClientMeter>::payload_between(route.up.last(), up)
                        + Allowance::<ClientMeter>::payload_between(route.down.last(), down),
                );
                let dropped = up_dropped + down_dropped;
                let newly_dropped = dropped.saturating_sub(route.dropped);
                m.dropped_unpaid.inc_by(newly_dropped);
                m.kernel_dropped.inc_by(newly_dropped);
                route.dropped = route.dropped.max(dropped);
                match route.stage {
                    Stage::Live => {
                        let limits = (route.up.update(up), route.down.update(down));
                        if limits.0 != route.limits.0 {
                            script.push_str(&limit_script(t, id, "u", limits.0));
                        }
                        if limits.1 != route.limits.1 {
                            script.push_str(&limit_script(t, id, "d", limits.1));
                        }
                        route.limits = limits;
                        true
                    }
                    Stage::Ending => {
                        // Unlinked again (in case it failed) and frozen; this listing may
                        // predate both.
                        script.push_str(&route.tuple.unlink_script(t));
                        script.push_str(&freeze_script(t, id));
                        route.stage = Stage::Frozen;
                        route.up.update_without_holding(up);
                        route.down.update_without_holding(down);
                        true
                    }
                    Stage::Frozen => {
                        let last = (route.up.last(), route.down.last());
                        if (up.forwarded, down.forwarded) != (last.0.forwarded, last.1.forwarded) {
                            // Not yet stopped (the commands were lost, or came after the
                            // listing): again.
                            script.push_str(&route.tuple.unlink_script(t));
                            script.push_str(&freeze_script(t, id));
                            route.up.update_without_holding(up);
                            route.down.update_without_holding(down);
                            return true;
                        }
                        // Final: it forwarded nothing since the last listing.
                        route.up.end(up);
                        route.down.end(down);
                        script.push_str(&delete_script(t, id, Some(&route.tuple)));
                        false
                    }
                }
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
        let mut session: Option<(NftSession, Instant)> = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => break,
            }
            if session
                .as_ref()
                .is_none_or(|(_, since)| since.elapsed() > SESSION_FOR)
            {
                if let Some((old, _)) = session.take() {
                    // What it was sent last is carried out before it goes.
                    old.finish().await;
                }
                session = NftSession::start()
                    .map_err(|e| warn!("starting nft: {e}"))
                    .ok()
                    .map(|s| (s, Instant::now()));
            }
            let Some((nft, _)) = &mut session else {
                continue;
            };
            let polled = tokio::select! {
                r = tokio::time::timeout(POLL_TIMEOUT, self.poll(nft, m)) => {
                    r.unwrap_or_else(|_| Err(NftError("no answer".into()).into()))
                }
                _ = stop.cancelled() => break,
            };
            if let Err(e) = polled {
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
