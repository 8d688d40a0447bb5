//! A validator as a service inside a relay: its consensus stack runs on a thread of its own,
//! under commonware's tokio runtime, and talks to the other validators over commonware's
//! authenticated, encrypted TCP transport (on the port number of the relay's QUIC address).
//! Transactions submitted to it are gossiped to the other validators.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_codec::ReadExt;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::Recipients;
use commonware_p2p::authenticated::lookup;
use commonware_runtime::{Quota, Runner as _, Spawner as _, Supervisor as _};
use ledger_lite::{Genesis, SignedTx};
use tokio::sync::{mpsc, oneshot};
use top_proto::id::AccountId;
use top_proto::identity::Identity;

use crate::app::{Admission, Ledger, LedgerApp};
use crate::block::ChainBlock;
use crate::finalizer::Finalizer;
use crate::membership::Addressed;
use crate::misbehaviour::{Counting, Misbehaviour, Report};
use crate::node::{Channels, MAX_MESSAGE, ValidatorConfig, channel, start_validator};
use crate::store::ChainStore;

/// Channel of transactions gossiped between validators.
pub const TRANSACTIONS: u64 = 5;
/// Messages a peer may send per second on each channel.
const PEER_RATE: u32 = 1024;
/// Batches of transactions a peer may gossip per second (a validator sends at most one
/// every [`BATCH_WAIT`]).
const TX_RATE: u32 = 128;
/// How long a validator gathers transactions into a batch before sending it.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// Transactions in one gossiped batch, at most.
const BATCH_TXS: usize = 256;
/// The largest gossiped batch, in bytes.
const MAX_BATCH: usize = 256 << 10;
/// Small messages (votes, certificates) waiting per channel.
const BACKLOG: usize = 1024;
/// Large messages (blocks, transactions) waiting per channel.
const LARGE_BACKLOG: usize = 64;
/// The largest transaction gossiped (bigger ones, settlements of thousands of receipts, wait
/// at the validator they were sent to until it leads).
const MAX_GOSSIP_TX: usize = 64 << 10;
/// Transactions waiting to be gossiped, at most (more are kept locally only).
const OUTBOX: usize = 10_000;

