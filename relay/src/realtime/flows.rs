//! The relay's table of realtime flows: per connection, the flow ids this relay receives
//! datagrams under and where each goes. One reader task per connection (for the connection's
//! life) owns that connection's routes, so forwarding takes no lock; the table is locked only to
//! open and close pipes. A connection's datagrams belong either to realtime flows or to a VPN
//! tunnel, never both ([`Flows::claim_for_vpn`]).
//!
//! Per datagram, cheapest check first: flow id known on this connection, the queue towards the
//! next hop below [`QUEUE_LIMIT`] (a burst is dropped here, counted, not
//! queued for seconds), the sender's credit (exactly the datagram's bytes); then the flow id is
//! rewritten into an arena (one allocation per [`ARENA`] bytes, not per datagram) and sent.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::FutureExt;
use tokio::sync::mpsc;
use top_billing::Service;
use top_proto::net::path_mtu::MtuNudge;
use top_proto::realtime::{flow_of, set_flow};
use top_proto::tls::DATAGRAM_SEND_BUFFER;

use crate::billing::meter::ClientMeter;
use crate::node::core::Core;

/// Realtime pipes one client connection may hold.
pub const MAX_FLOWS_PER_CLIENT: usize = 64;
/// Realtime pipes one link may carry.
pub const MAX_FLOWS_PER_LINK: usize = 4096;
/// Flow ids this relay holds at once (a pipe holds two).
pub const MAX_FLOWS: usize = 65_536;
/// Bytes queued towards one connection above which realtime datagrams are dropped: about
/// 100 ms at 10 Mbit/s, a fraction of a millisecond on a fast path.
pub const QUEUE_LIMIT: usize = 128 * 1024;
/// Bytes of rewritten datagrams allocated at once.
const ARENA: usize = 64 * 1024;
/// Datagrams read in one go before the reader looks at its commands again.
const BATCH: usize = 64;

/// Why a flow id could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The connection holds as many realtime pipes as it may.
    #[error("too many realtime pipes on this connection")]
    ConnectionFull,
    /// The relay carries as many realtime pipes as it can.
    #[error("this relay carries as many realtime pipes as it can")]
    RelayFull,
    /// The connection's datagrams carry a VPN tunnel.
    #[error("that connection's datagrams carry a VPN tunnel")]
    Tunnel,
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
}

/// Where datagrams under one flow id go, and who pays for carrying them.
pub struct Route {
    /// The next hop.
    pub to: quinn::Connection,
    /// The flow id the next hop asked for.
    pub flow: u32,
    /// The sender, where this relay bills it: datagrams are paid by whoever sends them.
    pub payer: Option<Arc<ClientMeter>>,
}

enum Command {
    Add(u32, Route),
    Remove(u32),
}

/// One connection's reserved ids and its reader's command queue.
struct ConnFlows {
    generation: u64,
    ids: HashSet<u32>,
    next: u32,
    commands: mpsc::UnboundedSender<Command>,
}

/// What the table's lock guards.
#[derive(Default)]
struct Table {
    conns: HashMap<usize, ConnFlows>,
    /// Connections whose datagrams carry a VPN tunnel (claims per connection).
    tunnels: HashMap<usize, usize>,
    /// Flow ids reserved, on every connection.
    reserved: usize,
}

/// Every connection's realtime flows.
pub struct Flows {
    core: Arc<Core>,
    table: Mutex<Table>,
    generations: AtomicU64,
}

/// A flow id reserved on a connection; dropping it closes the flow.
pub struct FlowId {
    flows: Arc<Flows>,
    conn: usize,
    generation: u64,
    id: u32,
}

impl FlowId {
    /// The id datagrams of this flow carry on the way in.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for FlowId {
    fn drop(&mut self) {
        self.flows.release(self);
    }
}

/// A connection's datagrams held for a VPN tunnel; released when dropped.
pub struct TunnelClaim {
    flows: Arc<Flows>,
    conn: usize,
}

impl Drop for TunnelClaim {
    fn drop(&mut self) {
        let mut table = crate::util::lock(&self.flows.table);
        if let Some(n) = table.tunnels.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                table.tunnels.remove(&self.conn);
            }
        }
    }
}

