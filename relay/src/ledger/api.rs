//! Serving `Open::Ledger` streams: one response per request, in order.

use futures::{SinkExt, StreamExt};
use ledger_lite::wire::{LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_proto::frame::{FrameCodec, FrameError};

use tokio_util::sync::CancellationToken;

use super::ChainSlot;

/// Answers ledger requests on one stream until the peer closes it (or `stop`).
pub async fn serve_ledger<C>(
    chain: ChainSlot,
    stop: CancellationToken,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<C>>,
) -> Result<(), FrameError> {
    let mut frames = frames.map_decoder(|c| c.retype::<LedgerRequest>(MAX_LEDGER_FRAME));
    let mut out = FramedWrite::new(send, FrameCodec::<LedgerResponse>::new(MAX_LEDGER_FRAME));
    loop {
        let req = tokio::select! {
            req = frames.next() => req,
            _ = stop.cancelled() => return Ok(()),
        };
        let req = match req {
            None => return Ok(()),
            Some(Ok(req)) => req,
            Some(Err(e)) => {
                out.send(LedgerResponse::Error(format!("malformed request: {e}")))
                    .await
                    .ok();
                frames.get_mut().stop(1u32.into()).ok();
                return Err(e);
            }
        };
        let resp = match chain.get() {
            // A long poll for blocks or a wait for a commit must not hold up shutdown.
            Some(chain) => tokio::select! {
                resp = chain.handle(req) => resp,
                _ = stop.cancelled() => return Ok(()),
            },
            None => LedgerResponse::Error("this relay has no chain (yet)".into()),
        };
        out.send(resp).await?;
    }
}
