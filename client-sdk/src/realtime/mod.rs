//! Realtime pipes: unreliable, unordered, end-to-end encrypted datagrams between two peers
//! through their relays, for voice, video and games. A datagram lost is lost (never
//! retransmitted); replays and forgeries are refused by the receiver's window and keys; a burst
//! larger than the path is dropped at the sender's queue (counted), not queued for seconds.
//! Each side pays its relay for the datagrams it sends (counted here as they are queued).
//!
//! Sending and receiving use caller-owned buffers: no allocation per datagram (the sender's
//! datagrams come from an arena, one allocation per [`ARENA`] bytes).

mod demux;
mod open;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use top_billing::Service;
use top_proto::id::AccountId;
use top_proto::net::path_mtu::MtuNudge;
use top_proto::realtime::{OVERHEAD, RealtimeOpener, RealtimeSealer};
use top_proto::tls::DATAGRAM_SEND_BUFFER;
use top_proto::vpn::cipher::VpnCryptoError;

use crate::error::{ClientError, RealtimeError};
use crate::payment::UsageCounter;

pub(crate) use demux::Demux;
pub(crate) use open::{Side, accept, open};

/// Bytes queued for sending on the connection above which a new datagram is dropped: at most a
/// few milliseconds of a fast path, about 100 ms at 10 Mbit/s.
pub const SEND_QUEUE_LIMIT: usize = 128 * 1024;
/// Bytes of sealed datagrams allocated at once.
const ARENA: usize = 64 * 1024;

/// What became of a datagram handed to [`RealtimeSender::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// On its way.
    Queued,
    /// Dropped: the queue towards the relay was full (the path is slower than the sender).
    Dropped,
}

/// Counters of one realtime pipe, both directions.
#[derive(Debug, Default)]
pub struct RealtimeStats {
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams dropped at this sender's full queue.
    pub dropped_queue: AtomicU64,
    /// Datagrams the connection refused as too large (the path shrank).
    pub dropped_too_large: AtomicU64,
    /// Datagrams received and authenticated.
    pub received: AtomicU64,
    /// Datagrams refused as replays or older than the replay window.
    pub dropped_replay: AtomicU64,
    /// Datagrams that failed authentication or were malformed.
    pub dropped_forged: AtomicU64,
    /// Datagrams dropped because this side's reader was behind.
    pub dropped_inbox: AtomicU64,
}

/// A snapshot of [`RealtimeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealtimeCounts {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams dropped at this sender's full queue.
    pub dropped_queue: u64,
    /// Datagrams refused as too large.
    pub dropped_too_large: u64,
    /// Datagrams received and authenticated.
    pub received: u64,
    /// Replays and stale datagrams refused.
    pub dropped_replay: u64,
    /// Forged or malformed datagrams refused.
    pub dropped_forged: u64,
    /// Datagrams dropped because the reader was behind.
    pub dropped_inbox: u64,
}

impl RealtimeStats {
    /// The counters now.
    pub fn snapshot(&self) -> RealtimeCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RealtimeCounts {
            sent: get(&self.sent),
            dropped_queue: get(&self.dropped_queue),
            dropped_too_large: get(&self.dropped_too_large),
            received: get(&self.received),
            dropped_replay: get(&self.dropped_replay),
            dropped_forged: get(&self.dropped_forged),
            dropped_inbox: get(&self.dropped_inbox),
        }
    }
}

/// An open realtime pipe. [`RealtimePipe::split`] gives halves for two tasks.
pub struct RealtimePipe {
    sender: RealtimeSender,
    receiver: RealtimeReceiver,
}

/// The sending half: seals each payload into one datagram.
pub struct RealtimeSender {
    conn: quinn::Connection,
    sealer: RealtimeSealer,
    flow: u32,
    max_payload: usize,
    arena: BytesMut,
    usage: Arc<UsageCounter>,
    stats: Arc<RealtimeStats>,
    /// The pipe's stream, shared by both halves: finishing it (or dropping both halves) closes
    /// the pipe at every hop.
    control: Arc<std::sync::Mutex<quinn::SendStream>>,
    /// Set once the pipe closed (the peer or a relay ended it).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes the connection while datagrams are refused as too large (see `path_mtu`).
    nudge: MtuNudge,
}

