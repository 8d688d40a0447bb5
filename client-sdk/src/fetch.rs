//! Fetching content over several streams, and several relays, at once: the range is cut into
//! stripes of whole chunks; up to [`LANES`] stripes are in flight, each on its own stream to one
//! relay (taking turns), every chunk verified against the content id in the stripe's own task
//! (so verification runs on every core) and counted for payment only once verified. Stripes are
//! handed out in order; memory stays under `LANES + 1` stripes.
//!
//! A relay that serves a bad chunk is asked again (it re-checks its copy), then the stripe moves
//! on to the next relay, as it does from a relay that stalls (every open and chunk has a
//! deadline); relays that failed are asked last from then on. Only if every relay fails a
//! stripe does the fetch fail, and then it stays failed (no gap is ever skipped). The manifest
//! comes once; stripes ask for chunks only (`GetChunks`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio_util::task::AbortOnDropHandle;
use top_billing::Service;
use top_proto::cdn::{CdnError, Cid, Manifest};
use top_proto::cdn_wire::{CdnRefusal, CdnRequest};
use top_proto::net::cdn_fetch::{FetchError, Serving};

use crate::error::ClientError;
use crate::payment::UsageCounter;

/// Stripes in flight at once (each on its own stream).
pub const LANES: usize = 4;
/// Bytes each stripe asks for (rounded to whole chunks, at least one).
pub const STRIPE_BYTES: u64 = 4 << 20;
/// How often one stripe asks a relay again after a chunk failed verification.
const CHUNK_RETRIES: u32 = 2;
/// How long a relay may take to answer a request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one chunk may take to arrive (a 16 MiB chunk at 1 MiB/s with room to spare).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay to fetch from: the connection to it and where this client counts what it pays it.
#[derive(Clone)]
pub(crate) struct Source {
    pub conn: quinn::Connection,
    pub usage: Arc<UsageCounter>,
}

/// A stripe being fetched; aborted if the fetch is dropped.
type Stripe = AbortOnDropHandle<Result<Vec<(u32, Bytes)>, ClientError>>;

/// Content being fetched: its manifest, then its bytes in order, verified.
pub struct Fetch {
    sources: Vec<Source>,
    cid: Cid,
    manifest: Arc<Manifest>,
    range: Range<u64>,
    /// The next byte to hand out.
    next: u64,
    /// The next chunk to ask for, and the end of the range's chunks.
    scheduled: u32,
    end: u32,
    /// Chunks per stripe.
    stripe: u32,
    lanes: VecDeque<Stripe>,
    ready: VecDeque<(u32, Bytes)>,
    turn: usize,
    /// Stripes each source failed so far (the order stripes try them in).
    failures: Arc<Vec<AtomicU32>>,
}

impl Fetch {
    /// Starts fetching bytes `range` of `cid` (`None`: all) from `sources` (at least one; the
    /// first gives the manifest).
    pub(crate) async fn start(
        sources: Vec<Source>,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<Self, ClientError> {
        let at = range.as_ref().map_or(0, |r| r.start);
        // An empty range: the manifest alone, from the first relay that gives it.
        let request = CdnRequest::get(*cid, Some(at..at));
        let mut failure = None;
        let mut manifest = None;
        for source in &sources {
            match within(OPEN_TIMEOUT, Serving::open(&source.conn, cid, &request)).await {
                Ok(serving) => {
                    manifest = Some(serving.manifest);
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        let manifest = match (manifest, failure) {
            (Some(manifest), _) => manifest,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => return Err(ClientError::Closed),
        };
        let size = manifest.size;
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(FetchError::Refused(CdnRefusal::BadRange { size }).into());
        }
        let chunks = match range.is_empty() {
            true => 0..0,
            false => manifest.chunks_for(&range),
        };
        let per_stripe = STRIPE_BYTES / u64::from(manifest.chunk_size.max(1));
        let failures = Arc::new(sources.iter().map(|_| AtomicU32::new(0)).collect());
        let mut fetch = Self {
            sources,
            cid: *cid,
            manifest,
            next: range.start,
            range,
            scheduled: chunks.start,
            end: chunks.end,
            stripe: u32::try_from(per_stripe).unwrap_or(u32::MAX).max(1),
            lanes: VecDeque::new(),
            ready: VecDeque::new(),
            turn: 0,
            failures,
        };
        fetch.schedule();
        Ok(fetch)
    }

    /// The content's size in bytes (the whole file, not the range).
    pub fn size(&self) -> u64 {
        self.manifest.size
    }

    /// The content type the publisher gave.
    pub fn content_type(&self) -> Option<&str> {
        self.manifest.content_type.as_deref()
    }

    /// The bytes this fetch yields.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Keeps [`LANES`] stripes in flight.
    fn schedule(&mut self) {
        while self.lanes.len() < LANES && self.scheduled < self.end {
            let chunks = self.scheduled..self.end.min(self.scheduled.saturating_add(self.stripe));
            self.scheduled = chunks.end;
            // Relays that failed fewest stripes first; among them, each takes its turn.
            let n = self.sources.len().max(1);
            let mut order: Vec<usize> = (0..self.sources.len()).collect();
            order.sort_by_key(|&i| {
                let failed = self.failures[i].load(Ordering::Relaxed);
                (failed, (i + n - self.turn % n) % n)
            });
            self.turn += 1;
            let sources = order
                .into_iter()
                .map(|i| (i, self.sources[i].clone()))
                .collect();
            let stripe = StripeJob {
                sources,
                failures: self.failures.clone(),
                cid: self.cid,
                manifest: self.manifest.clone(),
                chunks,
            };
            let lane = tokio::spawn(fetch_stripe(stripe));
            self.lanes.push_back(AbortOnDropHandle::new(lane));
        }
    }

    /// The next verified bytes of the range; `None` at its end. A chunk that fails
    /// verification is asked for again (the relay re-checks its copy and fetches it elsewhere),
    /// then from the other relays, before the fetch fails with [`ClientError::Cdn`]; after an
    /// error the fetch yields nothing more. Cancelling a call loses nothing.
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        let result = self.next_part().await?;
        if result.is_err() {
            self.fuse();
        }
        Some(result)
    }

    async fn next_part(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            if self.next >= self.range.end {
                return None;
            }
            if let Some((i, data)) = self.ready.pop_front() {
                let at = match self.manifest.chunk_range(i) {
                    Ok(at) if at.start <= self.next && self.next < at.end => at,
                    _ => {
                        let what = format!("chunk {i} out of order at byte {}", self.next);
                        return Some(Err(FetchError::Unexpected(what).into()));
                    }
                };
                let from = (self.next - at.start) as usize;
                let to = (self.range.end.min(at.end) - at.start) as usize;
                self.next = at.start + to as u64;
                return Some(Ok(data.slice(from..to)));
            }
            // Awaited in place, taken only once done: a cancelled call leaves it in line.
            let Some(lane) = self.lanes.front_mut() else {
                let early = FetchError::Unexpected("the relay ended early".into());
                return Some(Err(early.into()));
            };
            let done = lane.await;
            self.lanes.pop_front();
            self.schedule();
            match done {
                Ok(Ok(chunks)) => self.ready.extend(chunks),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return Some(Err(ClientError::Closed)),
            }
        }
    }

    /// After an error: nothing more is fetched or handed out.
    fn fuse(&mut self) {
        self.next = self.range.end;
        self.scheduled = self.end;
        self.lanes.clear();
        self.ready.clear();
    }

    /// The fetch as a `Stream` of verified bytes.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> {
        futures::stream::unfold(self, |mut fetch| async move {
            let item = fetch.next().await?;
            Some((item, fetch))
        })
    }

