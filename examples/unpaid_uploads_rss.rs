//! Relay memory under unpaid uploads: a billing dev relay runs in its own process; 100 fresh keys
//! connect at once, each starting two CDN uploads of 16 MiB chunks and streaming chunk bytes
//! without paying. The relay's resident memory (VmRSS, sampled every 20 ms) is reported idle,
//! with 100 idle connections (the baseline of the same run), and at its peak under the attack.
//!
//! Run: `cargo run --release --example unpaid_uploads_rss [CONNECTIONS] [ROUNDS]`

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use top_proto::addr::RelayAddr;
use top_proto::cdn::Manifest;
use top_proto::cdn_wire::{CdnRequest, MAX_CDN_FRAME};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::identity::Identity;
use top_proto::net::dial::dial;

/// Bytes of chunk data each upload streams after its request (whatever the relay answers).
const STREAMED: usize = 16 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        return run_relay(args.get(2).context("relay needs a directory")?);
    }
    let conns: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "round  idle MiB  {conns} idle conns MiB  {conns} unpaid uploaders peak MiB  above idle MiB  uploads refused"
    );
    for round in 1..=rounds {
        let (idle, with_conns, peak, refused) = rt.block_on(one_round(conns))?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{round:>5}  {:>8.1}  {:>19.1}  {:>30.1}  {:>14.1}  {refused:>7}/{}",
            mib(idle),
            mib(with_conns),
            mib(peak),
            mib(peak.saturating_sub(idle)),
            2 * conns
        );
    }
    Ok(())
}

/// The child: a dev relay (billing on) until its stdin closes.
fn run_relay(dir: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let dir = std::path::Path::new(dir);
        top_relay::init(dir, top_relay::InitOptions::loopback_dev())?;
        let relay = top_relay::Relay::start(dir).await?;
        println!("{}", relay.addr());
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).ok();
        })
        .await?;
        relay.shutdown().await;
        anyhow::Ok(())
    })
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn one_round(conns: usize) -> anyhow::Result<(u64, u64, u64, usize)> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("relay")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("relay stdout")?).read_line(&mut line)?;
    let relay: RelayAddr = line.trim().parse()?;
    // Let start-up settle (first blocks, registration).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let mut open = Vec::new();
    for _ in 0..conns {
        open.push(dial(&endpoint, &Identity::generate(), &relay).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_conns = rss_kib(pid);

    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let manifest = Manifest {
        size: 64 << 20,
        chunk_size: 16 << 20,
        content_type: None,
        chunks: vec![[7; 32]; 4],
    };
    let refused = Arc::new(AtomicU64::new(0));
    let attacks = open.iter().enumerate().map(|(i, conn)| {
        let mut m = manifest.clone();
        m.chunks[0][0] = i as u8;
        let (conn, refused) = (conn.clone(), refused.clone());
        async move {
            let uploads = (0..2).map(|_| upload(&conn, &m, &refused));
            futures::future::join_all(uploads).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(attacks))
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    for conn in &open {
        conn.close(0u32.into(), b"done");
    }
    drop(child.stdin.take());
    child.wait()?;
    let refused = refused.load(Ordering::Relaxed) as usize;
    Ok((idle, with_conns, peak.load(Ordering::Relaxed), refused))
}

/// Asks to publish `m`, then streams chunk bytes whatever the answer (until the relay stops
/// reading or closes the stream); counts the upload in `refused` if the relay refused it.
async fn upload(conn: &quinn::Connection, m: &Manifest, refused: &AtomicU64) {
    use futures::{SinkExt, StreamExt};
    let Ok((mut send, recv)) = conn.open_bi().await else {
        return;
    };
    let Ok(open) = encode_frame(&Open::Cdn) else {
        return;
    };
    if send.write_all(&open).await.is_err() {
        return;
    }
    let mut out =
        tokio_util::codec::FramedWrite::new(send, FrameCodec::<CdnRequest>::new(MAX_CDN_FRAME));
    let put = CdnRequest::Put {
        manifest: m.encode().into(),
    };
    if out.send(put).await.is_err() {
        return;
    }
    let mut send = out.into_inner();
    let mut replies = tokio_util::codec::FramedRead::new(
        recv,
        FrameCodec::<top_proto::cdn_wire::CdnReply>::new(MAX_CDN_FRAME),
    );
    let answer = tokio::spawn(async move { replies.next().await });
    let block = vec![0u8; 1 << 20];
    for _ in 0..STREAMED / block.len() {
        let write = send.write_all(&block);
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    if let Ok(Some(Ok(top_proto::cdn_wire::CdnReply::Refused(_)))) = answer.await {
        refused.fetch_add(1, Ordering::Relaxed);
    }
}
