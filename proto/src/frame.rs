//! Length-prefixed, versioned frames for QUIC streams, and the frame types of each stream kind.
//!
//! On the wire a frame is `u32 length (big endian) | u8 version | postcard body`. The decoder
//! rejects oversized lengths before buffering, unknown versions, undecodable bodies and trailing
//! bytes, each with a typed [`FrameError`]; the caller closes that stream.

use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::addr::RelayAddr;
use crate::id::AccountId;
use crate::presence::Presence;

/// The only wire version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame body accepted on any stream.
pub const MAX_FRAME_LEN: usize = 128 * 1024;
/// Largest sealed message a relay accepts (Noise header, nonce, ciphertext and tag included).
pub const MAX_SEALED_LEN: usize = 64 * 1024;
/// Largest message body an app can send (what fits in a sealed message after overheads).
pub const MAX_BODY_LEN: usize = MAX_SEALED_LEN - 512;

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed underneath.
    #[error("stream error: {0}")]
    Io(#[from] io::Error),
    /// The frame announced a length above the limit.
    #[error("frame too large (limit {limit} bytes)")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The frame is of a protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decoded but breaks a rule of its stream.
    #[error("frame not allowed here: {0}")]
    Unexpected(&'static str),
}

impl FrameError {
    /// Whether the peer sent something wrong (as opposed to the stream or connection ending
    /// underneath, which is how every stream ends when a peer closes its connection).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

/// A 128-bit message id chosen by the sender; relays and peers de-duplicate by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId(pub [u8; 16]);

impl MsgId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Debug for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A sealed message in transit: the routing header relays need, and ciphertext they cannot read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// De-duplication and acknowledgement key.
    pub id: MsgId,
    /// The recipient.
    pub to: AccountId,
    /// How long relays keep it for an offline recipient, in seconds (capped by each relay).
    pub ttl_secs: u32,
    /// Noise-sealed payload (see [`crate::seal`]).
    pub sealed: Bytes,
}

impl Envelope {
    /// Checks limits a relay enforces before routing.
    pub fn check(&self) -> Result<(), FrameError> {
        if self.sealed.len() > MAX_SEALED_LEN {
            return Err(FrameError::TooLarge {
                limit: MAX_SEALED_LEN,
            });
        }
        Ok(())
    }
}

/// The first frame on every bidirectional stream: what the stream is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Open {
    /// Client → relay: the messaging stream of this connection (at most one), with the
    /// client's signed statement that it is connected to this relay now.
    Session(Presence),
    /// Client or linked relay → relay: open a pipe to `to`. Pipe bytes follow the reply.
    Pipe {
        /// The peer at the far end.
        to: AccountId,
    },
    /// Relay → client: a peer opened a pipe to you; its Noise handshake follows.
    IncomingPipe,
    /// Relay → relay: the control stream of a link. The dialer's id is the one its TLS
    /// certificate proved; whether it is a relay is the registry's word, not its own.
    Link,
    /// Client or relay → relay: ledger queries and transactions (request/response frames).
    Ledger,
    /// Client → relay: the billing stream of this connection (offer, channel, receipts).
    Billing,
    /// Client → exit relay: a VPN tunnel's control stream (handshake, then held open).
    Vpn,
    /// Client → exit relay: one proxied TCP connection (Noise pipe, then a connect request).
    Connect,
    /// Retired: 2-hop streams spliced by the entry (replaced by [`Open::Forward`]); refused.
    /// Kept so that the variants after it keep their wire tags.
    RetiredVia,
    /// Retired: billing through an entry; refused (kept for the wire tags, as above).
    RetiredBillingAs,
    /// Client or relay → relay: publish, fetch or unpublish content (see
    /// [`crate::cdn_wire`]).
    Cdn,
    /// Linked relay → relay: the billing stream through which it pays for the deliveries and
    /// storage it asks of this relay (the same frames as [`Open::Billing`]).
    LinkBilling,
    /// Anyone → relay: where its control plane listens; one [`ControlAddrs`] frame answers.
    Control,
    /// Client or linked relay → relay: open a realtime (datagram) pipe to `to`. The relay sends
    /// this pipe's datagrams to the opener under `flow`; a [`RealtimeReply`] answers, then the
    /// peers' Noise handshake follows and the stream stays open for the pipe's life.
    Realtime {
        /// The peer at the far end.
        to: AccountId,
        /// The flow id the opener wants on this pipe's datagrams sent to it.
        flow: u32,
    },
    /// Relay → client: a peer opens a realtime pipe to you; answer with a [`RealtimeReply`].
    IncomingRealtime {
        /// The flow id the relay wants on this pipe's datagrams sent to it.
        flow: u32,
        /// Largest datagram the path to the opener carries.
        max_datagram: u16,
    },
    /// Client → entry relay: forward the UDP packets of the client's QUIC connection to the
    /// exit `to` (2-hop routes) for as long as this stream stays open; the stream then carries
    /// [`crate::vpn::forward`] frames.
    Forward {
        /// The exit relay.
        to: RelayAddr,
    },
}

