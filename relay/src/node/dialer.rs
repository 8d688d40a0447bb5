//! Keeping links up: one dial loop per member relay, redialing with backoff while it is a
//! member; links to relays that stop being members are closed.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, LinkFrame, Open, encode_frame};
use top_proto::id::RelayId;
use top_proto::net::dial::dial;
use tracing::{Instrument, debug, info, info_span};

use crate::msg::link::run_link;
use crate::node::accept::serve_streams;
use crate::node::peers::LINK_NOT_MEMBER;
use crate::node::state::Shared;
use crate::util::lock;

/// First wait before redialing a relay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Keeps a dial loop running for every member relay (registered, or configured where that
/// counts) and closes links to relays that stopped being members, until shutdown.
pub async fn run_dialers(shared: Arc<Shared>) {
    let mut changed = shared.peers.subscribe();
    let dialing: Arc<Mutex<HashSet<RelayId>>> = Arc::default();
    loop {
        for peer in shared.peers.members() {
            if lock(&dialing).insert(peer.id) {
                let span = info_span!("dialer", peer = %peer.id.short());
                let (shared2, dialing2) = (shared.clone(), dialing.clone());
                shared.tasks.spawn(
                    async move {
                        dial_loop(&shared2, peer.id).await;
                        lock(&dialing2).remove(&peer.id);
                    }
                    .instrument(span),
                );
            }
        }
        for (relay, conn) in shared.msg.link_connections() {
            if !shared.peers.is_member(&relay) {
                info!(peer = %relay.short(), "closing the link: no longer a member");
                conn.close(LINK_NOT_MEMBER, b"not a registered relay");
            }
        }
        changed.mark_unchanged();
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// Dials `relay` whenever it is a member and not linked; ends once it is not a member.
async fn dial_loop(shared: &Arc<Shared>, relay: RelayId) {
    let mut backoff = FIRST_BACKOFF;
    let mut changed = shared.peers.subscribe();
    loop {
        changed.mark_unchanged();
        // The address is looked up afresh each time: the registry may have moved it.
        let Some(peer) = shared.peers.addr_of(&relay) else {
            return;
        };
        if shared.msg.link(&relay).is_none() {
            let connected = tokio::select! {
                c = connect(shared, &peer) => c,
                _ = shared.shutdown.cancelled() => return,
            };
            match connected {
                Ok((conn, send, frames)) => {
                    let up = std::time::Instant::now();
                    run_link(shared.link_context(), relay, conn, send, frames).await;
                    // A link the peer ends at once (it does not take this relay as a member)
                    // keeps backing off; one that ran a while is redialed promptly.
                    if up.elapsed() > MAX_BACKOFF {
                        backoff = FIRST_BACKOFF;
                    }
                }
                Err(e) => debug!("link to {peer:?} failed: {e}"),
            }
        }
        // A change of the member set (this relay's own registration among them) is worth a
        // dial at once: a peer that refused an unregistered relay accepts it now.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            r = changed.changed() => if r.is_err() { return },
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
    send.write_all(&encode_frame(&Open::Link)?).await?;
    // The peer may open pipe streams back over this connection.
    let (shared2, conn2) = (shared.clone(), conn.clone());
    shared
        .tasks
        .spawn(async move { serve_streams(shared2, conn2, Arc::new(AtomicBool::new(true))).await });
    Ok((conn, send, FramedRead::new(recv, FrameCodec::default())))
}
