//! A client's connection to its relay: sealed messages in and out, pipes.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{
    Envelope, FrameCodec, MsgId, Open, Outcome, Reject, SessionFrame, encode_frame,
};
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::net::dial::dial;
use top_proto::net::writer::write_frames;
use top_proto::presence::Presence;
use top_proto::seal::{Opener, SealedContent, Sealer};

use crate::error::ClientError;
use crate::payment::{BillingOptions, BillingState, UsageCounter};
use crate::pipe::Pipe;
use crate::realtime::{Demux, RealtimePipe};
use crate::sending::{Sending, Waiters};
use crate::wallet::Wallet;

/// Default time a message waits in mailboxes for an offline recipient: 7 days.
pub const DEFAULT_TTL_SECS: u32 = 7 * 24 * 3600;
/// Received message ids remembered for de-duplication.
const DEDUP_WINDOW: usize = 65_536;

/// A message received from a peer, authenticated and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's message id.
    pub id: MsgId,
    /// The authenticated sender.
    pub from: AccountId,
    /// Sender's clock at sending, ms since the Unix epoch.
    pub sent_ms: u64,
    /// The application's bytes.
    pub body: Vec<u8>,
}

/// A connection to a relay on behalf of one identity.
///
/// Messages sent are sealed end to end with Noise; the relay delivers them at once if the peer is
/// connected anywhere in the network, or keeps them in the peer's mailbox. Received messages must
/// be acknowledged with [`Client::ack`]; unacknowledged ones are delivered again later.
pub struct Client {
    identity: Identity,
    relay: RelayAddr,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    tx: mpsc::Sender<SessionFrame>,
    sealer: Mutex<Sealer>,
    waiters: Waiters,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    pipes: tokio::sync::Mutex<mpsc::Receiver<Pipe>>,
    realtime: tokio::sync::Mutex<mpsc::Receiver<RealtimePipe>>,
    demux: Demux,
    synced: watch::Receiver<bool>,
    ttl_secs: u32,
    writer: tokio::task::JoinHandle<Result<(), top_proto::frame::FrameError>>,
    reader: tokio::task::JoinHandle<()>,
    usage: Arc<UsageCounter>,
    billing: Option<BillingState>,
}

/// How a client connects.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// How to pay relays that charge.
    pub billing: BillingOptions,
}

impl Client {
    /// Connects to the relay at `relay` as `identity` and opens the messaging session; pays a
    /// relay that charges from this identity's deposit (a channel locking 1 TOP).
    pub async fn connect(relay: &RelayAddr, identity: Identity) -> Result<Self, ClientError> {
        Self::connect_with(relay, identity, ClientOptions::default()).await
    }

    /// [`Client::connect`] with options (channel size, a sponsoring app).
    pub async fn connect_with(
        relay: &RelayAddr,
        identity: Identity,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = top_proto::net::endpoint::client_endpoint(&relay.host_port)?;
        let conn = dial(&endpoint, &identity, relay).await?;
        let usage = Arc::new(UsageCounter::default());
        let billing =
            crate::payment::start(&conn, &identity, &options.billing, usage.clone()).await?;
        let (mut send, recv) = conn.open_bi().await?;
        // This client's signed word that it is connected to this relay, now: what lets other
        // relays hand over its messages and mailbox here.
        let presence = Presence::sign(&identity, relay.id, now_ms());
        send.write_all(&encode_frame(&Open::Session(presence))?)
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        let writer = tokio::spawn(write_frames(send, rx));
        let waiters = Waiters::default();
        let (inbox_tx, inbox) = mpsc::channel(1024);
        let (synced_tx, synced) = watch::channel(false);
        let reader = Reader {
            opener: Opener::new(identity.clone()),
            waiters: waiters.clone(),
            inbox: inbox_tx,
            acks: tx.clone(),
            synced: synced_tx,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            usage: usage.clone(),
            backlog: VecDeque::new(),
        };
        let reader = tokio::spawn(reader.run(FramedRead::new(recv, FrameCodec::default())));
        // Linked relays believe a statement for minutes only: keep it fresh while connected.
        // A weak handle: it must not keep the writer alive once the client closes.
        tokio::spawn(refresh_presence(tx.downgrade(), identity.clone(), relay.id));
        let (pipe_tx, pipes) = mpsc::channel(64);
        let (realtime_tx, realtime) = mpsc::channel(64);
        let demux = Demux::default();
        tokio::spawn(accept_pipes(
            Accepting {
                conn: conn.clone(),
                identity: identity.clone(),
                usage: usage.clone(),
                demux: demux.clone(),
            },
            pipe_tx,
            realtime_tx,
        ));
        Ok(Self {
            sealer: Mutex::new(Sealer::new(identity.clone())),
            identity,
            relay: relay.clone(),
            endpoint,
            conn,
            tx,
            waiters,
            inbox: tokio::sync::Mutex::new(inbox),
            pipes: tokio::sync::Mutex::new(pipes),
            realtime: tokio::sync::Mutex::new(realtime),
            demux,
            synced,
            ttl_secs: DEFAULT_TTL_SECS,
            writer,
            reader,
            usage,
            billing,
        })
    }

