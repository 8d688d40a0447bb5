//! The relay's CDN store on disk: manifests and chunks, each file named by its hash.
//!
//! Content published to this relay (its origin copies) is kept until unpublished; chunks
//! fetched for others are a cache bounded by `cdn_cache_bytes`, evicting the least recently
//! used. A chunk is written to a temporary file, synced, and renamed into place only after its
//! hash was checked, so a crash at any point leaves no chunk whose bytes do not match its name;
//! leftovers of interrupted writes are removed on open.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use top_proto::cdn::{Cid, Manifest};
use top_proto::id::AccountId;

use crate::util::lock;

/// A chunk's BLAKE3 hash.
pub type ChunkHash = [u8; 32];

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's files failed.
    #[error("CDN store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Bytes offered for a chunk do not hash to its name.
    #[error("chunk bytes do not match their hash")]
    Mismatch,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who published a file here, and its size (for the publisher's quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The publisher's account.
    pub publisher: AccountId,
    /// The file's size in bytes.
    pub size: u64,
}

struct Cache {
    lru: LruCache<ChunkHash, u64>,
    bytes: u64,
}

/// Manifests and chunks on disk under one directory.
pub struct CdnStore {
    dir: PathBuf,
    capacity: u64,
    cache: Mutex<Cache>,
    /// Origin chunks: how many publications (or uploads under way) hold each.
    pins: Mutex<HashMap<ChunkHash, u32>>,
    published: Mutex<HashMap<Cid, Publication>>,
    /// Chunks whose bytes on disk were hashed since this process started.
    verified: Mutex<HashSet<ChunkHash>>,
    /// Bytes of uploads under way, per publisher (counted against the quota).
    uploading: Mutex<HashMap<AccountId, u64>>,
}

fn hex(hash: &ChunkHash) -> String {
    blake3::Hash::from(*hash).to_hex().to_string()
}

fn read_dir(dir: &Path) -> Result<impl Iterator<Item = fs::DirEntry>, StoreError> {
    Ok(fs::read_dir(dir).map_err(io_at(dir))?.flatten())
}

impl CdnStore {
    /// Opens (creating) the store in `dir` with a cache bound of `capacity` bytes; removes
    /// leftovers of interrupted writes and uploads, and rebuilds the cache order from file times.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, StoreError> {
        for sub in ["tmp", "manifests", "origin", "cache", "published"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        for entry in read_dir(&dir.join("tmp"))? {
            fs::remove_file(entry.path()).ok();
        }
        let mut found = Vec::new();
        for entry in read_dir(&dir.join("cache"))? {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(parse_hex) else {
                fs::remove_file(entry.path()).ok();
                continue;
            };
            if let Ok(meta) = entry.metadata() {
                found.push((meta.modified().ok(), hash, meta.len()));
            }
        }
        found.sort_by_key(|(used, _, _)| *used);
        let mut cache = Cache {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, hash, len) in found {
            cache.lru.put(hash, len);
            cache.bytes += len;
        }
        let store = Self {
            dir: dir.to_path_buf(),
            capacity,
            cache: Mutex::new(cache),
            pins: Mutex::default(),
            published: Mutex::default(),
            verified: Mutex::default(),
            uploading: Mutex::default(),
        };
        for entry in read_dir(&dir.join("published"))? {
            let cid = entry.file_name().to_str().and_then(parse_hex).map(Cid);
            let record = fs::read(entry.path())
                .ok()
                .and_then(|b| postcard::from_bytes::<Publication>(&b).ok());
            match (cid, record) {
                (Some(cid), Some(record)) => match store.manifest(&cid) {
                    Some(m) => {
                        store.pin(&m);
                        lock(&store.published).insert(cid, record);
                    }
                    None => drop(fs::remove_file(entry.path())),
                },
                _ => drop(fs::remove_file(entry.path())),
            }
        }
        // Origin chunks no publication holds are left from an interrupted upload.
        let pins = lock(&store.pins).clone();
        for entry in read_dir(&dir.join("origin"))? {
            let held = entry
                .file_name()
                .to_str()
                .and_then(parse_hex)
                .is_some_and(|h| pins.contains_key(&h));
            if !held {
                fs::remove_file(entry.path()).ok();
            }
        }
        store.evict();
        Ok(store)
    }