/// Why a validator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The genesis does not make a state.
    #[error("genesis: {0}")]
    Genesis(#[from] ledger_lite::block::GenesisError),
    /// The chain's store did not open.
    #[error("chain store: {0}")]
    Store(#[from] ledger_lite::StoreError),
    /// A validator's key is not an ed25519 key.
    #[error("validator {0} is not a valid key")]
    BadKey(AccountId),
    /// The validator set is empty or has one validator twice.
    #[error("the validator set must name distinct validators")]
    BadSet,
    /// The thread did not start.
    #[error("starting the consensus thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The consensus transport cannot listen where it must (TCP, the QUIC port's number).
    #[error("the consensus transport cannot listen on TCP {addr}: {source}")]
    Listen {
        /// Where it would listen.
        addr: SocketAddr,
        /// Why it cannot.
        source: std::io::Error,
    },
}

/// How to run one validator.
pub struct ServiceConfig {
    /// This relay's identity (it signs votes with it).
    pub identity: Identity,
    /// Every validator and where its consensus transport listens.
    pub validators: Vec<(AccountId, SocketAddr)>,
    /// Where this one listens.
    pub listen: SocketAddr,
    /// The chain's genesis.
    pub genesis: Genesis,
    /// Where the engine keeps its own storage: it belongs with the chain store.
    pub storage: PathBuf,
    /// The chain store finalized blocks are committed to (none: one of its own, `chain.redb`
    /// in `storage`).
    pub chain: Option<Arc<dyn ChainStore>>,
    /// How long a leader has to propose (longer than `block_interval`).
    pub leader_timeout: Duration,
    /// How long after its parent a block is proposed (see [`LedgerApp::with_interval`]).
    pub block_interval: Duration,
    /// Where bad messages from other validators are reported.
    pub report: Report,
}

/// A running validator.
pub struct ValidatorService {
    ledger: Arc<Ledger>,
    outbox: mpsc::Sender<SignedTx>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The thread committing finalized blocks (it holds the chain store).
    committing: Option<std::thread::JoinHandle<()>>,
}

/// The consensus key of a validator's account (both ed25519).
pub(crate) fn public_key(account: &AccountId) -> Option<PublicKey> {
    PublicKey::read(&mut &account.as_bytes()[..]).ok()
}

/// The namespace of a chain's votes and transport (no replay across chains).
fn namespace(genesis: &Genesis) -> Vec<u8> {
    let mut ns = b"top-chain-".to_vec();
    ns.extend_from_slice(&genesis.chain_id().0);
    ns
}

/// The namespace a chain's votes and certificates are signed in.
pub(crate) fn consensus_namespace(genesis: &Genesis) -> Vec<u8> {
    let mut ns = namespace(genesis);
    ns.extend_from_slice(b"-consensus");
    ns
}

impl ValidatorService {
    /// Starts the validator's thread.
    pub fn start(config: ServiceConfig) -> Result<Self, ServiceError> {
        if !config.genesis.is_consensus() {
            return Err(ServiceError::BadSet);
        }
        let genesis_block = ChainBlock::genesis(&config.genesis)?;
        std::fs::create_dir_all(&config.storage)?;
        let store: Arc<dyn ChainStore> = match &config.chain {
            Some(chain) => chain.clone(),
            None => Arc::new(std::sync::Mutex::new(ledger_lite::Ledger::open(
                &config.storage.join("chain.redb"),
                config.genesis.clone(),
            )?)),
        };
        let ledger = Ledger::open(store);
        let mut configured = std::collections::BTreeMap::new();
        for (account, addr) in &config.validators {
            public_key(account).ok_or(ServiceError::BadKey(*account))?;
            if configured.insert(*account, *addr).is_some() {
                return Err(ServiceError::BadSet);
            }
        }
        if configured.is_empty() {
            return Err(ServiceError::BadSet);
        }
        // The transport binds its listener inside its own task and, failing, only that task
        // panics: the relay would run on as a validator nobody can reach. Fail here instead,
        // with the reason (another socket on the port, say an outgoing connection's source
        // port).
        std::net::TcpListener::bind(config.listen).map_err(|source| ServiceError::Listen {
            addr: config.listen,
            source,
        })?;
        // Validators on private or loopback addresses (a test, a LAN) need the transport's
        // local settings; public ones its recommended, stricter ones.
        let private = config.validators.iter().any(|(_, a)| match a.ip() {
            std::net::IpAddr::V4(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local(),
        });
        let seed = config.identity.signing_key().to_bytes();
        let key = PrivateKey::read(&mut &seed[..])
            .map_err(|_| ServiceError::BadKey(config.identity.account_id()))?;
        let namespace = namespace(&config.genesis);
        let consensus_ns = consensus_namespace(&config.genesis);
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let (stop, stopped) = oneshot::channel();
        let runtime = commonware_runtime::tokio::Config::new()
            .with_worker_threads(2)
            .with_storage_directory(config.storage.clone())
            .with_catch_panics(false);
        let (finalizer, committing) = Finalizer::start(ledger.clone())?;
        let app = LedgerApp::committing(ledger.clone(), config.identity.clone(), finalizer)
            .with_interval(config.block_interval);
        let running = ledger.clone();
        let thread = std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
                    let mut transport_ns = namespace.clone();
                    transport_ns.extend_from_slice(b"-p2p");
                    let p2p = if private {
                        lookup::Config::local(
                            key.clone(),
                            &transport_ns,
                            config.listen,
                            MAX_MESSAGE,
                        )
                    } else {
                        lookup::Config::recommended(
                            key.clone(),
                            &transport_ns,
                            config.listen,
                            MAX_MESSAGE,
                        )
                    };
                    let (mut network, oracle) = lookup::Network::new(context.child("network"), p2p);
                    let quota = Quota::per_second(NonZeroU32::new(PEER_RATE).expect("non-zero"));
                    let tx_quota = Quota::per_second(NonZeroU32::new(TX_RATE).expect("non-zero"));
                    let mut register = |ch, quota, backlog| network.register(ch, quota, backlog);
                    let channels = Channels {
                        votes: register(channel::VOTES, quota, BACKLOG),
                        certificates: register(channel::CERTIFICATES, quota, BACKLOG),
                        resolver: register(channel::RESOLVER, quota, BACKLOG),
                        backfill: register(channel::BACKFILL, quota, LARGE_BACKLOG),
                        blocks: register(channel::BLOCKS, quota, LARGE_BACKLOG),
                    };
                    let transactions = register(TRANSACTIONS, tx_quota, LARGE_BACKLOG);
                    network.start();
                    let validator = ValidatorConfig {
                        key,
                        namespace: consensus_ns,
                        genesis: genesis_block,
                        partition_prefix: "top".into(),
                        peers: oracle.clone(),
                        blocker: Counting::new(oracle.clone(), config.report.clone()),
                        membership: Addressed::new(oracle, configured),
                        leader_timeout: config.leader_timeout,
                    };
                    let started =
                        start_validator(context.child("validator"), validator, channels, app).await;
                    if let Err(e) = started {
                        tracing::error!("the validator's consensus storage does not open: {e}");
                        return;
                    }
                    let gossip_report = config.report.clone();
                    context.child("gossip").spawn(move |context| async move {
                        tokio::select! {
                            () = gossip(transactions, outgoing, running, gossip_report) => {}
                            _ = context.stopped() => {}
                        }
                    });
                    stopped.await.ok();
                    let keep = context.child("keep");
                    if let Err(e) = context.stop(0, Some(Duration::from_secs(10))).await {
                        tracing::warn!("consensus tasks still running after stopping: {e:?}");
                    }
                    // Tasks still finishing hold the runtime: were the last of them to let go
                    // on one of its own workers, tokio would panic dropping it there. It is
                    // left to the process instead (a validator stops once, as its relay does).
                    std::mem::forget(keep);
                });
            })?;
        Ok(Self {
            ledger,
            outbox,
            stop: Some(stop),
            thread: Some(thread),
            committing: Some(committing),
        })
    }

    /// The validator's view of the chain.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Queues this relay's `tx` (its signature checked) for the next blocks, here and at every
    /// other validator, when it is plausible and has room; one beyond its sender's window
    /// waits here for its turn.
    pub fn submit(&self, tx: SignedTx) -> Admission {
        let admission = self.ledger.submit_own(tx.clone());
        if admission == Admission::Queued {
            self.outbox.try_send(tx).ok();
        }
        admission
    }

    /// Stops the validator and waits for its thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
        // The committing thread ends once the engine's tasks let go of it; then the chain
        // store is free (to open again, say).
        if let Some(committing) = self.committing.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !committing.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if committing.is_finished() {
                committing.join().ok();
            } else {
                tracing::warn!("finalized blocks are still being committed after stopping");
            }
        }
    }
}

