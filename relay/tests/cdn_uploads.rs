//! Bad CDN uploads, spoken frame by frame: each is refused with a clear reason, nothing of it is
//! published or left on disk, and the relay goes on serving.

mod common;

use bytes::Bytes;
use common::endpoint_and_conn;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_proto::cdn::{Manifest, ManifestBuilder};
use top_proto::cdn_wire::{CdnRefusal, CdnReply, CdnRequest, MAX_CDN_FRAME};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::net::cdn_fetch::Serving;
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

type Frames = FramedRead<quinn::RecvStream, FrameCodec<CdnReply>>;

/// Opens a CDN stream and sends `request`; returns the raw send side and the reply frames.
async fn request(conn: &quinn::Connection, request: CdnRequest) -> (quinn::SendStream, Frames) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Cdn).unwrap())
        .await
        .unwrap();
    let mut out = FramedWrite::new(send, FrameCodec::<CdnRequest>::new(MAX_CDN_FRAME));
    out.send(request).await.unwrap();
    (
        out.into_inner(),
        FramedRead::new(recv, FrameCodec::new(MAX_CDN_FRAME)),
    )
}

async fn reply(frames: &mut Frames) -> CdnReply {
    frames.next().await.expect("a reply").expect("a frame")
}

/// Starts publishing `m`; returns once the relay asked for its chunks.
async fn start_put(conn: &quinn::Connection, m: &Manifest) -> (quinn::SendStream, Frames) {
    let put = CdnRequest::Put {
        manifest: m.encode().into(),
    };
    let (send, mut frames) = request(conn, put).await;
    assert!(matches!(reply(&mut frames).await, CdnReply::Need { .. }));
    (send, frames)
}

fn manifest_of(data: &[u8]) -> Manifest {
    let mut b = ManifestBuilder::new(None);
    b.update(data);
    b.finish().unwrap()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let mut config = RelayConfig::load(dir.path()).unwrap();
    config.cdn_publish_quota_bytes = 8 << 20;
    config.save(dir.path()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &Identity::generate()).await;

    // Not a manifest.
    let (_, mut frames) = request(
        &conn,
        CdnRequest::Put {
            manifest: Bytes::from_static(b"\x01\x02garbage"),
        },
    )
    .await;
    assert!(matches!(
        reply(&mut frames).await,
        CdnReply::Refused(CdnRefusal::BadManifest(_))
    ));

    // A manifest announcing 64 GiB: over the quota before a byte is sent.
    let huge = Manifest {
        size: 64 << 30,
        chunk_size: 1 << 20,
        content_type: None,
        chunks: vec![[0; 32]; 1 << 16],
    };
    let (_, mut frames) = request(
        &conn,
        CdnRequest::Put {
            manifest: huge.encode().into(),
        },
    )
    .await;
    assert!(matches!(
        reply(&mut frames).await,
        CdnReply::Refused(CdnRefusal::QuotaExceeded { .. })
    ));

    // Bytes that are not the manifest's: refused, not stored.
    let data = vec![7u8; (1 << 20) + 5];
    let m = manifest_of(&data);
    let (mut send, mut frames) = request(
        &conn,
        CdnRequest::Put {
            manifest: m.encode().into(),
        },
    )
    .await;
    assert_eq!(
        reply(&mut frames).await,
        CdnReply::Need { chunks: vec![0, 1] }
    );
    send.write_all(&vec![8u8; data.len()]).await.unwrap();
    send.finish().unwrap();
    assert!(matches!(
        reply(&mut frames).await,
        CdnReply::Refused(CdnRefusal::BadManifest(_))
    ));

    // The right bytes and then more ("endless" upload): refused, not published.
    let (mut send, mut frames) = start_put(&conn, &m).await;
    send.write_all(&data).await.unwrap();
    send.write_all(&[0u8; 4096]).await.ok();
    send.finish().ok();
    assert!(matches!(
        reply(&mut frames).await,
        CdnReply::Refused(CdnRefusal::BadManifest(_))
    ));
    // An upload cut off halfway.
    let (mut send, mut frames) = start_put(&conn, &m).await;
    send.write_all(&data[..1000]).await.unwrap();
    send.finish().unwrap();
    assert!(matches!(
        reply(&mut frames).await,
        CdnReply::Refused(CdnRefusal::Failed(_))
    ));

    let cid = m.cid();
    let get = CdnRequest::get(cid, None);
    assert!(matches!(
        Serving::open(&conn, &cid, &get).await,
        Err(top_proto::net::cdn_fetch::FetchError::Refused(
            CdnRefusal::NotFound
        ))
    ));
    let cdn = dir.path().join("cdn");
    for sub in ["origin", "cache", "tmp", "published"] {
        assert_eq!(files_in(&cdn.join(sub)), 0, "{sub} holds leftovers");
    }

    // After all that, a good upload of the same content works.
    let (mut send, mut frames) = start_put(&conn, &m).await;
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    assert_eq!(reply(&mut frames).await, CdnReply::Published { cid });
    let mut serving = Serving::open(&conn, &cid, &get).await.unwrap();
    let mut got = Vec::new();
    while let Some((_, chunk)) = serving.next_chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(got == data);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unpaid_keys_upload_nothing_on_a_relay_that_charges() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    // Forty uploads of a 16 MiB chunk each from fresh keys with no channel: each is refused
    // before the relay asks for (or buffers) a byte.
    let big = ManifestBuilder::new(None);
    let data = vec![9u8; 16 << 20];
    let mut b = big;
    b.update(&data);
    let manifest = b.finish().unwrap();
    for _ in 0..40 {
        let (_endpoint, conn) = endpoint_and_conn(&relay.addr(), &Identity::generate()).await;
        let put = CdnRequest::Put {
            manifest: manifest.encode().into(),
        };
        let (_send, mut frames) = request(&conn, put).await;
        assert!(matches!(
            reply(&mut frames).await,
            CdnReply::Refused(CdnRefusal::PaymentRequired)
        ));
    }
    assert_eq!(files_in(&dir.path().join("cdn/origin")), 0);
    relay.shutdown().await;
}
