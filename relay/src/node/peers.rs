//! Which relays this one links with: the relays registered on the chain and, where there is no
//! real chain to ask (no chain at all, or a dev chain), the relays in its config. Addresses come
//! from the registry or the config, never from a peer's word, and the relays that keep a
//! client's mailbox are computed over the same set: only a staked member can be a home. Homes
//! are chosen by rendezvous hashing over each member's [`HomeTicket`], drawn from the hash of
//! the block that registered it: no key can be ground in advance to land next to a user.

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

/// Close code of a link its dialer let go: idle and no longer wanted.
pub const LINK_IDLE: quinn::VarInt = quinn::VarInt::from_u32(5);

/// A relay's draw in choosing homes: from the hash of the block that registered it (which
/// its key could not be chosen for), or from its id alone for relays only configured (no chain
/// or a dev chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomeTicket([u8; 32]);

impl HomeTicket {
    /// The ticket of `relay`, registered in the block with hash `block`.
    pub fn drawn(block: &[u8; 32], relay: &RelayId) -> Self {
        let mut h = blake3::Hasher::new_derive_key("top home ticket v1");
        h.update(block).update(relay.as_bytes());
        Self(*h.finalize().as_bytes())
    }

    /// The ticket of a relay that is not registered.
    pub fn unregistered(relay: &RelayId) -> Self {
        Self::drawn(&[0; 32], relay)
    }

    /// How strongly this relay is drawn to keep `client`'s mailbox (highest wins).
    fn weight(&self, client: &AccountId) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("top home weight v1");
        h.update(&self.0).update(client.as_bytes());
        *h.finalize().as_bytes()
    }
}

/// A registered relay: where it is and its home ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Where to dial it.
    pub addr: RelayAddr,
    /// Its draw in choosing homes.
    pub ticket: HomeTicket,
}

/// The relays this one trusts as relays.
pub struct Peers {
    me: RelayId,
    home_replicas: usize,
    configured: Mutex<BTreeMap<RelayId, RelayAddr>>,
    registered: Mutex<BTreeMap<RelayId, Member>>,
    /// This relay's ticket (drawn once the registry lists it).
    my_ticket: Mutex<HomeTicket>,
    /// Whether configured relays count as members (no chain, or a dev chain).
    trust_configured: AtomicBool,
    /// Whether the registry lists this relay.
    registered_self: AtomicBool,
    /// Bumped whenever the member set changes.
    changed: watch::Sender<u64>,
    /// Home relays computed for recent clients, with the member set's generation (bumped and
    /// the cache cleared whenever the member set changes).
    homes_cache: Mutex<(u64, lru::LruCache<AccountId, Vec<RelayId>>)>,
}

