//! Asking a relay over QUIC where its control plane listens ([`Open::Control`]): how a relay told
//! only another's QUIC address (`--bootstrap ID@HOST:PORT`) reaches that relay's control plane,
//! whatever port it listens on.

use std::time::Duration;

use futures::StreamExt;
use libp2p::Multiaddr;
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{ControlAddrs, FrameCodec, Open, encode_frame};

use super::addrs::with_ip;
use crate::node::core::Core;

/// Longest wait for the answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest answer read.
const MAX_ANSWER: usize = 4096;
/// Most addresses taken from an answer.
const MAX_ADDRS: usize = 4;

/// The control-plane addresses `relay` gives (a wildcard IP replaced by the one dialed).
pub async fn control_addrs(core: &Core, relay: &RelayAddr) -> Result<Vec<Multiaddr>, String> {
    tokio::time::timeout(ASK_TIMEOUT, ask(core, relay))
        .await
        .map_err(|_| "no answer in time".to_string())?
}

async fn ask(core: &Core, relay: &RelayAddr) -> Result<Vec<Multiaddr>, String> {
    let conn = top_proto::net::dial::dial(&core.endpoint, &core.identity, relay)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let open = encode_frame(&Open::Control).map_err(|e| e.to_string())?;
    send.write_all(&open).await.map_err(|e| e.to_string())?;
    send.finish().ok();
    let mut frames = FramedRead::new(recv, FrameCodec::<ControlAddrs>::new(MAX_ANSWER));
    let answer = frames
        .next()
        .await
        .ok_or_else(|| "the relay closed the stream".to_string())?
        .map_err(|e| e.to_string())?;
    let ip = conn.remote_address().ip();
    conn.close(0u32.into(), b"thanks");
    Ok(answer
        .addrs
        .iter()
        .take(MAX_ADDRS)
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|a| with_ip(&a, ip))
        .collect())
}
