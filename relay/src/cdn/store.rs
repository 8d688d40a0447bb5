//! The relay's CDN store on disk: manifests and chunks, each file named by its hash.
//!
//! Content published to this relay (its origin copies) is kept until unpublished; chunks
//! fetched for others are a cache bounded by `cdn_cache_bytes`, evicting the least recently
//! used. A chunk is written to a temporary file, synced, and renamed into place only after its
//! hash was checked, so a crash at any point leaves no chunk whose bytes do not match its name;
//! leftovers of interrupted writes are removed on open.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lru::LruCache;
use top_proto::cdn::{Cid, Manifest};

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

struct Cache {
    lru: LruCache<ChunkHash, u64>,
    bytes: u64,
}

/// Manifests and chunks on disk under one directory.
pub struct CdnStore {
    dir: PathBuf,
    capacity: u64,
    cache: Mutex<Cache>,
    pinned: Mutex<HashSet<ChunkHash>>,
}

fn hex(hash: &ChunkHash) -> String {
    blake3::Hash::from(*hash).to_hex().to_string()
}

impl CdnStore {
    /// Opens (creating) the store in `dir` with a cache bound of `capacity` bytes; removes
    /// leftovers of interrupted writes and rebuilds the cache order from file times.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, StoreError> {
        for sub in ["tmp", "manifests", "origin", "cache"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        let tmp = dir.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_at(&tmp))?.flatten() {
            fs::remove_file(entry.path()).ok();
        }
        let mut found = Vec::new();
        let cache_dir = dir.join("cache");
        for entry in fs::read_dir(&cache_dir)
            .map_err(io_at(&cache_dir))?
            .flatten()
        {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(parse_hex) else {
                fs::remove_file(entry.path()).ok();
                continue;
            };
            if let Ok(meta) = entry.metadata() {
                let used = meta.modified().ok();
                found.push((used, hash, meta.len()));
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
        let mut pinned = HashSet::new();
        let origin = dir.join("origin");
        for entry in fs::read_dir(&origin).map_err(io_at(&origin))?.flatten() {
            if let Some(hash) = entry.file_name().to_str().and_then(parse_hex) {
                pinned.insert(hash);
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
            capacity,
            cache: Mutex::new(cache),
            pinned: Mutex::new(pinned),
        };
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
        if path.exists() {
            return Ok(());
        }
        self.write_atomically(&path, &manifest.encode())
    }

    /// The manifest of `cid`, if stored (and still matching its id).
    pub fn manifest(&self, cid: &Cid) -> Option<Manifest> {
        let bytes = fs::read(self.manifest_path(cid)).ok()?;
        Manifest::decode_for(cid, &bytes).ok()
    }

    /// Removes a manifest (unpublish); its origin chunks are released to the cache's rules.
    pub fn remove_manifest(&self, cid: &Cid, manifest: &Manifest) {
        fs::remove_file(self.manifest_path(cid)).ok();
        let mut pinned = lock(&self.pinned);
        for hash in &manifest.chunks {
            if pinned.remove(hash) {
                fs::remove_file(self.dir.join("origin").join(hex(hash))).ok();
            }
        }
    }

    fn manifest_path(&self, cid: &Cid) -> PathBuf {
        self.dir.join("manifests").join(cid.hex())
    }

    /// Stores a chunk: `origin` chunks stay until unpublished, others are cached under the
    /// bound. Fails without writing if the bytes do not hash to `hash`.
    pub fn put_chunk(&self, hash: &ChunkHash, data: &[u8], origin: bool) -> Result<(), StoreError> {
        if blake3::hash(data).as_bytes() != hash {
            return Err(StoreError::Mismatch);
        }
        if origin {
            let path = self.dir.join("origin").join(hex(hash));
            if !path.exists() {
                self.write_atomically(&path, data)?;
            }
            lock(&self.pinned).insert(*hash);
            return Ok(());
        }
        if self.chunk_path(hash).is_some() {
            return Ok(());
        }
        self.write_atomically(&self.dir.join("cache").join(hex(hash)), data)?;
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
        if lock(&self.pinned).contains(hash) {
            return Some(self.dir.join("origin").join(hex(hash)));
        }
        lock(&self.cache)
            .lru
            .get(hash)
            .map(|_| self.dir.join("cache").join(hex(hash)))
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
            fs::remove_file(self.dir.join("cache").join(hex(&hash))).ok();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_hex(s: &str) -> Option<ChunkHash> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> (ChunkHash, Vec<u8>) {
        let data = vec![n; 100];
        (*blake3::hash(&data).as_bytes(), data)
    }

    #[test]
    fn cache_evicts_least_recently_used_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = CdnStore::open(dir.path(), 250).unwrap();
        let (a, b, c) = (chunk(1), chunk(2), chunk(3));
        store.put_chunk(&a.0, &a.1, false).unwrap();
        store.put_chunk(&b.0, &b.1, false).unwrap();
        assert!(store.chunk_path(&a.0).is_some()); // a is now more recent than b
        store.put_chunk(&c.0, &c.1, false).unwrap();
        assert!(
            store.chunk_path(&b.0).is_none(),
            "b was least recently used"
        );
        assert!(store.chunk_path(&a.0).is_some());
        assert_eq!(store.cached_bytes(), 200);
        drop(store);
        let store = CdnStore::open(dir.path(), 250).unwrap();
        assert_eq!(store.cached_bytes(), 200);
        assert_eq!(fs::read(store.chunk_path(&c.0).unwrap()).unwrap(), c.1);
    }

    #[test]
    fn mismatched_bytes_are_refused_and_leftovers_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CdnStore::open(dir.path(), 1000).unwrap();
        let (a, _) = chunk(1);
        assert!(matches!(
            store.put_chunk(&a, b"not it", false),
            Err(StoreError::Mismatch)
        ));
        assert!(store.chunk_path(&a).is_none());
        // A write interrupted by a crash: only a temporary file, gone on the next open.
        fs::write(dir.path().join("tmp").join("123.456"), b"half").unwrap();
        drop(store);
        CdnStore::open(dir.path(), 1000).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn origin_chunks_are_not_evicted_until_unpublished() {
        let dir = tempfile::tempdir().unwrap();
        let store = CdnStore::open(dir.path(), 0).unwrap();
        let mut b = top_proto::cdn::ManifestBuilder::new(None);
        b.update(&[7; 100]);
        let m = b.finish().unwrap();
        let cid = m.cid();
        store.put_manifest(&cid, &m).unwrap();
        store.put_chunk(&m.chunks[0], &[7; 100], true).unwrap();
        drop(store);
        let store = CdnStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.manifest(&cid).unwrap(), m);
        assert!(store.chunk_path(&m.chunks[0]).is_some());
        store.remove_manifest(&cid, &m);
        assert!(store.manifest(&cid).is_none());
        assert!(store.chunk_path(&m.chunks[0]).is_none());
    }
}
