//! The chain on disk (redb): one write transaction per block stores the block, the entries it
//! changed and `applied_height` together, so a crash never loses a committed block and never
//! leaves one half applied. A write that fails is undone in memory too, and the database is
//! opened again (redb refuses every operation after an I/O error until then), so the chain goes
//! on from what the disk holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use top_proto::id::AccountId;

use crate::block::{Block, BlockHash, Genesis, GenesisError};
use crate::chain::{BlockError, BlockOutcome};
use crate::state::State;
use crate::tx::ChannelId;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("accounts");
const CHANNELS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("channels");
const GRANTS: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("grants");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("chain_meta");
/// Chains of several validators: each block's finality proof (its encoded finalization
/// certificate), by height, where the engine had one (a block without one is final because a
/// later block that has one commits to it through its parent hashes).
const PROOFS: TableDefinition<u64, &[u8]> = TableDefinition::new("proofs");
/// The largest finality proof stored (a certificate of a few hundred signatures fits).
pub const MAX_PROOF_BYTES: usize = 64 << 10;

/// Why the chain store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("ledger store: {0}")]
    Db(String),
    /// Stored bytes do not decode.
    #[error("ledger store is corrupt: {0}")]
    Corrupt(String),
    /// The store holds another chain.
    #[error("ledger store holds chain {found}, not {expected}")]
    OtherChain {
        /// The configured genesis name.
        expected: String,
        /// The stored one.
        found: String,
    },
    /// The genesis is unusable.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// A block was refused.
    #[error(transparent)]
    Block(#[from] BlockError),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Opens the chain's database (again, after a failed write).
pub type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// How long reopening waits for readers still holding the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// The open database, shared with readers; empty while it is being opened again.
#[derive(Clone)]
struct DbCell(Arc<RwLock<Option<Arc<Database>>>>);

impl DbCell {
    fn new(db: Database) -> Self {
        Self(Arc::new(RwLock::new(Some(Arc::new(db)))))
    }

    fn get(&self) -> Result<Arc<Database>, StoreError> {
        let db = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        db.ok_or_else(|| {
            StoreError::Db("the store is being opened again after a failed write".into())
        })
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.0.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, db: Database) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
    }
}

/// Reads committed blocks; cheap to clone.
#[derive(Clone)]
pub struct BlockReader {
    db: DbCell,
}

