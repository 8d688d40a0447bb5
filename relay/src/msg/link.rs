//! A link's control stream: what another relay says (presence, forwards, stores and their
//! answers) goes to the messaging role; what this relay says goes out through the link's writer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use top_proto::frame::{FrameCodec, FrameError, LinkFrame, next_frame};
use top_proto::id::{AccountId, RelayId};
use top_proto::net::writer::write_prioritized;
use tracing::{Instrument, info, info_span, warn};

use super::driver::{LINK_ANSWERS, LINK_QUEUE, Messaging};
use super::handles::LinkOut;
use crate::node::metrics::Metrics;

/// How long a pushed message waits for room in its recipient's queue.
const PUSH_ROOM_WAIT: Duration = Duration::from_secs(5);
/// How long frames still queued may take to leave once the link ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What a link needs from the node.
pub struct LinkContext {
    /// The messaging role.
    pub msg: Arc<Messaging>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Ends the link on shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The node's tasks.
    pub tasks: tokio_util::task::TaskTracker,
    /// The billing role (links pay each other).
    pub billing: Arc<crate::billing::Billing>,
}

/// Runs the control stream of a link to `peer` until it closes.
pub async fn run_link(
    ctx: LinkContext,
    peer: RelayId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
) {
    let span = info_span!("link", peer = %peer.short());
    serve(ctx, peer, conn, send, frames).instrument(span).await
}

async fn serve(
    ctx: LinkContext,
    peer: RelayId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, FrameCodec<LinkFrame>>,
) {
    let LinkContext {
        msg,
        metrics,
        shutdown,
        tasks,
        billing,
    } = ctx;
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let (answers, answers_rx) = mpsc::channel(LINK_ANSWERS);
    let mut writer = tasks.spawn(write_prioritized(send, answers_rx, rx).in_current_span());
    // Each side meters what the other asks of it and pays for what it asks of the other.
    let account = AccountId::from_wire(*peer.as_bytes());
    let link = LinkOut::new(
        peer,
        msg.serial(),
        conn,
        (tx, answers),
        billing.link_up(account),
    );
    // Mail that waits here for lack of payment moves on once a channel pays.
    let pushing = msg.clone();
    let paying = tasks.spawn(
        crate::billing::link_payer::pay_link(
            billing.clone(),
            link.conn.clone(),
            account,
            link.count.clone(),
            move || pushing.push_to_relay(peer),
        )
        .in_current_span(),
    );
    msg.link_up(link.clone());
    info!("link up");
    let mut stalled = Stalled::default();
    let end: Result<(), FrameError> = loop {
        tokio::select! {
            frame = frames.next() => match next_frame(frame) {
                Ok(Some(frame)) => handle_frame(&msg, &link, &mut stalled, frame).await,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    match end {
        Err(e) => {
            metrics.bad_frames.inc();
            warn!("closing link: {e}");
            link.conn.close(1u32.into(), b"bad link frame");
        }
        // A link's connection lives as long as its control stream: none is left open (with
        // the link's privileges for pipes and CDN streams) after it.
        Ok(()) => link.conn.close(0u32.into(), b"link ended"),
    }
    msg.link_down(&link);
    paying.abort();
    billing.link_down(&account);
    drop(link);
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    info!("link down");
}

/// Recipients here whose queue stayed full through a whole wait: pushes for them do not wait
/// again until their queue has room, so a client that stops reading holds this link's reader
/// back once, not once per message; and whether the linked relay left a payment wait unpaid.
#[derive(Default)]
struct Stalled(HashSet<AccountId>, Unpaid);

/// Whether the linked relay let a wait for its payment run out: until it pays, its forwards
/// are refused at once rather than each holding the link for the whole wait.
#[derive(Default)]
struct Unpaid(bool);

impl Unpaid {
    async fn carry(&mut self, link: &LinkOut, bytes: usize) -> bool {
        let carried = if self.0 {
            link.charge_delivery(bytes)
        } else {
            link.carry_delivery(bytes).await
        };
        self.0 = !carried;
        carried
    }
}

/// Recipients remembered as stalled, at most (then the set starts afresh).
const MAX_STALLED: usize = 4096;

async fn handle_frame(
    msg: &Arc<Messaging>,
    link: &LinkOut,
    stalled: &mut Stalled,
    frame: LinkFrame,
) {
    match frame {
        LinkFrame::Forward {
            env,
            store_on_fail: false,
        } => {
            // Another relay's mailbox push: wait (a bounded while) for room in the recipient's
            // queue rather than fail it, so the push neither skips nor reorders messages. The
            // wait holds back this link's reader: flow control back to the pushing relay.
            let wait = if stalled.0.contains(&env.to) {
                Duration::ZERO
            } else {
                PUSH_ROOM_WAIT
            };
            if msg.wait_for_room(&env.to, wait).await {
                stalled.0.remove(&env.to);
            } else {
                msg.metrics.pushes_stalled.inc();
                if stalled.0.len() >= MAX_STALLED {
                    stalled.0.clear();
                }
                stalled.0.insert(env.to);
            }
            if stalled.1.carry(link, env.sealed.len()).await {
                msg.forwarded(env, link, false);
            } else {
                let refused = LinkFrame::ForwardResult {
                    id: env.id,
                    outcome: None,
                };
                msg.answer(&link.answers, refused);
            }
        }
        LinkFrame::Online(presence) => msg.presence_online(link.relay, presence),
        LinkFrame::Offline { client } => msg.presence_offline(link.relay, client),
        LinkFrame::Forward { env, store_on_fail } => {
            if !stalled.1.carry(link, env.sealed.len()).await {
                let refused = LinkFrame::ForwardResult {
                    id: env.id,
                    outcome: None,
                };
                msg.answer(&link.answers, refused);
                return;
            }
            msg.forwarded(env, link, store_on_fail)
        }
        LinkFrame::Relay { env } => {
            // Two hops: this relay forwards it on (and pays the next relay for that).
            if !stalled.1.carry(link, env.sealed.len() * 2).await {
                let refused = LinkFrame::ForwardResult {
                    id: env.id,
                    outcome: None,
                };
                msg.answer(&link.answers, refused);
                return;
            }
            msg.relayed(env, link)
        }
        LinkFrame::Locate { client } => msg.locate_asked(link, client),
        LinkFrame::Located(presence) => msg.located(link.relay, presence),
        LinkFrame::ForwardResult { id, outcome } => msg.forward_result(link.relay, id, outcome),
        LinkFrame::Store(env) => msg.store_for_peer(link, env),
        LinkFrame::StoreResult { id, error } => msg.store_result(link, id, error),
        LinkFrame::MailboxDone { client } => msg.mailbox_done(client, link.relay),
    }
}
