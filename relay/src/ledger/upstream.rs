//! A follower's calls to its upstream's ledger API: forwarded requests over one QUIC connection
//! kept open and shared, redialled when it drops, with a bound on the calls in flight at once;
//! and the fresh connections for following blocks and fetching the genesis.
//!
//! A connection per call would cost a handshake each and trip the upstream's per-address limit
//! on new connections as soon as users submit in a burst.

use tokio::sync::{Mutex, Semaphore};
use top_proto::addr::RelayAddr;
use top_proto::frame::Open;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;

use ledger_lite::Genesis;
use ledger_lite::wire::{LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME};

use super::error::{ChainError, ChainResult};

/// Calls in flight upstream at once (below the upstream's limit of streams per connection).
const MAX_CALLS: usize = 64;

/// The shared connection to one upstream relay.
pub struct Upstream {
    addr: RelayAddr,
    identity: Identity,
    conn: Mutex<Option<(quinn::Endpoint, quinn::Connection)>>,
    calls: Semaphore,
}

impl Upstream {
    /// Calls `addr` as `identity`; nothing is dialled until the first call.
    pub fn new(addr: RelayAddr, identity: Identity) -> Self {
        Self {
            addr,
            identity,
            conn: Mutex::new(None),
            calls: Semaphore::new(MAX_CALLS),
        }
    }

    /// The upstream's address.
    pub fn addr(&self) -> &RelayAddr {
        &self.addr
    }

    /// One request on its own stream of the shared connection.
    pub async fn call(&self, req: LedgerRequest) -> ChainResult<LedgerResponse> {
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|_| ChainError::Stopped)?;
        let conn = self.connection().await?;
        let mut rpc = match LedgerRpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME).await {
            Ok(rpc) => rpc,
            Err(e) => {
                self.forget(&conn).await;
                return Err(e.into());
            }
        };
        let resp = rpc.call(req).await.map_err(ChainError::from);
        if resp.is_err() && conn.close_reason().is_some() {
            self.forget(&conn).await;
        }
        resp
    }

    /// The open connection, dialling a new one if there is none or it closed.
    async fn connection(&self) -> ChainResult<quinn::Connection> {
        let mut slot = self.conn.lock().await;
        if let Some((_, conn)) = slot.as_ref()
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let endpoint =
            top_proto::net::endpoint::client_endpoint("0.0.0.0:0").map_err(ChainError::Socket)?;
        let conn = top_proto::net::dial::dial(&endpoint, &self.identity, &self.addr).await?;
        *slot = Some((endpoint, conn.clone()));
        Ok(conn)
    }

    /// Drops `conn` if it is still the shared one (the next call redials).
    async fn forget(&self, conn: &quinn::Connection) {
        let mut slot = self.conn.lock().await;
        let same =
            |(_, c): &(quinn::Endpoint, quinn::Connection)| c.stable_id() == conn.stable_id();
        if slot.as_ref().is_some_and(same)
            && let Some((_, c)) = slot.take()
        {
            c.close(0u32.into(), b"reset");
        }
    }
}

/// A client-only QUIC endpoint for talking to other relays' ledger APIs.
fn client_endpoint() -> ChainResult<quinn::Endpoint> {
    top_proto::net::endpoint::client_endpoint("0.0.0.0:0").map_err(ChainError::Socket)
}

type LedgerRpc = RpcStream<LedgerRequest, LedgerResponse>;

/// A fresh connection to `upstream` with a ledger stream open on it.
pub(super) async fn open_upstream(
    identity: &Identity,
    upstream: &RelayAddr,
) -> ChainResult<(quinn::Endpoint, quinn::Connection, LedgerRpc)> {
    let endpoint = client_endpoint()?;
    let conn = top_proto::net::dial::dial(&endpoint, identity, upstream).await?;
    let rpc = LedgerRpc::open(&conn, Open::Ledger, MAX_LEDGER_FRAME).await?;
    Ok((endpoint, conn, rpc))
}

/// One request to `upstream`'s ledger API on a fresh connection.
async fn call_upstream(
    identity: &Identity,
    upstream: &RelayAddr,
    req: LedgerRequest,
) -> ChainResult<LedgerResponse> {
    let (_endpoint, conn, mut rpc) = open_upstream(identity, upstream).await?;
    let resp = rpc.call(req).await.map_err(ChainError::from);
    conn.close(0u32.into(), b"done");
    resp
}

/// Fetches the genesis from `upstream` (a follower's first start).
pub async fn fetch_genesis(identity: &Identity, upstream: &RelayAddr) -> ChainResult<Genesis> {
    match call_upstream(identity, upstream, LedgerRequest::Genesis).await? {
        LedgerResponse::Genesis(g) => Ok(g),
        LedgerResponse::Error(e) => Err(ChainError::Upstream(e)),
        other => Err(ChainError::Unexpected(format!("{other:?}"))),
    }
}
