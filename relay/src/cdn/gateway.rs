//! `GET /cdn/{cid}` on the relay's HTTP port: published content for browsers and `curl`.
//!
//! The body streams chunk by chunk from the store (or from peers on a miss, each chunk
//! verified), never the whole file in memory. Content ids are immutable, so the ETag is the id,
//! `If-None-Match` answers 304 and responses may be cached for a year. A relay that bills
//! charges each response to the publisher's egress allowance (402 without one).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use top_proto::cdn::Cid;
use top_proto::cdn_wire::CdnRefusal;

use super::Cdn;
use crate::cdn::chunks::ChunkSource;

/// `Cache-Control` of every content response: content ids never change what they name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Content-Security-Policy` of every content response: a published page runs in an opaque
/// origin (no `allow-same-origin`), so its scripts cannot act as the relay's own HTTP origin
/// (its API answers no other origin), as IPFS path gateways serve content.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-downloads";

fn plain(code: StatusCode, text: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Error text can quote a peer: sandboxed like content.
            (header::CONTENT_SECURITY_POLICY, SANDBOX),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text + "\n",
    )
        .into_response()
}

/// Answers a `GET` or `HEAD` of `/cdn/{cid}`.
pub async fn get_content(cdn: Arc<Cdn>, cid: &str, head: bool, headers: &HeaderMap) -> Response {
    let cid: Cid = match cid.parse() {
        Ok(cid) => cid,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut source = match ChunkSource::open(cdn.clone(), cid, true).await {
        Ok(source) => source,
        Err(CdnRefusal::NotFound) => {
            return plain(StatusCode::NOT_FOUND, format!("{cid} not found"));
        }
        Err(e) => return plain(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let etag = format!("\"{cid}\"");
    let size = source.manifest.size;
    let mut out = HeaderMap::new();
    let put = |out: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(&mut out, header::ETAG, &etag);
    put(&mut out, header::CACHE_CONTROL, IMMUTABLE);
    put(&mut out, header::ACCEPT_RANGES, "bytes");
    put(&mut out, header::CONTENT_SECURITY_POLICY, SANDBOX);
    put(&mut out, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if matches_etag(headers.get(header::IF_NONE_MATCH), &etag) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let content_type = source.manifest.content_type.as_deref();
    put(
        &mut out,
        header::CONTENT_TYPE,
        content_type.unwrap_or("application/octet-stream"),
    );
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE) {
        Some(value) if if_range_ok => {
            let ranges = value
                .to_str()
                .ok()
                .and_then(|v| http_range_header::parse_range_header(v).ok())
                .and_then(|r| r.validate(size).ok());
            match ranges.as_deref() {
                Some([one]) => Some(*one.start()..*one.end() + 1),
                // Several ranges: the whole file (a server may ignore Range).
                Some(_) => None,
                None => {
                    put(&mut out, header::CONTENT_RANGE, &format!("bytes */{size}"));
                    return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
                }
            }
        }
        _ => None,
    };
    let (status, body_range) = match range {
        Some(r) => {
            let last = r.end - 1;
            let content_range = format!("bytes {}-{last}/{size}", r.start);
            put(&mut out, header::CONTENT_RANGE, &content_range);
            (StatusCode::PARTIAL_CONTENT, r)
        }
        None => (StatusCode::OK, 0..size),
    };
    let len = body_range.end - body_range.start;
    put(&mut out, header::CONTENT_LENGTH, &len.to_string());
    if head {
        return (status, out).into_response();
    }

    // The first chunk before the status line: content this relay cannot get is a 404 or 502,
    // not a 200 cut short.
    let chunks = if len == 0 {
        0..0
    } else {
        source.manifest.chunks_for(&body_range)
    };
    let first = if chunks.is_empty() {
        None
    } else {
        match source.chunk(chunks.start, chunks.end).await {
            Ok(data) => Some(data),
            Err(CdnRefusal::NotFound) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("{cid}: no relay has its chunks"),
                );
            }
            Err(e) => return plain(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    };
    if !paid_for(&cdn, &cid, len) {
        return plain(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "{cid}: this relay charges for HTTP egress and its publisher's allowance here is \
                 missing, used up or closed (publisher: `top cdn allow {cid} --cap TOP`)"
            ),
        );
    }
    let body = Body::from_stream(body_stream(cdn, source, body_range, chunks, first));
    (status, out, body).into_response()
}

/// Charges `len` bytes of `cid` to its publisher's allowance when this relay bills; whether the
/// response may go out.
fn paid_for(cdn: &Cdn, cid: &Cid, len: u64) -> bool {
    let terms = &cdn.terms;
    let Some(chain) = cdn.chain.get() else {
        return true;
    };
    if !terms.enabled || terms.prices.cdn.is_zero() || len == 0 {
        return true;
    }
    chain.with_state(|s| cdn.egress.charge(s, &terms.prices, cid, len))
}

/// Whether an `If-None-Match` value names `etag` (or is `*`).
fn matches_etag(value: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/").is_some_and(|t| t == etag))
}

/// The bytes of `range` (held by `chunks`, the first already read), one chunk (or its part
/// in the range) at a time.
fn body_stream(
    cdn: Arc<Cdn>,
    source: ChunkSource,
    range: std::ops::Range<u64>,
    chunks: std::ops::Range<u32>,
    first: Option<Bytes>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let state = (cdn, source, chunks.start, first);
    futures::stream::unfold(state, move |(cdn, mut source, i, first)| {
        let range = range.clone();
        let end = chunks.end;
        async move {
            if i >= end {
                return None;
            }
            let data = match first {
                Some(data) => Ok(data),
                None => source.chunk(i, end).await,
            };
            let item = match data {
                Ok(data) => {
                    let at = source.manifest.chunk_range(i).map_or(0, |r| r.start);
                    let from = range.start.saturating_sub(at) as usize;
                    let to = ((range.end - at) as usize).min(data.len());
                    let part = data.slice(from.min(to)..to);
                    cdn.metrics.cdn.bytes_http.inc_by(part.len() as u64);
                    Ok(part)
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let next = if item.is_ok() { i + 1 } else { end };
            Some((item, (cdn, source, next, None)))
        }
    })
}
