//! Frames of the `Open::Cdn` stream: publishing, fetching and unpublishing content.
//!
//! Put: `Put{manifest}` → `Need{chunks}` → the needed chunks' bytes, raw and in order → the
//! sender finishes its side → `Published`. Get: `Get{cid, range}` → `Serving{manifest, chunks}`
//! → the bytes of those whole chunks, raw, then the relay finishes the stream (`GetChunks` →
//! `Chunks{chunks}` the same, for a requester that has the manifest). Raw bytes are
//! checked chunk by chunk against the manifest by whoever receives them.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cdn::{Cid, MAX_MANIFEST};

/// Largest frame on a CDN stream (a manifest of the most chunks, with room for the framing).
pub const MAX_CDN_FRAME: usize = MAX_MANIFEST + 1024;

/// Requester → relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CdnRequest {
    /// Publish the file this encoded manifest describes, with this relay as its origin.
    Put {
        /// The canonical manifest encoding (its BLAKE3 hash is the content id).
        manifest: Bytes,
    },
    /// Fetch the whole chunks holding file bytes `range` (`None`: the whole file; an empty
    /// range: the manifest only).
    Get {
        /// The content.
        cid: Cid,
        /// Byte range `[start, end)` within the file.
        range: Option<(u64, u64)>,
        /// Answer from this relay's own store only (relay-to-relay fetches; no further hops).
        local_only: bool,
        /// Chunks this requester found corrupt before: the relay re-checks them on disk and
        /// fetches them again from its peers if they are bad.
        recheck: Vec<u32>,
    },
    /// Stop serving (and paying for) content published here by the requester.
    Unpublish {
        /// The content.
        cid: Cid,
    },
    /// Pay for this relay's HTTP gateway egress of `cid` under a signed allowance (a
    /// postcard-encoded `ledger_lite::Allowance` on one of the requester's channels to it).
    Allow {
        /// The content.
        cid: Cid,
        /// The encoded allowance.
        allowance: Bytes,
    },
    /// Like [`CdnRequest::Get`] for a requester that holds the manifest already (a striped
    /// fetch): answered by [`CdnReply::Chunks`], without the manifest.
    GetChunks {
        /// The content.
        cid: Cid,
        /// Byte range `[start, end)` within the file.
        range: (u64, u64),
        /// Chunks to re-check, as in [`CdnRequest::Get`].
        recheck: Vec<u32>,
    },
}

impl CdnRequest {
    /// A request for the whole file, or the chunks holding `range`.
    pub fn get(cid: Cid, range: Option<Range<u64>>) -> Self {
        Self::Get {
            cid,
            range: range.map(|r| (r.start, r.end)),
            local_only: false,
            recheck: Vec::new(),
        }
    }
}

/// Relay → requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CdnReply {
    /// Put accepted: send these chunks (ascending indices; the relay has the others), then
    /// finish the stream.
    Need {
        /// Chunk indices.
        chunks: Vec<u32>,
    },
    /// Every chunk arrived and matched: the content is published here.
    Published {
        /// Its content id.
        cid: Cid,
    },
    /// Get accepted: the manifest, then the bytes of chunks `first..end` follow.
    Serving {
        /// The canonical manifest encoding.
        manifest: Bytes,
        /// First chunk sent.
        first: u32,
        /// One past the last chunk sent.
        end: u32,
    },
    /// The content is no longer published here.
    Unpublished,
    /// The allowance is in force: the gateway serves the content, charging it.
    Allowed,
    /// The request was refused.
    Refused(CdnRefusal),
    /// `GetChunks` accepted: the bytes of chunks `first..end` follow.
    Chunks {
        /// First chunk sent.
        first: u32,
        /// One past the last chunk sent.
        end: u32,
    },
}

/// Why a CDN request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CdnRefusal {
    /// No reachable relay has this content.
    #[error("content not found")]
    NotFound,
    /// The range is not within the file.
    #[error("range not satisfiable (file is {size} bytes)")]
    BadRange {
        /// The file's size.
        size: u64,
    },
    /// The manifest does not decode or breaks a rule.
    #[error("bad manifest: {0}")]
    BadManifest(String),
    /// Publishing this would exceed the publisher's quota on this relay.
    #[error("publish quota exceeded: {used} of {limit} bytes in use, {wanted} more asked")]
    QuotaExceeded {
        /// Bytes this publisher has published here.
        used: u64,
        /// The relay's per-publisher limit.
        limit: u64,
        /// The size of the new file.
        wanted: u64,
    },
    /// Only the publisher may unpublish.
    #[error("only the publisher may unpublish this content")]
    NotPublisher,
    /// The egress allowance was refused.
    #[error("{0}")]
    BadAllowance(String),
    /// Unpaid usage exceeds the relay's credit window.
    #[error("payment required: sign receipts or open a channel")]
    PaymentRequired,
    /// The relay failed (storage, or every peer failed).
    #[error("relay failed: {0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::{Open, decode_body, encode_body};

    fn hexs(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn golden_cdn_frames() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (encode_body(&Open::Cdn).unwrap(), "010a"),
            (
                encode_body(&CdnRequest::Get {
                    cid: Cid([7; 32]),
                    range: Some((1, 300)),
                    local_only: true,
                    recheck: vec![2],
                })
                .unwrap(),
                concat!(
                    "0101",
                    "0707070707070707070707070707070707070707070707070707070707070707",
                    "0101ac02010102"
                ),
            ),
            (
                encode_body(&CdnReply::Need { chunks: vec![0, 5] }).unwrap(),
                "0100020005",
            ),
            (
                encode_body(&CdnReply::Refused(CdnRefusal::BadRange { size: 9 })).unwrap(),
                "01050109",
            ),
        ];
        for (body, golden) in cases {
            assert_eq!(hexs(&body), golden, "wire format changed");
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<CdnRequest>(&data);
            let _ = decode_body::<CdnReply>(&data);
            let _ = crate::cdn::Manifest::decode(&data);
        }
    }
}