/// Where a relay's control plane listens (libp2p multiaddrs), answering [`Open::Control`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAddrs {
    /// Multiaddrs, best first (a wildcard IP means "the address you reached me at").
    pub addrs: Vec<String>,
}

/// Whether a message reached its recipient or waits in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The recipient acknowledged it.
    Delivered,
    /// Stored durably in the recipient's mailbox; delivered when it connects.
    Stored,
    /// Stored durably while delivery to the connected recipient goes on: not final, `Delivered`
    /// (or `Stored`, should the recipient not acknowledge it) follows.
    Durable,
}

impl Outcome {
    /// Whether no other outcome follows this one.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Durable)
    }
}

/// Why a relay refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The recipient's mailbox is full.
    #[error("recipient's mailbox is full")]
    QuotaExceeded,
    /// The message is larger than relays accept.
    #[error("message too large")]
    TooLarge,
    /// No relay could store the message.
    #[error("no relay could store the message; try again later")]
    Unavailable,
    /// Unpaid usage exceeds the relay's credit window (or the channel's lock is spent).
    #[error(
        "payment required: the relay's credit window is used up; sign receipts or open a channel"
    )]
    PaymentRequired,
}

/// Frames of the messaging stream between a client and its relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionFrame {
    /// Client → relay: route this message.
    Send(Envelope),
    /// Relay → client: the relay took responsibility for a message.
    Accepted {
        /// Which message.
        id: MsgId,
        /// Delivered or stored.
        outcome: Outcome,
    },
    /// Relay → client: the message was refused.
    Rejected {
        /// Which message.
        id: MsgId,
        /// Why.
        reason: Reject,
    },
    /// Relay → client: a message for you.
    Deliver(Envelope),
    /// Client → relay: I have the message (it may be deleted everywhere).
    Ack {
        /// Which message.
        id: MsgId,
    },
    /// Relay → client: every mailbox known when you connected has been pushed.
    Synced,
    /// Client → relay: a fresh presence statement (clients re-sign theirs while connected).
    Present(Presence),
}

/// Frames of the control stream between two linked relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkFrame {
    /// A client connected to the sending relay: its own signed statement saying so.
    Online(Presence),
    /// Deliver this to a client connected to you.
    Forward {
        /// The message.
        env: Envelope,
        /// If delivery fails, store it in the recipient's mailbox (false when it comes from one).
        store_on_fail: bool,
    },
    /// What happened to a forwarded message.
    ForwardResult {
        /// Which message.
        id: MsgId,
        /// `None`: not delivered and not stored.
        outcome: Option<Outcome>,
    },
    /// Store this in your mailbox for its recipient (you are one of its home relays).
    Store(Envelope),
    /// Result of a `Store`.
    StoreResult {
        /// Which message.
        id: MsgId,
        /// `None` when stored.
        error: Option<Reject>,
    },
    /// Every stored message for this client has been forwarded after its presence.
    MailboxDone {
        /// The client.
        client: AccountId,
    },
    /// A client left the sending relay.
    Offline {
        /// The client.
        client: AccountId,
    },
    /// Deliver this to its recipient wherever it is connected (you are one of its home
    /// relays; the sending relay does not know where it is): to a client of yours, forwarded
    /// on once to the relay its presence names, or stored. Answered by `ForwardResult`.
    Relay {
        /// The message.
        env: Envelope,
    },
    /// Where is this client connected? Answered by `Located` if the receiving relay knows.
    Locate {
        /// The client.
        client: AccountId,
    },
    /// A client's own signed statement naming the relay it is connected to (another relay
    /// than the sender, possibly): link there to reach it directly.
    Located(Presence),
}

