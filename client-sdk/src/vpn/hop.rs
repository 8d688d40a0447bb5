//! The first hop of a 2-hop route, the client's side: the entry is asked to forward this
//! client's QUIC connection to the exit (`Open::Forward`), and then told, again and again, what
//! it delivered ([`Delivered`]). It is paid for no more than that: upstream, this client's bytes
//! the exit acknowledged (QUIC's authenticated ACKs, at most what the exit signed it received);
//! downstream, the exit's bytes this client acknowledged (the exit's signed count, at most what
//! arrived here). Never its own count of what it forwarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use top_proto::addr::RelayAddr;
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::vpn::forward::{AckedBytes, Delivered, ForwardReply, MAX_FORWARD_FRAME};
use top_proto::vpn::received::Received;

use super::proof::LatestCounts;
use crate::error::{ClientError, VpnError};
use crate::payment::UsageCounter;

/// How often the entry hears the counts.
const REPORT_EVERY: Duration = Duration::from_millis(20);

/// A forward stream the entry accepted.
pub(crate) struct Forwarding {
    /// The entry's forwarding port.
    pub port: u16,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// Asks the entry on `control` to forward this client's packets to `exit`.
pub(crate) async fn request(
    control: &quinn::Connection,
    exit: &RelayAddr,
) -> Result<Forwarding, ClientError> {
    let (mut send, recv) = control.open_bi().await?;
    send.write_all(&encode_frame(&Open::Forward { to: exit.clone() })?)
        .await?;
    let mut replies = FramedRead::new(recv, FrameCodec::<ForwardReply>::new(MAX_FORWARD_FRAME));
    match replies.next().await {
        Some(Ok(ForwardReply::Ready { port })) => Ok(Forwarding {
            port,
            send,
            recv: replies.into_inner(),
        }),
        Some(Ok(ForwardReply::Refused(why))) => Err(VpnError::Refused(why).into()),
        Some(Err(e)) => Err(e.into()),
        None => Err(VpnError::Refused("the entry closed the forward stream".into()).into()),
    }
}

/// What this client owes the entry, cumulative: `(up, down)` from its own count of its bytes
/// the exit acknowledged (`own_acked`), the bytes that arrived here (`own_received`) and the
/// exit's latest signed counts.
pub fn owed(own_acked: u64, own_received: u64, exit: Option<&Received>) -> (u64, u64) {
    match exit {
        Some(r) => (
            own_acked.min(r.body.received),
            r.body.delivered.min(own_received),
        ),
        None => (0, 0),
    }
}

/// Tells the entry what it delivered on `tunnel` (the connection to the exit) and credits
/// `usage` with it, until the forward stream or the tunnel ends; then cancels `ended`.
pub(crate) async fn report(
    forwarding: Forwarding,
    tunnel: quinn::Connection,
    latest: LatestCounts,
    usage: Arc<UsageCounter>,
    ended: CancellationToken,
) {
    let Forwarding { send, mut recv, .. } = forwarding;
    let mut out = FramedWrite::new(send, FrameCodec::<Delivered>::new(MAX_FORWARD_FRAME));
    let mut acked = AckedBytes::default();
    let mut credited = 0u64;
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reports = async {
        loop {
            tick.tick().await;
            let stats = tunnel.stats();
            let own = acked.update(&stats, Instant::now());
            let exit = latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (up, down) = owed(own, stats.udp_rx.bytes, exit.as_ref());
            let total = up.saturating_add(down);
            if total <= credited {
                continue;
            }
            // Counted before the entry hears of it: its claim never runs ahead of this.
            usage.vpn_proven(total - credited);
            credited = total;
            if out.send(Delivered { up, down: exit }).await.is_err() {
                return;
            }
        }
    };
    // The entry sends nothing after its reply: the stream's end is the route's.
    let entry_gone = async {
        let mut buf = [0u8; 64];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
    };
    tokio::select! {
        _ = reports => {}
        _ = entry_gone => {}
        _ = tunnel.closed() => {}
    }
    ended.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::UsageCounter;
    use top_billing::{Payer, Prices, Usage};
    use top_proto::identity::Identity;
    use top_proto::vpn::received::ReceivedBody;

    fn stated(exit: &Identity, delivered: u64, received: u64) -> Received {
        Received::sign(
            exit,
            ReceivedBody {
                session: [3; 32],
                delivered,
                received,
            },
        )
    }

    #[test]
    fn owed_is_what_both_ends_acknowledged_never_what_the_entry_forwarded() {
        let exit = Identity::from_seed(&[1; 32]);
        // Nothing from the exit yet: nothing owed.
        assert_eq!(owed(50_000, 50_000, None), (0, 0));
        // The exit got 40 KB (junk the entry made up counts there, not in this client's ACK
        // count); this client's ACKs say 30 KB of its packets arrived.
        assert_eq!(
            owed(30_000, 9_000, Some(&stated(&exit, 8_000, 40_000))),
            (30_000, 8_000)
        );
        // The exit claims more than arrived here: only what arrived counts. (What arrived is
        // QUIC's count before decryption: an exit in league with the entry can still have junk
        // the entry sends down counted, up to what arrived; see the README.)
        assert_eq!(
            owed(30_000, 7_000, Some(&stated(&exit, 8_000, 20_000))),
            (20_000, 7_000)
        );
    }

    #[test]
    fn an_entry_claiming_its_own_count_beyond_what_was_acknowledged_is_not_paid() {
        let (client, exit) = (Identity::from_seed(&[5; 32]), Identity::from_seed(&[6; 32]));
        let prices = Prices {
            vpn: ledger_lite::Amount::from_units(1 << 20),
            ..Prices::default()
        };
        let lock = ledger_lite::Amount::from_units(1 << 40);
        let mut payer = Payer::new(
            ledger_lite::ChainId([8; 32]),
            ledger_lite::ChannelId([7; 32]),
            prices,
            lock,
            ledger_lite::Amount::ZERO,
            0,
        );
        // The entry forwarded 8 MiB each way; half of it was acknowledged at each end.
        let counter = UsageCounter::default();
        let (up, down) = owed(4 << 20, 8 << 20, Some(&stated(&exit, 4 << 20, 8 << 20)));
        counter.vpn_proven(up + down);
        let counted = counter.snapshot();
        let slack = counter.slack(&counted);
        let claim = |bytes: u64| {
            let usage = Usage {
                vpn: bytes,
                ..Usage::default()
            };
            (usage, usage.cost(&prices).unwrap())
        };
        // Its own count (all 16 MiB), or what was lost beyond a fixed 64 KiB in flight: refused.
        for dropped in [8 << 20, 200 * 1024] {
            let (usage, amount) = claim((8 << 20) + dropped);
            assert_eq!(
                payer.sign(&client, &usage, amount, &counted, slack),
                Err(top_billing::PayError::Overclaimed),
                "paid for {dropped} bytes nobody acknowledged"
            );
        }
        let (usage, amount) = claim(8 << 20);
        let receipt = payer
            .sign(&client, &usage, amount, &counted, slack)
            .unwrap();
        assert_eq!(receipt.body.cum_amount, amount);
    }
}
