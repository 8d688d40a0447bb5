//! Opening a realtime pipe through this relay: reserve a flow id on the opener's connection and
//! one on the next hop's (the peer's session here, or a link to the relay it is on), ask the
//! next hop for the id it wants, answer the opener, then pass exactly the peers' handshake: the
//! opener's first Noise message, the peer's reply (then datagrams are routed both ways) and the
//! opener's key confirmation. The stream then only marks the pipe's life: when either side
//! closes it (or sends anything more), both flows close. All of it within [`OPEN_TIMEOUT`].
//!
//! Datagrams are paid by whoever sends them, to the relay they send them to: a receiver never
//! pays for traffic it cannot refuse (datagrams have no flow control).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use top_proto::frame::{FrameCodec, FrameError, Open, RealtimeReply, encode_frame};
use top_proto::id::AccountId;

use super::flows::{FlowId, Flows, MAX_FLOWS_PER_CLIENT, MAX_FLOWS_PER_LINK, Route};
use crate::billing::meter::ClientMeter;
use crate::msg::Messaging;

/// How long opening may take, from the request to the key confirmation.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply frame.
const MAX_REPLY: usize = 1024;
/// Largest handshake record (a Noise `IK` message or the confirmation is under 200 bytes).
const MAX_RECORD: usize = 512;

/// The side that asks for the pipe.
pub struct Opener {
    /// Its connection.
    pub conn: quinn::Connection,
    /// Whether it is a linked member relay (its pipes go no further than this relay's clients).
    pub from_link: bool,
    /// Its meter, when this relay bills it.
    pub meter: Option<Arc<ClientMeter>>,
}

/// One end of the pipe at this relay: its connection and who pays for what it sends.
struct Hop {
    conn: quinn::Connection,
    meter: Option<Arc<ClientMeter>>,
}

/// The next hop, once it accepted.
struct Accepted {
    from_here: FlowId,
    from_next: FlowId,
    next: Hop,
    next_flow: u32,
    max_datagram: u16,
    stream: (
        quinn::SendStream,
        FramedRead<quinn::RecvStream, FrameCodec<RealtimeReply>>,
    ),
    /// Keeps the link to the peer's relay up while the pipe runs.
    _hold: Option<crate::msg::wants::LinkHold>,
}

type Records = FramedRead<quinn::RecvStream, LengthDelimitedCodec>;
type RecordsOut = FramedWrite<quinn::SendStream, LengthDelimitedCodec>;

fn record_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_RECORD)
        .new_codec()
}

fn limit(is_link: bool) -> usize {
    match is_link {
        true => MAX_FLOWS_PER_LINK,
        false => MAX_FLOWS_PER_CLIENT,
    }
}

/// Serves `Open::Realtime { to, flow }` arriving on `(send, frames)`.
pub async fn serve_realtime(
    msg: &Arc<Messaging>,
    flows: &Arc<Flows>,
    opener: Opener,
    (to, flow): (AccountId, u32),
    mut send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<(), FrameError> {
    if opener.meter.as_ref().is_some_and(|m| !m.has_channel()) {
        let why = RealtimeReply::Refused("payment required: open a billing channel first".into());
        return answer(&mut send, why).await;
    }
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let accepted = match tokio::time::timeout_at(deadline, open_next(msg, flows, &opener, to)).await
    {
        Ok(Ok(Ok(accepted))) => accepted,
        Ok(Ok(Err(refusal))) => return answer(&mut send, refusal).await,
        Ok(Err(e)) => {
            answer(
                &mut send,
                RealtimeReply::Refused("the peer's side failed".into()),
            )
            .await?;
            return Err(e);
        }
        Err(_) => {
            let why = RealtimeReply::Refused("the peer did not answer in time".into());
            return answer(&mut send, why).await;
        }
    };
    let Accepted {
        from_here,
        from_next,
        next,
        next_flow,
        max_datagram,
        stream: (next_send, replies),
        _hold,
    } = accepted;
    send.write_all(&encode_frame(&RealtimeReply::Opened {
        flow: from_here.id(),
        max_datagram,
    })?)
    .await
    .map_err(io::Error::from)?;
    let mut from_opener = frames.map_decoder(|_| record_codec());
    let mut from_peer = replies.map_decoder(|_| record_codec());
    let mut to_peer = FramedWrite::new(next_send, record_codec());
    let mut to_opener = FramedWrite::new(send, record_codec());
    let handshake = async {
        pass_record(&mut from_opener, &mut to_peer).await?;
        pass_record(&mut from_peer, &mut to_opener).await?;
        // The peer has its keys: datagrams may flow, each paid by its sender.
        let forward = Route {
            to: next.conn.clone(),
            flow: next_flow,
            payer: opener.meter.clone(),
        };
        flows.route(&from_here, forward);
        let back = Route {
            to: opener.conn.clone(),
            flow,
            payer: next.meter.clone(),
        };
        flows.route(&from_next, back);
        pass_record(&mut from_opener, &mut to_peer).await
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(FrameError::Unexpected(
                "realtime handshake not finished in time",
            ));
        }
    }
    let metrics = &flows.core().metrics.realtime;
    metrics.pipes.inc();
    // Nothing more may flow on the stream: anything, or its end, from either side ends the pipe.
    tokio::select! {
        _ = from_opener.next() => {}
        _ = from_peer.next() => {}
        _ = flows.core().shutdown.cancelled() => {}
    }
    metrics.pipes.dec();
    to_peer.get_mut().finish().ok();
    to_opener.get_mut().finish().ok();
    drop((from_here, from_next));
    Ok(())
}