/// Reply on a pipe stream before the pipe's bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipeReply {
    /// The peer accepted; Noise handshake bytes follow.
    Opened,
    /// The peer is not connected to any reachable relay.
    Unreachable,
}

/// Reply on a realtime pipe's stream, from the relay to the opener or from the called client to
/// its relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RealtimeReply {
    /// Accepted; the Noise handshake follows.
    Opened {
        /// The flow id the sender of this reply wants on datagrams sent to it.
        flow: u32,
        /// Largest datagram the path beyond carries.
        max_datagram: u16,
    },
    /// The peer is not connected to any reachable relay.
    Unreachable,
    /// Refused, and why (no datagrams on this connection, too many pipes, payment).
    Refused(String),
}

/// A tokio codec for frames of type `T` on one stream.
pub struct FrameCodec<T> {
    inner: LengthDelimitedCodec,
    kind: PhantomData<fn() -> T>,
}

impl<T> FrameCodec<T> {
    /// A codec accepting frames up to `max_len` body bytes.
    pub fn new(max_len: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .max_frame_length(max_len + 1)
            .new_codec();
        Self {
            inner,
            kind: PhantomData,
        }
    }

    /// The same framing state, decoding frames of another type (to switch after `Open`).
    pub fn retype<U>(mut self, max_len: usize) -> FrameCodec<U> {
        self.inner.set_max_frame_length(max_len + 1);
        FrameCodec {
            inner: self.inner,
            kind: PhantomData,
        }
    }
}

impl<T> Default for FrameCodec<T> {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

/// Sorts what a frame stream yielded: a frame, the end of the stream (finished, reset or the
/// connection lost: `Ok(None)`), or a protocol violation that must close it (`Err`).
pub fn next_frame<F>(item: Option<Result<F, FrameError>>) -> Result<Option<F>, FrameError> {
    match item {
        Some(Ok(frame)) => Ok(Some(frame)),
        Some(Err(FrameError::Io(_))) | None => Ok(None),
        Some(Err(e)) => Err(e),
    }
}

/// Encodes one frame body: version byte then postcard.
pub fn encode_body<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![PROTOCOL_VERSION];
    postcard::to_io(frame, &mut out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Encodes one whole frame (length prefix included), for writing a single frame to a stream.
pub fn encode_frame<T: Serialize>(frame: &T) -> Result<Bytes, FrameError> {
    let body = encode_body(frame)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            limit: MAX_FRAME_LEN,
        });
    }
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// Decodes one frame body, rejecting unknown versions and trailing bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&version, rest) = body
        .split_first()
        .ok_or(FrameError::Malformed("empty".into()))?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let (frame, tail) =
        postcard::take_from_bytes(rest).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !tail.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            tail.len()
        )));
    }
    Ok(frame)
}

impl<T: DeserializeOwned> Decoder for FrameCodec<T> {
    type Item = T;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let limit = self.inner.max_frame_length() - 1;
        match self.inner.decode(src) {
            Ok(Some(body)) => decode_body(&body).map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(FrameError::TooLarge { limit }),
            Err(e) => Err(FrameError::Io(e)),
        }
    }
}

impl<T: Serialize> Encoder<T> for FrameCodec<T> {
    type Error = FrameError;

