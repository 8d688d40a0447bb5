//! What a relay forwards is ciphertext: the bytes it hands to the recipient never contain the
//! plaintext, for messages and for pipes, yet the recipient decrypts them.

mod common;

use bytes::{Buf, BytesMut};
use common::{endpoint_and_conn, open_session, sealed_envelope};
use futures::StreamExt;
use tokio_util::codec::{Decoder, FramedRead};
use top_proto::frame::{FrameCodec, Open, PipeReply, SessionFrame, encode_frame};
use top_proto::identity::Identity;
use top_proto::pipe_crypto::{MAX_NOISE_MSG, PipeInitiator, respond};
use top_proto::seal::Opener;
use top_relay::{InitOptions, Relay, init};

const SECRET: &[u8] = b"the plaintext no relay may ever see";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads the next length-prefixed record of a pipe, keeping every raw byte read in `seen`.
async fn next_record(
    recv: &mut quinn::RecvStream,
    raw: &mut Vec<u8>,
    seen: &mut Vec<u8>,
) -> Vec<u8> {
    loop {
        if raw.len() >= 4 {
            let len = (&raw[..4]).get_u32() as usize;
            if raw.len() >= 4 + len {
                let record = raw[4..4 + len].to_vec();
                raw.drain(..4 + len);
                return record;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = recv.read(&mut chunk).await.unwrap().expect("pipe closed");
        seen.extend_from_slice(&chunk[..n]);
        raw.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relays_forward_only_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());

    // Messages: bob reads the raw bytes of his session stream, exactly what the relay sent him.
    let mut bob_session = open_session(&relay.addr(), &bob).await;
    let mut raw = BytesMut::new();
    let mut alice_session = open_session(&relay.addr(), &alice).await;
    let env = sealed_envelope(&alice, bob.account_id(), SECRET);
    alice_session.write(&SessionFrame::Send(env.clone())).await;
    let mut codec = FrameCodec::<SessionFrame>::default();
    let recv = bob_session.frames.get_mut();
    let delivered = loop {
        let mut chunk = [0u8; 4096];
        let n = recv
            .read(&mut chunk)
            .await
            .unwrap()
            .expect("session closed");
        raw.extend_from_slice(&chunk[..n]);
        let mut view = raw.clone();
        let mut found = None;
        while let Some(frame) = codec.decode(&mut view).unwrap() {
            if let SessionFrame::Deliver(e) = frame {
                found = Some(e);
            }
        }
        if let Some(e) = found {
            break e;
        }
    };
    assert!(
        !contains(&raw, SECRET),
        "plaintext in what the relay forwarded"
    );
    let (from, content) = Opener::new(bob.clone()).open(&delivered.sealed).unwrap();
    assert_eq!((from, &content.body[..]), (alice.account_id(), SECRET));

    // Pipes: bob accepts the relay's stream and reads its raw bytes.
    let (_ep, alice_conn) = endpoint_and_conn(&relay.addr(), &alice).await;
    let bob_conn = bob_session.conn.clone();
    let (mut a_send, a_recv) = alice_conn.open_bi().await.unwrap();
    a_send
        .write_all(
            &encode_frame(&Open::Pipe {
                to: bob.account_id(),
            })
            .unwrap(),
        )
        .await
        .unwrap();
    let mut replies = FramedRead::new(a_recv, FrameCodec::<PipeReply>::new(64));
    let (mut b_send, mut b_recv) = bob_conn.accept_bi().await.unwrap();
    assert_eq!(replies.next().await.unwrap().unwrap(), PipeReply::Opened);
    let (initiator, first) = PipeInitiator::start(&alice, &bob.account_id()).unwrap();
    a_send
        .write_all(&(first.len() as u32).to_be_bytes())
        .await
        .unwrap();
    a_send.write_all(&first).await.unwrap();

    // Bob: skip the IncomingPipe frame, answer the handshake.
    let mut raw = Vec::new();
    let mut open_frame = BytesMut::new();
    let mut codec = FrameCodec::<Open>::new(64);
    let leftover = loop {
        let mut chunk = [0u8; 4096];
        let n = b_recv.read(&mut chunk).await.unwrap().unwrap();
        open_frame.extend_from_slice(&chunk[..n]);
        if let Some(Open::IncomingPipe) = codec.decode(&mut open_frame).unwrap() {
            break open_frame;
        }
    };
    raw.extend_from_slice(&leftover);
    let mut seen = Vec::new();
    let first_in = next_record(&mut b_recv, &mut raw, &mut seen).await;
    let (reply, mut bob_cipher) = respond(&bob, &first_in).unwrap();
    b_send
        .write_all(&(reply.len() as u32).to_be_bytes())
        .await
        .unwrap();
    b_send.write_all(&reply).await.unwrap();

    // Alice finishes and sends the secret through the pipe.
    let mut alice_records = replies.map_decoder(|_| {
        tokio_util::codec::LengthDelimitedCodec::builder()
            .max_frame_length(MAX_NOISE_MSG)
            .new_codec()
    });
    let reply_in = alice_records.next().await.unwrap().unwrap();
    let mut alice_cipher = initiator.finish(&reply_in).unwrap();
    let mut record = vec![0u8; MAX_NOISE_MSG];
    let n = alice_cipher.encrypt(SECRET, &mut record).unwrap();
    a_send.write_all(&(n as u32).to_be_bytes()).await.unwrap();
    a_send.write_all(&record[..n]).await.unwrap();

    let data = next_record(&mut b_recv, &mut raw, &mut seen).await;
    assert!(
        !contains(&seen, SECRET),
        "plaintext in the pipe bytes the relay forwarded"
    );
    let mut plain = vec![0u8; data.len()];
    let m = bob_cipher.decrypt(&data, &mut plain).unwrap();
    assert_eq!(&plain[..m], SECRET);
    relay.shutdown().await;
}
