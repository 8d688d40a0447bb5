//! A client's messaging session: reads what it sends and acknowledges, writes what it receives.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use top_billing::Service;
use top_proto::frame::{FrameCodec, FrameError, Reject, SessionFrame, next_frame};
use top_proto::id::AccountId;
use top_proto::net::writer::write_prioritized;
use top_proto::presence::Presence;
use tracing::{Instrument, debug, info_span};

use super::driver::{Messaging, SESSION_ANSWERS, SESSION_QUEUE};
use super::handles::SessionOut;
use crate::billing::meter::ClientMeter;
use crate::node::metrics::Metrics;

/// How long a session waits for linked relays to push stored messages before `Synced`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long answers still queued may take to leave once the session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What a session needs from the node.
pub struct SessionContext {
    /// The messaging role.
    pub msg: Arc<Messaging>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Ends the session on shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The node's tasks.
    pub tasks: tokio_util::task::TaskTracker,
}

/// Runs one client's messaging stream until it closes.
pub async fn run_session(
    ctx: SessionContext,
    conn: quinn::Connection,
    presence: Arc<Presence>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>,
    meter: Option<Arc<ClientMeter>>,
) {
    let span = info_span!("session", client = %presence.body.client.short());
    serve(ctx, conn, presence, send, frames, meter)
        .instrument(span)
        .await
}

async fn serve(
    ctx: SessionContext,
    conn: quinn::Connection,
    presence: Arc<Presence>,
    send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>,
    meter: Option<Arc<ClientMeter>>,
) {
    let client = presence.body.client;
    let SessionContext {
        msg,
        metrics,
        shutdown,
        tasks,
    } = ctx;
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let (answers, answers_rx) = mpsc::channel(SESSION_ANSWERS);
    let mut writer = tasks.spawn(write_prioritized(send, answers_rx, rx).in_current_span());
    let out = SessionOut {
        client,
        presence: Arc::new(std::sync::Mutex::new(Presence::clone(&presence))),
        serial: msg.serial(),
        conn,
        tx: tx.clone(),
        answers,
        meter: meter.clone(),
    };
    let waits = msg.open_session(out.clone());
    debug!("session open");
    let sync = tasks.spawn(sync(msg.clone(), client, waits, tx.clone()).in_current_span());

    let end: Result<(), FrameError> = loop {
        tokio::select! {
            frame = frames.next() => match next_frame(frame) {
                Ok(Some(SessionFrame::Send(env))) => {
                    metrics.messages_received.inc();
                    if env.check().is_err() {
                        msg.refuse(&out, env.id, Reject::TooLarge);
                        continue;
                    }
                    if let Some(m) = &meter {
                        // The sender pays for sending and for the delivery.
                        let bytes = top_billing::sent_message_bytes(env.sealed.len());
                        if !m.carry(Service::Msg, bytes, m.pay_wait).await {
                            metrics.unpaid_refusals.inc();
                            msg.refuse(&out, env.id, Reject::PaymentRequired);
                            continue;
                        }
                    }
                    msg.send(env, &out);
                }
                Ok(Some(SessionFrame::Ack { id })) => msg.ack(client, id),
                Ok(Some(SessionFrame::Present(p))) => {
                    if msg.refresh_presence(&out, p).is_err() {
                        break Err(FrameError::Unexpected("bad presence statement"));
                    }
                }
                Ok(Some(_)) => break Err(FrameError::Unexpected("relay-to-client frame sent by client")),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    if let Err(e) = end {
        metrics.bad_frames.inc();
        debug!("closing session: {e}");
        frames.get_mut().stop(1u32.into()).ok();
    }
    sync.abort();
    msg.close_session(client, out.serial);
    drop(tx);
    drop(out);
    // Answers still queued get a moment to leave; the writer must not outlive the session.
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    debug!("session closed");
}

/// Pushes this relay's stored messages, waits for linked relays to push theirs, then says
/// `Synced`.
async fn sync(
    msg: Arc<Messaging>,
    client: AccountId,
    waits: Vec<oneshot::Receiver<()>>,
    tx: mpsc::Sender<SessionFrame>,
) {
    msg.push_mailbox(client).await;
    let all = futures::future::join_all(waits);
    if tokio::time::timeout(SYNC_TIMEOUT, all).await.is_err() {
        debug!("some linked relays did not finish their mailbox push in time");
        msg.forget_sync();
    }
    tx.send(SessionFrame::Synced).await.ok();
}
