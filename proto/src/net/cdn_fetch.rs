//! The requesting side of a CDN `Get`: open the stream, take the manifest (checked against the
//! content id), then read whole chunks, each checked against the manifest before it is handed out.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::cdn::{CdnError, Cid, Manifest};
use crate::cdn_wire::{CdnRefusal, CdnReply, CdnRequest, MAX_CDN_FRAME};
use crate::frame::{FrameCodec, FrameError, Open, encode_frame};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The connection or stream failed (or the relay reset it).
    #[error("connection to the relay failed: {0}")]
    Connection(String),
    /// A frame did not decode.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The relay refused.
    #[error(transparent)]
    Refused(#[from] CdnRefusal),
    /// The relay served bytes that are not the content's: a wrong manifest or chunk.
    #[error("the relay served bad data: {0}")]
    Corrupt(#[from] CdnError),
    /// The relay answered out of protocol.
    #[error("unexpected answer from the relay: {0}")]
    Unexpected(String),
}

impl FetchError {
    fn conn(e: impl std::fmt::Display) -> Self {
        Self::Connection(e.to_string())
    }
}

/// Raw bytes that follow a frame on a stream: what the frame decoder buffered, then the stream.
pub struct RawReader {
    recv: quinn::RecvStream,
    buffered: BytesMut,
}

impl RawReader {
    /// Continues reading after the frames `frames` decoded.
    pub fn after<T>(frames: FramedRead<quinn::RecvStream, FrameCodec<T>>) -> Self {
        let parts = frames.into_parts();
        Self {
            recv: parts.io,
            buffered: parts.read_buf,
        }
    }

    /// Exactly the next `len` bytes. Memory grows with the bytes that arrive, not with `len`:
    /// a peer that announces a large read and sends nothing holds nothing.
    pub async fn read_exact(&mut self, len: usize) -> Result<Bytes, quinn::ReadExactError> {
        self.read(len, false).await
    }

    /// Exactly the next `len` bytes, in one buffer of `len` taken when the first of them
    /// arrives (no regrowing and copying): a peer that sends one byte holds `len`, so only for
    /// callers that budget `len` for each read in flight.
    pub async fn read_exact_budgeted(
        &mut self,
        len: usize,
    ) -> Result<Bytes, quinn::ReadExactError> {
        self.read(len, true).await
    }

    async fn read(&mut self, len: usize, whole: bool) -> Result<Bytes, quinn::ReadExactError> {
        if self.buffered.len() >= len {
            return Ok(self.buffered.split_to(len).freeze());
        }
        let mut data = std::mem::take(&mut self.buffered);
        while data.len() < len {
            let want = len - data.len();
            match self.recv.read_chunk(want, true).await {
                Ok(Some(chunk)) => {
                    if whole {
                        data.reserve(want);
                    }
                    data.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => return Err(quinn::ReadExactError::FinishedEarly(data.len())),
                Err(e) => return Err(quinn::ReadExactError::ReadError(e)),
            }
        }
        Ok(data.freeze())
    }

    /// Whether the sender finished the stream with nothing more to read.
    pub async fn at_end(&mut self) -> Result<bool, quinn::ReadError> {
        if !self.buffered.is_empty() {
            return Ok(false);
        }
        Ok(self.recv.read_chunk(1, true).await?.is_none())
    }

    /// Asks the sender to stop sending.
    pub fn stop(&mut self, code: u32) {
        self.recv.stop(code.into()).ok();
    }
}

/// Sends `request` on a new CDN stream of `conn`; returns the first reply and the stream.
async fn ask(
    conn: &quinn::Connection,
    request: &CdnRequest,
) -> Result<
    (
        CdnReply,
        FramedRead<quinn::RecvStream, FrameCodec<CdnReply>>,
    ),
    FetchError,
> {
    let (mut send, recv) = conn.open_bi().await.map_err(FetchError::conn)?;
    send.write_all(&encode_frame(&Open::Cdn)?)
        .await
        .map_err(FetchError::conn)?;
    let mut out = FramedWrite::new(send, FrameCodec::<CdnRequest>::new(MAX_CDN_FRAME));
    out.send(request.clone()).await?;
    out.get_mut().finish().ok();
    let mut frames = FramedRead::new(recv, FrameCodec::<CdnReply>::new(MAX_CDN_FRAME));
    match frames.next().await {
        Some(Ok(reply)) => Ok((reply, frames)),
        Some(Err(FrameError::Io(e))) => Err(FetchError::conn(e)),
        Some(Err(e)) => Err(e.into()),
        None => Err(FetchError::conn("the relay closed the stream")),
    }
}

/// An answered `Get`: the manifest, then whole chunks in order, each already verified.
pub struct Serving {
    /// The content's manifest (its hash is the content id asked for).
    pub manifest: Arc<Manifest>,
    next: u32,
    end: u32,
    raw: RawReader,
    /// Whether each chunk's buffer is taken whole when its first byte arrives.
    budgeted: bool,
}

impl Serving {
    /// Sends `request` (a `Get` for `cid`) on a new stream of `conn` and reads the answer's
    /// manifest.
    pub async fn open(
        conn: &quinn::Connection,
        cid: &Cid,
        request: &CdnRequest,
    ) -> Result<Self, FetchError> {
        let (reply, frames) = ask(conn, request).await?;
        let (manifest, first, end) = match reply {
            CdnReply::Serving {
                manifest,
                first,
                end,
            } => (manifest, first, end),
            CdnReply::Refused(why) => return Err(why.into()),
            other => return Err(FetchError::Unexpected(format!("{other:?}"))),
        };
        let manifest = Arc::new(Manifest::decode_for(cid, &manifest)?);
        Self::answered(manifest, first..end, frames)
    }

    /// Sends `request` (a `GetChunks`) for content whose verified `manifest` the requester
    /// holds; the answer carries chunks only.
    pub async fn open_known(
        conn: &quinn::Connection,
        manifest: Arc<Manifest>,
        request: &CdnRequest,
    ) -> Result<Self, FetchError> {
        let (reply, frames) = ask(conn, request).await?;
        match reply {
            CdnReply::Chunks { first, end } => Self::answered(manifest, first..end, frames),
            CdnReply::Refused(why) => Err(why.into()),
            other => Err(FetchError::Unexpected(format!("{other:?}"))),
        }
    }

    fn answered(
        manifest: Arc<Manifest>,
        chunks: Range<u32>,
        frames: FramedRead<quinn::RecvStream, FrameCodec<CdnReply>>,
    ) -> Result<Self, FetchError> {
        if chunks.start > chunks.end || chunks.end > manifest.chunk_count() {
            return Err(FetchError::Unexpected(format!(
                "chunks {chunks:?} of {}",
                manifest.chunk_count()
            )));
        }
        Ok(Self {
            manifest,
            next: chunks.start,
            end: chunks.end,
            raw: RawReader::after(frames),
            budgeted: false,
        })
    }

    /// Reads each chunk into one buffer of its size taken when its first byte arrives (see
    /// [`RawReader::read_exact_budgeted`]): for a requester that bounds the chunks in flight
    /// (a client's few lanes), not for a relay answering others' requests.
    pub fn budgeted(mut self) -> Self {
        self.budgeted = true;
        self
    }

    /// The chunks this answer carries.
    pub fn chunks(&self) -> Range<u32> {
        self.next..self.end
    }

    /// The next chunk and its index, verified; `None` after the last. A chunk that does not
    /// match the manifest is [`FetchError::Corrupt`] (`CdnError::WrongChunk(index)`). Not
    /// cancel-safe: a call dropped midway (a timeout) loses its chunk, so drop the answer then.
    pub async fn next_chunk(&mut self) -> Result<Option<(u32, Bytes)>, FetchError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let index = self.next;
        let range = self.manifest.chunk_range(index)?;
        let len = (range.end - range.start) as usize;
        let data = self
            .raw
            .read(len, self.budgeted)
            .await
            .map_err(FetchError::conn)?;
        let data = checked(self.manifest.clone(), index, data).await?;
        self.next += 1;
        Ok(Some((index, data)))
    }
}

/// Chunks at least this large are checked on tokio's blocking pool.
const CHECK_APART_FROM: usize = 64 << 10;

/// `data` once it is checked against chunk `index` of `manifest`. Large chunks are hashed on
/// tokio's blocking pool, beside the task that drives the connection rather than in it: on a
/// runtime with one thread (the `top` CLI) hashing a 1 MiB chunk inline held up every stream's
/// reads for its duration, and hashing is the largest share of a fetching client's work.
async fn checked(manifest: Arc<Manifest>, index: u32, data: Bytes) -> Result<Bytes, FetchError> {
    if data.len() < CHECK_APART_FROM {
        manifest.verify_chunk(index, &data)?;
        return Ok(data);
    }
    let check = move || manifest.verify_chunk(index, &data).map(|()| data);
    match tokio::task::spawn_blocking(check).await {
        Ok(checked) => Ok(checked?),
        Err(e) => Err(FetchError::Unexpected(format!(
            "checking chunk {index}: {e}"
        ))),
    }
}
