//! The relay's side of an `Open::Cdn` stream: publish (quota, every chunk verified before it is
//! stored), fetch (from the store or, on a miss, from peers; metered), unpublish.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::Service;
use top_proto::cdn::{Cid, Manifest};
use top_proto::cdn_wire::{CdnRefusal, CdnReply, CdnRequest, MAX_CDN_FRAME};
use top_proto::frame::{FrameCodec, FrameError};
use top_proto::id::AccountId;
use top_proto::net::cdn_fetch::RawReader;

use super::Cdn;
use crate::billing::meter::ClientMeter;
use crate::cdn::chunks::{ChunkSource, failed};

/// Stream reset code: the relay could not go on serving (peer fetch failed, unpaid).
const RESET_FAILED: u32 = 3;
/// Longest wait for the next chunk (or the end) of an upload before it is abandoned.
const UPLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(60);

type Out = FramedWrite<quinn::SendStream, FrameCodec<CdnReply>>;

/// Serves one CDN request from `peer` (a client, or a linked relay when `from_link`).
pub async fn serve_cdn<C>(
    cdn: Arc<Cdn>,
    peer: AccountId,
    from_link: bool,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<C>>,
) -> Result<(), FrameError> {
    let mut frames = frames.map_decoder(|c| c.retype::<CdnRequest>(MAX_CDN_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<CdnReply>::new(MAX_CDN_FRAME));
    let request = match frames.next().await {
        None => return Ok(()),
        Some(Err(e)) => {
            frames.get_mut().stop(1u32.into()).ok();
            return Err(e);
        }
        Some(Ok(r)) => r,
    };
    match request {
        CdnRequest::Put { manifest } => {
            let result = put(&cdn, peer, meter, &mut out, frames, &manifest).await;
            finish(out, result.map(|cid| CdnReply::Published { cid })).await
        }
        CdnRequest::Get {
            cid,
            range,
            local_only,
            recheck,
        } => {
            let from_peers = !(local_only || from_link);
            let meter = meter.filter(|_| !from_link);
            let ask = Ask {
                cid,
                range,
                from_peers,
                recheck,
                with_manifest: true,
            };
            get(&cdn, ask, meter, out).await
        }
        CdnRequest::GetChunks {
            cid,
            range,
            recheck,
        } => {
            let meter = meter.filter(|_| !from_link);
            let ask = Ask {
                cid,
                range: Some(range),
                from_peers: !from_link,
                recheck,
                with_manifest: false,
            };
            get(&cdn, ask, meter, out).await
        }
        CdnRequest::Unpublish { cid } => {
            let result = unpublish(&cdn, peer, &cid).await;
            finish(out, result.map(|()| CdnReply::Unpublished)).await
        }
        CdnRequest::Allow { cid, allowance } => {
            let result = allow(&cdn, &cid, &allowance);
            finish(out, result.map(|()| CdnReply::Allowed)).await
        }
    }
}

async fn finish(mut out: Out, result: Result<CdnReply, CdnRefusal>) -> Result<(), FrameError> {
    let reply = result.unwrap_or_else(CdnReply::Refused);
    out.send(reply).await?;
    out.get_mut().finish().ok();
    Ok(())
}

async fn put(
    cdn: &Arc<Cdn>,
    publisher: AccountId,
    meter: Option<Arc<ClientMeter>>,
    out: &mut Out,
    frames: FramedRead<quinn::RecvStream, FrameCodec<CdnRequest>>,
    encoded: &[u8],
) -> Result<Cid, CdnRefusal> {
    // No channel, no upload: an unpaid key gets nothing stored or buffered.
    if meter.as_ref().is_some_and(|m| !m.has_channel()) {
        cdn.metrics.unpaid_refusals.inc();
        return Err(CdnRefusal::PaymentRequired);
    }
    let manifest = Manifest::decode(encoded).map_err(|e| CdnRefusal::BadManifest(e.to_string()))?;
    let cid = manifest.cid();
    let store = cdn.store.clone();
    if store.publication(&cid).is_some() {
        out.send(CdnReply::Need { chunks: Vec::new() })
            .await
            .map_err(failed)?;
        return Ok(cid);
    }
    let limit = cdn.config.cdn_publish_quota_bytes;
    store
        .reserve(&publisher, manifest.size, limit)
        .map_err(|used| CdnRefusal::QuotaExceeded {
            used,
            limit,
            wanted: manifest.size,
        })?;
    store.pin(&manifest);
    let manifest = Arc::new(manifest);
    let result = upload(cdn, publisher, meter, out, frames, &manifest).await;
    store.release(&publisher, manifest.size);
    // A publication holds its own pin (taken when it loads or is recorded below); the upload's
    // pin goes either way, deleting what a failed upload wrote.
    if let Ok(true) = result {
        store.pin(&manifest);
    }
    store.unpin(&manifest);
    result.map(|_| cid)
}

async fn upload(
    cdn: &Arc<Cdn>,
    publisher: AccountId,
    meter: Option<Arc<ClientMeter>>,
    out: &mut Out,
    frames: FramedRead<quinn::RecvStream, FrameCodec<CdnRequest>>,
    manifest: &Arc<Manifest>,
) -> Result<bool, CdnRefusal> {
    let store = cdn.store.clone();
    let need: Vec<u32> = (0..manifest.chunk_count())
        .filter(|&i| !store.has_origin(&manifest.chunks[i as usize]))
        .collect();
    out.send(CdnReply::Need {
        chunks: need.clone(),
    })
    .await
    .map_err(failed)?;
    let mut raw = RawReader::after(frames);
    for i in need {
        let range = manifest.chunk_range(i).map_err(failed)?;
        let len = range.end - range.start;
        // Room in the relay's upload memory before a byte of the chunk is read.
        let kib = u32::try_from(len.div_ceil(1024)).map_err(failed)?;
        let _room = tokio::time::timeout(UPLOAD_STALL, cdn.uploads.clone().acquire_many_owned(kib))
            .await
            .map_err(|_| CdnRefusal::Failed("the relay is busy with other uploads".into()))?
            .map_err(failed)?;
        // `_room` budgets the chunk's whole length.
        let data = tokio::time::timeout(UPLOAD_STALL, raw.read_exact_budgeted(len as usize))
            .await
            .map_err(|_| CdnRefusal::Failed(format!("upload stalled before chunk {i}")))?
            .map_err(|e| {
                CdnRefusal::Failed(format!("upload ended before chunk {i} was complete: {e}"))
            })?;
        if let Some(m) = &meter
            && !m.carry(Service::Cdn, len, m.pay_wait).await
        {
            cdn.metrics.unpaid_refusals.inc();
            raw.stop(RESET_FAILED);
            return Err(CdnRefusal::PaymentRequired);
        }
        manifest
            .verify_chunk(i, &data)
            .map_err(|e| CdnRefusal::BadManifest(e.to_string()))?;
        let (store, hash) = (store.clone(), manifest.chunks[i as usize]);
        tokio::task::spawn_blocking(move || store.put_chunk(&hash, &data, true))
            .await
            .map_err(failed)?
            .map_err(failed)?;
    }
    let at_end = tokio::time::timeout(UPLOAD_STALL, raw.at_end())
        .await
        .map_err(|_| CdnRefusal::Failed("upload not finished after its last chunk".into()))?
        .map_err(failed)?;
    if !at_end {
        raw.stop(RESET_FAILED);
        return Err(CdnRefusal::BadManifest(
            "more bytes sent than the manifest lists".into(),
        ));
    }
    let (store, m) = (store.clone(), manifest.clone());
    let cid = m.cid();
    let new = tokio::task::spawn_blocking(move || store.publish(&cid, &m, publisher))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    cdn.control.provide(cid);
    if new {
        cdn.metrics.cdn.published.inc();
        tracing::info!(%cid, size = manifest.size, publisher = %publisher.short(), "published");
    }
    Ok(new)
}

/// What a `Get` or `GetChunks` asks for.
struct Ask {
    cid: Cid,
    range: Option<(u64, u64)>,
    /// Whether missing chunks may be fetched from peers.
    from_peers: bool,
    recheck: Vec<u32>,
    /// Whether the answer carries the manifest (`Serving`) or not (`Chunks`).
    with_manifest: bool,
}

async fn get(
    cdn: &Arc<Cdn>,
    ask: Ask,
    meter: Option<Arc<ClientMeter>>,
    out: Out,
) -> Result<(), FrameError> {
    let Ask {
        cid,
        range,
        from_peers,
        recheck,
        with_manifest,
    } = ask;
    let mut source = match ChunkSource::open(cdn.clone(), cid, from_peers).await {
        Ok(s) => s,
        Err(why) => return finish(out, Err(why)).await,
    };
    let size = source.manifest.size;
    let (start, end) = range.unwrap_or((0, size));
    if start > end || end > size {
        return finish(out, Err(CdnRefusal::BadRange { size })).await;
    }
    let chunks = if start == end {
        0..0
    } else {
        source.manifest.chunks_for(&(start..end))
    };
    if !from_peers && !source.all_local(chunks.clone()) {
        return finish(out, Err(CdnRefusal::NotFound)).await;
    }
    source.recheck(recheck);
    let mut out = out;
    let reply = match with_manifest {
        true => CdnReply::Serving {
            manifest: source.manifest.encode().into(),
            first: chunks.start,
            end: chunks.end,
        },
        false => CdnReply::Chunks {
            first: chunks.start,
            end: chunks.end,
        },
    };
    out.send(reply).await?;
    let mut send = out.into_inner();
    for i in chunks.clone() {
        let data = match source.chunk(i, chunks.end).await {
            Ok(data) => data,
            Err(e) => {
                tracing::debug!("stopped serving {cid} at chunk {i}: {e}");
                send.reset(RESET_FAILED.into()).ok();
                return Ok(());
            }
        };
        let len = data.len() as u64;
        if let Some(m) = &meter
            && !m.carry(Service::Cdn, len, m.pay_wait).await
        {
            cdn.metrics.unpaid_refusals.inc();
            send.reset(RESET_FAILED.into()).ok();
            return Ok(());
        }
        if send.write_chunk(data).await.is_err() {
            return Ok(());
        }
        cdn.metrics.cdn.bytes_quic.inc_by(len);
    }
    send.finish().ok();
    Ok(())
}

async fn unpublish(cdn: &Arc<Cdn>, peer: AccountId, cid: &Cid) -> Result<(), CdnRefusal> {
    let store = cdn.store.clone();
    let publication = store.publication(cid).ok_or(CdnRefusal::NotFound)?;
    if publication.publisher != peer {
        return Err(CdnRefusal::NotPublisher);
    }
    let manifest = store.manifest(cid).ok_or(CdnRefusal::NotFound)?;
    let cid = *cid;
    tokio::task::spawn_blocking(move || store.unpublish(&cid, &manifest))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    tracing::info!(%cid, "unpublished");
    Ok(())
}

fn allow(cdn: &Cdn, cid: &Cid, encoded: &[u8]) -> Result<(), CdnRefusal> {
    let bad = |e: String| CdnRefusal::BadAllowance(e);
    let allowance: ledger_lite::Allowance =
        postcard::from_bytes(encoded).map_err(|e| bad(format!("undecodable allowance: {e}")))?;
    let chain = cdn
        .chain
        .get()
        .ok_or_else(|| bad("this relay has no chain".into()))?;
    let me = cdn.identity.account_id();
    chain
        .with_state(|s| cdn.egress.allow(s, &cdn.terms.prices, &me, cid, allowance))
        .map_err(|e| bad(e.to_string()))?;
    tracing::info!(%cid, "egress allowance taken");
    Ok(())
}
