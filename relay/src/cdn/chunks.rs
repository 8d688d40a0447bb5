//! Where a relay gets the chunks it serves: its own store, or, on a miss, its peers. Every
//! chunk from a peer is checked against the manifest before it is stored or served; a peer that
//! serves a bad chunk is not asked again for this content and the chunk comes from the next one.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use top_proto::cdn::{Cid, Manifest};
use top_proto::cdn_wire::{CdnRefusal, CdnRequest};
use top_proto::id::RelayId;
use top_proto::net::cdn_fetch::{FetchError, Serving};
use tracing::{debug, warn};

use super::Cdn;
use crate::cdn::store::StoreError;

/// Most chunks asked of a peer in one request on a miss.
const FETCH_RUN: u32 = 8;
/// Longest wait for a peer's answer or its next chunk before the next peer is asked.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// [`Serving::open`] on a peer, bounded by [`PEER_TIMEOUT`].
async fn ask(
    conn: &quinn::Connection,
    cid: &Cid,
    request: &CdnRequest,
) -> Result<Serving, FetchError> {
    tokio::time::timeout(PEER_TIMEOUT, Serving::open(conn, cid, request))
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::Connection(
                "the peer did not answer in time".into(),
            ))
        })
}

/// A refusal for a local failure (storage, a task that died).
pub(crate) fn failed(e: impl std::fmt::Display) -> CdnRefusal {
    CdnRefusal::Failed(e.to_string())
}

/// Longest wait for the control plane to name a content's providers.
const PROVIDERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Providers not linked yet that a miss links with, at most.
const MAX_PROVIDER_DIALS: usize = 4;
/// Longest wait for a link to a provider to come up.
const PROVIDER_LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Linked relays to ask on a miss: those the DHT names as holding `cid` first, then configured
/// peers in config order, then the others.
async fn peers(cdn: &Cdn, cid: &Cid) -> Vec<(RelayId, quinn::Connection)> {
    let providers = tokio::time::timeout(PROVIDERS_TIMEOUT, cdn.control.providers(*cid))
        .await
        .unwrap_or_default();
    if !providers.is_empty() {
        cdn.metrics.cdn.provider_misses.inc();
    }
    // Providers are linked with on demand (a few, each waited for a bounded while).
    let dials = providers
        .iter()
        .filter(|p| cdn.msg.link(p).is_none())
        .filter(|p| cdn.msg.want_link(**p))
        .take(MAX_PROVIDER_DIALS)
        .map(|p| async move {
            tokio::time::timeout(PROVIDER_LINK_WAIT, cdn.msg.wait_link(p))
                .await
                .ok();
        });
    futures::future::join_all(dials).await;
    let mut linked = cdn.msg.linked();
    linked.sort_by_key(|l| {
        let provider = providers.iter().position(|p| *p == l.relay);
        let configured = cdn.config.peers.iter().position(|p| p.id == l.relay);
        (
            provider.unwrap_or(usize::MAX),
            configured.unwrap_or(usize::MAX),
        )
    });
    linked.into_iter().map(|l| (l.relay, l.conn)).collect()
}

/// The manifest of `cid` from the first peer that has it (checked against the id), stored here.
async fn manifest_from_peers(
    cdn: &Cdn,
    cid: &Cid,
    sources: &[(RelayId, quinn::Connection)],
    bad_peers: &mut HashSet<RelayId>,
) -> Result<Manifest, CdnRefusal> {
    let request = CdnRequest::Get {
        cid: *cid,
        range: Some((0, 0)),
        local_only: true,
        recheck: Vec::new(),
    };
    for (id, conn) in sources {
        match ask(conn, cid, &request).await {
            Ok(serving) => {
                let (m, cid) = (serving.manifest.clone(), *cid);
                let store = cdn.store.clone();
                tokio::task::spawn_blocking(move || store.put_manifest(&cid, &m))
                    .await
                    .map_err(failed)?
                    .map_err(failed)?;
                // Cached here now: others may find it here too.
                cdn.control.provide(cid);
                return Ok(Arc::unwrap_or_clone(serving.manifest));
            }
            Err(FetchError::Corrupt(e)) => {
                warn!("peer {} served a wrong manifest: {e}", id.short());
                bad_peers.insert(*id);
            }
            Err(e) => debug!("peer {} has no manifest of {cid}: {e}", id.short()),
        }
    }
    Err(CdnRefusal::NotFound)
}

/// The chunks of one content, read in ascending order by one request.
pub struct ChunkSource {
    cdn: Arc<Cdn>,
    cid: Cid,
    /// The content's manifest.
    pub manifest: Arc<Manifest>,
    from_peers: bool,
    recheck: HashSet<u32>,
    fetched: VecDeque<(u32, Bytes)>,
    bad_peers: HashSet<RelayId>,
    /// The relays asked on a miss, found once per request (providers first).
    sources: Option<Vec<(RelayId, quinn::Connection)>>,
}