    /// Reads the whole range into memory (small content only).
    pub async fn bytes(mut self) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::with_capacity((self.range.end - self.range.start) as usize);
        while let Some(part) = self.next().await {
            out.extend_from_slice(&part?);
        }
        Ok(out)
    }
}

/// One stripe's work: its chunks and the relays to try, in order (with their index).
struct StripeJob {
    sources: Vec<(usize, Source)>,
    failures: Arc<Vec<AtomicU32>>,
    cid: Cid,
    manifest: Arc<Manifest>,
    chunks: Range<u32>,
}

/// Fetches a stripe's chunks whole and verified, from the first relay that serves them right.
async fn fetch_stripe(job: StripeJob) -> Result<Vec<(u32, Bytes)>, ClientError> {
    let StripeJob {
        sources,
        failures,
        cid,
        manifest,
        chunks,
    } = job;
    let mut got = Vec::with_capacity(chunks.len());
    let mut failure = FetchError::Unexpected("no relay to fetch from".into());
    for (index, source) in &sources {
        match from_source(source, &cid, &manifest, chunks.clone(), &mut got).await {
            Ok(()) => return Ok(got),
            Err(e) => {
                tracing::warn!("fetching chunks {chunks:?} of {cid} failed: {e}; next relay");
                if let Some(failed) = failures.get(*index) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                failure = e;
            }
        }
    }
    Err(failure.into())
}

/// `work`, or a connection error once `limit` passed.
async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(FetchError::Connection("the relay stalled".into())))
}

/// Reads the rest of `chunks` (after those in `got`) from one relay into `got`.
async fn from_source(
    source: &Source,
    cid: &Cid,
    manifest: &Arc<Manifest>,
    chunks: Range<u32>,
    got: &mut Vec<(u32, Bytes)>,
) -> Result<(), FetchError> {
    let mut retries = 0;
    let mut recheck = Vec::new();
    loop {
        let from = chunks.start + got.len() as u32;
        if from >= chunks.end {
            return Ok(());
        }
        let start = manifest.chunk_range(from)?.start;
        let end = manifest.chunk_range(chunks.end - 1)?.end;
        let request = CdnRequest::GetChunks {
            cid: *cid,
            range: (start, end),
            recheck: std::mem::take(&mut recheck),
        };
        let opening = Serving::open_known(&source.conn, manifest.clone(), &request);
        // At most LANES chunks in flight, each of a size the verified manifest gives.
        let mut serving = within(OPEN_TIMEOUT, opening).await?.budgeted();
        if serving.chunks() != (from..chunks.end) {
            let served = serving.chunks();
            return Err(FetchError::Unexpected(format!("served chunks {served:?}")));
        }
        loop {
            match within(CHUNK_TIMEOUT, serving.next_chunk()).await {
                Ok(Some((i, data))) => {
                    source.usage.count(Service::Cdn, data.len());
                    got.push((i, data));
                }
                Ok(None) => break,
                Err(FetchError::Corrupt(CdnError::WrongChunk(i))) if retries < CHUNK_RETRIES => {
                    retries += 1;
                    tracing::warn!("chunk {i} of {cid} failed verification; asking again");
                    recheck.push(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
