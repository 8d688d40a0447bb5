//! The entry role of a 2-hop route, one forward stream (`Open::Forward`): the exit is checked
//! (a QUIC handshake proves the relay `to` at its address), a route is set up on the forwarder
//! ([`super::forward`]) for the client's address, and for as long as the stream stays open the
//! client's delivery counts bill it ([`super::held`]). The entry sees the client's address and
//! the exit's, and packets it cannot read; the exit sees the entry's address, never the client's.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, FrameError, Open};
use top_proto::id::AccountId;
use top_proto::vpn::forward::{Delivered, ForwardReply, MAX_FORWARD_FRAME};
use top_proto::vpn::received::Received;
use tracing::debug;

use super::forward::Forwarder;
use super::held::{HeldProof, held};
use super::metrics::VpnMetrics;
use crate::billing::meter::ClientMeter;
use crate::node::core::Core;

/// Why an exit check failed, whatever the cause (the entry tells a client nothing about what
/// answers at an address).
const UNREACHABLE: &str = "the exit is unreachable at that address";
/// How long checking the exit may take.
const DIAL_EXIT: Duration = Duration::from_secs(10);
/// The entry looks at the counts at most this often (they are cumulative: the newest is all
/// that matters), so a flood of them costs one signature check per interval.
const READ_EVERY: Duration = Duration::from_millis(25);
/// With no counts for this long, what was forwarded meanwhile may settle as lost.
const SETTLE_EVERY: Duration = Duration::from_millis(500);

/// What a forward stream needs of the relay and its connection.
pub struct ForwardContext {
    /// The relay.
    pub core: Arc<Core>,
    /// Its forwarding port (`None`: it does not forward).
    pub forwarder: Option<Arc<Forwarder>>,
    /// Whether the exit asked for is a member relay (registered, or configured where that
    /// counts): only members are dialled and forwarded to.
    pub exit_is_member: bool,
    /// Held while this connection's request is checked (one at a time per connection).
    pub dialing: Arc<tokio::sync::Mutex<()>>,
}

