//! The relays this one knows of (configured peers and those learned over links), and which of
//! them keep a client's mailbox. Each relay learned is handed once to whoever dials
//! ([`Peers::take_new`]). A directory (issue 16) replaces how they are learned, not this.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use top_proto::addr::RelayAddr;
use top_proto::id::{AccountId, RelayId};

use crate::util::lock;

/// Most relays remembered; a link that names more is not believed for the rest.
pub const MAX_KNOWN: usize = 4096;

/// Relays known to this one.
pub struct Peers {
    me: RelayId,
    home_replicas: usize,
    known: Mutex<BTreeMap<RelayId, RelayAddr>>,
    new_tx: mpsc::Sender<RelayAddr>,
    new_rx: Mutex<Option<mpsc::Receiver<RelayAddr>>>,
}

impl Peers {
    /// Starts from the configured peers.
    pub fn new(me: RelayId, home_replicas: usize, configured: &[RelayAddr]) -> Self {
        // Every relay is queued once, and at most MAX_KNOWN are known: the queue never fills.
        let (new_tx, new_rx) = mpsc::channel(MAX_KNOWN);
        let peers = Self {
            me,
            home_replicas,
            known: Mutex::default(),
            new_tx,
            new_rx: Mutex::new(Some(new_rx)),
        };
        peers.learn(configured.iter().cloned());
        peers
    }

    /// The queue of relays as they are learned, for the one task that dials them (`None` after
    /// the first call).
    pub fn take_new(&self) -> Option<mpsc::Receiver<RelayAddr>> {
        lock(&self.new_rx).take()
    }

    /// Adds relays to the known set; returns those that were new.
    pub fn learn(&self, relays: impl IntoIterator<Item = RelayAddr>) -> Vec<RelayAddr> {
        let mut known = lock(&self.known);
        let mut new = Vec::new();
        for r in relays {
            if known.len() >= MAX_KNOWN {
                break;
            }
            if r.id != self.me && !known.contains_key(&r.id) {
                known.insert(r.id, r.clone());
                self.new_tx.try_send(r.clone()).ok();
                new.push(r);
            }
        }
        new
    }

    /// Every relay known, this one excluded.
    pub fn known(&self) -> Vec<RelayAddr> {
        lock(&self.known).values().cloned().collect()
    }

    /// The relays that keep `client`'s mailbox: the closest by XOR among all known relays.
    pub fn home_relays(&self, client: &AccountId) -> Vec<RelayId> {
        let mut all: Vec<RelayId> = lock(&self.known).keys().copied().collect();
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
    fn learning_is_bounded_and_never_includes_this_relay() {
        let me = Identity::generate().relay_id();
        let peers = Peers::new(me, 2, &[]);
        let mine: RelayAddr = format!("{me}@127.0.0.1:1").parse().unwrap();
        assert!(peers.learn([mine]).is_empty());
        let first = addr();
        assert_eq!(peers.learn([first.clone(), first.clone()]).len(), 1);
        let flood: Vec<RelayAddr> = (0..MAX_KNOWN + 10).map(|_| addr()).collect();
        peers.learn(flood);
        assert_eq!(peers.known().len(), MAX_KNOWN);
        let homes = peers.home_relays(&AccountId::from_wire([5; 32]));
        assert_eq!(homes.len(), 2);
    }
}