    /// The connection to the relay.
    pub(crate) fn conn(&self) -> &quinn::Connection {
        &self.conn
    }

    /// This client's identity.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// What this client counted of its own usage.
    pub(crate) fn usage_counter(&self) -> &Arc<UsageCounter> {
        &self.usage
    }

    /// The channel this session is billed to, if the relay charges.
    pub fn billing(&self) -> Option<&BillingState> {
        self.billing.as_ref()
    }

    /// Bytes this client counted per service (what the relay bills).
    pub fn usage(&self) -> top_billing::Usage {
        self.usage.snapshot()
    }

    /// The wallet of this client's identity, over this connection.
    pub async fn wallet(&self) -> Result<Wallet, ClientError> {
        Wallet::open(&self.conn, self.identity.clone()).await
    }

    /// This client's id: what peers send messages and open pipes to.
    pub fn id(&self) -> AccountId {
        self.identity.account_id()
    }

    /// The relay this client is connected to.
    pub fn relay(&self) -> &RelayAddr {
        &self.relay
    }

    /// Sets how long future messages may wait for an offline recipient.
    pub fn set_ttl(&mut self, secs: u32) {
        self.ttl_secs = secs;
    }

    /// Sends `body` to `to` and waits for the final outcome: [`Outcome::Delivered`] once the
    /// recipient acknowledged it, [`Outcome::Stored`] if it waits, on disk, in the recipient's
    /// mailbox. To stop waiting once a relay holds it durably, use [`Client::send_tracked`].
    pub async fn send(&self, to: &AccountId, body: &[u8]) -> Result<Outcome, ClientError> {
        self.send_tracked(to, body).await?.delivered().await
    }

    /// Sends `body` to `to`; returns as soon as the message is on its way, with a handle to
    /// wait for it to be accepted (held durably by a relay, which does not depend on the
    /// recipient's app) or delivered.
    pub async fn send_tracked(&self, to: &AccountId, body: &[u8]) -> Result<Sending, ClientError> {
        let id = MsgId::random();
        let content = SealedContent {
            id,
            sent_ms: now_ms(),
            body: bytes::Bytes::copy_from_slice(body),
        };
        let sealed = self
            .sealer
            .lock()
            .map_err(|_| ClientError::Closed)?
            .seal(to, &content)?;
        let len = sealed.len();
        let env = Envelope {
            id,
            to: *to,
            ttl_secs: self.ttl_secs,
            sealed: sealed.into(),
        };
        // Tracked from before it leaves (its answer may come at once); forgotten again if this
        // call is cancelled before the message is queued.
        let stage = self.waiters.register(id, len);
        let mut queued = crate::sending::Unqueued::new(&self.waiters, id);
        if self.tx.send(SessionFrame::Send(env)).await.is_err() {
            return Err(self.closed_error());
        }
        queued.sent();
        // Sending and the delivery: the sender pays for both.
        self.usage
            .msg(top_billing::sent_message_bytes(len) as usize);
        Ok(Sending::new(id, stage, self.conn.clone()))
    }

    fn closed_error(&self) -> ClientError {
        match self.conn.close_reason() {
            Some(e) => ClientError::Connection(e),
            None => ClientError::Closed,
        }
    }

    /// The next message for this client; `None` when the connection is gone.
    pub async fn recv(&self) -> Option<Message> {
        self.inbox.lock().await.recv().await
    }

    /// Acknowledges a message: relays delete their copies and tell the sender it was delivered.
    pub async fn ack(&self, msg: &Message) -> Result<(), ClientError> {
        self.tx
            .send(SessionFrame::Ack { id: msg.id })
            .await
            .map_err(|_| self.closed_error())
    }

