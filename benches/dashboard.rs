//! Does serving the dashboard cost the data plane? Messages through a relay (dev chain, billing
//! on: `/api/status` then reads the chain, the receipts and the mailbox totals) with and without
//! dashboards open on it, each polling `/api/status` every 2 s as the page does; and with a
//! page's worth of assets fetched on every poll (a reload storm). Three rounds, alternating, every
//! round printed, medians of the ratios reported.
//!
//! `cargo bench --bench dashboard`

#[path = "common/drive.rs"]
mod drive;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use top_relay::{InitOptions, Relay, init};

use drive::{COUNT, Figures, SIZE, drive};

/// Dashboards open at once.
const DASHBOARDS: usize = 20;
/// How often each polls (the page's interval).
const POLL: Duration = Duration::from_secs(2);

/// GET `path`; whether it answered 200 (only those count as served).
async fn get(http: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.is_ok() && out.starts_with(b"HTTP/1.0 200")
}

/// Runs the messaging drive; meanwhile `dashboards` poll the relay (and reload the page each
/// time with `reload`). Returns the figures and the requests answered 200.
async fn run(dashboards: usize, reload: bool) -> (Figures, u64) {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let http = relay.http_addr();
    let served = Arc::new(AtomicU64::new(0));
    let pollers: Vec<_> = (0..dashboards)
        .map(|i| {
            let served = served.clone();
            tokio::spawn(async move {
                // Spread over the interval, as tabs opened at different times are.
                tokio::time::sleep(POLL * i as u32 / dashboards.max(1) as u32).await;
                let mut tick = tokio::time::interval(POLL);
                loop {
                    tick.tick().await;
                    let mut paths = vec!["/api/status"];
                    if reload {
                        paths.extend([
                            "/",
                            "/dashboard/dashboard.js",
                            "/dashboard/dashboard.css",
                            "/dashboard/icon.svg",
                        ]);
                    }
                    for path in paths {
                        if get(http, path).await {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let figures = drive(&relay, &relay, true).await;
    for p in pollers {
        p.abort();
    }
    relay.shutdown().await;
    (figures, served.load(Ordering::Relaxed))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "dashboard cost: {SIZE}-byte messages, {COUNT} pipelined, billing on; {DASHBOARDS} dashboards polling /api/status every {POLL:?}"
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>9}",
        "", "msgs/s", "p50", "p99", "requests"
    );
    let line = |name: &str, (f, n): &(Figures, u64)| {
        println!(
            "{name:<40} {:>10.0} {:>10.3?} {:>10.3?} {:>9}",
            f.rate, f.p50, f.p99, n
        )
    };
    let mut ratios = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let alone = runtime.block_on(run(0, false));
        let polled = runtime.block_on(run(DASHBOARDS, false));
        let reloaded = runtime.block_on(run(DASHBOARDS, true));
        println!("round {round}");
        line("  no dashboard (baseline)", &alone);
        line("  dashboards polling", &polled);
        line("  dashboards reloading every poll", &reloaded);
        let (a, p, r) = (alone.0.rate, polled.0.rate, reloaded.0.rate);
        println!(
            "  polling / baseline {:.3}; reloading / baseline {:.3}",
            p / a,
            r / a
        );
        ratios.0.push(p / a);
        ratios.1.push(r / a);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of 3 rounds: polling / baseline {:.3}, reloading / baseline {:.3}",
        median(ratios.0),
        median(ratios.1)
    );
}
