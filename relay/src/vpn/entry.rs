//! The entry role of a 2-hop route: the client's `Via` streams are spliced to new streams on one
//! connection this relay opens to the exit, and the client's datagrams are forwarded both ways
//! untouched. The entry sees only Noise ciphertext (never the destination); the exit sees the
//! entry's address (never the client's). Datagrams to the client are metered on the client's
//! meter as forwarded; datagrams to the exit as the exit acknowledges them ([`super::upstream`]).

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, FrameError, Open};
use top_proto::id::AccountId;
use top_proto::net::path_mtu::MtuNudge;
use tracing::debug;

use super::metrics::VpnMetrics;
use super::upstream::{relay_received, upstream};
use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;
use crate::node::core::Core;
use top_billing::Service;

/// The exit a client connection is routed to, core by all its `Via` streams.
pub type Upstream = Arc<OnceCell<(RelayAddr, quinn::Connection)>>;

/// Serves one `Via` stream: connects to the exit on the first, then splices this stream.
pub async fn serve_via(
    core: Arc<Core>,
    client: quinn::Connection,
    to: RelayAddr,
    upstream: Upstream,
    meter: Option<Arc<ClientMeter>>,
    mut send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<(), FrameError> {
    if to.id == core.id {
        return Err(FrameError::Unexpected("Via names this relay itself"));
    }
    let (exit, up) = upstream
        .get_or_try_init(|| async {
            let conn = top_proto::net::dial::dial(&core.endpoint, &core.identity, &to)
                .await
                .map_err(|e| {
                    debug!("entry cannot reach exit {to}: {e}");
                    FrameError::Unexpected("exit unreachable")
                })?;
            spawn_forwarders(&core, &client, &conn, to.id, meter);
            Ok::<_, FrameError>((to.clone(), conn))
        })
        .await?;
    if exit.id != to.id {
        return Err(FrameError::Unexpected(
            "all Via streams of a connection go to one exit",
        ));
    }
    let (mut up_send, mut up_recv) = up
        .open_bi()
        .await
        .map_err(|_| FrameError::Unexpected("exit connection lost"))?;
    let parts = frames.into_parts();
    let mut recv = parts.io;
    up_send
        .write_all(&parts.read_buf)
        .await
        .map_err(|_| FrameError::Unexpected("exit stream closed"))?;
    let forward = async {
        tokio::io::copy(&mut recv, &mut up_send).await.ok();
        up_send.finish().ok();
    };
    let back = async {
        tokio::io::copy(&mut up_recv, &mut send).await.ok();
        send.finish().ok();
    };
    tokio::select! {
        _ = futures::future::join(forward, back) => {}
        _ = core.shutdown.cancelled() => {}
    }
    Ok(())
}

/// Sends one datagram on to `to`; one refused as too large wakes `to` (see `path_mtu`).
fn forward(to: &quinn::Connection, d: bytes::Bytes, nudge: &mut MtuNudge, m: &VpnMetrics) {
    match to.send_datagram(d) {
        Ok(()) => {
            m.forwarded.inc();
        }
        Err(quinn::SendDatagramError::TooLarge) => {
            m.dropped_too_large.inc();
            nudge.refused(to);
        }
        Err(_) => {}
    }
}

/// Forwards datagrams client → exit and exit → client until either connection ends, and the
/// exit's received counts to the client.
fn spawn_forwarders(
    core: &Arc<Core>,
    client: &quinn::Connection,
    exit: &quinn::Connection,
    exit_id: top_proto::id::RelayId,
    meter: Option<Arc<ClientMeter>>,
) {
    let (s, c, e) = (core.clone(), client.clone(), exit.clone());
    let (mut upstream, mut proof) = upstream(meter.clone());
    let mut budget_down = Budget::new(meter, Service::Vpn);
    let exit_account = AccountId::from_bytes(*exit_id.as_bytes()).ok();
    core.tasks.spawn(async move {
        s.metrics.vpn.forwards.inc();
        let up = async {
            let mut nudge = MtuNudge::default();
            while let Ok(d) = c.read_datagram().await {
                if upstream.allow(d.len(), &s.metrics.vpn) {
                    forward(&e, d, &mut nudge, &s.metrics.vpn);
                }
            }
        };
        let acks = async {
            if let Some(exit_account) = exit_account {
                relay_received(&e, exit_account, &c, &mut proof, &s.metrics.vpn).await;
            }
            std::future::pending::<()>().await
        };
        let down = async {
            let mut nudge = MtuNudge::default();
            while let Ok(d) = e.read_datagram().await {
                if super::spend(&s, &mut budget_down, d.len()) {
                    forward(&c, d, &mut nudge, &s.metrics.vpn);
                }
            }
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = acks => {}
            _ = s.shutdown.cancelled() => {}
        }
        e.close(0u32.into(), b"client gone");
        c.close(0u32.into(), b"exit gone");
        s.metrics.vpn.forwards.dec();
    });
}
