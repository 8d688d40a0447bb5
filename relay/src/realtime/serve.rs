//! Opening a realtime pipe through this relay: reserve a flow id on the opener's connection and
//! one on the next hop's (the peer's session here, or a link to the relay it is on), ask the
//! next hop for the id it wants, route both ways, answer the opener, then pass the peers' Noise
//! handshake along. The stream then only marks the pipe's life: when either side closes it,
//! both flows close.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;
use top_billing::Service;
use top_proto::frame::{FrameCodec, FrameError, Open, RealtimeReply, encode_frame};
use top_proto::id::AccountId;

use super::flows::{FlowId, Flows, MAX_FLOWS_PER_CLIENT, MAX_FLOWS_PER_LINK, Route};
use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;
use crate::msg::Messaging;

/// How long the next hop may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply frame.
const MAX_REPLY: usize = 1024;
/// Bytes of the peers' handshake passed along per direction (two short Noise messages); more
/// closes the pipe, so the stream can never carry data for free.
const MAX_HANDSHAKE_BYTES: u64 = 1024;

/// The side that asks for the pipe.
pub struct Opener {
    /// Its connection.
    pub conn: quinn::Connection,
    /// Whether it is a linked member relay (its pipes go no further than this relay's clients).
    pub from_link: bool,
    /// Its meter, when this relay bills it.
    pub meter: Option<Arc<ClientMeter>>,
}

/// Where the pipe goes next.
struct NextHop {
    conn: quinn::Connection,
    meter: Option<Arc<ClientMeter>>,
    is_link: bool,
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
    let limit = |is_link| match is_link {
        true => MAX_FLOWS_PER_LINK,
        false => MAX_FLOWS_PER_CLIENT,
    };
    let from_here = match flows.reserve(&opener.conn, limit(opener.from_link)) {
        Ok(id) => id,
        Err(e) => return answer(&mut send, RealtimeReply::Refused(e.to_string())).await,
    };
    // A pipe from a linked relay goes no further (one relay hop between the peers' relays).
    let far = match msg.session(&to) {
        None if !opener.from_link => msg.locate(&to).await,
        _ => None,
    };
    let _hold = far.as_ref().map(|link| msg.wants.hold(link.relay));
    let next = match (msg.session(&to), far) {
        (Some(session), _) => NextHop {
            conn: session.conn,
            meter: session.meter,
            is_link: false,
        },
        (None, Some(link)) => NextHop {
            conn: link.conn,
            meter: None,
            is_link: true,
        },
        (None, None) => return answer(&mut send, RealtimeReply::Unreachable).await,
    };
    let from_next = match flows.reserve(&next.conn, limit(next.is_link)) {
        Ok(id) => id,
        Err(e) => return answer(&mut send, RealtimeReply::Refused(e.to_string())).await,
    };
    let opener_path = clamp(opener.conn.max_datagram_size());
    let open = match next.is_link {
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
    let (next_flow, next_path) = match tokio::time::timeout(REPLY_TIMEOUT, replies.next()).await {
        Ok(Some(Ok(RealtimeReply::Opened { flow, max_datagram }))) => (flow, max_datagram),
        Ok(Some(Ok(refusal))) => return answer(&mut send, refusal).await,
        Ok(Some(Err(e))) => {
            answer(
                &mut send,
                RealtimeReply::Refused("the peer's answer was bad".into()),
            )
            .await?;
            return Err(e);
        }
        Ok(None) | Err(_) => {
            let why = RealtimeReply::Refused("the peer did not answer".into());
            return answer(&mut send, why).await;
        }
    };
    let max_datagram = opener_path
        .min(next_path)
        .min(clamp(next.conn.max_datagram_size()));
    route(flows, &from_here, &next, next_flow, &opener.meter);
    let back = NextHop {
        conn: opener.conn.clone(),
        meter: opener.meter.clone(),
        is_link: opener.from_link,
    };
    route(flows, &from_next, &back, flow, &next.meter);
    send.write_all(&encode_frame(&RealtimeReply::Opened {
        flow: from_here.id(),
        max_datagram,
    })?)
    .await
    .map_err(io::Error::from)?;
    let metrics = &flows.core().metrics.realtime;
    metrics.pipes.inc();
    let (opener_parts, next_parts) = (frames.into_parts(), replies.into_parts());
    let up = pass_handshake(opener_parts.read_buf, opener_parts.io, next_send);
    let down = pass_handshake(next_parts.read_buf, next_parts.io, send);
    // Either side closing (or overrunning its handshake) ends the pipe for both.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = flows.core().shutdown.cancelled() => {}
    }
    metrics.pipes.dec();
    drop((from_here, from_next));
    Ok(())
}

/// Routes datagrams arriving under `id` to `next` under `flow`, billed to both sides' payers.
fn route(
    flows: &Flows,
    id: &FlowId,
    next: &NextHop,
    flow: u32,
    from_payer: &Option<Arc<ClientMeter>>,
) {
    let payers = [
        Budget::new(from_payer.clone(), Service::Pipe),
        Budget::new(next.meter.clone(), Service::Pipe),
    ];
    let to = next.conn.clone();
    flows.route(id, Route { to, flow, payers });
}

/// Passes what was already read and at most [`MAX_HANDSHAKE_BYTES`] more from `from` to `to`;
/// returns when `from` ends (then finishes `to`) or overruns.
async fn pass_handshake(
    already: bytes::BytesMut,
    from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    if already.len() as u64 > MAX_HANDSHAKE_BYTES {
        return Err(io::Error::other("handshake too long"));
    }
    to.write_all(&already).await?;
    let mut limited = from.take(MAX_HANDSHAKE_BYTES - already.len() as u64 + 1);
    let mut buf = [0u8; 512];
    let mut passed = already.len() as u64;
    loop {
        let n = limited.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        passed += n as u64;
        if passed > MAX_HANDSHAKE_BYTES {
            return Err(io::Error::other("handshake too long"));
        }
        to.write_all(&buf[..n]).await?;
    }
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