impl ChunkSource {
    /// Finds `cid`'s manifest here or (when `from_peers`) at a peer.
    pub async fn open(cdn: Arc<Cdn>, cid: Cid, from_peers: bool) -> Result<Self, CdnRefusal> {
        let store = cdn.store.clone();
        let local = tokio::task::spawn_blocking(move || store.manifest(&cid))
            .await
            .map_err(failed)?;
        let mut bad_peers = HashSet::new();
        let mut sources = None;
        let manifest = match local {
            Some(m) => m,
            None if from_peers => {
                let found = sources.insert(peers(&cdn, &cid).await);
                manifest_from_peers(&cdn, &cid, found, &mut bad_peers).await?
            }
            None => return Err(CdnRefusal::NotFound),
        };
        Ok(Self {
            cdn,
            cid,
            manifest: Arc::new(manifest),
            from_peers,
            recheck: HashSet::new(),
            fetched: VecDeque::new(),
            bad_peers,
            sources,
        })
    }

    /// Chunks the requester found bad: re-check this relay's copies before serving them.
    pub fn recheck(&mut self, chunks: impl IntoIterator<Item = u32>) {
        self.recheck.extend(chunks);
    }

    /// Whether every chunk of `range` is on this relay's disk now.
    pub fn all_local(&self, range: Range<u32>) -> bool {
        range
            .filter_map(|i| self.manifest.chunks.get(i as usize))
            .all(|h| self.cdn.store.chunk_path(h).is_some())
    }

    /// Chunk `index`'s bytes (verified); `end` bounds how far ahead a miss may fetch.
    pub async fn chunk(&mut self, index: u32, end: u32) -> Result<Bytes, CdnRefusal> {
        while let Some((i, _)) = self.fetched.front() {
            if *i >= index {
                break;
            }
            self.fetched.pop_front();
        }
        if let Some((i, data)) = self.fetched.front()
            && *i == index
        {
            let data = data.clone();
            self.fetched.pop_front();
            return Ok(data);
        }
        let hash = *self
            .manifest
            .chunks
            .get(index as usize)
            .ok_or(CdnRefusal::BadRange {
                size: self.manifest.size,
            })?;
        let store = self.cdn.store.clone();
        let recheck = self.recheck.remove(&index);
        let read = tokio::task::spawn_blocking(move || store.read_chunk(&hash, recheck))
            .await
            .map_err(failed)?;
        match read {
            Ok(Some(data)) => {
                self.cdn.metrics.cdn.local_chunks.inc();
                return Ok(data);
            }
            Ok(None) => {}
            Err(StoreError::Mismatch) => {
                self.cdn.metrics.cdn.bad_local_chunks.inc();
            }
            Err(e) => return Err(failed(e)),
        }
        if !self.from_peers {
            return Err(CdnRefusal::NotFound);
        }
        self.fetch_run(index, end).await?;
        match self.fetched.pop_front() {
            Some((i, data)) if i == index => Ok(data),
            _ => Err(CdnRefusal::NotFound),
        }
    }

    /// Fetches chunks `index..` (up to [`FETCH_RUN`], stopping before `end`) from the first peer
    /// that serves them correctly, keeping what verified.
    async fn fetch_run(&mut self, index: u32, end: u32) -> Result<(), CdnRefusal> {
        let end = end.min(index.saturating_add(FETCH_RUN)).max(index + 1);
        let mut next = index;
        if self.sources.is_none() {
            self.sources = Some(peers(&self.cdn, &self.cid).await);
        }
        let sources = self.sources.clone().unwrap_or_default();
        for (id, conn) in sources {
            if self.bad_peers.contains(&id) {
                continue;
            }
            let first = self.manifest.chunk_range(next).map_err(failed)?;
            let last = self.manifest.chunk_range(end - 1).map_err(failed)?;
            let request = CdnRequest::Get {
                cid: self.cid,
                range: Some((first.start, last.end)),
                local_only: true,
                recheck: Vec::new(),
            };
            let mut serving = match ask(&conn, &self.cid, &request).await {
                Ok(s) => s,
                Err(e) => {
                    // Not asked again for this request: a peer that stalls or has nothing
                    // costs one wait, not one per run of chunks.
                    debug!("peer {} cannot serve {}: {e}", id.short(), self.cid);
                    self.bad_peers.insert(id);
                    continue;
                }
            };
            loop {
                let next_chunk = tokio::time::timeout(PEER_TIMEOUT, serving.next_chunk());
                let next_chunk = next_chunk
                    .await
                    .unwrap_or_else(|_| Err(FetchError::Connection("the peer stalled".into())));
                match next_chunk {
                    Ok(Some((i, data))) => {
                        self.cdn.metrics.cdn.peer_chunks.inc();
                        let hash = self.manifest.chunks[i as usize];
                        let (store, d) = (self.cdn.store.clone(), data.clone());
                        let stored =
                            tokio::task::spawn_blocking(move || store.put_chunk(&hash, &d, false))
                                .await
                                .map_err(failed)?;
                        if let Err(e) = stored {
                            warn!("cannot cache a CDN chunk: {e}");
                        }
                        self.fetched.push_back((i, data));
                        next = i + 1;
                    }
                    Ok(None) => break,
                    Err(FetchError::Corrupt(e)) => {
                        self.cdn.metrics.cdn.bad_peer_chunks.inc();
                        warn!("peer {} served bad data for {}: {e}", id.short(), self.cid);
                        self.bad_peers.insert(id);
                        break;
                    }
                    Err(e) => {
                        debug!("fetch from peer {} failed: {e}", id.short());
                        break;
                    }
                }
            }
            if next > index {
                return Ok(());
            }
        }
        Err(CdnRefusal::NotFound)
    }
}
