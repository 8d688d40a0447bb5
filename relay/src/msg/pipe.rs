//! Pipes through the relay: find the peer, open a stream towards it, splice bytes both ways.
//!
//! The relay never parses what flows after the open: it is Noise ciphertext between the peers.

use std::sync::Arc;

use tokio_util::codec::FramedRead;
use top_proto::frame::{FrameCodec, Open, PipeReply, encode_frame};
use top_proto::id::AccountId;
use tracing::debug;

use top_billing::Service;

use super::driver::Messaging;
use crate::billing::meter::ClientMeter;
use crate::node::metrics::Metrics;

/// Why a pipe could not be set up.
#[derive(Debug, thiserror::Error)]
enum PipeError {
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("frame: {0}")]
    Frame(#[from] top_proto::frame::FrameError),
}

/// Serves a pipe request for `to` arriving on `(send, frames)`.
pub async fn serve_pipe(
    msg: &Arc<Messaging>,
    metrics: &Metrics,
    from_link: bool,
    to: AccountId,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
    meter: Option<Arc<ClientMeter>>,
) {
    if let Err(e) = splice(msg, metrics, from_link, to, send, frames, meter).await {
        debug!("pipe to {to:?} ended: {e}");
    }
}

async fn splice(
    msg: &Arc<Messaging>,
    metrics: &Metrics,
    from_link: bool,
    to: AccountId,
    mut a_send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
    meter: Option<Arc<ClientMeter>>,
) -> Result<(), PipeError> {
    let mut meters: Vec<Arc<ClientMeter>> = meter.into_iter().collect();
    // A pipe from a linked relay goes no further (one relay hop between the peers' relays).
    let far = match msg.session(&to) {
        None if !from_link => msg.locate(&to).await,
        _ => None,
    };
    let _hold = far.as_ref().map(|link| msg.wants.hold(link.relay));
    let (mut b_send, b_recv) = if let Some(session) = msg.session(&to) {
        meters.extend(session.meter.clone());
        let (mut b_send, b_recv) = session.conn.open_bi().await?;
        b_send
            .write_all(&encode_frame(&Open::IncomingPipe)?)
            .await?;
        a_send.write_all(&encode_frame(&PipeReply::Opened)?).await?;
        (b_send, b_recv)
    } else if let Some(link) = far {
        // The far relay answers `Opened` or `Unreachable` through the splice.
        let (mut b_send, b_recv) = link.conn.open_bi().await?;
        b_send.write_all(&encode_frame(&Open::Pipe { to })?).await?;
        (b_send, b_recv)
    } else {
        a_send
            .write_all(&encode_frame(&PipeReply::Unreachable)?)
            .await?;
        a_send.finish().ok();
        return Ok(());
    };
    metrics.pipes_opened.inc();
    let parts = frames.into_parts();
    if !parts.read_buf.is_empty() {
        b_send.write_all(&parts.read_buf).await?;
    }
    let up = pump(parts.io, b_send, &meters, metrics);
    let down = pump(b_recv, a_send, &meters, metrics);
    if let Err(e) = tokio::try_join!(up, down) {
        debug!("pipe ended: {e}");
    }
    Ok(())
}

/// Bytes taken from a stream at once (quinn hands them over without a copy).
const CHUNK: usize = 64 * 1024;

/// Copies one direction of a pipe chunk by chunk as quinn holds them (no copy), billing every
/// chunk to each meter before it goes on; stops when a meter's credit runs out and no receipt
/// comes.
async fn pump(
    mut from: quinn::RecvStream,
    mut to: quinn::SendStream,
    meters: &[Arc<ClientMeter>],
    metrics: &Metrics,
) -> std::io::Result<()> {
    while let Some(chunk) = from
        .read_chunk(CHUNK, true)
        .await
        .map_err(std::io::Error::from)?
    {
        let n = chunk.bytes.len() as u64;
        for meter in meters {
            if !meter.carry(Service::Pipe, n, meter.pay_wait).await {
                metrics.unpaid_refusals.inc();
                return Err(std::io::Error::other("payment required"));
            }
        }
        metrics.pipe_bytes.inc_by(n);
        to.write_chunk(chunk.bytes)
            .await
            .map_err(std::io::Error::from)?;
    }
    to.finish().map_err(std::io::Error::other)
}