    /// Waits until every message stored for this client when it connected has been pushed.
    pub async fn synced(&self) -> Result<(), ClientError> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|s| *s)
            .await
            .map(|_| ())
            .map_err(|_| self.closed_error())
    }

    /// Opens an end-to-end encrypted pipe to `peer` (who must be connected to some relay).
    pub async fn open_pipe(&self, peer: &AccountId) -> Result<Pipe, ClientError> {
        Ok(Pipe::open(&self.conn, &self.identity, *peer)
            .await?
            .metered(&self.usage))
    }

    /// Waits for a peer to open a pipe to this client.
    pub async fn accept_pipe(&self) -> Option<Pipe> {
        self.pipes.lock().await.recv().await
    }

    /// Opens an end-to-end encrypted realtime (datagram) pipe to `peer`: unreliable and
    /// unordered, for voice, video and games; metered and paid like pipes.
    pub async fn open_realtime_pipe(&self, peer: &AccountId) -> Result<RealtimePipe, ClientError> {
        crate::realtime::open(self.realtime_side(), *peer).await
    }

    /// Waits for a peer to open a realtime pipe to this client.
    pub async fn accept_realtime_pipe(&self) -> Option<RealtimePipe> {
        self.realtime.lock().await.recv().await
    }

    fn realtime_side(&self) -> crate::realtime::Side<'_> {
        crate::realtime::Side {
            conn: &self.conn,
            demux: &self.demux,
            identity: &self.identity,
            usage: &self.usage,
        }
    }

    /// Closes the connection after every queued frame (acknowledgements included) is written.
    pub async fn close(self) {
        let Self {
            tx,
            conn,
            endpoint,
            writer,
            reader,
            ..
        } = self;
        // The reader holds the other sender (for acks); once both are gone the writer drains,
        // finishes the stream and ends.
        reader.abort();
        reader.await.ok();
        drop(tx);
        writer.await.ok();
        conn.close(0u32.into(), b"bye");
        endpoint.wait_idle().await;
    }
}