/// The receiving half: opens datagrams into the caller's buffer.
pub struct RealtimeReceiver {
    peer: AccountId,
    opener: RealtimeOpener,
    inbox: mpsc::Receiver<Bytes>,
    stats: Arc<RealtimeStats>,
    _slot: demux::FlowSlot,
    /// Keeps the pipe open while this half lives (a receive-only peer drops its sender).
    _control: Arc<std::sync::Mutex<quinn::SendStream>>,
}

impl RealtimePipe {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.receiver.peer
    }

    /// Largest payload one datagram carries on this path.
    pub fn max_payload(&self) -> usize {
        self.sender.max_payload
    }

    /// This pipe's counters.
    pub fn stats(&self) -> RealtimeCounts {
        self.sender.stats.snapshot()
    }

    /// Sends `payload` as one datagram now (never waits); see [`RealtimeSender::send`].
    pub fn send(&mut self, payload: &[u8]) -> Result<Sent, ClientError> {
        self.sender.send(payload)
    }

    /// Receives the next payload into `out`; see [`RealtimeReceiver::recv`].
    pub async fn recv(&mut self, out: &mut [u8]) -> Result<Option<usize>, ClientError> {
        self.receiver.recv(out).await
    }

    /// Splits into halves usable from different tasks.
    pub fn split(self) -> (RealtimeSender, RealtimeReceiver) {
        (self.sender, self.receiver)
    }
}

impl RealtimeSender {
    /// Largest payload one datagram carries on this path.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// This pipe's counters.
    pub fn stats(&self) -> RealtimeCounts {
        self.stats.snapshot()
    }

    /// Sends `payload` as one datagram now, without waiting: [`Sent::Dropped`] when the queue
    /// towards the relay is full. Payloads larger than [`RealtimeSender::max_payload`] fail.
    pub fn send(&mut self, payload: &[u8]) -> Result<Sent, ClientError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ClientError::Closed);
        }
        if payload.len() > self.max_payload {
            let (len, max) = (payload.len(), self.max_payload);
            return Err(RealtimeError::TooLarge { len, max }.into());
        }
        let len = payload.len() + OVERHEAD;
        let queued = DATAGRAM_SEND_BUFFER.saturating_sub(self.conn.datagram_send_buffer_space());
        if queued + len > SEND_QUEUE_LIMIT {
            self.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
            return Ok(Sent::Dropped);
        }
        if self.arena.capacity() < len {
            self.arena.reserve(ARENA.max(len));
        }
        self.arena.resize(len, 0);
        let n = self
            .sealer
            .seal(self.flow, payload, &mut self.arena)
            .map_err(RealtimeError::from)?;
        self.arena.truncate(n);
        match self.conn.send_datagram(self.arena.split().freeze()) {
            Ok(()) => {}
            Err(quinn::SendDatagramError::TooLarge) => {
                self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
                self.nudge.refused(&self.conn);
                return Ok(Sent::Dropped);
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => return Err(e.into()),
            Err(_) => return Err(RealtimeError::NoDatagrams.into()),
        }
        self.usage.count(Service::Pipe, n);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Sent::Queued)
    }

    /// Closes the pipe for both peers (dropping both halves does too).
    pub fn close(self) {
        if let Ok(mut control) = self.control.lock() {
            control.finish().ok();
        }
    }
}

impl RealtimeReceiver {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.peer
    }

    /// This pipe's counters.
    pub fn stats(&self) -> RealtimeCounts {
        self.stats.snapshot()
    }

    /// Waits for the next authentic payload and decrypts it into `out` (make it
    /// [`RealtimePipe::max_payload`] long: a datagram that does not fit is dropped); returns
    /// its length, or `None` once the pipe closed. Replays and forgeries are dropped (counted)
    /// and never returned. Receiving costs nothing: datagrams are paid by their sender.
    pub async fn recv(&mut self, out: &mut [u8]) -> Result<Option<usize>, ClientError> {
        loop {
            let Some(datagram) = self.inbox.recv().await else {
                return Ok(None);
            };
            match self.opener.open(&datagram, out) {
                Ok(n) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(n));
                }
                Err(VpnCryptoError::Replay) => {
                    self.stats.dropped_replay.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.stats.dropped_forged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
