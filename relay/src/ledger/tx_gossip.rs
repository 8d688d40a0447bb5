//! Transactions by gossip. A relay that does not submit into a mempool of its own (a follower)
//! and whose caller waits for the block checks a transaction, gossips it to the network (the
//! control plane publishes it) and waits for the block that commits it; only if none comes in
//! [`GOSSIP_COMMIT`] (or nothing could gossip it) is it handed to the upstream, where
//! submitting it again is no error. Every relay checks a gossiped transaction before it is
//! passed on; a validator queues it as if it were submitted there.
//!
//! A transaction whose sender does not wait (a channel opened before its block: the relay
//! serves on the validator's word that it is queued) still goes to the upstream, whose answer
//! says so.

use std::time::Duration;

use ledger_lite::{Amount, SignedTx, SubmitError, TxError, TxHash};
use tokio::sync::oneshot;

use super::chain::ChainNode;
use super::error::{ChainError, ChainResult};
pub use super::gossip_out::TxGossipOut;

/// How long a follower waits for a gossiped transaction's block before it asks its upstream.
pub const GOSSIP_COMMIT: Duration = Duration::from_secs(4);

/// Largest transaction sent by gossip (larger ones, settlements of many receipts, go upstream).
pub const MAX_GOSSIP_TX_BYTES: usize = 16 << 10;

/// How far past an account's next nonce a gossiped transaction may be (a validator's window).
pub const MAX_NONCE_AHEAD: u64 = 64;

/// What became of a gossiped transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum GossipedTx {
    /// Checked (a validator: queued): pass it on.
    Checked,
    /// It can never be valid (a bad signature, another chain, not a transaction): whoever
    /// passed it on is at fault.
    Invalid(String),
    /// Not valid against this node's state now (spent, stale, a nonce ahead, a full pool): not
    /// passed on, nobody blamed (states differ by a block or two).
    Skipped(String),
}

/// The gossip message of a transaction (`None`: too large to gossip).
pub fn tx_message(tx: &SignedTx) -> Option<Vec<u8>> {
    postcard::to_allocvec(tx)
        .ok()
        .filter(|data| data.len() <= MAX_GOSSIP_TX_BYTES)
}

impl ChainNode {
    /// Lets the control plane gossip this node's transactions.
    pub fn set_tx_gossip(&self, out: TxGossipOut) {
        *self.tx_gossip.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
    }

    /// A follower: gossips `tx` and waits for its block. `Ok(None)`: it could not go out or no
    /// block took it in time (the caller asks the upstream).
    pub(super) async fn submit_by_gossip(&self, tx: &SignedTx) -> ChainResult<Option<u64>> {
        let out = self
            .tx_gossip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (Some(out), Some(data)) = (out, tx_message(tx)) else {
            return Ok(None);
        };
        let hash = tx.hash();
        if let Some(&height) = self.lock().committed.get(&hash) {
            // Committed already (a retry after a lost answer): where it landed.
            return Ok(Some(height));
        }
        // Only what checks here is gossiped (others would drop it for less); what does not may
        // check at the upstream, a block ahead of this node: it says.
        if self.check_against_state(tx).is_err() {
            return Ok(None);
        }
        self.verify(tx.clone()).await?;
        if self.seen_nonces.rival_of(tx) {
            // Another transaction took this nonce by gossip: the upstream says what became of it.
            return Ok(None);
        }
        self.seen_nonces.note(tx);
        // Dropped last (after the receiver): no waiter is left behind, even if the caller goes.
        let _forget = ForgetWaiter(self, hash);
        let (waiter, committed) = oneshot::channel();
        {
            let mut inner = self.lock();
            if let Some(&height) = inner.committed.get(&hash) {
                return Ok(Some(height));
            }
            inner.waiters.entry(hash).or_default().push(waiter);
        }
        let (sent, went_out) = oneshot::channel();
        if out.try_send((data, sent)).is_err() || !went_out.await.unwrap_or(false) {
            return Ok(None);
        }
        {
            // Its nonce counts as taken while it is on its way.
            let mut inner = self.lock();
            let local = inner.ledger.height();
            inner.forwarded.record(tx.tx.from, tx.tx.nonce, local);
        }
        Ok(self.await_commit(committed).await)
    }

    /// Waits at most [`GOSSIP_COMMIT`] for a block to commit what `committed` waits on.
    async fn await_commit(&self, committed: oneshot::Receiver<Result<u64, String>>) -> Option<u64> {
        tokio::select! {
            r = tokio::time::timeout(GOSSIP_COMMIT, committed) => match r {
                Ok(Ok(Ok(height))) => Some(height),
                _ => None,
            },
            _ = self.stop.cancelled() => None,
        }
    }

