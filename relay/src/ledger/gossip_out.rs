//! What a chain node holds to gossip transactions ([`super::tx_gossip`]): where they go out,
//! and which transaction took each account's nonce lately.

use std::time::{Duration, Instant};

use ledger_lite::SignedTx;
use ledger_lite::TxHash;
use tokio::sync::{mpsc, oneshot};
use top_proto::id::AccountId;

/// Where a relay's transactions go to be gossiped: each with a reply saying whether it went out.
pub type TxGossipOut = mpsc::Sender<(Vec<u8>, oneshot::Sender<bool>)>;

/// Transactions (by account and nonce) remembered as gossiped: another transaction with the
/// same account and nonce is not passed on (only one of them can ever be committed).
const SEEN_NONCES: usize = 65_536;

/// The transaction gossiped first for each (account, nonce) lately, a bounded number, each
/// for [`SEEN_FOR`] (then another may take its nonce: the first may never have been committed).
pub struct SeenNonces(std::sync::Mutex<lru::LruCache<(AccountId, u64), (TxHash, Instant)>>);

/// How long the first transaction for an account and nonce holds it.
pub const SEEN_FOR: Duration = Duration::from_secs(120);

impl Default for SeenNonces {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(SEEN_NONCES).unwrap_or(std::num::NonZeroUsize::MIN);
        Self(std::sync::Mutex::new(lru::LruCache::new(cap)))
    }
}

impl SeenNonces {
    /// Whether another transaction than `tx` holds its account and nonce lately.
    pub fn rival_of(&self, tx: &SignedTx) -> bool {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.peek(&(tx.tx.from, tx.tx.nonce))
            .is_some_and(|(hash, at)| *hash != tx.hash() && at.elapsed() <= SEEN_FOR)
    }

    /// Notes `tx` (one that checks) as holding its account and nonce, unless a rival does.
    pub fn note(&self, tx: &SignedTx) {
        let (hash, now) = (tx.hash(), Instant::now());
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = seen.get_or_insert_mut((tx.tx.from, tx.tx.nonce), || (hash, now));
        if held.0 != hash && now.duration_since(held.1) > SEEN_FOR {
            *held = (hash, now);
        }
    }
}