/// Serves one forward stream from `client` to the exit `to`.
pub async fn serve_forward(
    ctx: ForwardContext,
    client: quinn::Connection,
    to: RelayAddr,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<(), FrameError> {
    let mut out = FramedWrite::new(send, FrameCodec::<ForwardReply>::new(MAX_FORWARD_FRAME));
    let mut counts = frames.map_decoder(|_| FrameCodec::<Delivered>::new(MAX_FORWARD_FRAME));
    let refuse = |why: String| ForwardReply::Refused(why);
    let ForwardContext {
        core,
        forwarder,
        exit_is_member,
        dialing,
    } = ctx;
    let client_addr = client.remote_address();
    let checked = async {
        let forwarder = forwarder.ok_or_else(|| refuse("this relay does not forward".into()))?;
        if to.id == core.id {
            return Err(refuse("the exit is this relay itself".into()));
        }
        if meter.as_ref().is_some_and(|m| !m.has_channel()) {
            return Err(refuse(
                "payment required: open a billing channel first".into(),
            ));
        }
        if !exit_is_member {
            return Err(refuse("the exit is not a member relay".into()));
        }
        let _one_at_a_time = dialing
            .try_lock()
            .map_err(|_| refuse("one forward request at a time".into()))?;
        let exit_account = AccountId::from_bytes(*to.id.as_bytes())
            .map_err(|_| refuse("not a relay id".into()))?;
        // Cheap checks before the exit is dialled.
        forwarder
            .check(client_addr)
            .map_err(|e| refuse(e.to_string()))?;
        if let Some(exit_addr) = forwarder.checked_exit(&to) {
            return Ok((forwarder, exit_account, exit_addr));
        }
        let exit = tokio::time::timeout(
            DIAL_EXIT,
            top_proto::net::dial::dial(&core.endpoint, &core.identity, &to),
        )
        .await
        .map_err(|_| refuse(UNREACHABLE.into()))?
        .map_err(|_| refuse(UNREACHABLE.into()))?;
        let exit_addr = exit.remote_address();
        exit.close(0u32.into(), b"checked");
        forwarder.remember_exit(&to, exit_addr);
        Ok((forwarder, exit_account, exit_addr))
    };
    let (forwarder, exit_account, exit_addr) = match checked.await {
        Ok(ok) => ok,
        Err(reply) => {
            debug!("not forwarding to {to}: {reply:?}");
            out.send(reply).await.ok();
            return Ok(());
        }
    };
    let (up_budget, mut up) = held(meter.clone());
    let (down_budget, mut down) = held(meter);
    let route = match forwarder.add(
        &core,
        (client_addr, client.local_ip()),
        exit_addr,
        up_budget,
        down_budget,
    ) {
        Ok(route) => route,
        Err(e) => {
            out.send(ForwardReply::Refused(e.to_string())).await.ok();
            return Ok(());
        }
    };
    out.send(ForwardReply::Ready {
        port: forwarder.port(),
    })
    .await?;
    let m = &core.metrics.vpn;
    let billing = async {
        // Every count of the stream is about the session the first names.
        let (mut session, mut last) = (None, None);
        loop {
            let mut newest = match tokio::time::timeout(SETTLE_EVERY, counts.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Ok(()),
                Err(_) => {
                    settled(m, up.settle(), down.settle());
                    continue;
                }
            };
            while let Some(Some(Ok(next))) = counts.next().now_or_never() {
                newest = next;
            }
            bill(
                m,
                &mut up,
                &mut down,
                &newest,
                exit_account,
                &mut session,
                &mut last,
            )?;
            tokio::time::sleep(READ_EVERY).await;
        }
    };
    // A connection that moved (QUIC migration) ends its route: packets from its new address
    // are not forwarded for the old one's sake.
    let moved = async {
        loop {
            tokio::time::sleep(SETTLE_EVERY).await;
            if client.remote_address() != client_addr {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = billing => r,
        _ = moved => Ok(()),
        _ = client.closed() => Ok(()),
        _ = core.shutdown.cancelled() => Ok(()),
    };
    drop(route);
    // The client hears at once that the route ended ...
    out.get_mut().finish().ok();
    // ... and what was forwarded last settles: the lost part is let go of (within the allowance).
    tokio::select! {
        _ = tokio::time::sleep(super::held::SETTLE_AFTER + SETTLE_EVERY) => {
            settled(m, up.settle(), down.settle());
        }
        _ = core.shutdown.cancelled() => {}
    }
    result
}

/// Bills one statement of the client's: its own count of what the exit acknowledged, and the
/// exit's signed count of what the client acknowledged (refused if not the exit's, or for
/// another session than the stream's first).
fn bill(
    m: &VpnMetrics,
    up: &mut HeldProof,
    down: &mut HeldProof,
    counts: &Delivered,
    exit: AccountId,
    session: &mut Option<[u8; 32]>,
    last: &mut Option<Received>,
) -> Result<(), FrameError> {
    let up_done = up.acknowledged(counts.up);
    m.upstream_proven_bytes.inc_by(up_done.proven);
    let mut down_released = down.settle();
    // The exit's statement changes less often than the client states: one check each.
    if let Some(signed) = &counts.down
        && last.as_ref() != Some(signed)
    {
        let first = *session.get_or_insert(signed.body.session);
        if !signed.check(&exit, &first) {
            return Err(FrameError::Unexpected(
                "delivery counts not signed by the exit for this session",
            ));
        }
        let down_done = down.acknowledged(signed.body.delivered);
        m.downstream_proven_bytes.inc_by(down_done.proven);
        down_released += down_done.released;
        *last = Some(signed.clone());
    }
    settled(m, up_done.released, down_released);
    Ok(())
}

fn settled(m: &VpnMetrics, up: u64, down: u64) {
    m.upstream_lost_bytes.inc_by(up);
    m.downstream_lost_bytes.inc_by(down);
}