/// Clients whose home relays are remembered.
const CACHED_HOMES: usize = 65_536;

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
            my_ticket: Mutex::new(HomeTicket::unregistered(&me)),
            trust_configured: AtomicBool::new(trust_configured),
            registered_self: AtomicBool::new(false),
            changed: watch::Sender::new(0),
            homes_cache: Mutex::new((
                0,
                lru::LruCache::new(
                    std::num::NonZeroUsize::new(CACHED_HOMES)
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                ),
            )),
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
    pub fn set_registered(&self, relays: impl IntoIterator<Item = Member>) {
        let mut mine = None;
        let fresh: BTreeMap<RelayId, Member> = relays
            .into_iter()
            .filter(|r| {
                if r.addr.id == self.me {
                    mine = Some(r.ticket);
                }
                r.addr.id != self.me
            })
            .take(MAX_MEMBERS)
            .map(|r| (r.addr.id, r))
            .collect();
        let me_too = mine.is_some();
        let ticket = mine.unwrap_or(HomeTicket::unregistered(&self.me));
        let ticket_changed = std::mem::replace(&mut *lock(&self.my_ticket), ticket) != ticket;
        let self_changed =
            self.registered_self.swap(me_too, Ordering::SeqCst) != me_too || ticket_changed;
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
        {
            let mut cache = lock(&self.homes_cache);
            cache.0 = cache.0.wrapping_add(1);
            cache.1.clear();
        }
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
        if let Some(member) = lock(&self.registered).get(relay) {
            return Some(member.addr.clone());
        }
        if self.trust_configured.load(Ordering::SeqCst) {
            return lock(&self.configured).get(relay).cloned();
        }
        None
    }

    /// Whether the operator configured `relay`.
    pub fn is_configured(&self, relay: &RelayId) -> bool {
        lock(&self.configured).contains_key(relay)
    }

    /// The configured relays that are members: links to them are kept up at all times (the
    /// operator asked for them).
    pub fn configured_members(&self) -> Vec<RelayId> {
        let configured: Vec<RelayId> = lock(&self.configured).keys().copied().collect();
        configured
            .into_iter()
            .filter(|id| self.is_member(id))
            .collect()
    }

    /// Every member, this relay excluded.
    pub fn members(&self) -> Vec<RelayAddr> {
        self.members_with_tickets()
            .into_iter()
            .map(|m| m.addr)
            .collect()
    }

    fn members_with_tickets(&self) -> Vec<Member> {
        let mut all = lock(&self.registered).clone();
        if self.trust_configured.load(Ordering::SeqCst) {
            for (id, addr) in lock(&self.configured).iter() {
                all.entry(*id).or_insert_with(|| Member {
                    addr: addr.clone(),
                    ticket: HomeTicket::unregistered(id),
                });
            }
        }
        all.into_values().collect()
    }

    /// The relays that keep `client`'s mailbox: those among the members and this relay whose
    /// tickets draw the highest weight for `client` (rendezvous hashing).
    pub fn home_relays(&self, client: &AccountId) -> Vec<RelayId> {
        let generation = {
            let mut cache = lock(&self.homes_cache);
            if let Some(homes) = cache.1.get(client) {
                return homes.clone();
            }
            cache.0
        };
        let homes = self.draw_homes(client);
        // Kept only if drawn from the member set still current (a change meanwhile cleared
        // the cache, and this draw may be from before it).
        let mut cache = lock(&self.homes_cache);
        if cache.0 == generation {
            cache.1.put(*client, homes.clone());
        }
        homes
    }

    fn draw_homes(&self, client: &AccountId) -> Vec<RelayId> {
        let mut all: Vec<(RelayId, HomeTicket)> = self
            .members_with_tickets()
            .into_iter()
            .map(|m| (m.addr.id, m.ticket))
            .collect();
        all.push((self.me, *lock(&self.my_ticket)));
        all.sort_by_cached_key(|(id, ticket)| (std::cmp::Reverse(ticket.weight(client)), *id));
        all.truncate(self.home_replicas);
        all.into_iter().map(|(id, _)| id).collect()
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

    /// A registered member whose registration block had hash `block`.
    fn member(addr: RelayAddr, block: u8) -> Member {
        Member {
            ticket: HomeTicket::drawn(&[block; 32], &addr.id),
            addr,
        }
    }

    #[test]
    fn configured_relays_count_only_where_trusted() {
        let me = Identity::generate().relay_id();
        let (configured, registered) = (addr(), addr());
        let peers = Peers::new(me, 2, std::slice::from_ref(&configured), false);
        peers.set_registered([member(registered.clone(), 1)]);
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
        peers.set_registered([member(mine.clone(), 1)]);
        peers.configure([mine]);
        assert!(peers.members().is_empty());
        let flood: Vec<Member> = (0..MAX_MEMBERS + 10).map(|_| member(addr(), 1)).collect();
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
        peers.set_registered([member(r.clone(), 1)]);
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        peers.set_registered([member(r, 1)]);
        assert!(!changed.has_changed().unwrap(), "the same set again");
    }

    #[test]
    fn a_key_ground_close_to_a_user_does_not_make_its_relay_the_users_home() {
        // 20 honest members; for each of 40 victims an attacker grinds 2,000 keys and registers
        // the one closest to the victim by XOR. By XOR it would be a home every time; by tickets
        // drawn from its registration block it is a home about as often as any member.
        let honest: Vec<Member> = (0..20u8)
            .map(|i| {
                let id = Identity::from_seed(&[i; 32]).relay_id();
                member(format!("{id}@127.0.0.1:1").parse().unwrap(), i)
            })
            .collect();
        let me = Identity::from_seed(&[200; 32]).relay_id();
        let (mut by_xor, mut by_ticket) = (0, 0);
        for v in 0..40u8 {
            let victim = Identity::from_seed(&[v, 1, 2, 3].repeat(8).try_into().unwrap());
            let victim = victim.account_id();
            let ground = (0..2_000u32)
                .map(|n| {
                    let mut seed = [v; 32];
                    seed[..4].copy_from_slice(&n.to_be_bytes());
                    Identity::from_seed(&seed).relay_id()
                })
                .min_by_key(|id| id.xor_distance(&victim))
                .unwrap();
            let attacker: RelayAddr = format!("{ground}@127.0.0.1:2").parse().unwrap();
            let mut all = honest.clone();
            all.push(member(attacker.clone(), 99 ^ v));
            let xor_closest = all
                .iter()
                .map(|m| m.addr.id)
                .chain([me])
                .min_by_key(|id| id.xor_distance(&victim));
            by_xor += usize::from(xor_closest == Some(ground));
            let peers = Peers::new(me, 2, &[], false);
            peers.set_registered(all);
            by_ticket += usize::from(peers.home_relays(&victim).contains(&ground));
        }
        assert_eq!(by_xor, 40, "grinding wins under XOR");
        // 2 homes of 22 relays: expected ≈ 3.6 of 40; far from all.
        assert!(
            by_ticket <= 12,
            "the ground key was a home for {by_ticket} of 40 victims"
        );
    }

    #[test]
    fn many_keys_registered_at_once_do_not_capture_chosen_users() {
        // 20 honest members. An attacker wants both homes of 10 chosen users: for each it
        // grinds 500 keys and keeps the 2 closest by XOR, then registers all 20 keys in one
        // block (a stake each). Under XOR it would hold both homes of nearly every victim.
        // Tickets come from that block's hash, unknown when the keys were chosen: it holds both
        // homes of about its share of users (20/41 × 19/40 ≈ 23%), whoever they are.
        let honest = (0..20u8).map(|i| {
            let id = Identity::from_seed(&[i; 32]).relay_id();
            member(format!("{id}@127.0.0.1:1").parse().unwrap(), i)
        });
        let victims: Vec<AccountId> = (0..10u8)
            .map(|v| Identity::from_seed(&[v, 7, 7, 7].repeat(8).try_into().unwrap()).account_id())
            .collect();
        let ground: Vec<RelayId> = victims
            .iter()
            .enumerate()
            .flat_map(|(v, victim)| {
                let mut keys: Vec<RelayId> = (0..500u32)
                    .map(|n| {
                        let mut seed = [v as u8 + 50; 32];
                        seed[..4].copy_from_slice(&n.to_be_bytes());
                        Identity::from_seed(&seed).relay_id()
                    })
                    .collect();
                keys.sort_by_key(|id| id.xor_distance(victim));
                keys.truncate(2);
                keys
            })
            .collect();
        let attacker = ground
            .iter()
            .map(|id| member(format!("{id}@127.0.0.1:2").parse().unwrap(), 77));
        let me = Identity::from_seed(&[200; 32]).relay_id();
        let peers = Peers::new(me, 2, &[], false);
        peers.set_registered(honest.chain(attacker));
        let all: Vec<RelayId> = peers
            .members()
            .into_iter()
            .map(|m| m.id)
            .chain([me])
            .collect();
        let held = |homes: &[RelayId]| homes.iter().all(|h| ground.contains(h));
        let by_xor = victims
            .iter()
            .filter(|victim| {
                let mut closest = all.clone();
                closest.sort_by_key(|id| id.xor_distance(victim));
                held(&closest[..2])
            })
            .count();
        assert!(
            by_xor >= 8,
            "under XOR the attacker holds the homes of {by_xor} of 10"
        );
        let by_ticket = victims
            .iter()
            .filter(|victim| held(&peers.home_relays(victim)))
            .count();
        assert!(
            by_ticket <= 6,
            "the attacker holds both homes of {by_ticket} of 10 chosen users"
        );
    }
}
