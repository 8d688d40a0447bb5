//! Ending a billing stream without losing what was just sent on it: the last receipt of a spent
//! link channel. Dropping the streams would stop the other side's sending half, and a relay that
//! writes a payment request before reading that receipt then fails the write and ends its side
//! with the receipt unread: paid, but never counted.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest this side keeps reading a stream it is done with for the other side to end it.
pub const WIND_DOWN: Duration = Duration::from_secs(10);

/// Finishes this side's sending half (everything sent stays on its way) and reads on, ignoring
/// what comes, until the other side ends its half, [`WIND_DOWN`] passed or `shutdown`; a task
/// of `tasks`.
pub fn wind_down<D>(
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    mut send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, D>,
) -> tokio::task::JoinHandle<()>
where
    D: Decoder + Send + 'static,
    D::Item: Send,
{
    tasks.spawn(async move {
        send.finish().ok();
        let drained = async { while let Some(Ok(_)) = frames.next().await {} };
        tokio::select! {
            _ = tokio::time::timeout(WIND_DOWN, drained) => {}
            _ = shutdown.cancelled() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use ledger_lite::ChannelId;
    use tokio_util::codec::FramedWrite;
    use top_billing::Usage;
    use top_billing::wire::{ClientBilling, MAX_BILLING_FRAME, RelayBilling};
    use top_proto::addr::RelayAddr;
    use top_proto::frame::FrameCodec;
    use top_proto::identity::Identity;
    use top_proto::net::{dial::dial, endpoint};

    use super::*;

    fn frame(n: u8) -> ClientBilling {
        ClientBilling::Resume(ChannelId([n; 32]))
    }

    /// A payee that asks for payment again before it reads the payer's last frame (a receipt)
    /// still reads it.
    #[tokio::test]
    async fn the_last_frame_is_read_though_the_other_side_writes_before_reading_it() {
        let server_id = Identity::generate();
        let config = top_proto::tls::server_config(&server_id).unwrap();
        let server =
            endpoint::server_endpoint(config, "127.0.0.1:0".parse().unwrap(), &server_id).unwrap();
        let addr = RelayAddr {
            id: server_id.relay_id(),
            host_port: server.local_addr().unwrap().to_string(),
        };
        let client = endpoint::client_endpoint(&addr.host_port).unwrap();
        let accept = async { server.accept().await.unwrap().await.unwrap() };
        let dialer = Identity::generate();
        let (payee_conn, payer_conn) = tokio::join!(accept, dial(&client, &dialer, &addr));
        let payer_conn = payer_conn.unwrap();

        // The payer's stream: a first frame, then its last, then it winds down.
        let (send, recv) = payer_conn.open_bi().await.unwrap();
        let mut out = FramedWrite::new(send, FrameCodec::<ClientBilling>::new(MAX_BILLING_FRAME));
        let frames = FramedRead::new(recv, FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME));
        out.send(frame(1)).await.unwrap();
        let (payee_send, payee_recv) = payee_conn.accept_bi().await.unwrap();
        let mut payee_frames = FramedRead::new(
            payee_recv,
            FrameCodec::<ClientBilling>::new(MAX_BILLING_FRAME),
        );
        assert_eq!(payee_frames.next().await.unwrap().unwrap(), frame(1));
        out.send(frame(2)).await.unwrap();
        let tasks = TaskTracker::new();
        let winding = wind_down(&tasks, CancellationToken::new(), out.into_inner(), frames);
        // Whatever winding down told the payee has reached it once a later stream did.
        let mut marker = payer_conn.open_uni().await.unwrap();
        marker.write_all(b"after").await.unwrap();
        marker.finish().unwrap();
        let mut marker = payee_conn.accept_uni().await.unwrap();
        assert_eq!(marker.read_to_end(16).await.unwrap(), b"after");

        // The payee asks for payment before it reads the last frame.
        let mut payee_out = FramedWrite::new(
            payee_send,
            FrameCodec::<RelayBilling>::new(MAX_BILLING_FRAME),
        );
        let request = RelayBilling::PayRequest {
            usage: Usage::default(),
            cum_amount: ledger_lite::Amount::from_units(1),
        };
        payee_out
            .send(request)
            .await
            .expect("the payer stopped the stream under an unread frame");
        assert_eq!(payee_frames.next().await.unwrap().unwrap(), frame(2));
        assert!(payee_frames.next().await.is_none(), "the payer finished");
        // The payee ends its side too: winding down ends with it.
        drop(payee_out);
        tokio::time::timeout(WIND_DOWN / 2, winding)
            .await
            .expect("winding down ends when the other side does")
            .unwrap();
    }
}
