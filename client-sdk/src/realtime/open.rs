//! Opening and answering realtime pipes: flow ids through the relay, then the peers' Noise `IK`
//! handshake on the pipe's stream and the opener's key confirmation (an answered pipe reaches
//! the app only once the opener proved it holds the keys), all within [`OPEN_TIMEOUT`]. The
//! stream then stays open for the pipe's life.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use top_proto::frame::{FrameCodec, Open, RealtimeReply, encode_frame};
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::realtime::{OVERHEAD, RealtimeInitiator, RealtimeOpener, RealtimeSealer, respond};

use super::demux::{Demux, FlowSlot};
use super::{ARENA, RealtimePipe, RealtimeReceiver, RealtimeSender, RealtimeStats};
use crate::error::{ClientError, RealtimeError};
use crate::payment::UsageCounter;
use crate::pipe::record_codec;

/// Largest reply frame.
const MAX_REPLY: usize = 1024;
/// How long opening or answering a pipe may take.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What opening and answering share: the connection, its flows, who we are, what we count.
pub(crate) struct Side<'a> {
    /// The connection to this client's relay.
    pub conn: &'a quinn::Connection,
    /// Its realtime flows.
    pub demux: &'a Demux,
    /// This client.
    pub identity: &'a Identity,
    /// Where this client counts its usage.
    pub usage: &'a Arc<UsageCounter>,
}

/// Opens a realtime pipe to `peer` through the relay of `side`.
pub(crate) async fn open(side: Side<'_>, peer: AccountId) -> Result<RealtimePipe, ClientError> {
    tokio::time::timeout(OPEN_TIMEOUT, open_in_time(side, peer))
        .await
        .map_err(|_| RealtimeError::Refused("no answer in time".into()))?
}

async fn open_in_time(side: Side<'_>, peer: AccountId) -> Result<RealtimePipe, ClientError> {
    let stats = Arc::new(RealtimeStats::default());
    let (slot, inbox) = reserve(&side, &stats)?;
    let (mut send, recv) = side.conn.open_bi().await?;
    let open = Open::Realtime {
        to: peer,
        flow: slot.id(),
    };
    send.write_all(&encode_frame(&open)?).await?;
    let mut replies = FramedRead::new(recv, FrameCodec::<RealtimeReply>::new(MAX_REPLY));
    let (flow, path) = match replies.next().await {
        Some(Ok(RealtimeReply::Opened { flow, max_datagram })) => (flow, max_datagram),
        Some(Ok(RealtimeReply::Unreachable)) => return Err(ClientError::Unreachable(peer)),
        Some(Ok(RealtimeReply::Refused(why))) => return Err(RealtimeError::Refused(why).into()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ClientError::Closed),
    };
    let mut records = replies.map_decoder(|_| record_codec());
    let mut out = FramedWrite::new(send, record_codec());
    let (initiator, first) =
        RealtimeInitiator::start(side.identity, &peer).map_err(RealtimeError::from)?;
    out.send(Bytes::from(first)).await?;
    let reply = records.next().await.ok_or(ClientError::Closed)??;
    let keys = initiator.finish(&reply).map_err(RealtimeError::from)?;
    let peer = keys.peer();
    let (sealer, opener) = keys.split();
    let confirmation = sealer.confirmation().map_err(RealtimeError::from)?;
    out.send(Bytes::from(confirmation)).await?;
    let keys = (peer, sealer, opener);
    assemble(&side, keys, flow, path, (out, records, slot, inbox, stats))
}

/// Answers `Open::IncomingRealtime { flow, max_datagram }` arriving on `(send, frames)`.
pub(crate) async fn accept(
    side: Side<'_>,
    request: (u32, u16),
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<RealtimePipe, ClientError> {
    tokio::time::timeout(OPEN_TIMEOUT, accept_in_time(side, request, send, frames))
        .await
        .map_err(|_| RealtimeError::Refused("the opener did not finish in time".into()))?
}

async fn accept_in_time(
    side: Side<'_>,
    (flow, path): (u32, u16),
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<RealtimePipe, ClientError> {
    let stats = Arc::new(RealtimeStats::default());
    let mut send = send;
    let (slot, inbox) = match reserve(&side, &stats) {
        Ok(reserved) => reserved,
        Err(e) => {
            let why = RealtimeReply::Refused("too many realtime pipes".into());
            send.write_all(&encode_frame(&why)?).await?;
            send.finish().ok();
            return Err(e);
        }
    };
    let own_path = side.conn.max_datagram_size().unwrap_or(0);
    let reply = RealtimeReply::Opened {
        flow: slot.id(),
        max_datagram: u16::try_from(own_path).unwrap_or(u16::MAX),
    };
    send.write_all(&encode_frame(&reply)?).await?;
    let mut records = frames.map_decoder(|_| record_codec());
    let first = records.next().await.ok_or(ClientError::Closed)??;
    let (reply, keys) = respond(side.identity, &first).map_err(RealtimeError::from)?;
    let peer = keys.peer();
    let mut out = FramedWrite::new(send, record_codec());
    out.send(Bytes::from(reply)).await?;
    let confirmation = records.next().await.ok_or(ClientError::Closed)??;
    let (sealer, mut opener) = keys.split();
    opener
        .check_confirmation(&confirmation)
        .map_err(RealtimeError::from)?;
    let keys = (peer, sealer, opener);
    assemble(&side, keys, flow, path, (out, records, slot, inbox, stats))
}

type Parts<T> = (
    FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
    FramedRead<quinn::RecvStream, T>,
    FlowSlot,
    tokio::sync::mpsc::Receiver<Bytes>,
    Arc<RealtimeStats>,
);

fn reserve(
    side: &Side<'_>,
    stats: &Arc<RealtimeStats>,
) -> Result<(FlowSlot, tokio::sync::mpsc::Receiver<Bytes>), ClientError> {
    side.demux.reserve(side.conn, stats.clone()).ok_or_else(|| {
        RealtimeError::Refused("too many realtime pipes on this client".into()).into()
    })
}

/// The pipe, once keys and both flow ids are known; a task watches the stream for its end.
fn assemble<T>(
    side: &Side<'_>,
    (peer, sealer, opener): (AccountId, RealtimeSealer, RealtimeOpener),
    flow: u32,
    path: u16,
    (out, records, slot, inbox, stats): Parts<T>,
) -> Result<RealtimePipe, ClientError> {
    let own_path = side.conn.max_datagram_size().unwrap_or(0);
    let max_payload = own_path.min(usize::from(path)).saturating_sub(OVERHEAD);
    if max_payload == 0 {
        return Err(RealtimeError::NoDatagrams.into());
    }
    let control = Arc::new(std::sync::Mutex::new(out.into_inner()));
    let mut watched = records.into_inner();
    let (demux, id) = (side.demux.clone(), slot.id());
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closing = closed.clone();
    tokio::spawn(async move {
        // Nothing more flows on the stream: its end (or anything on it) is the pipe's end.
        let mut sink = [0u8; 64];
        let _ = watched.read(&mut sink).await;
        closing.store(true, std::sync::atomic::Ordering::Relaxed);
        demux.close(id);
    });
    Ok(RealtimePipe {
        sender: RealtimeSender {
            conn: side.conn.clone(),
            sealer,
            flow,
            max_payload,
            arena: BytesMut::with_capacity(ARENA),
            usage: side.usage.clone(),
            stats: stats.clone(),
            control: control.clone(),
            closed,
            nudge: Default::default(),
        },
        receiver: RealtimeReceiver {
            peer,
            opener,
            inbox,
            stats,
            _slot: slot,
            _control: control,
        },
    })
}
