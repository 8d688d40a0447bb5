//! Pipes: end-to-end encrypted, bidirectional byte channels between two peers through relays.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use top_proto::frame::{FrameCodec, Open, PipeReply, encode_frame};
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::pipe_crypto::{MAX_NOISE_MSG, MAX_PIPE_CHUNK, PipeCipher, PipeInitiator, respond};

use top_billing::Service;

use crate::error::ClientError;
use crate::payment::UsageCounter;

type Records = FramedRead<quinn::RecvStream, LengthDelimitedCodec>;

/// Bytes of a record's length prefix (the codec's default: 4, big-endian).
const LENGTH: usize = 4;
/// Bytes of a record's authentication tag.
const TAG: usize = 16;

/// The codec of handshake and pipe records: length-delimited, at most one Noise message.
pub(crate) fn record_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_NOISE_MSG)
        .new_codec()
}

/// An open pipe. Each `send` arrives as one `recv` on the other side (large ones in pieces of
/// at most [`MAX_PIPE_CHUNK`] bytes). Use [`Pipe::split`] to send and receive from two tasks.
pub struct Pipe {
    writer: PipeWriter,
    reader: PipeReader,
}

/// The sending half of a pipe.
pub struct PipeWriter {
    usage: Option<(Arc<UsageCounter>, Service)>,
    out: FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
    cipher: Arc<Mutex<PipeCipher>>,
}

/// The receiving half of a pipe.
pub struct PipeReader {
    usage: Option<(Arc<UsageCounter>, Service)>,
    records: Records,
    cipher: Arc<Mutex<PipeCipher>>,
    peer: AccountId,
}

impl Pipe {
    /// Opens a pipe to `peer` over a new stream of `conn`.
    pub(crate) async fn open(
        conn: &quinn::Connection,
        identity: &Identity,
        peer: AccountId,
    ) -> Result<Self, ClientError> {
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&encode_frame(&Open::Pipe { to: peer })?)
            .await?;
        let mut replies = FramedRead::new(recv, FrameCodec::<PipeReply>::new(64));
        match replies.next().await {
            Some(Ok(PipeReply::Opened)) => {}
            Some(Ok(PipeReply::Unreachable)) => return Err(ClientError::Unreachable(peer)),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed),
        }
        let records = replies.map_decoder(|_| record_codec());
        Self::initiate(send, records, identity, peer).await
    }

    /// Runs the pipe handshake with `peer` on a stream already announced to the relay (proxied
    /// connections at an exit).
    pub(crate) async fn open_on(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        identity: &Identity,
        peer: AccountId,
    ) -> Result<Self, ClientError> {
        Self::initiate(send, FramedRead::new(recv, record_codec()), identity, peer).await
    }

    /// The initiator's side of the handshake, once the stream carries records.
    async fn initiate(
        send: quinn::SendStream,
        mut records: Records,
        identity: &Identity,
        peer: AccountId,
    ) -> Result<Self, ClientError> {
        let mut out = FramedWrite::new(send, record_codec());
        let (initiator, first) = PipeInitiator::start(identity, &peer)?;
        out.send(Bytes::from(first)).await.map_err(io_err)?;
        let reply = records
            .next()
            .await
            .ok_or(ClientError::Closed)?
            .map_err(io_err)?;
        let cipher = initiator.finish(&reply)?;
        Ok(Self::assemble(out, records, cipher))
    }

    /// Answers a pipe a peer opened; `recv` is positioned after the `IncomingPipe` frame.
    pub(crate) async fn accept(
        identity: &Identity,
        send: quinn::SendStream,
        mut records: Records,
    ) -> Result<Self, ClientError> {
        let first = records
            .next()
            .await
            .ok_or(ClientError::Closed)?
            .map_err(io_err)?;
        let (reply, cipher) = respond(identity, &first)?;
        let mut out = FramedWrite::new(send, record_codec());
        out.send(Bytes::from(reply)).await.map_err(io_err)?;
        Ok(Self::assemble(out, records, cipher))
    }

    pub(crate) fn records_after_open(
        frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
    ) -> Records {
        frames.map_decoder(|_| record_codec())
    }

    fn assemble(
        out: FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
        records: Records,
        cipher: PipeCipher,
    ) -> Self {
        let peer = cipher.peer();
        let cipher = Arc::new(Mutex::new(cipher));
        Self {
            writer: PipeWriter {
                usage: None,
                out,
                cipher: cipher.clone(),
            },
            reader: PipeReader {
                usage: None,
                records,
                cipher,
                peer,
            },
        }
    }

    /// Counts this pipe's bytes into `usage` (what the relay bills).
    pub(crate) fn metered(mut self, usage: &Arc<UsageCounter>) -> Self {
        self.writer.usage = Some((usage.clone(), Service::Pipe));
        self.reader.usage = Some((usage.clone(), Service::Pipe));
        self
    }

    /// Counts this pipe's bytes as VPN traffic (proxied connections).
    pub(crate) fn metered_vpn(mut self, usage: &Arc<UsageCounter>) -> Self {
        self.writer.usage = Some((usage.clone(), Service::Vpn));
        self.reader.usage = Some((usage.clone(), Service::Vpn));
        self
    }

    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.reader.peer
    }

    /// Sends `data`, encrypted end to end.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.writer.send(data).await
    }

    /// Receives the next piece of data; `None` once the peer closed its side.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        self.reader.recv().await
    }

    /// Closes the sending side; the peer's `recv` then returns `None`.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.writer.close().await
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (PipeWriter, PipeReader) {
        (self.writer, self.reader)
    }
}

impl PipeWriter {
    /// Sends `data`, encrypted end to end.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        // Nothing is buffered after the handshake; records go to the stream as they are.
        SinkExt::<Bytes>::flush(&mut self.out)
            .await
            .map_err(io_err)?;
        for chunk in data.chunks(MAX_PIPE_CHUNK) {
            // The record is sealed in place behind its length and handed to quinn as it is.
            let mut record = BytesMut::zeroed(LENGTH + chunk.len() + TAG);
            let n = {
                let mut cipher = self.cipher.lock().map_err(|_| ClientError::Closed)?;
                cipher.encrypt(chunk, &mut record[LENGTH..])?
            };
            let len = u32::try_from(n).map_err(|_| ClientError::Closed)?;
            record[..LENGTH].copy_from_slice(&len.to_be_bytes());
            record.truncate(LENGTH + n);
            if let Some((usage, service)) = &self.usage {
                usage.count(*service, n + LENGTH);
            }
            self.out
                .get_mut()
                .write_chunk(record.freeze())
                .await
                .map_err(|e| io_err(e.into()))?;
        }
        Ok(())
    }

    /// Closes the sending side; the peer's `recv` then returns `None`.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        SinkExt::<Bytes>::flush(&mut self.out)
            .await
            .map_err(io_err)?;
        self.out.get_mut().finish().map_err(|_| ClientError::Closed)
    }
}

impl PipeReader {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.peer
    }

    /// Receives the next piece of data; `None` once the peer closed its side.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let Some(record) = self.records.next().await else {
            return Ok(None);
        };
        let record = record.map_err(io_err)?;
        if let Some((usage, service)) = &self.usage {
            usage.count(*service, record.len() + 4);
        }
        let mut out = vec![0u8; record.len()];
        let n = {
            let mut cipher = self.cipher.lock().map_err(|_| ClientError::Closed)?;
            cipher.decrypt(&record, &mut out)?
        };
        out.truncate(n);
        Ok(Some(out))
    }
}

fn io_err(e: std::io::Error) -> ClientError {
    ClientError::Io(e)
}
