//! Finalized blocks committed to the chain store on a thread of their own: the engine hands
//! them over in height order and is told each was taken once it is on disk. A write that fails
//! is tried again a few times (the store reopens itself after an I/O error); a block that does
//! not apply, or a disk that stays broken, stops this validator rather than let it go on with
//! another state.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use commonware_consensus::marshal::core::Mailbox;
use commonware_consensus::marshal::standard::Standard;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::types::Height;
use commonware_cryptography::Digestible as _;
use commonware_utils::Acknowledgement;
use commonware_utils::acknowledgement::Exact;
use ledger_lite::StoreError;

use crate::app::Ledger;
use crate::block::ChainBlock;

/// Marshal's mailbox, where each finalized block's certificate is read from.
pub type Marshal = Mailbox<Scheme, Standard<ChainBlock>>;

/// Finalized blocks waiting for their commit, at most (marshal waits on fewer acks anyway).
const QUEUE: usize = 64;
/// Tries of one commit that fails on the disk.
const TRIES: u32 = 5;
/// Wait before the first retry (doubling after each).
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Hands finalized blocks to the committing thread; the thread ends when this is dropped.
pub struct Finalizer {
    queue: SyncSender<(Arc<ChainBlock>, Exact)>,
    /// Set once marshal runs: finality proofs are read from it.
    marshal: Arc<OnceLock<Marshal>>,
}

impl Finalizer {
    /// Starts the thread that commits `ledger`'s finalized blocks; it ends (and lets go of the
    /// ledger and its store) once every handle to this finalizer is dropped.
    pub fn start(ledger: Arc<Ledger>) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (queue, blocks) = sync_channel(QUEUE);
        let marshal = Arc::new(OnceLock::new());
        let proofs = marshal.clone();
        let thread = std::thread::Builder::new()
            .name("finalizer".into())
            .spawn(move || run(&ledger, blocks, &proofs))?;
        Ok((Self { queue, marshal }, thread))
    }

    /// Where finality proofs come from, once marshal runs.
    pub fn attach(&self, marshal: Marshal) {
        self.marshal.set(marshal).ok();
    }

    /// Queues `block`; `ack` is acknowledged once it is committed. False when the thread is
    /// gone or behind by the whole queue (the ack is dropped: marshal stops).
    pub fn send(&self, block: Arc<ChainBlock>, ack: Exact) -> bool {
        match self.queue.try_send((block, ack)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(ledger: &Ledger, blocks: Receiver<(Arc<ChainBlock>, Exact)>, marshal: &OnceLock<Marshal>) {
    for (block, ack) in blocks {
        let height = block.block().header.height;
        let proof = marshal.get().and_then(|m| proof_of(m, &block));
        match commit(ledger, &block, proof.as_deref()) {
            Ok(()) => ack.acknowledge(),
            Err(e) => {
                // Not acknowledged: marshal stops, and so does this validator.
                tracing::error!(height, "a finalized block was not committed: {e}");
                return;
            }
        }
    }
}

/// The certificate marshal stored for `block`, encoded (none for a block finalized only
/// through a later one: its descendants' proof covers it).
fn proof_of(marshal: &Marshal, block: &ChainBlock) -> Option<Vec<u8>> {
    let height = Height::new(block.block().header.height);
    let certificate = futures::executor::block_on(marshal.get_finalization(height))?;
    (certificate.proposal.payload == block.digest()).then(|| crate::proof::encode(&certificate))
}

fn commit(
    ledger: &Ledger,
    block: &Arc<ChainBlock>,
    proof: Option<&[u8]>,
) -> Result<(), StoreError> {
    let mut wait = FIRST_RETRY;
    for attempt in 1.. {
        match ledger.finalize(block.clone(), proof) {
            Err(StoreError::Db(e)) if attempt < TRIES => {
                tracing::warn!("committing a finalized block failed ({e}); trying again");
                std::thread::sleep(wait);
                wait *= 2;
            }
            result => return result,
        }
    }
    Ok(())
}