impl Drop for ValidatorService {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Sends this validator's transactions to the others in batches and takes theirs: small ones
/// only, each checked cheaply (chain, fee, nonce window) before the batch's signatures; at most
/// [`TX_RATE`] batches of [`BATCH_TXS`] a second from one peer.
async fn gossip<S, R>(
    (mut sender, mut receiver): (S, R),
    mut outgoing: mpsc::Receiver<SignedTx>,
    ledger: Arc<Ledger>,
    report: Report,
) where
    S: commonware_p2p::Sender<PublicKey = PublicKey>,
    R: commonware_p2p::Receiver<PublicKey = PublicKey>,
{
    loop {
        tokio::select! {
            tx = outgoing.recv() => {
                let Some(tx) = tx else { return };
                // What else comes within a moment goes along, up to a batch: a peer takes
                // batches at a bounded rate, so one per transaction would hold the chain to it.
                let mut batch = vec![tx];
                tokio::time::sleep(BATCH_WAIT).await;
                while batch.len() < BATCH_TXS {
                    match outgoing.try_recv() {
                        Ok(tx) => batch.push(tx),
                        Err(_) => break,
                    }
                }
                for bytes in encode_batches(&batch) {
                    sender.send(Recipients::All, bytes, false);
                }
            }
            message = receiver.recv() => {
                let Ok((_, bytes)) = message else { return };
                let Some(batch) = decode_batch(bytes.as_ref()) else {
                    report(Misbehaviour::MalformedBatch);
                    continue;
                };
                let (_, forged) = ledger.submit_gossiped(batch);
                for _ in 0..forged {
                    report(Misbehaviour::ForgedTx);
                }
            }
        }
    }
}

/// `txs` as gossip messages of at most [`MAX_BATCH`] bytes (a transaction too large for one
/// alone is not gossiped: it waits at the validator it was sent to until that one leads).
fn encode_batches(txs: &[SignedTx]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch: Vec<&SignedTx> = Vec::new();
    let mut size = 0;
    for tx in txs {
        let Ok(len) = postcard::to_stdvec(tx).map(|b| b.len()) else {
            continue;
        };
        if len > MAX_GOSSIP_TX {
            continue;
        }
        if size + len > MAX_BATCH - 16 && !batch.is_empty() {
            out.extend(postcard::to_stdvec(&batch).ok());
            batch.clear();
            size = 0;
        }
        batch.push(tx);
        size += len;
    }
    if !batch.is_empty() {
        out.extend(postcard::to_stdvec(&batch).ok());
    }
    out
}

/// A gossiped batch, if it is one within bounds (none of it otherwise).
pub fn decode_batch(bytes: &[u8]) -> Option<Vec<SignedTx>> {
    if bytes.len() > MAX_BATCH {
        return None;
    }
    postcard::from_bytes::<Vec<SignedTx>>(bytes)
        .ok()
        .filter(|txs| txs.len() <= BATCH_TXS)
}

#[cfg(test)]
mod tests {
    use ledger_lite::{Amount, ChainId, Tx, TxKind};
    use top_proto::identity::Identity;

