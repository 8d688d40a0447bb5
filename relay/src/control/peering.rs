//! The control plane's peers: dialing the bootstrap relays, taking what a peer says of itself
//! (a registered relay's addresses enter the routing table), and dropping peers whose gossip
//! score fell too low.

use std::time::Instant;

use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, identify};
use tracing::{debug, info};

use super::addrs::is_unspecified;
use super::ask::control_addrs;
use super::behaviour::{self, DROP_BELOW};
use super::task::{BLOCK_FOR, BOOTSTRAP_AGAIN, MAX_PEER_ADDRS, Task};

/// Most peers blocked at once.
const MAX_BLOCKED: usize = 4096;
use super::{MAX_OBSERVED, keys};

impl Task {
    /// Dials the bootstrap relays (configured, and the genesis' own) while no peer is
    /// connected.
    pub(super) fn dial_bootstrap(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_some() {
            if !self.bootstrapped && self.kad().bootstrap().is_ok() {
                self.bootstrapped = true;
            }
            return;
        }
        if now < self.bootstrap_at {
            return;
        }
        self.bootstrap_at = now + BOOTSTRAP_AGAIN;
        // Each is asked over QUIC (its address is the one given) where its control plane
        // listens; the answers come back to the task, which dials them.
        for relay in self.bootstrap.clone() {
            let Some(peer) = keys::peer_id(&relay.id) else {
                continue;
            };
            if peer == *self.swarm.local_peer_id() {
                continue;
            }
            let (core, found) = (self.core.clone(), self.found.clone());
            self.core.tasks.spawn(async move {
                match control_addrs(&core, &relay).await {
                    Ok(addrs) => {
                        found.try_send((peer, addrs)).ok();
                    }
                    Err(e) => debug!(
                        "asking bootstrap relay {} for its control plane: {e}",
                        relay.id.short()
                    ),
                }
            });
        }
    }

    /// A bootstrap relay said where its control plane listens: dialed there.
    pub(super) fn on_bootstrap_found(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let addrs: Vec<Multiaddr> = addrs.into_iter().filter(|a| !is_unspecified(a)).collect();
        for addr in &addrs {
            self.kad().add_address(&peer, addr.clone());
        }
        let dial = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(dial) {
            debug!(%peer, "dialing a bootstrap relay: {e}");
        }
    }

    /// A peer said who it is: a registered relay enters the routing table at the addresses it
    /// listens on; a peer of another protocol is dropped.
    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != behaviour::IDENTIFY_PROTOCOL {
            self.swarm.disconnect_peer_id(peer).ok();
            return;
        }
        // Only registered relays are asked how they see this one, and only they enter the
        // routing table (a bounded number of addresses each).
        if !self.registered.contains_key(&peer) {
            return;
        }
        if self.observed.len() < MAX_OBSERVED && self.observed.insert(info.observed_addr.clone()) {
            let observed = self.observed.iter().map(|a| a.to_string()).collect();
            self.control.update(|s| s.observed = observed);
        }
        let addrs = info
            .listen_addrs
            .into_iter()
            .filter(|a| !is_unspecified(a))
            .take(MAX_PEER_ADDRS)
            .collect();
        self.route_to(peer, addrs);
    }

    /// Drops and blocks peers whose gossip score fell below [`DROP_BELOW`]; unblocks those
    /// whose time is up.
    pub(super) fn drop_low_scores(&mut self, now: Instant) {
        let low: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| {
                self.swarm
                    .behaviour()
                    .gossip
                    .peer_score(p)
                    .is_some_and(|s| s < DROP_BELOW)
            })
            .copied()
            .collect();
        for peer in low {
            if !self.swarm.behaviour_mut().blocked.block_peer(peer) {
                continue;
            }
            info!(%peer, "dropping a control-plane peer for its gossip score");
            self.blocked.push((peer, now + BLOCK_FOR));
            self.control.update(|s| s.dropped_peers += 1);
            // The oldest block ends early rather than the list growing without bound.
            if self.blocked.len() > MAX_BLOCKED {
                let (oldest, _) = self.blocked.remove(0);
                self.swarm.behaviour_mut().blocked.unblock_peer(oldest);
            }
        }
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.blocked.drain(..).partition(|(_, until)| *until <= now);
        self.blocked = kept;
        for (peer, _) in expired {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
    }
}
