//! Running `nft` (nftables) for kernel forwarding ([`super::kernel`]): one-off scripts, and a
//! session kept open for the frequent count reads and quota updates (a process per poll would
//! cost more CPU than forwarding in user space saves).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tracing::warn;

/// `nft` could not be run, failed, or did not answer.
#[derive(Debug, thiserror::Error)]
#[error("nft: {0}")]
pub struct NftError(pub String);

/// What an `nft` run that took too long fails with.
const TIMED_OUT: &str = "timed out";

impl NftError {
    /// Whether the run took too long (what it did is unknown).
    pub fn timed_out(&self) -> bool {
        self.0 == TIMED_OUT
    }
}

/// How long one `nft` run, or one answer in a session, may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer line read from a session (a listing of every route's counters).
const MAX_LINE: usize = 16 << 20;

/// Runs `nft -f -` (with `flags`) on `script`, or `nft ARGS` if `script` is empty; returns
/// what it printed.
pub async fn nft(script: &str, args: &[&str]) -> Result<String, NftError> {
    let run = async {
        let file: &[&str] = if script.is_empty() { &[] } else { &["-f", "-"] };
        let mut child = spawn(&[args, file].concat())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| NftError(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| NftError(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(NftError(err.lines().next().unwrap_or("failed").into()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| NftError(TIMED_OUT.into()))?
}

/// `nft ARGS` with its standard streams piped, killed if dropped.
fn spawn(args: &[&str]) -> Result<Child, NftError> {
    tokio::process::Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NftError(e.to_string()))
}

/// An `nft -j -i` process: commands go in a line each; a listing answers with one JSON line,
/// an update with nothing (errors go to its standard error, logged).
pub struct NftSession {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NftSession {
    /// Starts `nft -j -i`.
    pub fn start() -> Result<Self, NftError> {
        let mut child = spawn(&["-j", "-i"])?;
        let missing = || NftError("no pipe to nft".into());
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(missing)?);
        if let Some(stderr) = child.stderr.take() {
            // Ends when the process does (its standard error closes).
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.trim().is_empty() {
                        warn!("nft: {line}");
                    }
                }
            });
        }
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Ends the session once it carried out what it was sent (a second at most).
    pub async fn finish(mut self) {
        self.stdin.shutdown().await.ok();
        drop(self.stdin);
        tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .ok();
    }

    /// Sends `commands` (one per line; no answer expected).
    pub async fn send(&mut self, commands: &str) -> Result<(), NftError> {
        let io = |e: std::io::Error| NftError(e.to_string());
        self.stdin
            .write_all(commands.as_bytes())
            .await
            .map_err(io)?;
        self.stdin.flush().await.map_err(io)
    }

    /// Sends the listing command `list` and returns its answer.
    pub async fn list(&mut self, list: &str) -> Result<String, NftError> {
        self.send(&format!("{list}\n")).await?;
        let mut line = Vec::new();
        let read = async {
            loop {
                let buf = self.stdout.fill_buf().await?;
                if buf.is_empty() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                if line.len() + take > MAX_LINE {
                    return Err(std::io::Error::other("answer too long"));
                }
                line.extend_from_slice(&buf[..take]);
                self.stdout.consume(take);
                if done {
                    return Ok::<(), std::io::Error>(());
                }
            }
        };
        tokio::time::timeout(NFT_TIMEOUT, read)
            .await
            .map_err(|_| NftError("no answer".into()))?
            .map_err(|e| NftError(e.to_string()))?;
        Ok(String::from_utf8_lossy(&line).into_owned())
    }
}

/// The counters of one table, from a listing of every table's.
#[derive(Debug, Default)]
pub struct Counters {
    /// `bytes`, `packets` by name.
    by_name: HashMap<String, (u64, u64)>,
    /// Every table the listing has counters of.
    pub tables: HashSet<String>,
}

impl Counters {
    /// Counter `name`'s bytes and packets.
    pub fn of(&self, name: &str) -> Option<(u64, u64)> {
        self.by_name.get(name).copied()
    }
}

/// Table `table`'s counters from `nft -j list counters` output (`None` if it is not such a
/// listing).
pub fn parse_counters(json: &str, table: &str) -> Option<Counters> {
    let v = serde_json::from_str::<serde_json::Value>(json).ok()?;
    let items = v.get("nftables")?.as_array()?;
    let mut counters = Counters::default();
    for c in items.iter().filter_map(|item| item.get("counter")) {
        let Some(of) = c["table"].as_str() else {
            continue;
        };
        if of != table {
            counters.tables.insert(of.to_string());
            continue;
        }
        counters.tables.insert(of.to_string());
        if let (Some(name), Some(bytes), Some(packets)) = (
            c["name"].as_str(),
            c["bytes"].as_u64(),
            c["packets"].as_u64(),
        ) {
            counters.by_name.insert(name.to_string(), (bytes, packets));
        }
    }
    Some(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_nft_output() {
        let json = r#"{"nftables": [{"metainfo": {}},
            {"counter": {"table": "t", "name": "cu1", "packets": 3, "bytes": 300}},
            {"counter": {"table": "other", "name": "cu2", "packets": 1, "bytes": 10}},
            {"quota": {"table": "t", "name": "u1", "bytes": 5000, "used": 700, "inv": false}}]}"#;
        let counters = parse_counters(json, "t").unwrap_or_default();
        assert_eq!(counters.of("cu1"), Some((300, 3)));
        assert_eq!(counters.of("cu2"), None);
        assert_eq!(counters.by_name.len(), 1);
        assert!(counters.tables.contains("other"));
        assert!(parse_counters("not json", "t").is_none());
        assert!(parse_counters("{}", "t").is_none());
    }
}
