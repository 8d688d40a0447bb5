//! Keeping links up on demand: a dial loop for every relay a link is wanted to (a home of a
//! client connected here, a relay traffic needs, a configured peer), redialing with backoff
//! while it is wanted and a member. A link this relay dialed is closed once it is idle and no
//! longer wanted; links to relays that stop being members are closed.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, LinkFrame, Open, encode_frame};
use top_proto::id::RelayId;
use top_proto::net::dial::dial;
use tracing::{Instrument, debug, info, info_span};

use crate::msg::link::run_link;
use crate::node::accept::serve_streams;
use crate::node::peers::{LINK_IDLE, LINK_NOT_MEMBER};
use crate::node::state::Shared;
use crate::util::lock;

/// First wait before redialing a relay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether this relay wants a link to `relay` now: traffic or a client's home needs it, or
/// the operator configured it.
fn wanted(shared: &Shared, relay: &RelayId) -> bool {
    shared.msg.wants.wanted(relay, Instant::now())
        || (shared.peers.is_configured(relay) && shared.peers.is_member(relay))
}

/// Keeps a dial loop running for every member relay a link is wanted to, and closes links to
/// relays that stopped being members, until shutdown.
pub async fn run_dialers(shared: Arc<Shared>) {
    let mut members = shared.peers.subscribe();
    let mut wants = shared.msg.wants.subscribe();
    let dialing: Arc<Mutex<HashSet<RelayId>>> = Arc::default();
    loop {
        // Marked before reading: a change while reading wakes the next round.
        members.mark_unchanged();
        wants.mark_unchanged();
        let mut wanted_now = shared.msg.wants.all(Instant::now());
        wanted_now.extend(shared.peers.configured_members());
        for relay in wanted_now {
            if shared.peers.is_member(&relay) && lock(&dialing).insert(relay) {
                let span = info_span!("dialer", peer = %relay.short());
                let (shared2, dialing2) = (shared.clone(), dialing.clone());
                shared.tasks.spawn(
                    async move {
                        loop {
                            dial_loop(&shared2, relay).await;
                            lock(&dialing2).remove(&relay);
                            // Wanted again as this loop ended (that wake-up found it still
                            // dialing): it goes on after a pause, unless it is no member or
                            // a new loop took over.
                            tokio::time::sleep(FIRST_BACKOFF).await;
                            if shared2.shutdown.is_cancelled()
                                || !wanted(&shared2, &relay)
                                || !shared2.peers.is_member(&relay)
                                || !lock(&dialing2).insert(relay)
                            {
                                break;
                            }
                        }
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
        tokio::select! {
            r = members.changed() => if r.is_err() { return },
            r = wants.changed() => if r.is_err() { return },
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// Dials `relay` whenever it is wanted, a member and not linked; ends once it is not wanted
/// (and its link, if this relay dialed it, went idle) or not a member.
async fn dial_loop(shared: &Arc<Shared>, relay: RelayId) {
    let mut backoff = FIRST_BACKOFF;
    let mut changed = shared.peers.subscribe();
    loop {
        changed.mark_unchanged();
        if !wanted(shared, &relay) {
            return;
        }
        // The address is looked up afresh each time: the registry may have moved it.
        let Some(peer) = shared.peers.addr_of(&relay) else {
            return;
        };
        if let Some(link) = shared.msg.link(&relay) {
            // The other relay dialed: redial as soon as its link ends, if still wanted.
            tokio::select! {
                _ = link.conn.closed() => {}
                _ = tokio::time::sleep(MAX_BACKOFF) => {}
                _ = shared.shutdown.cancelled() => return,
            }
            if link.conn.close_reason().is_some() {
                // A moment for the link's end to reach the router.
                tokio::time::sleep(FIRST_BACKOFF).await;
            }
            backoff = FIRST_BACKOFF;
            continue;
        }
        let connected = tokio::select! {
            c = connect(shared, &peer) => c,
            _ = shared.shutdown.cancelled() => return,
        };
        match connected {
            Ok((conn, send, frames)) => {
                let up = Instant::now();
                let link = run_link(shared.link_context(), relay, conn.clone(), send, frames);
                // The link closes its connection when it ends, which ends the watch.
                futures::future::join(link, close_when_idle(shared, relay, conn)).await;
                // A link the peer ends at once (it does not take this relay as a member)
                // keeps backing off; one that ran a while is redialed promptly.
                if up.elapsed() > MAX_BACKOFF {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => debug!("link to {peer:?} failed: {e}"),
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

/// Stream frames sent and received on `conn` so far.
fn stream_frames(conn: &quinn::Connection) -> u64 {
    let stats = conn.stats();
    stats.frame_tx.stream.saturating_add(stats.frame_rx.stream)
}

/// Closes a link this relay dialed once a whole check period (half the configured idle time)
/// passed with nothing carried either way, nothing awaiting an answer over it and no link
/// wanted; returns when the connection closes.
async fn close_when_idle(shared: &Shared, relay: RelayId, conn: quinn::Connection) {
    let check = shared.msg.wants.wanted_for() / 2;
    let mut last = stream_frames(&conn);
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(check) => {}
        }
        let frames = stream_frames(&conn);
        let quiet = frames == last;
        last = frames;
        if quiet && !wanted(shared, &relay) && !shared.msg.link_busy(&relay) {
            info!("closing the link: idle and not needed");
            conn.close(LINK_IDLE, b"idle");
            return;
        }
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
