//! One validator's consensus stack: the simplex engine votes on blocks the application proposes
//! and verifies; the marshal stores what is finalized, gossips and fetches blocks, and hands
//! finalized blocks to the application in height order. Generic over the runtime and the
//! network, so the same wiring runs in the relay and in deterministic simulations.

use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::core::Actor as Marshal;
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::types::{FixedEpocher, ViewDelta};
use commonware_cryptography::Signer as _;
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{BufferPooler, Clock, Handle, Metrics, Network, Spawner, Storage};
use commonware_storage::archive::prunable;
use commonware_storage::translator::TwoCap;
use rand_core::CryptoRng;

use crate::app::LedgerApp;
use crate::block::{ChainBlock, MAX_BLOCK_WIRE};
use crate::epochs::{EpochSchemes, Epochs, Membership};

/// Channel ids on the validators' network.
pub mod channel {
    /// Votes.
    pub const VOTES: u64 = 0;
    /// Certificates.
    pub const CERTIFICATES: u64 = 1;
    /// The engine's fetches of certificates it missed.
    pub const RESOLVER: u64 = 2;
    /// Marshal's fetches of blocks it missed.
    pub const BACKFILL: u64 = 3;
    /// Proposed blocks, gossiped.
    pub const BLOCKS: u64 = 4;
}

/// The largest message on the validators' network: a whole block with its certificate.
pub const MAX_MESSAGE: u32 = (MAX_BLOCK_WIRE as u32) * 2;

const MAILBOX: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");
const IO_BUFFER: NonZeroUsize = NonZeroUsize::new(1 << 20).expect("non-zero");
const PAGE_SIZE: NonZeroU16 = NonZeroU16::new(4096).expect("non-zero");
const PAGE_CACHE: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");
const ITEMS_PER_SECTION: NonZeroU64 = NonZeroU64::new(4096).expect("non-zero");

/// How one validator takes part.
pub struct ValidatorConfig<P, B, M> {
    /// Its key (it signs votes in the epochs whose validator set names it).
    pub key: PrivateKey,
    /// The namespace votes and certificates are signed in.
    pub namespace: Vec<u8>,
    /// The block every validator starts from.
    pub genesis: ChainBlock,
    /// Storage partitions are named from this.
    pub partition_prefix: String,
    /// The peers of the network.
    pub peers: P,
    /// Where peers that misbehave are reported (and blocked).
    pub blocker: B,
    /// Whom it connects to in each epoch.
    pub membership: M,
    /// How long a leader has to propose before the round is skipped.
    pub leader_timeout: Duration,
}

/// The network channels one validator uses (each a sender and a receiver).
pub struct Channels<S, R> {
    /// [`channel::VOTES`].
    pub votes: (S, R),
    /// [`channel::CERTIFICATES`].
    pub certificates: (S, R),
    /// [`channel::RESOLVER`].
    pub resolver: (S, R),
    /// [`channel::BACKFILL`].
    pub backfill: (S, R),
    /// [`channel::BLOCKS`].
    pub blocks: (S, R),
}

fn archive<C>(
    prefix: &str,
    name: &str,
    page_cache: CacheRef,
    codec: C,
) -> prunable::Config<TwoCap, C> {
    prunable::Config {
        translator: TwoCap,
        key_partition: format!("{prefix}-{name}-key"),
        key_page_cache: page_cache,
        value_partition: format!("{prefix}-{name}-value"),
        compression: None,
        codec_config: codec,
        items_per_section: ITEMS_PER_SECTION,
        key_write_buffer: IO_BUFFER,
        value_write_buffer: IO_BUFFER,
        replay_buffer: IO_BUFFER,
    }
}

/// Starts one validator's consensus stack; the handle ends when the engine does. Fails when
/// the engine's stored finalizations or blocks do not open.
pub async fn start_validator<E, P, B, M, S, R>(
    context: E,
    config: ValidatorConfig<P, B, M>,
    channels: Channels<S, R>,
    app: LedgerApp,
) -> Result<Handle<()>, commonware_storage::archive::Error>
where
    E: BufferPooler + Spawner + Metrics + CryptoRng + Clock + Storage + Network,
    P: Provider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
    M: Membership,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    let ValidatorConfig {
        key,
        namespace,
        genesis,
        partition_prefix: prefix,
        peers,
        blocker,
        membership,
        leader_timeout,
    } = config;
    let public_key = key.public_key();
    let page_cache = CacheRef::from_pooler(&context, PAGE_SIZE, PAGE_CACHE);
    // What is stored first: a store that does not open stops here, before anything runs.
    let finalizations = prunable::Archive::init(
        context.child("finalizations_by_height"),
        archive(
            &prefix,
            "finalizations",
            page_cache.clone(),
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await?;
    let blocks = prunable::Archive::init(
        context.child("finalized_blocks"),
        archive(&prefix, "blocks", page_cache.clone(), MAX_BLOCK_WIRE),
    )
    .await?;

    let resolver = marshal_resolver::init(
        context.child("marshal_resolver"),
        marshal_resolver::Config {
            public_key: public_key.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: MAILBOX,
            initial: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fetch_retry_timeout: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: public_key.clone(),
            mailbox_size: MAILBOX,
            deque_size: 10,
            priority: false,
            codec_config: MAX_BLOCK_WIRE,
            peer_provider: peers.clone(),
        },
    );
    broadcast.start(channels.blocks);

    let ledger = app.ledger().clone();
    let state = ledger.finalized_state();
    // Without an epoch rule, one epoch that never ends.
    let length = state
        .epochs
        .and_then(|rule| NonZeroU64::new(rule.blocks))
        .unwrap_or(NonZeroU64::MAX);
    let epocher = FixedEpocher::new(length);
    let schemes = EpochSchemes::default();
    let ledger_height = app.height();
    let (marshal, mailbox, processed) = Marshal::<_, Standard<ChainBlock>, _, _, _, _, _>::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: schemes.clone(),
            epocher: epocher.clone(),
            start: Start::Genesis(genesis.clone()),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: MAILBOX,
            view_retention_timeout: ViewDelta::new(2560),
            prunable_items_per_section: ITEMS_PER_SECTION,
            page_cache: page_cache.clone(),
            replay_buffer: IO_BUFFER,
            key_write_buffer: IO_BUFFER,
            value_write_buffer: IO_BUFFER,
            block_codec_config: MAX_BLOCK_WIRE,
            max_repair: NonZeroUsize::new(50).expect("non-zero"),
            max_pending_acks: NonZeroUsize::new(16).expect("non-zero"),
            strategy: Sequential,
        },
    )
    .await;

    // The chain store commits before the engine is told a block was taken: it is never behind
    // unless it was lost or replaced.
    if let Some(processed) = processed
        && processed.get() > ledger_height
    {
        tracing::error!(
            processed = processed.get(),
            committed = ledger_height,
            "the chain store is behind the engine's storage: restore both together"
        );
    }
    app.attach(mailbox.clone());
    let inline = Inline::new(
        context.child("application"),
        app,
        mailbox.clone(),
        epocher.clone(),
    );
    marshal.start(inline.clone(), buffer, resolver);

    let epochs = Epochs {
        key,
        namespace,
        ledger,
        schemes,
        epocher,
        genesis,
        marshal: mailbox,
        inline,
        blocker,
        membership,
        prefix,
        page_cache,
        leader_timeout,
    };
    let Channels {
        votes,
        certificates,
        resolver,
        ..
    } = channels;
    Ok(context.child("epochs").spawn(move |context| async move {
        epochs.run(context, votes, certificates, resolver).await;
    }))
}