/// Reserves the flow ids and asks the next hop (a client here or a linked relay) for its own;
/// `Ok(Err(reply))` is a refusal to pass on to the opener.
async fn open_next(
    msg: &Arc<Messaging>,
    flows: &Arc<Flows>,
    opener: &Opener,
    to: AccountId,
) -> Result<Result<Accepted, RealtimeReply>, FrameError> {
    let refused = |e: super::flows::FlowError| Ok(Err(RealtimeReply::Refused(e.to_string())));
    let from_here = match flows.reserve(&opener.conn, limit(opener.from_link)) {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    // A pipe from a linked relay goes no further (one relay hop between the peers' relays).
    let far = match msg.session(&to) {
        None if !opener.from_link => msg.locate(&to).await,
        _ => None,
    };
    let hold = far.as_ref().map(|link| msg.wants.hold(link.relay));
    let (next, is_link) = match (msg.session(&to), far) {
        (Some(session), _) => {
            let hop = Hop {
                conn: session.conn,
                meter: session.meter,
            };
            (hop, false)
        }
        (None, Some(link)) => {
            let hop = Hop {
                conn: link.conn,
                meter: None,
            };
            (hop, true)
        }
        (None, None) => return Ok(Err(RealtimeReply::Unreachable)),
    };
    let from_next = match flows.reserve(&next.conn, limit(is_link)) {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    let opener_path = clamp(opener.conn.max_datagram_size());
    let open = match is_link {
        true => Open::Realtime {
            to,
            flow: from_next.id(),
        },
        false => Open::IncomingRealtime {
            flow: from_next.id(),
            max_datagram: opener_path,
        },
    };
    let (mut next_send, next_recv) = next.conn.open_bi().await.map_err(io::Error::from)?;
    next_send
        .write_all(&encode_frame(&open)?)
        .await
        .map_err(io::Error::from)?;
    let mut replies = FramedRead::new(next_recv, FrameCodec::<RealtimeReply>::new(MAX_REPLY));
    let (next_flow, next_path) = match replies.next().await {
        Some(Ok(RealtimeReply::Opened { flow, max_datagram })) => (flow, max_datagram),
        Some(Ok(refusal)) => return Ok(Err(refusal)),
        Some(Err(e)) => return Err(e),
        None => return Ok(Err(RealtimeReply::Refused("the peer declined".into()))),
    };
    let max_datagram = opener_path
        .min(next_path)
        .min(clamp(next.conn.max_datagram_size()));
    Ok(Ok(Accepted {
        from_here,
        from_next,
        next,
        next_flow,
        max_datagram,
        stream: (next_send, replies),
        _hold: hold,
    }))
}

/// Passes one handshake record from one side to the other.
async fn pass_record(from: &mut Records, to: &mut RecordsOut) -> Result<(), FrameError> {
    let record = match from.next().await {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(FrameError::Io(e)),
        None => return Err(FrameError::Unexpected("realtime handshake cut short")),
    };
    to.send(Bytes::from(record)).await.map_err(FrameError::Io)
}

async fn answer(send: &mut quinn::SendStream, reply: RealtimeReply) -> Result<(), FrameError> {
    send.write_all(&encode_frame(&reply)?)
        .await
        .map_err(io::Error::from)?;
    send.finish().ok();
    Ok(())
}

/// A path's datagram size as carried in replies.
fn clamp(size: Option<usize>) -> u16 {
    size.map_or(0, |s| u16::try_from(s).unwrap_or(u16::MAX))
}
