//! A client's messaging session: routes what it sends, delivers what it receives.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use top_proto::frame::{FrameCodec, FrameError, LinkFrame, Reject, SessionFrame, next_frame};
use top_proto::id::AccountId;
use tracing::{Instrument, debug, info_span};

use crate::billing::ClientMeter;
use crate::delivery::{
    fail_all, fail_stale, finish, move_inflight, push_mailbox, request_push, route, send_or_spawn,
    take,
};
use crate::state::{Origin, Pending, SessionHandle, Shared};
use top_billing::Service;
use top_proto::writer::write_frames;

/// Frames queued towards one client before deliveries spill into its mailbox.
const SESSION_QUEUE: usize = 2048;
/// A delivery not acknowledged in this time is moved to the mailbox.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session waits for linked relays to push stored messages before `Synced`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one client's messaging stream until it closes.
pub async fn run_session(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    client: AccountId,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>,
    meter: Option<Arc<ClientMeter>>,
) {
    let span = info_span!("session", client = %client.short());
    serve(shared, conn, client, send, frames, meter)
        .instrument(span)
        .await
}

async fn serve(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    client: AccountId,
    send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>,
    meter: Option<Arc<ClientMeter>>,
) {
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let writer = tokio::spawn(write_frames(send, rx).in_current_span());
    let handle = SessionHandle {
        no: shared.next_no(),
        conn,
        tx: tx.clone(),
        inflight: Default::default(),
        meter: meter.clone(),
    };
    if let Some(replaced) = shared.add_session(client, handle.clone()) {
        // Before this session syncs: what the old one holds unacknowledged is offered here.
        move_inflight(&shared, &replaced.inflight, &handle);
    }
    debug!("session open");
    let sync = shared
        .tasks
        .spawn(sync_mailboxes(shared.clone(), client, tx.clone()).in_current_span());

    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let end: Result<(), FrameError> = loop {
        tokio::select! {
            frame = frames.next() => match next_frame(frame) {
                Ok(Some(SessionFrame::Send(env))) => {
                    shared.metrics.messages_received.inc();
                    let origin = Origin::Sender(tx.clone(), meter.clone());
                    if env.check().is_err() {
                        finish(&shared, Pending::new(env, origin), Err(Reject::TooLarge));
                        continue;
                    }
                    if let Some(m) = &meter {
                        let bytes = env.sealed.len() as u64;
                        if !m.carry(Service::Msg, bytes, m.pay_wait).await {
                            shared.metrics.unpaid_refusals.inc();
                            finish(&shared, Pending::new(env, origin), Err(Reject::PaymentRequired));
                            continue;
                        }
                        shared.metrics.billed_bytes.inc_by(bytes);
                    }
                    route(&shared, env, origin);
                }
                Ok(Some(SessionFrame::Ack { id })) => {
                    let mut acked = take(&handle.inflight, &id);
                    if acked.is_empty() {
                        // Moved to the client's newer session, but acknowledged here.
                        if let Some(newer) = shared.session(&client).filter(|s| s.no != handle.no) {
                            acked = take(&newer.inflight, &id);
                        }
                    }
                    if !acked.is_empty() {
                        shared.metrics.messages_delivered.inc();
                    }
                    if let Some(first) = acked.first() {
                        shared.delivered.record(&first.env);
                    }
                    for pending in acked {
                        finish(&shared, pending, Ok(top_proto::frame::Outcome::Delivered));
                    }
                }
                Ok(Some(_)) => break Err(FrameError::Unexpected("relay-to-client frame sent by client")),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = sweep.tick() => fail_stale(&shared, &handle.inflight, ACK_TIMEOUT),
            _ = shared.shutdown.cancelled() => break Ok(()),
        }
    };
    if let Err(e) = end {
        shared.metrics.bad_frames.inc();
        debug!("closing session: {e}");
        frames.get_mut().stop(1u32.into()).ok();
    }
    sync.abort();
    let last = shared.remove_session(&client, handle.no);
    if last {
        for (_, link) in shared.linked() {
            send_or_spawn(
                &link.tx,
                LinkFrame::Presence {
                    client,
                    online: false,
                },
            );
        }
    }
    fail_all(&shared, &handle.inflight);
    if !last {
        // Mailbox messages this session still held go to the client's newer session.
        request_push(&shared, client);
    }
    drop(tx);
    drop(handle);
    // Answers still queued get a moment to leave; the writer must not outlive the session.
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    debug!("session closed");
}

/// Pushes this relay's stored messages, asks linked relays for theirs, then says `Synced`.
async fn sync_mailboxes(shared: Arc<Shared>, client: AccountId, tx: mpsc::Sender<SessionFrame>) {
    let mut waits = Vec::new();
    for (relay, link) in shared.linked() {
        waits.push(shared.wait_mailbox_done(client, relay));
        send_or_spawn(
            &link.tx,
            LinkFrame::Presence {
                client,
                online: true,
            },
        );
    }
    push_mailbox(&shared, client).await;
    let all = futures::future::join_all(waits);
    if tokio::time::timeout(SYNC_TIMEOUT, all).await.is_err() {
        debug!("some linked relays did not finish their mailbox push in time");
    }
    tx.send(SessionFrame::Synced).await.ok();
}
