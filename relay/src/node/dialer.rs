//! Keeping links up: one task dials every relay as it is learned and redials with backoff.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, LinkFrame, Open, encode_frame};
use top_proto::net::dial::dial;
use tracing::{Instrument, debug, info_span};

use crate::msg::link::run_link;
use crate::node::accept::serve_streams;
use crate::node::state::Shared;

/// First wait before redialing a relay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Dials every relay the node learns of (configured or announced over a link), until shutdown.
pub async fn run_dialers(shared: Arc<Shared>) {
    let Some(mut learned) = shared.peers.take_new() else {
        return;
    };
    loop {
        let peer = tokio::select! {
            peer = learned.recv() => peer,
            _ = shared.shutdown.cancelled() => return,
        };
        let Some(peer) = peer else { return };
        let span = info_span!("dialer", peer = %peer.id.short());
        shared
            .tasks
            .spawn(dial_loop(shared.clone(), peer).instrument(span));
    }
}

async fn dial_loop(shared: Arc<Shared>, peer: RelayAddr) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if shared.msg.link(&peer.id).is_none() {
            let connected = tokio::select! {
                c = connect(&shared, &peer) => c,
                _ = shared.shutdown.cancelled() => return,
            };
            match connected {
                Ok((conn, send, frames)) => {
                    backoff = FIRST_BACKOFF;
                    run_link(shared.link_context(), peer.id, conn, send, frames).await;
                }
                Err(e) => debug!("link to {peer:?} failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

type LinkStream = (
    quinn::Connection,
    quinn::SendStream,
    FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
);

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Dial(#[from] top_proto::net::dial::DialError),
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Frame(#[from] top_proto::frame::FrameError),
}

async fn connect(shared: &Arc<Shared>, peer: &RelayAddr) -> Result<LinkStream, LinkError> {
    let conn = dial(&shared.endpoint, &shared.identity, peer).await?;
    let (mut send, recv) = conn.open_bi().await?;
    let hello = Open::Link {
        addr: shared.addr.clone(),
        known: shared.peers.known(),
    };
    send.write_all(&encode_frame(&hello)?).await?;
    // The peer may open pipe streams back over this connection.
    let (shared2, conn2) = (shared.clone(), conn.clone());
    shared
        .tasks
        .spawn(async move { serve_streams(shared2, conn2, Arc::new(AtomicBool::new(true))).await });
    Ok((conn, send, FramedRead::new(recv, FrameCodec::default())))
}