    /// Drops the waiters of `hash` no one waits on any more.
    fn forget_waiter(&self, hash: &TxHash) {
        let mut inner = self.lock();
        if let Some(waiters) = inner.waiters.get_mut(hash) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                inner.waiters.remove(hash);
            }
        }
    }

    /// Checks `tx`'s signatures off the async workers, a bounded number at once.
    async fn verify(&self, tx: SignedTx) -> ChainResult<()> {
        let _turn = self
            .verifying
            .acquire()
            .await
            .map_err(|_| ChainError::Stopped)?;
        tokio::task::spawn_blocking(move || ledger_lite::verify::verify_tx(&tx))
            .await
            .map_err(|_| ChainError::Stopped)?
            .map_err(|e| SubmitError::Invalid(e).into())
    }

    /// What can be checked of `tx` against the committed state: its chain, a nonce not spent
    /// and at most [`MAX_NONCE_AHEAD`] ahead, and (when it is the account's next) everything
    /// else the mempool checks; a nonce ahead follows transactions still on their way, and the
    /// account must hold the fees of all of them (what is passed on is paid for, or could be).
    fn check_against_state(&self, tx: &SignedTx) -> Result<(), TxError> {
        self.with_state(|state| {
            if tx.tx.chain != state.chain {
                return Err(TxError::WrongChain);
            }
            let account = state.account(&tx.tx.from);
            let expected = account.map_or(0, |a| a.nonce);
            let ahead = tx.tx.nonce.checked_sub(expected);
            match ahead {
                Some(0) => state.precheck(tx),
                // Ahead, only a transaction of one signature (a settlement's many are checked
                // only when it is next: the mempool's checks run then).
                Some(ahead) if ahead <= MAX_NONCE_AHEAD && !is_multi_signature(tx) => {
                    let fees = u128::from(ahead + 1).checked_mul(tx.tx.fee.units());
                    let balance = account.map_or(0, |a| a.balance.units());
                    match fees.is_some_and(|fees| balance >= fees) {
                        true => Ok(()),
                        false => Err(TxError::Insufficient {
                            what: "balance for the fees of the transactions before it",
                            have: Amount::from_units(balance),
                            need: Amount::from_units(fees.unwrap_or(u128::MAX)),
                        }),
                    }
                }
                _ => Err(TxError::WrongNonce {
                    expected,
                    got: tx.tx.nonce,
                }),
            }
        })
    }

    /// Checks a transaction that came by gossip: a validator queues it as if it were
    /// submitted here; others check what they can (signatures, and the state they hold).
    pub async fn take_gossiped_tx(&self, data: &[u8]) -> GossipedTx {
        if data.len() > MAX_GOSSIP_TX_BYTES {
            return GossipedTx::Invalid(format!("{} bytes: too large", data.len()));
        }
        let tx: SignedTx = match postcard::from_bytes(data) {
            Ok(tx) => tx,
            Err(e) => return GossipedTx::Invalid(format!("not a transaction: {e}")),
        };
        // Cheap checks first: a rival for its nonce, then the state, then signatures.
        if self.seen_nonces.rival_of(&tx) {
            return GossipedTx::Skipped("another transaction with this nonce came first".into());
        }
        let checked = match self.check_against_state(&tx) {
            // A validator queues it as if submitted here, but never waits for its turn.
            Ok(()) if self.submits_locally() => {
                self.submit_now(tx.clone(), false).await.map(|_| ())
            }
            Ok(()) => self.verify(tx.clone()).await,
            Err(e) => Err(SubmitError::Invalid(e).into()),
        };
        match checked {
            Ok(()) => {
                // Only a transaction that checks holds its nonce against rivals.
                self.seen_nonces.note(&tx);
                GossipedTx::Checked
            }
            Err(ChainError::Refused(SubmitError::Invalid(
                e @ (TxError::BadSignature | TxError::BadReceiptSignature | TxError::WrongChain),
            ))) => GossipedTx::Invalid(e.to_string()),
            Err(ChainError::Refused(SubmitError::Duplicate(_))) => GossipedTx::Checked,
            Err(e) => GossipedTx::Skipped(e.to_string()),
        }
    }
}

/// Whether checking `tx` takes more than its own signature (settlements carry receipts).
fn is_multi_signature(tx: &SignedTx) -> bool {
    matches!(
        tx.tx.kind,
        ledger_lite::TxKind::Settle { .. } | ledger_lite::TxKind::SettleEgress { .. }
    )
}

/// Forgets the waiters of a hash nobody waits on any more, when dropped.
struct ForgetWaiter<'a>(&'a ChainNode, TxHash);

impl Drop for ForgetWaiter<'_> {
    fn drop(&mut self) {
        self.0.forget_waiter(&self.1);
    }
}
