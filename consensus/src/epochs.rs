//! One simplex engine per epoch: when the ledger finalizes an epoch's last block, the state
//! names the next epoch's validators (by stake, see `ledger_lite::epochs`), and this starts the
//! next epoch's engine over that set (voting when this node is in it, watching otherwise) and
//! stops the last one. Each engine has its own sub-channels of the vote, certificate and
//! resolver channels; a peer heard in a later epoch than ours tells marshal to fetch our
//! epoch's last block from it (a node that was away catches up epoch by epoch).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commonware_consensus::marshal::standard::Inline;
use commonware_consensus::simplex::config::ForwardingPolicy;
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::{self, config::Floor};
use commonware_consensus::types::{Epoch, FixedEpocher, Height, ViewDelta};
use commonware_cryptography::certificate::{Provider, Scoped};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::{Digestible as _, Sha256};
use commonware_p2p::utils::mux::{Builder as _, MuxHandle, Muxer};
use commonware_p2p::{Blocker, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{BufferPooler, Clock, Handle, Metrics, Network, Spawner, Storage};
use commonware_utils::ordered::Set;
use commonware_utils::vec::NonEmptyVec;
use ledger_lite::State;
use rand_core::CryptoRng;

use crate::app::{Ledger, LedgerApp};
use crate::block::ChainBlock;
use crate::finalizer::Marshal;

/// Sub-channel messages waiting per epoch.
const MUX_BACKLOG: usize = 1024;
/// How long before entering an epoch is tried again.
const RETRY_ENTER: Duration = Duration::from_secs(1);
/// The least time between two hints that a peer is in a later epoch.
const HINT_EVERY: Duration = Duration::from_secs(1);
/// Epochs whose schemes are kept behind the current one (marshal may still check their
/// certificates while it delivers their last blocks).
const SCHEMES_KEPT: u64 = 2;
/// Epochs before the one pruned whose journals are removed too (left by a node that jumped).
const JOURNALS_SWEPT: u64 = 8;

/// Whom a node connects to in each epoch.
pub trait Membership: Send + 'static {
    /// Tracks the peers of `epoch`: the validators `state` names and the nodes that follow.
    fn track(&mut self, epoch: u64, state: &State);
}

/// The signing scheme of each epoch this node knows: what marshal checks certificates with.
#[derive(Clone, Default)]
pub struct EpochSchemes {
    schemes: Arc<Mutex<BTreeMap<Epoch, Arc<Scheme>>>>,
}

impl EpochSchemes {
    fn register(&self, epoch: Epoch, scheme: Scheme) {
        let mut schemes = self.schemes.lock().unwrap_or_else(|p| p.into_inner());
        schemes.insert(epoch, Arc::new(scheme));
        let keep_from = Epoch::new(epoch.get().saturating_sub(SCHEMES_KEPT));
        schemes.retain(|e, _| *e >= keep_from);
    }
}

impl Provider for EpochSchemes {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        let schemes = self.schemes.lock().unwrap_or_else(|p| p.into_inner());
        schemes.get(&epoch).cloned().map(Scoped::scheme)
    }
}

/// The scheme of the validators `state` names: signing as one of them when `key` is, verifying
/// only otherwise (none when a validator's id is not a key).
pub fn scheme_for(namespace: &[u8], key: &PrivateKey, state: &State) -> Option<Scheme> {
    let keys = state
        .validators
        .iter()
        .map(crate::service::public_key)
        .collect::<Option<Vec<_>>>()?;
    let participants = Set::try_from(keys).ok()?;
    Some(
        Scheme::signer(namespace, participants.clone(), key.clone())
            .unwrap_or_else(|| Scheme::verifier(namespace, participants)),
    )
}

/// What runs the engines of successive epochs.
pub struct Epochs<E: BufferPooler + Spawner + Metrics + CryptoRng + Clock + Storage + Network, B, M>
{
    pub(crate) key: PrivateKey,
    pub(crate) namespace: Vec<u8>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) schemes: EpochSchemes,
    pub(crate) epocher: FixedEpocher,
    pub(crate) genesis: ChainBlock,
    pub(crate) marshal: Marshal,
    pub(crate) inline: Inline<E, Scheme, LedgerApp, ChainBlock, FixedEpocher>,
    pub(crate) blocker: B,
    pub(crate) membership: M,
    pub(crate) prefix: String,
    pub(crate) page_cache: CacheRef,
    pub(crate) leader_timeout: Duration,
}

/// The sub-channel registries of the engines' three channels.
struct Muxes<S: Sender, R: Receiver> {
    votes: MuxHandle<S, R>,
    certificates: MuxHandle<S, R>,
    resolver: MuxHandle<S, R>,
}

