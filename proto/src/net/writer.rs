//! The writer task of a QUIC stream (a tokio driver): takes frames from a queue and writes them in batches.

use crate::frame::{FrameCodec, FrameError};
use futures::SinkExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

/// Most frames written before one flush.
const BATCH: usize = 256;

/// Writes every frame from `rx` to `send`, one flush per batch, until `rx` closes.
pub async fn write_frames<T: Serialize>(
    send: quinn::SendStream,
    mut rx: mpsc::Receiver<T>,
) -> Result<(), FrameError> {
    let mut out = FramedWrite::new(send, FrameCodec::<T>::default());
    out.set_backpressure_boundary(64 * 1024);
    while let Some(frame) = rx.recv().await {
        out.feed(frame).await?;
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(frame) => out.feed(frame).await?,
                Err(_) => break,
            }
        }
        out.flush().await?;
    }
    let mut send = out.into_inner();
    send.finish().ok();
    Ok(())
}

/// Like [`write_frames`] with a second queue whose frames go out first: answers that must not
/// wait behind (or be refused by) a queue full of deliveries. Frames of one queue keep their
/// order; the two queues are not ordered with each other. Ends when `queued` closes, after
/// writing what both still hold.
pub async fn write_prioritized<T: Serialize>(
    send: quinn::SendStream,
    mut urgent: mpsc::Receiver<T>,
    mut queued: mpsc::Receiver<T>,
) -> Result<(), FrameError> {
    let mut out = FramedWrite::new(send, FrameCodec::<T>::default());
    out.set_backpressure_boundary(64 * 1024);
    let mut urgent_open = true;
    loop {
        let frame = tokio::select! {
            biased;
            frame = urgent.recv(), if urgent_open => match frame {
                Some(frame) => frame,
                None => {
                    urgent_open = false;
                    continue;
                }
            },
            frame = queued.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        out.feed(frame).await?;
        for _ in 1..BATCH {
            match urgent.try_recv().or_else(|_| queued.try_recv()) {
                Ok(frame) => out.feed(frame).await?,
                Err(_) => break,
            }
        }
        out.flush().await?;
    }
    while let Ok(frame) = urgent.try_recv() {
        out.feed(frame).await?;
    }
    out.flush().await?;
    let mut send = out.into_inner();
    send.finish().ok();
    Ok(())
}