impl BlockReader {
    /// The committed block at `height`, if any.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let txn = self.db.get()?.begin_read().map_err(db_err)?;
        let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
        match blocks.get(height).map_err(db_err)? {
            Some(v) => Ok(Some(decode(v.value(), "block")?)),
            None => Ok(None),
        }
    }

    /// The committed blocks from `from` through `to`, in order (stopping at the first missing),
    /// as many as fit in `max_bytes` (always at least one).
    pub fn blocks(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Block>, StoreError> {
        let txn = self.db.get()?.begin_read().map_err(db_err)?;
        let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in blocks.range(from..=to).map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            // At least one block; then only as many as fit in `max_bytes`.
            bytes = bytes.saturating_add(v.value().len());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(decode(v.value(), "block")?);
        }
        Ok(out)
    }

    /// Like [`BlockReader::blocks`], each block with its finality proof, if one is stored.
    pub fn finalized(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<crate::wire::FinalizedBlock>, StoreError> {
        let blocks = self.blocks(from, to, max_bytes)?;
        let txn = self.db.get()?.begin_read().map_err(db_err)?;
        let proofs = match txn.open_table(PROOFS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::with_capacity(blocks.len());
        for block in blocks {
            let proof = match &proofs {
                Some(t) => t
                    .get(block.header.height)
                    .map_err(db_err)?
                    .map(|v| v.value().to_vec()),
                None => None,
            };
            out.push(crate::wire::FinalizedBlock { block, proof });
        }
        Ok(out)
    }
}

/// A chain: its genesis, its state after the last committed block and the store behind them.
pub struct Ledger {
    db: DbCell,
    opener: Opener,
    genesis: Genesis,
    state: State,
    head: BlockHash,
}

impl Ledger {
    /// Opens (or creates) the chain stored at `path` for `genesis`. A fresh store is initialised
    /// with the genesis state; an existing one is loaded and checked against its head block.
    pub fn open(path: &Path, genesis: Genesis) -> Result<Self, StoreError> {
        let path = PathBuf::from(path);
        Self::open_with(Box::new(move || Database::create(&path)), genesis)
    }

    /// Like [`Ledger::open`] on the database `opener` opens (a test's failing disk, say).
    pub fn open_with(opener: Opener, genesis: Genesis) -> Result<Self, StoreError> {
        let db = opener().map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(BLOCKS).map_err(db_err)?;
            txn.open_table(ACCOUNTS).map_err(db_err)?;
            txn.open_table(CHANNELS).map_err(db_err)?;
            txn.open_table(GRANTS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let stored = meta
                .get("genesis")
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            match stored {
                Some(bytes) => {
                    let found = Genesis::from_stored(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("genesis: {e}")))?;
                    if found != genesis {
                        return Err(StoreError::OtherChain {
                            expected: genesis.name,
                            found: found.name,
                        });
                    }
                }
                None => {
                    let state = genesis.state()?;
                    meta.insert("genesis", encode(&genesis).as_slice())
                        .map_err(db_err)?;
                    drop(meta);
                    write_state(&txn, &state, None)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        let (state, head) = load(&db, &genesis)?;
        Ok(Self {
            db: DbCell::new(db),
            opener,
            genesis,
            state,
            head,
        })
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The state after the last committed block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Height of the last committed block.
    pub fn height(&self) -> u64 {
        self.state.height
    }

    /// Hash of the last committed block (zeroes before block 1).
    pub fn head(&self) -> BlockHash {
        self.head
    }

    /// The committed block at `height`, if any.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        self.reader().block(height)
    }

    /// A handle that reads committed blocks without holding the ledger (reads see committed
    /// writes only; redb readers never wait for the writer).
    pub fn reader(&self) -> BlockReader {
        BlockReader {
            db: self.db.clone(),
        }
    }

    /// Checks and applies a block from the validator and commits it; the follower's path.
    /// A block at or below the committed height is skipped (`Ok(None)`).
    pub fn apply(&mut self, block: &Block) -> Result<Option<BlockOutcome>, StoreError> {
        if block.header.height <= self.state.height && block.header.chain == self.state.chain {
            return Ok(None);
        }
        if self.genesis.is_consensus() {
            // No signature makes a block of this chain valid: only a finality proof, checked
            // by whoever calls [`Ledger::apply_finalized`].
            return Err(crate::chain::BlockError::NeedsFinality.into());
        }
        self.ensure_open()?;
        let outcome = self
            .state
            .apply_block(block, &self.head, &self.genesis.validator)?;
        if let Err(e) = self.commit(block, &outcome, None) {
            // Memory goes back to what the disk holds: the block can be applied again.
            self.state.rollback(outcome.undo);
            return Err(self.reopen_after(e));
        }
        Ok(Some(outcome))
    }

    /// Applies and commits a block several validators agreed on (their finality proof stands
    /// for the single validator's signature); like [`Ledger::apply`] otherwise.
    pub fn apply_agreed(&mut self, block: &Block) -> Result<Option<BlockOutcome>, StoreError> {
        self.apply_finalized(block, None)
    }

    /// Like [`Ledger::apply_agreed`], keeping the block's finality proof beside it (in the
    /// same write) for followers to check.
    pub fn apply_finalized(
        &mut self,
        block: &Block,
        proof: Option<&[u8]>,
    ) -> Result<Option<BlockOutcome>, StoreError> {
        self.apply_finalized_checking(block, proof, true)
    }

    /// [`Ledger::apply_finalized`] for a block this node's own consensus engine applied on the
    /// same state (voting on it, building it, or taking it once finalized): its signatures and
    /// state root were checked there and are not again; every other rule is. (A store whose
    /// state went another way than the engine's is caught when it opens: the head block's root
    /// is checked against the state loaded.)
    pub fn commit_verified(
        &mut self,
        block: &Block,
        proof: Option<&[u8]>,
    ) -> Result<Option<BlockOutcome>, StoreError> {
        self.apply_finalized_checking(block, proof, false)
    }

    fn apply_finalized_checking(
        &mut self,
        block: &Block,
        proof: Option<&[u8]>,
        signatures: bool,
    ) -> Result<Option<BlockOutcome>, StoreError> {
        if block.header.height <= self.state.height && block.header.chain == self.state.chain {
            return Ok(None);
        }
        if let Some(proof) = proof
            && proof.len() > MAX_PROOF_BYTES
        {
            return Err(BlockError::ProofTooLarge(proof.len()).into());
        }
        if self.genesis.is_consensus()
            && block.signature != ed25519_dalek::Signature::from_bytes(&[0; 64])
        {
            return Err(BlockError::UnexpectedSignature.into());
        }
        self.ensure_open()?;
        let outcome = match signatures {
            true => self.state.apply_agreed(block, &self.head)?,
            false => self.state.apply_agreed_checked(block, &self.head)?,
        };
        if let Err(e) = self.commit(block, &outcome, proof) {
            self.state.rollback(outcome.undo);
            return Err(self.reopen_after(e));
        }
        Ok(Some(outcome))
    }

    /// Builds, signs, applies and commits the next block; the validator's path.
    pub fn produce(
        &mut self,
        candidates: Vec<crate::tx::SignedTx>,
        time_ms: u64,
        validator: &top_proto::identity::Identity,
    ) -> Result<crate::chain::Built, StoreError> {
        if self.genesis.is_consensus() {
            return Err(crate::chain::BlockError::NeedsFinality.into());
        }
        self.ensure_open()?;
        let built = self
            .state
            .build_block(candidates, time_ms, self.head, validator);
        if let Err(e) = self.commit(&built.block, &built.outcome, None) {
            self.state.rollback(built.outcome.undo);
            return Err(self.reopen_after(e));
        }
        Ok(built)
    }

    /// After a failed write: opens the database again and checks that it holds exactly the
    /// state in memory. Returns the write's error (with the reopening's, if that failed too).
    fn reopen_after(&mut self, error: StoreError) -> StoreError {
        match self.reopen() {
            Ok(()) => error,
            Err(again) => StoreError::Db(format!("{error}; opening the store again: {again}")),
        }
    }

    /// Opens the store again if a failed write left it closed (before a block changes memory).
    fn ensure_open(&mut self) -> Result<(), StoreError> {
        if self.db.get().is_err() {
            self.reopen()?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        if let Some(mut old) = self.db.take() {
            // Readers hold the handle only to begin a read: wait for them, then close it. (A
            // read transaction in flight keeps the file open by itself: opening again may then
            // fail, and is tried again before the next block.)
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => break drop(db),
                    Err(held) if Instant::now() < deadline => {
                        old = held;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return Err(StoreError::Db("readers kept the old store open".into())),
                }
            }
        }
        let db = (self.opener)().map_err(db_err)?;
        let (state, head) = load(&db, &self.genesis)?;
        if head != self.head || state != self.state {
            return Err(StoreError::Corrupt(
                "after a failed write, the disk and memory differ".into(),
            ));
        }
        self.db.put(db);
        Ok(())
    }

    fn commit(
        &mut self,
        block: &Block,
        outcome: &BlockOutcome,
        proof: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let txn = self.db.get()?.begin_write().map_err(db_err)?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(db_err)?;
            blocks
                .insert(block.header.height, encode(block).as_slice())
                .map_err(db_err)?;
        }
        if let Some(proof) = proof {
            let mut proofs = txn.open_table(PROOFS).map_err(db_err)?;
            proofs.insert(block.header.height, proof).map_err(db_err)?;
        }
        write_state(&txn, &self.state, Some(outcome))?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert("head", block.hash().0.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.head = block.hash();
        Ok(())
    }
}

/// Writes the scalar state and the entries `outcome` touched (all of them when `None`).
fn write_state(
    txn: &redb::WriteTransaction,
    state: &State,
    outcome: Option<&BlockOutcome>,
) -> Result<(), StoreError> {
    let mut accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
    let mut channels = txn.open_table(CHANNELS).map_err(db_err)?;
    let mut grants = txn.open_table(GRANTS).map_err(db_err)?;
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let account_ids: Vec<AccountId> = match outcome {
        Some(o) => o.touched.accounts.iter().copied().collect(),
        None => state.accounts.keys().copied().collect(),
    };
    for id in account_ids {
        if let Some(a) = state.accounts.get(&id) {
            accounts
                .insert(id.as_bytes(), encode(a).as_slice())
                .map_err(db_err)?;
        }
    }
    let channel_ids: Vec<ChannelId> = match outcome {
        Some(o) => o.touched.channels.iter().copied().collect(),
        None => state.channels.keys().copied().collect(),
    };
    for id in channel_ids {
        if let Some(c) = state.channels.get(&id) {
            channels
                .insert(&id.0, encode(c).as_slice())
                .map_err(db_err)?;
        }
    }
    let grant_keys: Vec<(AccountId, AccountId)> = match outcome {
        Some(o) => o.touched.grants.iter().copied().collect(),
        None => state.grants.keys().copied().collect(),
    };
    for key in grant_keys {
        if let Some(g) = state.grants.get(&key) {
            grants
                .insert(&grant_key(&key), encode(g).as_slice())
                .map_err(db_err)?;
        }
    }
    let scalars = (state.height, state.time_ms, state.burned);
    meta.insert("scalars", encode(&scalars).as_slice())
        .map_err(db_err)?;
    meta.insert("applied_height", state.height.to_be_bytes().as_slice())
        .map_err(db_err)?;
    if state.epochs.is_some() {
        meta.insert(
            "validators",
            encode(&(state.epoch, &state.validators)).as_slice(),
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn grant_key((app, user): &(AccountId, AccountId)) -> [u8; 64] {
    let mut key = [0; 64];
    key[..32].copy_from_slice(app.as_bytes());
    key[32..].copy_from_slice(user.as_bytes());
    key
}

fn load(db: &Database, genesis: &Genesis) -> Result<(State, BlockHash), StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    let mut state = genesis.state()?;
    let scalars = meta
        .get("scalars")
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Corrupt("no scalars".into()))?;
    (state.height, state.time_ms, state.burned) = decode(scalars.value(), "scalars")?;
    if state.epochs.is_some()
        && let Some(set) = meta.get("validators").map_err(db_err)?
    {
        (state.epoch, state.validators) = decode(set.value(), "validators")?;
    }
    let head = match meta.get("head").map_err(db_err)? {
        Some(v) => BlockHash(
            v.value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("head".into()))?,
        ),
        None => BlockHash::default(),
    };
    let mut accounts = BTreeMap::new();
    for row in txn
        .open_table(ACCOUNTS)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        accounts.insert(
            AccountId::from_wire(*k.value()),
            decode(v.value(), "account")?,
        );
    }
    let mut channels = BTreeMap::new();
    for row in txn
        .open_table(CHANNELS)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        channels.insert(ChannelId(*k.value()), decode(v.value(), "channel")?);
    }
    let mut grants = BTreeMap::new();
    for row in txn
        .open_table(GRANTS)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        let key = k.value();
        let (app, user) = key.split_at(32);
        let app = AccountId::from_wire(app.try_into().unwrap_or([0; 32]));
        let user = AccountId::from_wire(user.try_into().unwrap_or([0; 32]));
        grants.insert((app, user), decode(v.value(), "grant")?);
    }
    state.restore(accounts, channels, grants);
    if state.height > 0 {
        let blocks = txn.open_table(BLOCKS).map_err(db_err)?;
        let block: Block = match blocks.get(state.height).map_err(db_err)? {
            Some(v) => decode(v.value(), "head block")?,
            None => return Err(StoreError::Corrupt("head block missing".into())),
        };
        if block.header.state_root != state.root() || block.hash() != head {
            return Err(StoreError::Corrupt(
                "stored state does not match the head block".into(),
            ));
        }
    }
    Ok((state, head))
}