    fn encode(&mut self, frame: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        // Length placeholder, version, then postcard straight into `dst`: no intermediate buffer.
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(PROTOCOL_VERSION);
        let encoded = postcard::to_io(&frame, (&mut *dst).writer()).map(|_| ());
        if let Err(e) = encoded {
            dst.truncate(start);
            return Err(FrameError::Malformed(e.to_string()));
        }
        let len = dst.len() - start - 4;
        let limit = self.inner.max_frame_length() - 1;
        if len > limit {
            dst.truncate(start);
            return Err(FrameError::TooLarge { limit });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn golden_envelope() -> Envelope {
        Envelope {
            id: MsgId([7; 16]),
            to: Identity::from_seed(&[1; 32]).account_id(),
            ttl_secs: 3600,
            sealed: Bytes::from_static(b"sealed"),
        }
    }

    #[test]
    fn golden_session_frame() {
        let body = encode_body(&SessionFrame::Send(golden_envelope())).unwrap();
        let golden = hex!(
            "01 00 07070707070707070707070707070707"
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
            "901c 06 7365616c6564"
        );
        assert_eq!(body, golden, "wire format changed: {}", hexs(&body));
        assert_eq!(
            decode_body::<SessionFrame>(&golden).unwrap(),
            SessionFrame::Send(golden_envelope())
        );
    }

    #[test]
    fn golden_link_open_and_pipe_frames() {
        let presence = crate::presence::Presence::sign_with_nonce(
            &Identity::from_seed(&[4; 32]),
            Identity::from_seed(&[2; 32]).relay_id(),
            1_700_000_000_000,
            [9; 16],
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                encode_body(&Open::Session(presence.clone())).unwrap(),
                concat!(
                    "0100ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c8139",
                    "770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39480d095ffbc31",
                    "0909090909090909090909090909090940d04e9dd0c6fba585441ad1890a0783fa69ebfb",
                    "a831cf5966bda1b43924f2438ac6885c46e30b8ab9f5991ee28c0e496c7bf06a456b5b33",
                    "d4f6b46ff97414cf0c",
                ),
            ),
            (encode_body(&Open::Link).unwrap(), "0103"),
            // The retired tags keep the later ones where they were.
            (encode_body(&Open::RetiredVia).unwrap(), "0108"),
            (encode_body(&Open::Cdn).unwrap(), "010a"),
            (encode_body(&Open::Control).unwrap(), "010c"),
            (
                encode_body(&LinkFrame::Online(presence)).unwrap(),
                concat!(
                    "0100ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c8139",
                    "770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39480d095ffbc31",
                    "0909090909090909090909090909090940d04e9dd0c6fba585441ad1890a0783fa69ebfb",
                    "a831cf5966bda1b43924f2438ac6885c46e30b8ab9f5991ee28c0e496c7bf06a456b5b33",
                    "d4f6b46ff97414cf0c",
                ),
            ),
            (
                encode_body(&LinkFrame::Offline {
                    client: golden_envelope().to,
                })
                .unwrap(),
                "01068a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            ),
            (
                encode_body(&LinkFrame::Locate {
                    client: golden_envelope().to,
                })
                .unwrap(),
                "01088a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            ),
            (
                encode_body(&LinkFrame::StoreResult {
                    id: MsgId([3; 16]),
                    error: Some(Reject::QuotaExceeded),
                })
                .unwrap(),
                "0104030303030303030303030303030303030100",
            ),
            (
                encode_body(&SessionFrame::Accepted {
                    id: MsgId([3; 16]),
                    outcome: Outcome::Stored,
                })
                .unwrap(),
                "01010303030303030303030303030303030301",
            ),
            (encode_body(&PipeReply::Unreachable).unwrap(), "0101"),
        ];
        for (body, golden) in cases {
            assert_eq!(hexs(&body), golden, "wire format changed");
        }
    }

    fn hexs(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rejects_unknown_version_and_trailing_bytes() {
        let mut body = encode_body(&SessionFrame::Synced).unwrap();
        body[0] = 9;
        assert!(matches!(
            decode_body::<SessionFrame>(&body),
            Err(FrameError::Version(9))
        ));
        let mut body = encode_body(&SessionFrame::Synced).unwrap();
        body.push(0);
        assert!(matches!(
            decode_body::<SessionFrame>(&body),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_body::<SessionFrame>(&[]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_oversized_length_before_buffering() {
        let mut codec = FrameCodec::<SessionFrame>::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(10_000_000);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 1024 })
        ));
    }

    #[test]
    fn codec_round_trip() {
        let mut codec = FrameCodec::<SessionFrame>::default();
        let mut buf = BytesMut::new();
        codec
            .encode(SessionFrame::Ack { id: MsgId([1; 16]) }, &mut buf)
            .unwrap();
        codec.encode(SessionFrame::Synced, &mut buf).unwrap();
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(SessionFrame::Ack { id: MsgId([1; 16]) })
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(SessionFrame::Synced));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<SessionFrame>(&data);
            let _ = decode_body::<LinkFrame>(&data);
            let _ = decode_body::<Open>(&data);
            let mut codec = FrameCodec::<SessionFrame>::new(256);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}