    fn write_atomically(&self, to: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp =
            self.dir
                .join("tmp")
                .join(format!("{}.{}", std::process::id(), rand::random::<u64>()));
        let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(data).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, to).map_err(io_at(to))
    }

    /// Stores a manifest (checked by the caller against its id).
    pub fn put_manifest(&self, cid: &Cid, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path(cid);
        if self.manifest(cid).is_some() {
            return Ok(());
        }
        self.write_atomically(&path, &manifest.encode())
    }

    /// The manifest of `cid`, if stored (and still matching its id).
    pub fn manifest(&self, cid: &Cid) -> Option<Manifest> {
        let bytes = fs::read(self.manifest_path(cid)).ok()?;
        Manifest::decode_for(cid, &bytes).ok()
    }

    fn manifest_path(&self, cid: &Cid) -> PathBuf {
        self.dir.join("manifests").join(cid.hex())
    }

    /// Holds a manifest's chunks as origin chunks (an upload starts, or a publication loads).
    pub fn pin(&self, manifest: &Manifest) {
        let mut pins = lock(&self.pins);
        for hash in &manifest.chunks {
            *pins.entry(*hash).or_insert(0) += 1;
        }
    }

    /// Releases a [`CdnStore::pin`]; origin chunks nothing holds any more are deleted.
    pub fn unpin(&self, manifest: &Manifest) {
        let mut pins = lock(&self.pins);
        for hash in &manifest.chunks {
            if let Some(n) = pins.get_mut(hash) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(hash);
                    fs::remove_file(self.dir.join("origin").join(hex(hash))).ok();
                }
            }
        }
    }

    /// Records `cid` as published here by `publisher` (its manifest and every chunk stored
    /// and pinned already). Durable before it returns.
    pub fn publish(
        &self,
        cid: &Cid,
        manifest: &Manifest,
        publisher: AccountId,
    ) -> Result<bool, StoreError> {
        self.put_manifest(cid, manifest)?;
        let record = Publication {
            publisher,
            size: manifest.size,
        };
        if lock(&self.published).contains_key(cid) {
            return Ok(false);
        }
        let bytes = postcard::to_allocvec(&record).map_err(|e| StoreError::Io {
            path: self.dir.join("published"),
            source: io::Error::other(e),
        })?;
        self.write_atomically(&self.dir.join("published").join(cid.hex()), &bytes)?;
        lock(&self.published).insert(*cid, record);
        Ok(true)
    }

    /// Who published `cid` here, if anyone.
    pub fn publication(&self, cid: &Cid) -> Option<Publication> {
        lock(&self.published).get(cid).copied()
    }

    /// Bytes `publisher` keeps published here.
    pub fn published_bytes(&self, publisher: &AccountId) -> u64 {
        lock(&self.published)
            .values()
            .filter(|p| &p.publisher == publisher)
            .map(|p| p.size)
            .sum()
    }

    /// Reserves `size` bytes of `publisher`'s `limit` for an upload; `Err(used)` if it does
    /// not fit. Release with [`CdnStore::release`] once the upload ends either way.
    pub fn reserve(&self, publisher: &AccountId, size: u64, limit: u64) -> Result<(), u64> {
        let published = self.published_bytes(publisher);
        let mut uploading = lock(&self.uploading);
        let pending = uploading.entry(*publisher).or_insert(0);
        let used = published.saturating_add(*pending);
        if used.saturating_add(size) > limit {
            return Err(used);
        }
        *pending += size;
        Ok(())
    }

    /// Ends a [`CdnStore::reserve`].
    pub fn release(&self, publisher: &AccountId, size: u64) {
        let mut uploading = lock(&self.uploading);
        if let Some(pending) = uploading.get_mut(publisher) {
            *pending = pending.saturating_sub(size);
            if *pending == 0 {
                uploading.remove(publisher);
            }
        }
    }

    /// Whether chunk `hash` is held as an origin chunk.
    pub fn has_origin(&self, hash: &ChunkHash) -> bool {
        lock(&self.pins).contains_key(hash) && self.dir.join("origin").join(hex(hash)).exists()
    }

    /// Ends a publication: its chunks stop being origin chunks (others' still hold theirs).
    pub fn unpublish(&self, cid: &Cid, manifest: &Manifest) -> Result<(), StoreError> {
        if lock(&self.published).remove(cid).is_none() {
            return Ok(());
        }
        let path = self.dir.join("published").join(cid.hex());
        fs::remove_file(&path).map_err(io_at(&path))?;
        fs::remove_file(self.manifest_path(cid)).ok();
        self.unpin(manifest);
        Ok(())
    }

    /// Stores a chunk: `origin` chunks (pinned by the caller) stay until unpublished, others
    /// are cached under the bound. Fails without writing if the bytes do not hash to `hash`.
    pub fn put_chunk(&self, hash: &ChunkHash, data: &[u8], origin: bool) -> Result<(), StoreError> {
        if blake3::hash(data).as_bytes() != hash {
            return Err(StoreError::Mismatch);
        }
        if origin {
            let path = self.dir.join("origin").join(hex(hash));
            if !path.exists() {
                self.write_atomically(&path, data)?;
            }
            lock(&self.verified).insert(*hash);
            return Ok(());
        }
        if self.chunk_path(hash).is_some() {
            return Ok(());
        }
        self.write_atomically(&self.dir.join("cache").join(hex(hash)), data)?;
        lock(&self.verified).insert(*hash);
        {
            let mut cache = lock(&self.cache);
            cache.lru.put(*hash, data.len() as u64);
            cache.bytes += data.len() as u64;
        }
        self.evict();
        Ok(())
    }

    /// Where chunk `hash` is on disk, if held (marks a cached chunk as just used).
    pub fn chunk_path(&self, hash: &ChunkHash) -> Option<PathBuf> {
        if lock(&self.pins).contains_key(hash) {
            let path = self.dir.join("origin").join(hex(hash));
            if path.exists() {
                return Some(path);
            }
        }
        lock(&self.cache)
            .lru
            .get(hash)
            .map(|_| self.dir.join("cache").join(hex(hash)))
    }

    /// Reads chunk `hash` (`None`: not held), checking its bytes against the hash the first
    /// time this process reads it, or when `recheck`. A chunk found corrupt is deleted and
    /// reported as [`StoreError::Mismatch`]: fetch it again. Checked chunks are mapped rather
    /// than copied (chunk files are only ever replaced by rename, never written in place).
    pub fn read_chunk(&self, hash: &ChunkHash, recheck: bool) -> Result<Option<Bytes>, StoreError> {
        let Some(path) = self.chunk_path(hash) else {
            return Ok(None);
        };
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        if path.starts_with(self.dir.join("cache")) {
            // The file time is the cache's order after a restart: mark it used.
            file.set_modified(std::time::SystemTime::now()).ok();
        }
        // SAFETY: the store never writes a chunk file in place: chunks are written to a
        // temporary file and renamed, and deleting one leaves this mapping's inode intact.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) };
        let data = match map {
            Ok(map) => Bytes::from_owner(map),
            // Empty files cannot be mapped.
            Err(_) => Bytes::from(fs::read(&path).map_err(io_at(&path))?),
        };
        if !recheck && lock(&self.verified).contains(hash) {
            return Ok(Some(data));
        }
        if blake3::hash(&data).as_bytes() != hash {
            tracing::warn!("CDN chunk {} is corrupt on disk; dropped", hex(hash));
            self.drop_chunk(hash);
            return Err(StoreError::Mismatch);
        }
        lock(&self.verified).insert(*hash);
        Ok(Some(data))
    }

    fn drop_chunk(&self, hash: &ChunkHash) {
        lock(&self.verified).remove(hash);
        fs::remove_file(self.dir.join("origin").join(hex(hash))).ok();
        let mut cache = lock(&self.cache);
        if let Some(len) = cache.lru.pop(hash) {
            cache.bytes -= len;
            fs::remove_file(self.dir.join("cache").join(hex(hash))).ok();
        }
    }

    /// Bytes held in the cache (origin chunks not counted).
    pub fn cached_bytes(&self) -> u64 {
        lock(&self.cache).bytes
    }

    fn evict(&self) {
        let mut cache = lock(&self.cache);
        while cache.bytes > self.capacity {
            let Some((hash, len)) = cache.lru.pop_lru() else {
                break;
            };
            cache.bytes -= len;
            lock(&self.verified).remove(&hash);
            fs::remove_file(self.dir.join("cache").join(hex(&hash))).ok();
        }
    }
}

fn parse_hex(s: &str) -> Option<ChunkHash> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests;