    use super::*;

    fn tx(nonce: u64, memo: usize) -> SignedTx {
        let user = Identity::from_seed(&[3; 32]);
        let kind = match memo {
            0 => TxKind::Transfer {
                to: user.account_id(),
                amount: Amount::from_units(1),
            },
            n => TxKind::Settle {
                receipts: vec![
                    ledger_lite::ReceiptBody {
                        chain: ChainId([1; 32]),
                        channel: ledger_lite::ChannelId([2; 32]),
                        cum_bytes: 1,
                        cum_amount: Amount::from_units(1),
                    }
                    .sign(&user);
                    n
                ],
            },
        };
        Tx {
            chain: ChainId([1; 32]),
            from: user.account_id(),
            nonce,
            fee: Amount::from_units(1),
            kind,
        }
        .sign(&user)
    }

    #[test]
    fn batches_stay_within_bounds_and_decode_to_what_went_in() {
        let small: Vec<SignedTx> = (0..BATCH_TXS as u64).map(|n| tx(n, 0)).collect();
        let batches = encode_batches(&small);
        assert_eq!(batches.len(), 1);
        assert_eq!(decode_batch(&batches[0]), Some(small));
        // Large transactions split over several batches; one too large for gossip stays home.
        let large: Vec<SignedTx> = (0..8).map(|n| tx(n, 300)).collect();
        let too_large = tx(9, 2_000);
        let mut all = large.clone();
        all.push(too_large);
        let batches = encode_batches(&all);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.len() <= MAX_BATCH));
        let back: Vec<SignedTx> = batches
            .iter()
            .flat_map(|b| decode_batch(b).unwrap())
            .collect();
        assert_eq!(back, large);
        // Too many, too large or not a batch: nothing.
        let many: Vec<SignedTx> = (0..BATCH_TXS as u64 + 1).map(|n| tx(n, 0)).collect();
        assert!(decode_batch(&postcard::to_stdvec(&many).unwrap()).is_none());
        assert!(decode_batch(&vec![0u8; MAX_BATCH + 1]).is_none());
        assert!(decode_batch(&[0xff; 64]).is_none());
    }
}
