//! A raw protocol client for relay tests: speaks frames directly, no SDK.
#![allow(dead_code)]

pub mod network;
mod ports;

pub use ports::free_port;

use futures::StreamExt;
use tokio_util::codec::FramedRead;
use top_proto::addr::RelayAddr;
use top_proto::frame::{Envelope, FrameCodec, MsgId, Open, SessionFrame, encode_frame};
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::net::dial::dial;
use top_proto::seal::{SealedContent, Sealer};

pub struct RawSession {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub frames: FramedRead<quinn::RecvStream, FrameCodec<SessionFrame>>,
}

pub async fn endpoint_and_conn(
    relay: &RelayAddr,
    identity: &Identity,
) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = dial(&endpoint, identity, relay).await.unwrap();
    (endpoint, conn)
}

pub async fn open_session(relay: &RelayAddr, identity: &Identity) -> RawSession {
    let (endpoint, conn) = endpoint_and_conn(relay, identity).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&session_open(identity, relay)).unwrap())
        .await
        .unwrap();
    RawSession {
        endpoint,
        conn,
        send,
        frames: FramedRead::new(recv, FrameCodec::default()),
    }
}

impl RawSession {
    pub async fn write(&mut self, frame: &SessionFrame) {
        self.send
            .write_all(&encode_frame(frame).unwrap())
            .await
            .unwrap();
    }

    pub async fn next(&mut self) -> SessionFrame {
        self.frames
            .next()
            .await
            .expect("session closed")
            .expect("bad frame")
    }

    /// Reads frames until one matches; returns it.
    pub async fn until(&mut self, want: impl Fn(&SessionFrame) -> bool) -> SessionFrame {
        loop {
            let f = self.next().await;
            if want(&f) {
                return f;
            }
        }
    }
}

/// The frame that opens a messaging session: with the client's fresh presence statement.
pub fn session_open(identity: &Identity, relay: &RelayAddr) -> Open {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Open::Session(top_proto::presence::Presence::sign(identity, relay.id, now))
}

pub fn sealed_envelope(from: &Identity, to: AccountId, body: &[u8]) -> Envelope {
    let id = MsgId::random();
    let sealed = Sealer::new(from.clone())
        .seal(
            &to,
            &SealedContent {
                id,
                sent_ms: 0,
                body: bytes::Bytes::copy_from_slice(body),
            },
        )
        .unwrap();
    Envelope {
        id,
        to,
        ttl_secs: 3600,
        sealed: sealed.into(),
    }
}

/// The `toprelay` binary under test.
pub const TOPRELAY: &str = env!("CARGO_BIN_EXE_toprelay");

/// A ledger API stream on a fresh connection to `addr`, dialled as `me`.
pub async fn ledger_rpc(
    addr: &RelayAddr,
    me: &Identity,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    top_proto::net::rpc::RpcStream<
        ledger_lite::wire::LedgerRequest,
        ledger_lite::wire::LedgerResponse,
    >,
) {
    let (endpoint, conn) = endpoint_and_conn(addr, me).await;
    let rpc = top_proto::net::rpc::RpcStream::open(
        &conn,
        top_proto::frame::Open::Ledger,
        ledger_lite::wire::MAX_LEDGER_FRAME,
    )
    .await
    .unwrap();
    (endpoint, conn, rpc)
}

/// Runs the daemon on `dir`; returns once it printed its address (it serves from then on).
pub fn start_daemon(dir: &std::path::Path) -> (std::process::Child, RelayAddr) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(TOPRELAY)
        .args(["run", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    (child, line.trim().parse().expect("relay address on stdout"))
}

/// Sends `count` messages from `from` to offline `to` through `relay` and waits until each is
/// stored (asserting it was); returns their ids in the order sent.
pub async fn store_for_offline(
    relay: &RelayAddr,
    from: &Identity,
    to: AccountId,
    count: usize,
) -> Vec<MsgId> {
    let mut sender = open_session(relay, from).await;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let env = sealed_envelope(from, to, format!("m{i}").as_bytes());
        sent.push(env.id);
        sender.write(&SessionFrame::Send(env)).await;
    }
    let mut stored = 0;
    while stored < count {
        match sender.next().await {
            SessionFrame::Accepted { outcome, .. } => {
                assert_eq!(outcome, top_proto::frame::Outcome::Stored);
                stored += 1;
            }
            SessionFrame::Rejected { reason, .. } => panic!("a message was refused: {reason:?}"),
            _ => {}
        }
    }
    sent
}

/// A connection whose streams accept only `window` bytes the application has not read.
pub async fn conn_with_stream_window(
    relay: &top_proto::addr::RelayAddr,
    identity: &Identity,
    window: u32,
) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let (mut config, _) = top_proto::tls::client_config(identity, relay.id).unwrap();
    let mut transport = top_proto::tls::transport_config();
    transport.stream_receive_window(window.into());
    config.transport_config(std::sync::Arc::new(transport));
    let conn = endpoint
        .connect_with(
            config,
            relay.host_port.parse().unwrap(),
            top_proto::tls::SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    (endpoint, conn)
}

/// A plain HTTP/1.0 GET on the relay's HTTP port: the head and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// A counter from the relay's `/metrics` (0 if absent).
pub async fn metric(http: std::net::SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(http, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
