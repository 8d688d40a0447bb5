//! Whom a validator's transport connects to in each epoch: the epoch's validators (its primary
//! peers) and the relays staking enough to be validators (secondary peers, the most staked
//! first, at most [`CANDIDATES_PER_VALIDATOR`] per validator: they follow the chain over the
//! same transport, ready to vote when their epoch comes), with the relays this one was
//! configured with. A peer's address
//! is the one this relay's configuration names, else the first its registry record publishes
//! (the consensus transport listens on the port number of the relay's QUIC address).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::authenticated::lookup::Oracle;
use commonware_p2p::{Address, AddressableManager as _, AddressableTrackedPeers};
use commonware_utils::ordered::Map;
use ledger_lite::State;
use top_proto::id::AccountId;

use crate::epochs::Membership;
use crate::service::public_key;

/// Candidates tracked beside the validators, per validator the rule allows.
pub const CANDIDATES_PER_VALIDATOR: usize = 2;

/// Membership over commonware's lookup transport, with addresses from config and registry.
pub struct Addressed {
    oracle: Oracle<PublicKey>,
    configured: BTreeMap<AccountId, SocketAddr>,
}

impl Addressed {
    /// Tracks peers on `oracle`, preferring the `configured` addresses.
    pub fn new(oracle: Oracle<PublicKey>, configured: BTreeMap<AccountId, SocketAddr>) -> Self {
        Self { oracle, configured }
    }

    /// Where `id`'s consensus transport listens, as far as this relay knows.
    pub fn address(&self, id: &AccountId, state: &State) -> Option<SocketAddr> {
        if let Some(addr) = self.configured.get(id) {
            return Some(*addr);
        }
        // An IP address as published; a host name resolved (a record's addresses are checked
        // to be short host:port strings when registered).
        state.relay(id)?.addrs.iter().find_map(|a| {
            a.parse::<SocketAddr>()
                .ok()
                .or_else(|| a.to_socket_addrs().ok()?.next())
        })
    }

    fn peers<'a>(
        &self,
        ids: impl Iterator<Item = &'a AccountId>,
        state: &State,
    ) -> Map<PublicKey, Address> {
        let mut peers: Vec<(PublicKey, Address)> = Vec::new();
        for id in ids {
            let (Some(key), Some(addr)) = (public_key(id), self.address(id, state)) else {
                tracing::warn!(validator = %id.short(), "no address for a validator");
                continue;
            };
            if !peers.iter().any(|(k, _)| *k == key) {
                peers.push((key, Address::from(addr)));
            }
        }
        Map::try_from(peers).unwrap_or_default()
    }
}

impl Membership for Addressed {
    fn track(&mut self, epoch: u64, state: &State) {
        let primary = self.peers(state.validators.iter(), state);
        let limit = state.epochs.map_or(0, |rule| {
            (rule.max_validators as usize).saturating_mul(CANDIDATES_PER_VALIDATOR)
        });
        let candidates = state.candidates(limit);
        // The relays this one was configured with follow too (however far behind this relay's
        // own view of the set is, it reaches the network through them).
        let configured: Vec<AccountId> = self.configured.keys().copied().collect();
        let secondary = self.peers(
            candidates
                .iter()
                .chain(&configured)
                .filter(|id| !state.validators.contains(id)),
            state,
        );
        self.oracle
            .track(epoch, AddressableTrackedPeers { primary, secondary });
    }
}
