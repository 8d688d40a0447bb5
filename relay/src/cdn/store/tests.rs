//! The chunk store on a real directory: eviction, restarts, verification, pinning.

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
fn reads_count_as_use_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = CdnStore::open(dir.path(), 250).unwrap();
    let (a, b, c) = (chunk(1), chunk(2), chunk(3));
    store.put_chunk(&a.0, &a.1, false).unwrap();
    store.put_chunk(&b.0, &b.1, false).unwrap();
    // Written two hours and one hour ago: a is older than b, until a is read.
    let now = std::time::SystemTime::now();
    for (hash, hours) in [(&a.0, 2), (&b.0, 1)] {
        let f = fs::File::open(dir.path().join("cache").join(hex(hash))).unwrap();
        let then = now - std::time::Duration::from_secs(3600 * hours);
        f.set_modified(then).unwrap();
    }
    assert!(store.read_chunk(&a.0, false).unwrap().is_some());
    drop(store);
    let store = CdnStore::open(dir.path(), 250).unwrap();
    store.put_chunk(&c.0, &c.1, false).unwrap();
    assert!(
        store.chunk_path(&b.0).is_none(),
        "b was least recently used"
    );
    assert!(
        store.chunk_path(&a.0).is_some(),
        "a was read after b was written"
    );
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
    let publisher = top_proto::identity::Identity::from_seed(&[1; 32]).account_id();
    store.pin(&m);
    store.put_chunk(&m.chunks[0], &[7; 100], true).unwrap();
    assert!(store.publish(&cid, &m, publisher).unwrap());
    drop(store);
    let store = CdnStore::open(dir.path(), 0).unwrap();
    assert_eq!(store.manifest(&cid).unwrap(), m);
    assert_eq!(store.published_bytes(&publisher), 100);
    assert!(store.chunk_path(&m.chunks[0]).is_some());
    store.unpublish(&cid, &m).unwrap();
    assert!(store.publication(&cid).is_none());
    assert!(store.manifest(&cid).is_none());
    assert!(store.chunk_path(&m.chunks[0]).is_none());
    drop(store);
    let store = CdnStore::open(dir.path(), 0).unwrap();
    assert_eq!(store.published_bytes(&publisher), 0);
}

fn manifest_of(data: &[u8]) -> Manifest {
    let mut b = top_proto::cdn::ManifestBuilder::new(None);
    b.update(data);
    b.finish().unwrap()
}

#[test]
fn shared_chunks_outlive_one_unpublish_and_interrupted_uploads_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = CdnStore::open(dir.path(), 0).unwrap();
    let publisher = top_proto::identity::Identity::from_seed(&[1; 32]).account_id();
    // Two files with the same bytes but different content types share their chunk.
    let a = manifest_of(&[5; 10]);
    let mut b = a.clone();
    b.content_type = Some("text/plain".into());
    for m in [&a, &b] {
        store.pin(m);
        store.put_chunk(&m.chunks[0], &[5; 10], true).unwrap();
        store.publish(&m.cid(), m, publisher).unwrap();
    }
    store.unpublish(&a.cid(), &a).unwrap();
    assert_eq!(
        store.read_chunk(&b.chunks[0], true).unwrap().unwrap(),
        &[5u8; 10][..]
    );
    // An upload that never finished: pinned and written, never published.
    let c = manifest_of(&[6; 10]);
    store.pin(&c);
    store.put_chunk(&c.chunks[0], &[6; 10], true).unwrap();
    drop(store);
    let store = CdnStore::open(dir.path(), 0).unwrap();
    assert!(store.chunk_path(&c.chunks[0]).is_none());
    assert!(store.chunk_path(&b.chunks[0]).is_some());
}

#[test]
fn corrupt_chunks_on_disk_are_caught_on_first_read_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = CdnStore::open(dir.path(), 1000).unwrap();
    let (a, data) = chunk(1);
    store.put_chunk(&a, &data, false).unwrap();
    drop(store);
    let path = dir.path().join("cache").join(hex(&a));
    fs::write(&path, vec![9u8; 100]).unwrap();
    let store = CdnStore::open(dir.path(), 1000).unwrap();
    assert!(
        matches!(store.read_chunk(&a, false), Err(StoreError::Mismatch)),
        "corruption missed"
    );
    assert!(!path.exists());
    assert_eq!(store.cached_bytes(), 0);
    // Written and checked by this process: served without hashing again, unless rechecked.
    store.put_chunk(&a, &data, false).unwrap();
    fs::write(&path, vec![9u8; 100]).unwrap();
    assert!(store.read_chunk(&a, false).unwrap().is_some());
    assert!(store.read_chunk(&a, true).is_err());
    assert!(store.read_chunk(&a, false).unwrap().is_none());
}
