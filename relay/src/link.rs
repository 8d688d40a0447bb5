//! Links between relays: dialing configured peers, and the link control stream.
//!
//! Over a link, relays announce which clients are connected to them, forward messages to those
//! clients, store messages in each other's mailboxes, and open pipe streams. Peer management sits
//! behind [`spawn_dialer`] and [`Shared::learn`] so a directory can replace the static peer list.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::dial::dial;
use top_proto::frame::{
    FrameCodec, FrameError, LinkFrame, Open, Outcome, encode_frame, next_frame,
};
use top_proto::id::RelayId;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::delivery::{
    deliver_forwarded, fail_all, fail_stale, finish, push_mailbox, send_or_spawn, store_here, take,
    undelivered,
};
use crate::server::serve_streams;
use crate::state::{LinkHandle, Origin, Shared, lock};
use top_proto::writer::write_frames;

/// Frames queued on one link.
const LINK_QUEUE: usize = 16_384;
/// A forward not answered in this time is treated as failed.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps a link to `peer` up until shutdown, redialing with backoff.
pub fn spawn_dialer(shared: &Arc<Shared>, peer: RelayAddr) {
    let shared2 = shared.clone();
    let span = info_span!("dialer", peer = %peer.id.short());
    shared
        .tasks
        .spawn(async move { dial_loop(shared2, peer).await }.instrument(span));
}

async fn dial_loop(shared: Arc<Shared>, peer: RelayAddr) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if shared.link(&peer.id).is_none() {
            let connected = tokio::select! {
                c = connect(&shared, &peer) => c,
                _ = shared.shutdown.cancelled() => return,
            };
            match connected {
                Ok((conn, send, frames)) => {
                    backoff = Duration::from_millis(200);
                    run_link(shared.clone(), peer.id, conn, send, frames).await;
                }
                Err(e) => debug!("link to {peer:?} failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

type LinkStream = (
    quinn::Connection,
    quinn::SendStream,
    FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
);

async fn connect(shared: &Arc<Shared>, peer: &RelayAddr) -> anyhow::Result<LinkStream> {
    let conn = dial(&shared.endpoint, &shared.identity, peer).await?;
    let (mut send, recv) = conn.open_bi().await?;
    let hello = Open::Link {
        addr: shared.addr.clone(),
        known: shared.known(),
    };
    send.write_all(&encode_frame(&hello)?).await?;
    // The peer may open pipe streams back over this connection.
    let conn2 = conn.clone();
    let shared2 = shared.clone();
    shared
        .tasks
        .spawn(async move { serve_streams(shared2, conn2, Arc::new(AtomicBool::new(true))).await });
    Ok((conn, send, FramedRead::new(recv, FrameCodec::default())))
}

/// Accepts a link opened by another relay.
pub async fn accept_link(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    peer: RelayAddr,
    known: Vec<RelayAddr>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
) {
    let mut learned = shared.learn(std::iter::once(peer.clone()));
    learned.extend(shared.learn(known));
    for relay in learned {
        if relay.id != peer.id {
            spawn_dialer(&shared, relay);
        }
    }
    run_link(shared, peer.id, conn, send, frames).await
}

async fn run_link(
    shared: Arc<Shared>,
    peer: RelayId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
) {
    let span = info_span!("link", peer = %peer.short());
    serve(shared, peer, conn, send, frames)
        .instrument(span)
        .await
}

async fn serve(
    shared: Arc<Shared>,
    peer: RelayId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
) {
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let mut writer = tokio::spawn(write_frames(send, rx).in_current_span());
    let handle = LinkHandle {
        no: shared.next_no(),
        conn,
        tx: tx.clone(),
        forwards: Default::default(),
        stores: Default::default(),
    };
    shared.add_link(peer, handle.clone());
    info!("link up");
    for client in shared.local_clients() {
        send_or_spawn(
            &tx,
            LinkFrame::Presence {
                client,
                online: true,
            },
        );
    }
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let end: Result<(), FrameError> = loop {
        tokio::select! {
            frame = frames.next() => match next_frame(frame) {
                Ok(Some(frame)) => handle_frame(&shared, peer, &handle, frame),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = sweep.tick() => fail_stale(&shared, &handle.forwards, FORWARD_TIMEOUT),
            _ = shared.shutdown.cancelled() => break Ok(()),
        }
    };
    if let Err(e) = end {
        shared.metrics.bad_frames.inc();
        warn!("closing link: {e}");
        handle.conn.close(1u32.into(), b"bad link frame");
    }
    shared.remove_link(&peer, handle.no);
    fail_all(&shared, &handle.forwards);
    lock(&handle.stores).clear();
    drop(tx);
    drop(handle);
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    info!("link down");
}

fn handle_frame(shared: &Arc<Shared>, peer: RelayId, link: &LinkHandle, frame: LinkFrame) {
    match frame {
        LinkFrame::Presence { client, online } => {
            shared.set_presence(client, peer, online);
            if online {
                let shared = shared.clone();
                let tx = link.tx.clone();
                tokio::spawn(async move {
                    push_mailbox(&shared, client).await;
                    tx.send(LinkFrame::MailboxDone { client }).await.ok();
                });
            }
        }
        LinkFrame::Forward { env, store_on_fail } => {
            let origin = Origin::Link {
                tx: link.tx.clone(),
                store_on_fail,
            };
            deliver_forwarded(shared, env, origin);
        }
        LinkFrame::ForwardResult { id, outcome } => {
            for pending in take(&link.forwards, &id) {
                match outcome {
                    Some(outcome @ (Outcome::Delivered | Outcome::Stored)) => {
                        finish(shared, pending, Ok(outcome))
                    }
                    None => undelivered(shared, pending),
                }
            }
        }
        LinkFrame::Store(env) => {
            let shared = shared.clone();
            let tx = link.tx.clone();
            tokio::spawn(async move {
                let id = env.id;
                let error = if env.check().is_err() {
                    Some(top_proto::frame::Reject::TooLarge)
                } else {
                    store_here(&shared, env).await.err()
                };
                tx.send(LinkFrame::StoreResult { id, error }).await.ok();
            });
        }
        LinkFrame::StoreResult { id, error } => {
            if let Some(waiter) = lock(&link.stores).remove(&id) {
                waiter.send(error).ok();
            }
        }
        LinkFrame::MailboxDone { client } => shared.mailbox_done(client, peer),
    }
}
