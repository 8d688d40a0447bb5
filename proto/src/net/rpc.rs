//! Request/response over one QUIC stream: the client side of the ledger API and similar.

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::frame::{FrameCodec, FrameError, Open, encode_frame};

/// A stream on which each request gets exactly one response, in order.
pub struct RpcStream<Req, Resp> {
    send: FramedWrite<quinn::SendStream, FrameCodec<Req>>,
    recv: FramedRead<quinn::RecvStream, FrameCodec<Resp>>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The stream or connection failed.
    #[error("connection to the relay failed: {0}")]
    Connection(String),
    /// A frame did not decode.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The relay closed the stream without answering.
    #[error("the relay closed the request stream")]
    Closed,
}

impl<Req: Serialize, Resp: DeserializeOwned> RpcStream<Req, Resp> {
    /// Opens a stream on `conn` whose first frame is `open`; frames are at most `max_len`.
    pub async fn open(
        conn: &quinn::Connection,
        open: Open,
        max_len: usize,
    ) -> Result<Self, RpcError> {
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| RpcError::Connection(e.to_string()))?;
        send.write_all(&encode_frame(&open)?)
            .await
            .map_err(|e| RpcError::Connection(e.to_string()))?;
        Ok(Self {
            send: FramedWrite::new(send, FrameCodec::new(max_len)),
            recv: FramedRead::new(recv, FrameCodec::new(max_len)),
        })
    }

    /// Sends `req` and waits for its response.
    pub async fn call(&mut self, req: Req) -> Result<Resp, RpcError> {
        self.send.send(req).await?;
        match self.recv.next().await {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(FrameError::Io(e))) => Err(RpcError::Connection(e.to_string())),
            Some(Err(e)) => Err(RpcError::Frame(e)),
            None => Err(RpcError::Closed),
        }
    }
}