/// Re-signs this client's presence statement every few minutes until the session ends.
async fn refresh_presence(
    tx: mpsc::WeakSender<SessionFrame>,
    identity: Identity,
    relay: top_proto::id::RelayId,
) {
    let every = std::time::Duration::from_millis(top_proto::presence::PRESENCE_REFRESH_MS);
    loop {
        tokio::time::sleep(every).await;
        let Some(tx) = tx.upgrade() else { return };
        let fresh = Presence::sign(&identity, relay, now_ms());
        if tx.send(SessionFrame::Present(fresh)).await.is_err() {
            return;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Reader {
    opener: Opener,
    waiters: Waiters,
    inbox: mpsc::Sender<Message>,
    acks: mpsc::Sender<SessionFrame>,
    synced: watch::Sender<bool>,
    seen: HashSet<MsgId>,
    seen_order: VecDeque<MsgId>,
    usage: Arc<UsageCounter>,
    /// Messages received while the app is not reading, in order; answers keep being read
    /// meanwhile (the relay bounds what it hands over unacknowledged).
    backlog: VecDeque<Message>,
}

/// Messages held while the app does not read, beyond the inbox; past it the reader waits for
/// the app (and answers wait with it).
const MAX_BACKLOG: usize = 16_384;

impl Reader {
    async fn run(mut self, mut frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>) {
        loop {
            let frame = tokio::select! {
                biased;
                room = self.inbox.reserve(), if !self.backlog.is_empty() => {
                    let (Ok(room), Some(message)) = (room, self.backlog.pop_front()) else {
                        break;
                    };
                    room.send(message);
                    continue;
                }
                frame = frames.next() => frame,
            };
            let Some(frame) = frame else { break };
            let frame = match frame {
                Ok(frame) => frame,
                Err(top_proto::frame::FrameError::Io(e)) => {
                    tracing::debug!("session ended: {e}");
                    break;
                }
                Err(e) => {
                    tracing::warn!("relay sent a bad frame, closing session: {e}");
                    break;
                }
            };
            match frame {
                SessionFrame::Accepted { id, outcome } => self.answer(id, Ok(outcome)),
                SessionFrame::Rejected { id, reason } => self.answer(id, Err(reason)),
                SessionFrame::Deliver(env) => {
                    if self.deliver(env).await.is_err() {
                        break;
                    }
                }
                SessionFrame::Synced => {
                    self.synced.send_replace(true);
                }
                SessionFrame::Send(_) | SessionFrame::Ack { .. } | SessionFrame::Present(_) => {
                    tracing::warn!("relay sent a client-to-relay frame; closing session");
                    break;
                }
            }
        }
        // Every message without a final answer fails with `Closed`; then what was received
        // and not yet read still reaches the app.
        self.waiters.close_all();
        for message in std::mem::take(&mut self.backlog) {
            if self.inbox.send(message).await.is_err() {
                break;
            }
        }
    }

    fn answer(&self, id: MsgId, result: Result<Outcome, Reject>) {
        if let Some(bytes) = self.waiters.answer(id, result) {
            // Stored: the sender pays for each copy kept and its later delivery.
            let stored = top_billing::stored_message_usage(bytes);
            self.usage.msg(stored.msg as usize);
            self.usage.mailbox(stored.mailbox as usize);
        }
    }

    async fn deliver(&mut self, env: Envelope) -> Result<(), ()> {
        // Received messages cost this client nothing: their senders paid.
        let ack = SessionFrame::Ack { id: env.id };
        if self.seen.contains(&env.id) {
            return self.acks.send(ack).await.map_err(|_| ());
        }
        let message = match self.opener.open(&env.sealed) {
            Ok((from, content)) if content.id == env.id && env.to == self.opener_id() => Message {
                id: env.id,
                from,
                sent_ms: content.sent_ms,
                body: content.body.into(),
            },
            _ => {
                // Forged, corrupted or misrouted: nobody can ever read it, so drop it for good.
                tracing::warn!("dropping a message that does not open (id {:?})", env.id);
                return self.acks.send(ack).await.map_err(|_| ());
            }
        };
        self.remember(env.id);
        self.hand_to_app(message).await
    }

    /// Queues a message for the app without waiting, unless the backlog is full.
    async fn hand_to_app(&mut self, message: Message) -> Result<(), ()> {
        if self.backlog.is_empty() {
            match self.inbox.try_send(message) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                Err(mpsc::error::TrySendError::Full(message)) => {
                    self.backlog.push_back(message);
                    return Ok(());
                }
            }
        }
        while self.backlog.len() >= MAX_BACKLOG {
            let Some(first) = self.backlog.pop_front() else {
                break;
            };
            self.inbox.send(first).await.map_err(|_| ())?;
        }
        self.backlog.push_back(message);
        Ok(())
    }

    fn opener_id(&self) -> AccountId {
        self.opener.identity().account_id()
    }

    fn remember(&mut self, id: MsgId) {
        if self.seen.insert(id) {
            self.seen_order.push_back(id);
            if self.seen_order.len() > DEDUP_WINDOW
                && let Some(old) = self.seen_order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }
}

/// What answering pipes on a connection needs.
struct Accepting {
    conn: quinn::Connection,
    identity: Identity,
    usage: Arc<UsageCounter>,
    demux: Demux,
}

async fn accept_pipes(
    accepting: Accepting,
    pipes: mpsc::Sender<Pipe>,
    realtime: mpsc::Sender<RealtimePipe>,
) {
    let accepting = Arc::new(accepting);
    while let Ok((send, recv)) = accepting.conn.accept_bi().await {
        let accepting = accepting.clone();
        let (pipes, realtime) = (pipes.clone(), realtime.clone());
        tokio::spawn(async move {
            let mut frames = FramedRead::new(recv, FrameCodec::<Open>::new(64));
            let Accepting {
                conn,
                identity,
                usage,
                demux,
            } = &*accepting;
            match frames.next().await {
                Some(Ok(Open::IncomingPipe)) => {
                    match Pipe::accept(identity, send, Pipe::records_after_open(frames)).await {
                        Ok(pipe) => {
                            pipes.send(pipe.metered(usage)).await.ok();
                        }
                        Err(e) => tracing::warn!("incoming pipe failed: {e}"),
                    }
                }
                Some(Ok(Open::IncomingRealtime { flow, max_datagram })) => {
                    let side = crate::realtime::Side {
                        conn,
                        demux,
                        identity,
                        usage,
                    };
                    match crate::realtime::accept(side, (flow, max_datagram), send, frames).await {
                        // Unanswered pipes never pile up: with the app behind, the pipe closes.
                        Ok(pipe) => {
                            realtime.try_send(pipe).ok();
                        }
                        Err(e) => tracing::warn!("incoming realtime pipe failed: {e}"),
                    }
                }
                _ => {}
            }
        });
    }
}