impl Flows {
    /// An empty table.
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            table: Mutex::default(),
            generations: AtomicU64::new(0),
        }
    }

    /// The node's core (metrics, shutdown).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Holds `conn`'s datagrams for a VPN tunnel (or a 2-hop route through it); `None` when
    /// realtime pipes use them.
    pub fn claim_for_vpn(self: &Arc<Self>, conn: &quinn::Connection) -> Option<TunnelClaim> {
        let mut table = crate::util::lock(&self.table);
        if table.conns.contains_key(&conn.stable_id()) {
            return None;
        }
        *table.tunnels.entry(conn.stable_id()).or_default() += 1;
        Some(TunnelClaim {
            flows: self.clone(),
            conn: conn.stable_id(),
        })
    }

    /// Flow ids reserved now, on every connection.
    pub fn reserved(&self) -> usize {
        crate::util::lock(&self.table).reserved
    }

    /// Reserves a flow id on `conn` (at most `limit` there), starting its reader if needed.
    pub fn reserve(
        self: &Arc<Self>,
        conn: &quinn::Connection,
        limit: usize,
    ) -> Result<FlowId, FlowError> {
        if conn.close_reason().is_some() {
            return Err(FlowError::Closed);
        }
        let key = conn.stable_id();
        let mut table = crate::util::lock(&self.table);
        if table.tunnels.contains_key(&key) {
            return Err(FlowError::Tunnel);
        }
        if table.reserved >= MAX_FLOWS {
            return Err(FlowError::RelayFull);
        }
        let entry = table.conns.entry(key).or_insert_with(|| {
            let (commands, rx) = mpsc::unbounded_channel();
            let generation = self.generations.fetch_add(1, Ordering::Relaxed);
            let reader = read_loop(self.clone(), generation, conn.clone(), rx);
            self.core.tasks.spawn(reader);
            ConnFlows {
                generation,
                ids: HashSet::new(),
                next: 1,
                commands,
            }
        });
        if entry.ids.len() >= limit {
            return Err(FlowError::ConnectionFull);
        }
        // Ids are never reused on a connection (a stale datagram can never reach a new flow).
        let id = entry.next;
        entry.next = entry.next.checked_add(1).ok_or(FlowError::ConnectionFull)?;
        entry.ids.insert(id);
        let generation = entry.generation;
        table.reserved += 1;
        Ok(FlowId {
            flows: self.clone(),
            conn: key,
            generation,
            id,
        })
    }

    /// Sends datagrams arriving under `id` along `route`.
    pub fn route(&self, id: &FlowId, route: Route) {
        let table = crate::util::lock(&self.table);
        if let Some(c) = table
            .conns
            .get(&id.conn)
            .filter(|c| c.generation == id.generation)
        {
            c.commands.send(Command::Add(id.id, route)).ok();
        }
    }

    fn release(&self, id: &FlowId) {
        let mut table = crate::util::lock(&self.table);
        let Some(c) = table
            .conns
            .get_mut(&id.conn)
            .filter(|c| c.generation == id.generation)
        else {
            return;
        };
        if c.ids.remove(&id.id) {
            c.commands.send(Command::Remove(id.id)).ok();
            table.reserved = table.reserved.saturating_sub(1);
        }
    }

    /// The reader of a connection ended (it closed): forget its flows.
    fn forget(&self, key: usize, generation: u64) {
        let mut table = crate::util::lock(&self.table);
        if let Some(c) = table.conns.get(&key).filter(|c| c.generation == generation) {
            let held = c.ids.len();
            table.conns.remove(&key);
            table.reserved = table.reserved.saturating_sub(held);
        }
    }
}

/// Forwards `conn`'s datagrams by flow id until the connection closes.
async fn read_loop(
    flows: Arc<Flows>,
    generation: u64,
    conn: quinn::Connection,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    serve_datagrams(&flows.core, &conn, &mut commands).await;
    flows.forget(conn.stable_id(), generation);
}

async fn serve_datagrams(
    core: &Core,
    conn: &quinn::Connection,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) {
    let metrics = &core.metrics.realtime;
    let mut routes: HashMap<u32, (Route, MtuNudge)> = HashMap::new();
    let mut arena = BytesMut::with_capacity(ARENA);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Add(id, route)) => {
                    routes.insert(id, (route, MtuNudge::default()));
                }
                Some(Command::Remove(id)) => {
                    routes.remove(&id);
                }
                None => return,
            },
            datagram = conn.read_datagram() => {
                let Ok(datagram) = datagram else { return };
                forward(metrics, &mut routes, &mut arena, &datagram);
                for _ in 1..BATCH {
                    let Some(Ok(datagram)) = conn.read_datagram().now_or_never() else {
                        break;
                    };
                    forward(metrics, &mut routes, &mut arena, &datagram);
                }
            }
            _ = core.shutdown.cancelled() => return,
        }
    }
}

/// Forwards one datagram along its route, or drops it (counted).
fn forward(
    metrics: &super::metrics::RealtimeMetrics,
    routes: &mut HashMap<u32, (Route, MtuNudge)>,
    arena: &mut BytesMut,
    datagram: &[u8],
) {
    let Some(flow) = flow_of(datagram) else {
        metrics.dropped_malformed.inc();
        return;
    };
    let Some((route, nudge)) = routes.get_mut(&flow) else {
        metrics.dropped_unknown.inc();
        return;
    };
    let len = datagram.len();
    // (Too large for the next hop: `send_datagram` says so, counted below.)
    let queued = DATAGRAM_SEND_BUFFER.saturating_sub(route.to.datagram_send_buffer_space());
    if queued + len > QUEUE_LIMIT {
        metrics.dropped_queue.inc();
        return;
    }
    if let Some(payer) = &route.payer
        && !payer.try_carry(Service::Pipe, len as u64)
    {
        metrics.dropped_unpaid.inc();
        return;
    }
    if arena.capacity() < len {
        arena.reserve(ARENA);
    }
    arena.extend_from_slice(datagram);
    set_flow(arena, route.flow);
    match route.to.send_datagram(arena.split().freeze()) {
        Ok(()) => {
            metrics.forwarded.inc();
        }
        Err(quinn::SendDatagramError::TooLarge) => {
            metrics.dropped_too_large.inc();
            nudge.refused(&route.to);
        }
        Err(_) => {}
    }
}
