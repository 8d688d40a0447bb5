//! Which relays this one links with: the relays registered on the chain and, where there is no
//! real chain to ask (no chain at all, or a dev chain), the relays in its config. Addresses come
//! from the registry or the config, never from a peer's word, and the relays that keep a
//! client's mailbox are computed over the same set: only a staked member can be a home. (A
//! member can still grind keys close to a user's id to become its home; choosing homes by
//! chain randomness instead of XOR distance is left to the consensus work.)

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use top_proto::addr::RelayAddr;
use top_proto::id::{AccountId, RelayId};

use crate::util::lock;

/// Most relays taken from the registry or the config; the rest are not linked with.
pub const MAX_MEMBERS: usize = 4096;

/// Close code of a link whose peer is not (or no longer) a member.
pub const LINK_NOT_MEMBER: quinn::VarInt = quinn::VarInt::from_u32(3);

/// The relays this one trusts as relays.
pub struct Peers {
    me: RelayId,
    home_replicas: usize,
    configured: Mutex<BTreeMap<RelayId, RelayAddr>>,
    registered: Mutex<BTreeMap<RelayId, RelayAddr>>,
    /// Whether configured relays count as members (no chain, or a dev chain).
    trust_configured: AtomicBool,
    /// Whether the registry lists this relay.
    registered_self: AtomicBool,
    /// Bumped whenever the member set changes.
    changed: watch::Sender<u64>,
}

impl Peers {
    /// Starts from the configured relays, trusted as members if `trust_configured`.
    pub fn new(
        me: RelayId,
        home_replicas: usize,
        configured: &[RelayAddr],
        trust_configured: bool,
    ) -> Self {
        let peers = Self {
            me,
            home_replicas,
            configured: Mutex::default(),
            registered: Mutex::default(),
            trust_configured: AtomicBool::new(trust_configured),
            registered_self: AtomicBool::new(false),
            changed: watch::Sender::new(0),
        };
        peers.configure(configured.iter().cloned());
        peers
    }

    /// Adds relays to the configured set (the operator's choice).
    pub fn configure(&self, relays: impl IntoIterator<Item = RelayAddr>) {
        {
            let mut configured = lock(&self.configured);
            for r in relays {
                if configured.len() >= MAX_MEMBERS {
                    break;
                }
                if r.id != self.me {
                    configured.insert(r.id, r);
                }
            }
        }
        self.bump();
    }

    /// Replaces the registered set with the chain's registry (this relay is noted, not kept).
    pub fn set_registered(&self, relays: impl IntoIterator<Item = RelayAddr>) {
        let mut me_too = false;
        let fresh: BTreeMap<RelayId, RelayAddr> = relays
            .into_iter()
            .filter(|r| {
                me_too |= r.id == self.me;
                r.id != self.me
            })
            .take(MAX_MEMBERS)
            .map(|r| (r.id, r))
            .collect();
        let self_changed = self.registered_self.swap(me_too, Ordering::SeqCst) != me_too;
        let mut registered = lock(&self.registered);
        if *registered != fresh || self_changed {
            *registered = fresh;
            drop(registered);
            self.bump();
        }
    }

    /// Whether the registry lists this relay.
    pub fn registered_self(&self) -> bool {
        self.registered_self.load(Ordering::SeqCst)
    }

    /// Sets whether configured relays are members (true without a chain or on a dev chain).
    pub fn set_trust_configured(&self, trust: bool) {
        if self.trust_configured.swap(trust, Ordering::SeqCst) != trust {
            self.bump();
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A watch that changes whenever the member set does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether `relay` is a member: registered, or configured where that counts.
    pub fn is_member(&self, relay: &RelayId) -> bool {
        lock(&self.registered).contains_key(relay)
            || (self.trust_configured.load(Ordering::SeqCst)
                && lock(&self.configured).contains_key(relay))
    }

    /// Where to dial `relay` (the registry's address first), if it is a member.
    pub fn addr_of(&self, relay: &RelayId) -> Option<RelayAddr> {
        if let Some(addr) = lock(&self.registered).get(relay) {
            return Some(addr.clone());
        }
        if self.trust_configured.load(Ordering::SeqCst) {
            return lock(&self.configured).get(relay).cloned();
        }
        None
    }

    /// Every member, this relay excluded.
    pub fn members(&self) -> Vec<RelayAddr> {
        let mut all = lock(&self.registered).clone();
        if self.trust_configured.load(Ordering::SeqCst) {
            for (id, addr) in lock(&self.configured).iter() {
                all.entry(*id).or_insert_with(|| addr.clone());
            }
        }
        all.into_values().collect()
    }

    /// The relays that keep `client`'s mailbox: the closest by XOR among the members and this
    /// relay.
    pub fn home_relays(&self, client: &AccountId) -> Vec<RelayId> {
        let mut all: Vec<RelayId> = self.members().into_iter().map(|r| r.id).collect();
        all.push(self.me);
        all.sort_by_key(|r| r.xor_distance(client));
        all.truncate(self.home_replicas);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::identity::Identity;

    fn addr() -> RelayAddr {
        let id = Identity::generate().relay_id();
        format!("{id}@127.0.0.1:1").parse().unwrap()
    }

    #[test]
    fn configured_relays_count_only_where_trusted() {
        let me = Identity::generate().relay_id();
        let (configured, registered) = (addr(), addr());
        let peers = Peers::new(me, 2, std::slice::from_ref(&configured), false);
        peers.set_registered([registered.clone()]);
        assert!(peers.is_member(&registered.id));
        assert!(!peers.is_member(&configured.id), "a real chain decides");
        assert_eq!(peers.members(), std::slice::from_ref(&registered));
        peers.set_trust_configured(true);
        assert!(
            peers.is_member(&configured.id),
            "a dev chain trusts the config"
        );
        assert_eq!(peers.members().len(), 2);
        peers.set_registered([]);
        assert!(!peers.is_member(&registered.id), "deregistered");
    }

    #[test]
    fn membership_is_bounded_and_never_includes_this_relay() {
        let me = Identity::generate().relay_id();
        let peers = Peers::new(me, 2, &[], true);
        let mine: RelayAddr = format!("{me}@127.0.0.1:1").parse().unwrap();
        peers.set_registered([mine.clone()]);
        peers.configure([mine]);
        assert!(peers.members().is_empty());
        let flood: Vec<RelayAddr> = (0..MAX_MEMBERS + 10).map(|_| addr()).collect();
        peers.set_registered(flood);
        assert_eq!(peers.members().len(), MAX_MEMBERS);
        let homes = peers.home_relays(&AccountId::from_wire([5; 32]));
        assert_eq!(homes.len(), 2);
    }

    #[test]
    fn changes_are_announced_once() {
        let peers = Peers::new(Identity::generate().relay_id(), 2, &[], false);
        let mut changed = peers.subscribe();
        let r = addr();
        peers.set_registered([r.clone()]);
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        peers.set_registered([r]);
        assert!(!changed.has_changed().unwrap(), "the same set again");
    }
}
