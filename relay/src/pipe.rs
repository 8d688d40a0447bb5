//! Pipes through the relay: find the peer, open a stream towards it, splice bytes both ways.
//!
//! The relay never parses what flows after the open: it is Noise ciphertext between the peers.

use std::sync::Arc;

use tokio_util::codec::FramedRead;
use top_proto::frame::{FrameCodec, Open, PipeReply, encode_frame};
use top_proto::id::AccountId;
use tracing::debug;

use crate::state::Shared;

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
    shared: Arc<Shared>,
    from_link: bool,
    to: AccountId,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) {
    if let Err(e) = splice(&shared, from_link, to, send, frames).await {
        debug!("pipe to {to:?} ended: {e}");
    }
}

async fn splice(
    shared: &Arc<Shared>,
    from_link: bool,
    to: AccountId,
    mut a_send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<(), PipeError> {
    let (mut b_send, b_recv) = if let Some(session) = shared.session(&to) {
        let (mut b_send, b_recv) = session.conn.open_bi().await?;
        b_send
            .write_all(&encode_frame(&Open::IncomingPipe)?)
            .await?;
        a_send.write_all(&encode_frame(&PipeReply::Opened)?).await?;
        (b_send, b_recv)
    } else if let Some((_, link)) = shared.link_for_client(&to).filter(|_| !from_link) {
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
    shared.metrics.pipes_opened.inc();
    let parts = frames.into_parts();
    if !parts.read_buf.is_empty() {
        b_send.write_all(&parts.read_buf).await?;
    }
    let mut a = tokio::io::join(parts.io, a_send);
    let mut b = tokio::io::join(b_recv, b_send);
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((up, down)) => {
            shared.metrics.pipe_bytes.inc_by(up + down);
        }
        Err(e) => debug!("pipe splice ended: {e}"),
    }
    Ok(())
}
