//! The client side of realtime flows: one reader per connection hands each datagram, by its flow
//! id, to its pipe's bounded queue (a full queue drops the datagram, counted: a slow reader gets
//! fresh datagrams, not old ones). Flow ids are this client's to choose.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;
use top_proto::realtime::flow_of;

use super::RealtimeStats;

/// Datagrams waiting for one pipe's reader.
pub const INBOX: usize = 512;
/// Realtime pipes one client connection may hold.
pub const MAX_PIPES: usize = 64;

struct Inbox {
    tx: mpsc::Sender<Bytes>,
    stats: Arc<RealtimeStats>,
}

/// The flows of one connection.
#[derive(Clone, Default)]
pub struct Demux {
    flows: Arc<Mutex<Flows>>,
}

#[derive(Default)]
struct Flows {
    inboxes: HashMap<u32, Inbox>,
    next: u32,
    reading: bool,
}

/// A flow id reserved for one pipe; dropping it stops its datagrams.
pub struct FlowSlot {
    demux: Demux,
    id: u32,
}

impl FlowSlot {
    /// The flow id the relay puts on this pipe's datagrams.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for FlowSlot {
    fn drop(&mut self) {
        self.demux.close(self.id);
    }
}

impl Demux {
    /// Reserves a flow id on `conn` for a pipe counting into `stats`; returns it and the queue
    /// of the pipe's datagrams. Starts the connection's reader on first use.
    pub fn reserve(
        &self,
        conn: &quinn::Connection,
        stats: Arc<RealtimeStats>,
    ) -> Option<(FlowSlot, mpsc::Receiver<Bytes>)> {
        let mut flows = self.flows.lock().ok()?;
        if flows.inboxes.len() >= MAX_PIPES {
            return None;
        }
        let id = loop {
            flows.next = flows.next.wrapping_add(1);
            if !flows.inboxes.contains_key(&flows.next) {
                break flows.next;
            }
        };
        let (tx, rx) = mpsc::channel(INBOX);
        flows.inboxes.insert(id, Inbox { tx, stats });
        if !std::mem::replace(&mut flows.reading, true) {
            tokio::spawn(read_loop(self.clone(), conn.clone()));
        }
        let slot = FlowSlot {
            demux: self.clone(),
            id,
        };
        Some((slot, rx))
    }

    /// Stops delivering `id`'s datagrams: its pipe's reader sees the end once drained.
    pub fn close(&self, id: u32) {
        if let Ok(mut flows) = self.flows.lock() {
            flows.inboxes.remove(&id);
        }
    }

    /// Hands one datagram to its pipe, or drops it.
    fn dispatch(&self, datagram: Bytes) {
        let Ok(mut flows) = self.flows.lock() else {
            return;
        };
        let Some(id) = flow_of(&datagram) else {
            return;
        };
        let Some(inbox) = flows.inboxes.get(&id) else {
            return;
        };
        match inbox.tx.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                inbox.stats.dropped_inbox.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                flows.inboxes.remove(&id);
            }
        }
    }
}

/// Reads `conn`'s datagrams until it closes.
async fn read_loop(demux: Demux, conn: quinn::Connection) {
    while let Ok(datagram) = conn.read_datagram().await {
        demux.dispatch(datagram);
        while let Some(Ok(datagram)) = conn.read_datagram().now_or_never() {
            demux.dispatch(datagram);
        }
    }
    if let Ok(mut flows) = demux.flows.lock() {
        flows.inboxes.clear();
        flows.reading = false;
    }
}