impl<E, B, M> Epochs<E, B, M>
where
    E: BufferPooler + Spawner + Metrics + CryptoRng + Clock + Storage + Network,
    B: Blocker<PublicKey = PublicKey>,
    M: Membership,
{
    /// Runs engines epoch after epoch until the context stops.
    pub async fn run<S, R>(
        mut self,
        context: E,
        votes: (S, R),
        certificates: (S, R),
        resolver: (S, R),
    ) where
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let (mux, votes, mut behind) =
            Muxer::builder(context.child("vote_mux"), votes.0, votes.1, MUX_BACKLOG)
                .with_backup()
                .build();
        mux.start();
        let (mux, certificates) = Muxer::new(
            context.child("certificate_mux"),
            certificates.0,
            certificates.1,
            MUX_BACKLOG,
        );
        mux.start();
        let (mux, resolver) = Muxer::new(
            context.child("resolver_mux"),
            resolver.0,
            resolver.1,
            MUX_BACKLOG,
        );
        mux.start();
        let mut muxes = Muxes {
            votes,
            certificates,
            resolver,
        };

        let mut running: Option<(u64, Handle<()>)> = None;
        let mut last_hint: Option<std::time::SystemTime> = None;
        loop {
            let state = self.ledger.finalized_state();
            let epoch = state.epoch;
            if running.as_ref().map(|(e, _)| *e) != Some(epoch) {
                match self.enter(&context, &state, &mut muxes).await {
                    Some(engine) => {
                        if let Some((old, engine)) = running.replace((epoch, engine)) {
                            engine.abort();
                            tracing::info!(epoch = old, "left epoch");
                        }
                        remove_journals(&context, self.ended_journals(epoch)).await;
                        tracing::info!(epoch, validators = state.validators.len(), "entered epoch");
                    }
                    None => {
                        // Its last block not found yet (nor a scheme for its set): tried again.
                        tracing::warn!(epoch, "cannot enter the epoch yet");
                        context.sleep(RETRY_ENTER).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                () = self.ledger.wait_epoch(epoch + 1) => {}
                heard = behind.recv() => {
                    let Some((their_epoch, (from, _))) = heard else { return };
                    // A peer in a later epoch: ours has ended there; fetch its last block
                    // (at most one hint a second: a peer sends what it likes).
                    let now = context.current();
                    // (A clock that went back makes a hint due.)
                    let due = last_hint.is_none_or(|at| {
                        now.duration_since(at).map_or(true, |d| d >= HINT_EVERY)
                    });
                    if state.epochs.is_some()
                        && their_epoch > epoch
                        && due
                        && let Some(last) = self.epocher_last(epoch)
                    {
                        last_hint = Some(now);
                        self.marshal.hint_finalized(Height::new(last), NonEmptyVec::new(from));
                    }
                }
            }
        }
    }

    /// The partitions of engine journals no engine reopens once `epoch` is entered: those before
    /// the previous epoch (a node that jumped epochs leaves a few behind, so a short run of
    /// older ones goes too).
    fn ended_journals(&self, epoch: u64) -> Vec<String> {
        let Some(newest) = epoch.checked_sub(2) else {
            return Vec::new();
        };
        (newest.saturating_sub(JOURNALS_SWEPT)..=newest)
            .map(|old| self.partition(old))
            .collect()
    }

    /// The storage partition of an epoch's engine (epoch 0's keeps the name it always had).
    fn partition(&self, epoch: u64) -> String {
        match epoch {
            0 => format!("{}-simplex", self.prefix),
            e => format!("{}-simplex-{e}", self.prefix),
        }
    }

    fn epocher_last(&self, epoch: u64) -> Option<u64> {
        use commonware_consensus::types::Epocher as _;
        self.epocher.last(Epoch::new(epoch)).map(|h| h.get())
    }

    /// Starts the engine of `state`'s epoch (whose last finalized block is at or after the
    /// previous epoch's last one).
    async fn enter<S, R>(
        &mut self,
        context: &E,
        state: &State,
        muxes: &mut Muxes<S, R>,
    ) -> Option<Handle<()>>
    where
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let epoch = state.epoch;
        let scheme = scheme_for(&self.namespace, &self.key, state)?;
        self.schemes.register(Epoch::new(epoch), scheme.clone());
        // The floor: the previous epoch's last block (its engine finalized it).
        let floor = match epoch.checked_sub(1) {
            None => self.genesis.digest(),
            Some(previous) => {
                let last = self.epocher_last(previous)?;
                match self.marshal.get_block(Height::new(last)).await {
                    Some(block) => block.digest(),
                    None => self.ledger.finalized_digest_at(last)?,
                }
            }
        };
        // Peers once the epoch can be entered (the tracker takes each epoch's set once).
        self.membership.track(epoch, state);
        let partition = self.partition(epoch);
        let engine = simplex::Engine::new(
            context.child("engine").with_attribute("epoch", epoch),
            simplex::Config {
                scheme,
                elector: RoundRobin::<Sha256>::default(),
                blocker: self.blocker.clone(),
                automaton: self.inline.clone(),
                relay: self.inline.clone(),
                reporter: self.marshal.clone(),
                strategy: Sequential,
                partition,
                mailbox_size: NonZeroUsize::new(1024).expect("non-zero"),
                epoch: Epoch::new(epoch),
                floor: Floor::Genesis(floor),
                replay_buffer: NonZeroUsize::new(1 << 20).expect("non-zero"),
                write_buffer: NonZeroUsize::new(1 << 20).expect("non-zero"),
                page_cache: self.page_cache.clone(),
                leader_timeout: self.leader_timeout,
                certification_timeout: self.leader_timeout * 2,
                timeout_retry: Duration::from_secs(2),
                activity_timeout: ViewDelta::new(256),
                skip_timeout: ViewDelta::new(10),
                fetch_timeout: Duration::from_secs(1),
                fetch_concurrent: NonZeroUsize::new(8).expect("non-zero"),
                forwarding: ForwardingPolicy::Disabled,
            },
        );
        let votes = muxes.votes.register(epoch).await.ok()?;
        let certificates = muxes.certificates.register(epoch).await.ok()?;
        let resolver = muxes.resolver.register(epoch).await.ok()?;
        Some(engine.start(votes, certificates, resolver))
    }
}

/// Removes `partitions` (one that is not there is no error).
async fn remove_journals(context: &impl Storage, partitions: Vec<String>) {
    for partition in partitions {
        match context.remove(&partition, None).await {
            Ok(()) => tracing::debug!(partition, "removed the journal of an ended epoch"),
            Err(commonware_runtime::Error::PartitionMissing(_)) => {}
            Err(e) => tracing::warn!(partition, "cannot remove an ended epoch's journal: {e}"),
        }
    }
}
