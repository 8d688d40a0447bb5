//! A disk that fails a write: the block is not committed, memory is rolled back to what the disk
//! holds, the store is opened again, and the same block then commits (no `WrongPrev` until a
//! restart). Real redb on a real file, with writes failing on demand.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{MIN_FEE, World, top};
use ledger_lite::*;
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

/// A file whose writes and syncs fail while `failing` is set.
#[derive(Debug)]
struct FailingDisk {
    file: FileBackend,
    failing: Arc<AtomicBool>,
}

impl FailingDisk {
    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: no space left on device"));
        }
        Ok(())
    }
}

impl StorageBackend for FailingDisk {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(a, b)
    }
    fn try_lock_shared_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(a, b)
    }
    fn lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(a, b)
    }
    fn lock_shared_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(a, b)
    }
    fn unlock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(a, b)
    }
}

/// A ledger on `path` whose disk fails while `failing` is set.
fn open(path: PathBuf, failing: Arc<AtomicBool>, w: &World) -> Ledger {
    let opener: store::Opener = Box::new(move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let disk = FailingDisk {
            file: FileBackend::new(file)?,
            failing: failing.clone(),
        };
        Database::builder().create_with_backend(disk)
    });
    Ledger::open_with(opener, w.genesis.clone()).unwrap()
}

fn transfer(w: &World, nonce: u64) -> SignedTx {
    Tx {
        chain: w.chain(),
        from: w.id(0),
        nonce,
        fee: Amount::from_units(MIN_FEE),
        kind: TxKind::Transfer {
            to: w.id(1),
            amount: top(1),
        },
    }
    .sign(&w.people[0])
}

#[test]
fn a_failed_commit_leaves_memory_and_disk_equal_and_the_block_applies_again() {
    let w = World::new(2);
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let mut validator = Ledger::open(&dir.path().join("v.redb"), w.genesis.clone()).unwrap();
    let mut follower = open(dir.path().join("f.redb"), failing.clone(), &w);
    let reader = follower.reader();

    let b1 = validator
        .produce(vec![transfer(&w, 0)], 10_000, &w.validator)
        .unwrap()
        .block;
    let b2 = validator
        .produce(vec![transfer(&w, 1)], 11_000, &w.validator)
        .unwrap()
        .block;
    follower.apply(&b1).unwrap().unwrap();
    let (state, head) = (follower.state().clone(), follower.head());

    failing.store(true, Ordering::SeqCst);
    assert!(follower.apply(&b2).is_err(), "the disk refused the block");
    assert_eq!(
        follower.state(),
        &state,
        "memory rolled back to the disk's state"
    );
    assert_eq!(follower.head(), head);
    // (Readers get an error while the store is closed, never a block that was not committed.)
    assert!(
        !matches!(reader.block(2), Ok(Some(_))),
        "block 2 was not committed"
    );

    // The disk works again: the same block commits (not WrongPrev), on the reopened store.
    failing.store(false, Ordering::SeqCst);
    follower.apply(&b2).unwrap().unwrap();
    assert_eq!(follower.state(), validator.state());
    assert!(
        reader.block(1).unwrap().is_some(),
        "the reopened store holds block 1"
    );
    assert_eq!(
        reader.block(2).unwrap(),
        Some(b2),
        "readers see the reopened store"
    );

    // The validator's path: a failed produce leaves its state and mempool candidates usable.
    let mut producer = open(dir.path().join("p.redb"), failing.clone(), &w);
    failing.store(true, Ordering::SeqCst);
    assert!(
        producer
            .produce(vec![transfer(&w, 0)], 10_000, &w.validator)
            .is_err()
    );
    assert_eq!(producer.height(), 0);
    failing.store(false, Ordering::SeqCst);
    let built = producer
        .produce(vec![transfer(&w, 0)], 10_000, &w.validator)
        .unwrap();
    assert!(built.rejected.is_empty());
    assert_eq!(producer.height(), 1);

    // What is on disk is what was in memory.
    let (state, head) = (follower.state().clone(), follower.head());
    drop((reader, follower));
    let reopened = Ledger::open(&dir.path().join("f.redb"), w.genesis.clone()).unwrap();
    assert_eq!(reopened.state(), &state);
    assert_eq!(reopened.head(), head);
    reopened.state().check_invariant().unwrap();
}
