//! The CDN end to end: real relays on loopback, the SDK, and `curl` against the HTTP gateway.
//! Publishing (quota, unpublish), whole and ranged fetches, HTTP semantics (Range, ETag, 304,
//! immutable), bad input, misses fetched from peers, and a relay that serves corrupted chunks.

mod common;

use std::time::Duration;

use common::relay_with as relay;
use top_client::{CdnRefusal, Cid, Client, ClientError, FetchError, Identity};
use top_relay::Relay;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = seed;
    while out.len() < len {
        out.extend_from_slice(blake3::hash(&counter.to_le_bytes()).as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// What curl got: status, headers (lowercase names), body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn curl(url: &str, headers: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().await.expect("curl runs");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let headers = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

async fn fetch_all(
    client: &Client,
    cid: &Cid,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, ClientError> {
    client.fetch_range(cid, range).await?.bytes().await
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fetch_ranges_http_semantics_quota_and_unpublish() {
    let dir = tempfile::tempdir().unwrap();
    let a = relay(&dir.path().join("a"), vec![], |c| {
        c.cdn_publish_quota_bytes = 5 << 20;
    })
    .await;
    let publisher = Client::connect(&a.addr(), Identity::generate())
        .await
        .unwrap();
    let data = random_bytes((3 << 20) + 12345, 1);
    let cid = publisher.publish(&data, Some("text/plain")).await.unwrap();
    // Publishing the same bytes again is a no-op with the same id.
    assert_eq!(
        publisher.publish(&data, Some("text/plain")).await.unwrap(),
        cid
    );

    let reader = Client::connect(&a.addr(), Identity::generate())
        .await
        .unwrap();
    assert_eq!(fetch_all(&reader, &cid, None).await.unwrap(), data);
    let range = (1 << 20) - 10..(2 << 20) + 7;
    assert_eq!(
        fetch_all(&reader, &cid, Some(range.clone())).await.unwrap(),
        &data[range.start as usize..range.end as usize]
    );
    let too_far = fetch_all(&reader, &cid, Some(0..data.len() as u64 + 1)).await;
    assert!(
        matches!(
            &too_far,
            Err(ClientError::Cdn(FetchError::Refused(
                CdnRefusal::BadRange { .. }
            )))
        ),
        "{too_far:?}"
    );

    // The gateway, through curl.
    let url = format!("http://{}/cdn/{cid}", a.http_addr());
    let got = curl(&url, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    assert_eq!(
        got.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(got.header("etag"), Some(format!("\"{cid}\"").as_str()));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert!(got.header("cache-control").unwrap().contains("immutable"));
    // Published pages run sandboxed: never as the relay's own origin (dashboard, API).
    let csp = got.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.starts_with("sandbox") && !csp.contains("allow-same-origin"),
        "{csp:?}"
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    let part = curl(&url, &["Range: bytes=1048570-1048585"]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[1048570..1048586]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 1048570-1048585/{}", data.len()).as_str())
    );
    let suffix = curl(&url, &["Range: bytes=-100"]).await;
    assert_eq!(
        (suffix.status, &suffix.body[..]),
        (206, &data[data.len() - 100..])
    );
    let bad = curl(&url, &["Range: bytes=99999999-"]).await;
    assert_eq!(bad.status, 416);
    assert_eq!(
        bad.header("content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );
    assert_eq!(curl(&url, &["Range: bytes=abc"]).await.status, 416);
    let head = tokio::process::Command::new("curl")
        .args(["-sSI", &url])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    let cached = curl(&url, &[&format!("If-None-Match: \"{cid}\"")]).await;
    assert_eq!((cached.status, cached.body.len()), (304, 0));
    let http = a.http_addr();
    assert_eq!(
        curl(&format!("http://{http}/cdn/cid1notavalidid"), &[])
            .await
            .status,
        400
    );
    assert_eq!(
        curl(&format!("http://{http}/cdn/..%2F..%2Fetc%2Fpasswd"), &[])
            .await
            .status,
        400
    );
    let unknown = Cid([7; 32]);
    assert_eq!(
        curl(&format!("http://{http}/cdn/{unknown}"), &[])
            .await
            .status,
        404
    );

    // Quota: 3 MiB published of 5 MiB; 3 more do not fit until the first is unpublished.
    let more = random_bytes(3 << 20, 2);
    let refused = publisher.publish(&more, None).await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Cdn(FetchError::Refused(
                CdnRefusal::QuotaExceeded { .. }
            )))
        ),
        "{refused:?}"
    );
    let not_mine = reader.unpublish(&cid).await;
    assert!(
        matches!(
            &not_mine,
            Err(ClientError::Cdn(FetchError::Refused(
                CdnRefusal::NotPublisher
            )))
        ),
        "{not_mine:?}"
    );
    publisher.unpublish(&cid).await.unwrap();
    assert_eq!(
        curl(&url, &[]).await.status,
        404,
        "unpublished content still served"
    );
    let cid2 = publisher.publish(&more, None).await.unwrap();
    assert_eq!(fetch_all(&reader, &cid2, None).await.unwrap(), more);
    let got = curl(&format!("http://{http}/cdn/{cid2}"), &[]).await;
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));

    // Restart: published content survives.
    publisher.close().await;
    reader.close().await;
    a.shutdown().await;
    let a = Relay::start(&dir.path().join("a")).await.unwrap();
    let got = curl(&format!("http://{}/cdn/{cid2}", a.http_addr()), &[]).await;
    assert_eq!((got.status, got.body == more), (200, true));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_come_from_peers_and_a_relay_serving_corrupt_chunks_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let origin = relay(&dir.path().join("origin"), vec![], |_| {}).await;
    let liar = relay(&dir.path().join("liar"), vec![origin.addr()], |_| {}).await;
    // The edge asks the liar first (config order), then the origin; it caches at most 2 MiB.
    let edge = relay(
        &dir.path().join("edge"),
        vec![liar.addr(), origin.addr()],
        |c| {
            c.cdn_cache_bytes = 2 << 20;
        },
    )
    .await;
    // Without a chain, a relay links only with relays its operator configured: both ways.
    origin.add_peer(liar.addr());
    origin.add_peer(edge.addr());
    liar.add_peer(edge.addr());
    for (r, peer) in [
        (&liar, origin.id()),
        (&edge, liar.id()),
        (&edge, origin.id()),
    ] {
        tokio::time::timeout(Duration::from_secs(10), r.wait_linked(&peer))
            .await
            .expect("relays link");
    }
    let publisher = Client::connect(&origin.addr(), Identity::generate())
        .await
        .unwrap();
    let data = random_bytes(5 << 20, 3);
    let cid = publisher.publish(&data, None).await.unwrap();

    // The liar fetches the content from the origin (a miss), then its disk "lies": chunk 2 is
    // replaced while it runs (it checked that chunk when it stored it, so it serves it as is).
    let got = curl(&format!("http://{}/cdn/{cid}", liar.http_addr()), &[]).await;
    assert_eq!((got.status, got.body == data), (200, true));
    let chunk2 = blake3::hash(&data[2 << 20..3 << 20]).to_hex().to_string();
    let on_disk = dir.path().join("liar/cdn/cache").join(&chunk2);
    assert!(on_disk.exists(), "the liar cached the chunk");
    std::fs::write(&on_disk, vec![0u8; 1 << 20]).unwrap();
    let lie = curl(&format!("http://{}/cdn/{cid}", liar.http_addr()), &[]).await;
    assert_ne!(lie.body, data, "the liar serves corrupted bytes over HTTP");

    // The edge has nothing: it fetches from the liar first, catches chunk 2 at once and takes
    // it from the origin instead; what it serves is exact.
    let got = curl(&format!("http://{}/cdn/{cid}", edge.http_addr()), &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the edge served corrupted bytes");
    let metrics = curl(&format!("http://{}/metrics", edge.http_addr()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        metric(&text, "toprelay_cdn_bad_peer_chunks_total") >= 1,
        "{text}"
    );
    assert!(metric(&text, "toprelay_cdn_peer_chunks_total") >= 5);
    // Its cache stays under its bound.
    let cached: u64 = std::fs::read_dir(dir.path().join("edge/cdn/cache"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(cached <= 2 << 20, "cache holds {cached} bytes");

    // An SDK client of the liar detects the bad chunk itself; asked again, the liar re-checks
    // its copy, drops it and fetches it from the origin.
    let client = Client::connect(&liar.addr(), Identity::generate())
        .await
        .unwrap();
    assert_eq!(fetch_all(&client, &cid, None).await.unwrap(), data);
    let metrics = curl(&format!("http://{}/metrics", liar.http_addr()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        metric(&text, "toprelay_cdn_bad_local_chunks_total") >= 1,
        "{text}"
    );
    client.close().await;
    publisher.close().await;
    edge.shutdown().await;
    liar.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_requests_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let a = relay(dir.path(), vec![], |c| c.cdn_http_requests_per_ip = 1).await;
    let url = format!("http://{}/cdn/{}", a.http_addr(), Cid([1; 32]));
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}\n"])
        .args([&url, &url, &url, &url, &url])
        .output()
        .await
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).to_string();
    let codes: Vec<&str> = codes.lines().collect();
    assert_eq!(codes[0], "404");
    assert!(codes.contains(&"429"), "{codes:?}");
    // Other routes are not limited by it.
    let health = curl(&format!("http://{}/health", a.http_addr()), &[]).await;
    assert_eq!(health.status, 200);
    a.shutdown().await;
}

/// A 12 MiB file (three stripes of four chunks) fetched from two relays at once: exact bytes in
/// order, both relays serve part of it, and each client pays only for the chunks it verified
/// from its own relay; a relay that cannot serve its stripes is passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_spreads_over_streams_and_relays_and_passes_over_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let origin = relay(&dir.path().join("origin"), vec![], |_| {}).await;
    let edge = relay(&dir.path().join("edge"), vec![origin.addr()], |_| {}).await;
    let lonely = relay(&dir.path().join("lonely"), vec![], |_| {}).await;
    origin.add_peer(edge.addr());
    tokio::time::timeout(Duration::from_secs(10), edge.wait_linked(&origin.id()))
        .await
        .expect("relays link");
    let publisher = Client::connect(&origin.addr(), Identity::generate())
        .await
        .unwrap();
    let data = random_bytes(12 << 20, 9);
    let cid = publisher.publish(&data, None).await.unwrap();
    let at_origin = Client::connect(&origin.addr(), Identity::generate())
        .await
        .unwrap();
    let at_edge = Client::connect(&edge.addr(), Identity::generate())
        .await
        .unwrap();
    let served = |r: &Relay| metric(&r.metrics_text(), "toprelay_cdn_bytes_quic_total");

    let got = at_edge
        .fetch_from(&cid, None, &[&at_origin])
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "the bytes differ");
    // Each client counted (and pays for) exactly the verified chunks its own relay served; the
    // origin also served the edge's misses.
    let (paid_edge, paid_origin) = (at_edge.usage().cdn, at_origin.usage().cdn);
    assert!(
        paid_edge > 0 && paid_origin > 0,
        "{paid_edge} / {paid_origin}"
    );
    assert_eq!(paid_edge + paid_origin, 12 << 20);
    assert_eq!(served(&edge), paid_edge);
    assert_eq!(served(&origin), paid_origin + paid_edge);

    // Callers that give up on a call and call again (a timeout, a select) lose nothing.
    let mut fetch = at_edge.fetch_from(&cid, None, &[&at_origin]).await.unwrap();
    let (mut got, mut gave_up) = (Vec::new(), 0);
    loop {
        match tokio::time::timeout(Duration::from_micros(200), fetch.next()).await {
            Ok(Some(part)) => got.extend_from_slice(&part.unwrap()),
            Ok(None) => break,
            Err(_) => gave_up += 1,
        }
    }
    assert!(gave_up > 0 && got == data, "{gave_up} calls given up");

    // A range across stripes, in order.
    let range = (3 << 20) + 5..(9 << 20) + 7;
    let part = at_edge
        .fetch_from(&cid, Some(range.clone()), &[&at_origin])
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(part == data[range.start as usize..range.end as usize]);

    // The lonely relay has no copy and no peer to ask: its stripes go to the origin.
    let at_lonely = Client::connect(&lonely.addr(), Identity::generate())
        .await
        .unwrap();
    let got = at_origin
        .fetch_from(&cid, None, &[&at_lonely])
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "the bytes differ");
    assert_eq!((at_lonely.usage().cdn, served(&lonely)), (0, 0));
    for c in [publisher, at_origin, at_edge, at_lonely] {
        c.close().await;
    }
    lonely.shutdown().await;
    edge.shutdown().await;
    origin.shutdown().await;
}
