//! `top cdn …`: publish files, fetch content by id (verified chunk by chunk), unpublish.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use top_client::{Amount, Cid, Progress, RelayAddr};

use crate::home::Home;
use crate::write_out::WriteOut;

#[derive(Subcommand)]
pub enum CdnCommand {
    /// Publish FILE on your relay; prints its content id (cid1…).
    Put {
        /// The file.
        file: PathBuf,
        /// MIME type served as Content-Type by HTTP gateways (e.g. text/html).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Fetch CID (every chunk checked against it) into -o FILE, or to standard output.
    Get {
        /// The content id.
        cid: Cid,
        /// Where to write it (written to FILE.part, renamed when complete).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only bytes START-END (inclusive, like HTTP), e.g. 0-1023.
        #[arg(long, value_parser = parse_range)]
        range: Option<std::ops::Range<u64>>,
    },
    /// Stop publishing CID on your relay.
    Rm {
        /// The content id.
        cid: Cid,
    },
    /// Pay for your relay (or --relay) serving CID over HTTP, up to --cap TOP from your deposit.
    Allow {
        /// The content id.
        cid: Cid,
        /// The most the relay may charge for it (TOP).
        #[arg(long)]
        cap: Amount,
    },
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected START-END, got {s:?}"))?;
    let start: u64 = a.parse().map_err(|_| format!("bad start {a:?}"))?;
    let last: u64 = b.parse().map_err(|_| format!("bad end {b:?}"))?;
    if last < start {
        return Err(format!("end {last} is before start {start}"));
    }
    Ok(start..last + 1)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Runs a `top cdn` command.
pub async fn run(home: &Home, relay: Option<RelayAddr>, cmd: CdnCommand) -> Result<()> {
    let client = crate::connect(home, relay).await?;
    match cmd {
        CdnCommand::Put { file, content_type } => {
            let size = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            let hashing = bar(size, "hashing");
            let mut sending: Option<ProgressBar> = None;
            let mut progress = |p: Progress| match p {
                Progress::Hashed(n) => hashing.set_position(n),
                Progress::Sending { sent, total } => {
                    hashing.finish_and_clear();
                    sending
                        .get_or_insert_with(|| bar(total, "sending"))
                        .set_position(sent);
                }
            };
            let cid = client
                .publish_file(&file, content_type.as_deref(), &mut progress)
                .await
                .with_context(|| format!("publishing {}", file.display()))?;
            hashing.finish_and_clear();
            if let Some(bar) = sending {
                bar.finish_and_clear();
            }
            println!("{cid}");
        }
        CdnCommand::Get { cid, output, range } => {
            let fetch = client
                .fetch_range(&cid, range)
                .await
                .with_context(|| format!("fetching {cid}"))?;
            let r = fetch.range();
            let progress = bar(r.end - r.start, "fetching");
            match output {
                Some(path) => save(fetch, &path, &progress).await?,
                None => {
                    // Written off the runtime: a reader that stops reading must not stall the
                    // connection.
                    let mut out = WriteOut::stdout().context("standard output")?;
                    let mut fetch = fetch;
                    while let Some(part) = fetch.next().await {
                        let part = part.with_context(|| format!("fetching {cid}"))?;
                        let len = part.len() as u64;
                        out.write(part).await?;
                        progress.inc(len);
                    }
                    out.finish().await?;
                }
            }
            progress.finish_and_clear();
        }
        CdnCommand::Rm { cid } => {
            client.unpublish(&cid).await?;
            println!("unpublished {cid}");
        }
        CdnCommand::Allow { cid, cap } => {
            let channel = client
                .allow_egress(&cid, cap)
                .await
                .context("giving the relay an egress allowance")?;
            println!(
                "relay {} may charge up to {cap} TOP for serving {cid} over HTTP",
                client.relay().id
            );
            eprintln!(
                "paid from channel {} (close it with `top wallet close-channel` to stop)",
                hex(&channel.0)
            );
        }
    }
    let relay = client.relay().to_string();
    crate::spending::record(home, &relay, client.billing(), &client.usage());
    client.close().await;
    Ok(())
}

async fn save(mut fetch: top_client::Fetch, path: &Path, progress: &ProgressBar) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory; name the file to write", path.display());
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = std::fs::File::create(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut out = WriteOut::file(file);
    while let Some(bytes) = fetch.next().await {
        let written = match bytes {
            Ok(b) => {
                let len = b.len() as u64;
                out.write(b)
                    .await
                    .map(|()| len)
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(anyhow::Error::from(e).context("fetching")),
        };
        match written {
            Ok(len) => progress.inc(len),
            Err(e) => {
                std::fs::remove_file(&part).ok();
                return Err(e);
            }
        }
    }
    if let Err(e) = out.finish().await {
        std::fs::remove_file(&part).ok();
        return Err(e).with_context(|| format!("writing {}", part.display()));
    }
    tokio::fs::rename(&part, path).await?;
    eprintln!(
        "{} bytes written to {}",
        fetch.range().end - fetch.range().start,
        path.display()
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
