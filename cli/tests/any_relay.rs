//! The `top` command as new users run it, through a follower relay exactly as through the
//! validator, each command on its first try, and the same after both relays restart.
//!
//! Two real `toprelay` processes on loopback: A validates a dev chain, B links to A and follows
//! it. Bob's relay is B, alice's is A; every wallet, messaging and CDN command runs for both.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOP: &str = env!("CARGO_BIN_EXE_top");

/// The `toprelay` binary next to `top`: `cargo test --workspace` (the test command) builds both.
/// Testing this package alone builds it only if it is missing: after changing the relay, run
/// `cargo build -p top-relay` first (building it from here each time would rebuild half the
/// dependency tree under another feature set).
fn toprelay_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = Path::new(TOP).with_file_name("toprelay");
            if !bin.exists() {
                let cargo = option_env!("CARGO").unwrap_or("cargo");
                let built = Command::new(cargo)
                    .args(["build", "-p", "top-relay", "--bin", "toprelay"])
                    .status()
                    .expect("cargo runs");
                assert!(built.success(), "building toprelay");
            }
            bin
        })
        .clone()
}

#[path = "../../relay/tests/common/ports.rs"]
mod ports;

use ports::free_port;

/// One relay process and where it lives.
struct RelayProc {
    dir: PathBuf,
    http: SocketAddr,
    addr: String,
    child: Option<Child>,
}

impl RelayProc {
    /// `toprelay init` with fixed ports (so restarts keep the address) and fast blocks.
    fn init(dir: PathBuf, dev: bool, peer: Option<&str>) -> Self {
        let (quic, http) = (free_port(), free_port());
        let mut cmd = Command::new(toprelay_bin());
        cmd.arg("init")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{quic}")])
            .args(["--http", &format!("127.0.0.1:{http}")]);
        if dev {
            cmd.arg("--dev");
        }
        if let Some(peer) = peer {
            cmd.args(["--peer", peer]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace("block_interval_ms = 1000", "block_interval_ms = 250");
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            addr: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            child: None,
        }
    }

    /// `toprelay run`; returns once it printed its address.
    fn start(&mut self) {
        let mut child = Command::new(toprelay_bin())
            .args(["run", "--data-dir"])
            .arg(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), self.addr, "the relay serves at its address");
        self.child = Some(child);
    }

    /// SIGTERM; returns how long the relay took to exit (it must exit 0).
    fn stop(&mut self) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
        started.elapsed()
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(self.http, path)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// A plain HTTP/1.0 GET (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, raw[split + 4..].to_vec())
}

/// Waits (on the relay's own answers) until both relays serve the chain at one height or more
/// and the follower has caught up with the validator's height at the time of asking.
fn wait_chain_ready(a: &RelayProc, b: &RelayProc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A relay answers 404 for the ledger until its chain is open.
        let height = |r: &RelayProc| match r.get("/api/ledger/summary") {
            (200, body) => serde_json::from_slice::<Value>(&body).unwrap()["height"].as_u64(),
            _ => None,
        };
        if let (Some(ha), Some(hb)) = (height(a), height(b))
            && ha >= 1
            && hb >= 1
            && hb + 1 >= ha
        {
            return;
        }
        assert!(Instant::now() < deadline, "chain not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A user of the `top` CLI.
struct User {
    home: PathBuf,
    id: String,
}

impl User {
    fn new(root: &Path, name: &str, relay: &RelayProc) -> Self {
        let home = root.join(name);
        let out = top(&home, &["init", "--relay", &relay.addr]);
        Self {
            id: ok(&out).trim().to_string(),
            home,
        }
    }

    /// Runs `top ARGS`; the command must succeed on its first try.
    fn run(&self, args: &[&str]) -> Output {
        let out = top(&self.home, args);
        assert!(
            out.status.success(),
            "`top {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.stdout(args)).unwrap()
    }

    /// `top msg inbox --json` lists a message with `text`.
    fn inbox_has(&self, text: &str) {
        let inbox = self.json(&["msg", "inbox", "--json"]);
        let found = inbox
            .as_array()
            .is_some_and(|all| all.iter().any(|m| m["text"] == text));
        assert!(found, "{text:?} not in {}'s inbox: {inbox}", self.id);
    }

    fn balance(&self) -> Value {
        self.json(&["wallet", "balance", "--json"])
    }

    /// `top msg listen --json` in the background; lines arrive on the returned channel.
    fn listen(&self) -> (Child, mpsc::Receiver<Value>) {
        let mut child = Command::new(TOP)
            .arg("--home")
            .arg(&self.home)
            .args(["msg", "listen", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It says so on stderr once its session is open.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening as") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "listen ended");
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    tx.send(v).ok();
                }
            }
        });
        (child, rx)
    }
}

fn top(home: &Path, args: &[&str]) -> Output {
    Command::new(TOP)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

const TOP_UNITS: u64 = 1_000_000_000;
/// A dev chain's transaction fee, in base units.
const DEV_FEE_UNITS: u64 = top_relay::ledger::setup::DEV_MIN_FEE_UNITS as u64;

/// Wallet and CDN commands for `user`, whose relay is `relay`; `round` numbers the funds so the
/// figures are exact.
fn wallet_and_cdn(user: &User, other: &User, relay: &RelayProc, root: &Path, round: u64) {
    let before = user.balance();
    let (bal0, dep0) = (
        before["balance"].as_u64().unwrap(),
        before["deposit"].as_u64().unwrap(),
    );
    let got = user.stdout(&["wallet", "faucet", "100"]);
    assert!(got.contains("received 100 TOP"), "{got}");
    user.stdout(&["wallet", "deposit", "10"]);
    // Read-your-writes: the relay's answer already shows both. What the previous round set in
    // motion may land meanwhile (its 1 TOP withdrawal returns to the balance, its egress
    // channel's unspent cap of at most 1 TOP to the deposit), so allow for exactly that.
    let after = user.balance();
    let (bal1, dep1) = (
        after["balance"].as_u64().unwrap(),
        after["deposit"].as_u64().unwrap(),
    );
    let late = if round > 1 { TOP_UNITS } else { 0 };
    // The deposit's transaction fee is burned from the balance.
    let gained = 90 * TOP_UNITS - DEV_FEE_UNITS;
    assert!(
        (bal0 + gained..=bal0 + gained + late).contains(&bal1),
        "balance {bal0} → {bal1}"
    );
    assert!(
        (dep0 + 10 * TOP_UNITS..=dep0 + 10 * TOP_UNITS + late).contains(&dep1),
        "deposit {dep0} → {dep1}"
    );

    // Publish, fetch back, and pay for HTTP egress on this relay's gateway.
    let file = root.join(format!("{}-{round}.bin", user.id));
    let data: Vec<u8> = (0..(1u32 << 20) + 333)
        .map(|i| (i.wrapping_mul(7) ^ round as u32) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let cid = user
        .stdout(&["cdn", "put", file.to_str().unwrap()])
        .trim()
        .to_string();
    let back = root.join(format!("{}-{round}.out", user.id));
    user.run(&["cdn", "get", &cid, "-o", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "fetched bytes differ"
    );
    assert_eq!(relay.get(&format!("/cdn/{cid}")).0, 402, "no allowance yet");
    let allowed = user.run(&["cdn", "allow", &cid, "--cap", "1"]);
    let said = String::from_utf8_lossy(&allowed.stderr).to_string();
    let channel = said
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("channel id in {said}"))
        .to_string();
    let (code, body) = relay.get(&format!("/cdn/{cid}"));
    assert_eq!(code, 200);
    assert!(body == data, "gateway bytes differ");

    user.stdout(&["wallet", "transfer", &other.id, "1"]);
    let out = user.stdout(&["wallet", "withdraw", "1"]);
    assert!(out.contains("returns to your balance at block"), "{out}");
    let out = user.stdout(&["wallet", "close-channel", &channel]);
    assert!(out.contains("channel closing"), "{out}");
    let chain = user.json(&["wallet", "chain", "--json"]);
    assert_eq!(chain["invariant_ok"], true);
}

/// Alice and bob message each other live (listening) and read their inboxes.
fn messaging(alice: &User, bob: &User, text: &str) {
    let (mut listener, lines) = bob.listen();
    let sent = alice.stdout(&["msg", "send", &bob.id, text]);
    // Acknowledged at once, or (on a busy machine, after 300 ms) held durably meanwhile.
    assert!(
        sent.contains("delivered to") || sent.contains("delivery in progress"),
        "{sent}"
    );
    let got = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("bob's listener prints the message");
    assert_eq!(got["from"], alice.id.as_str());
    assert_eq!(got["text"], text);
    Command::new("kill")
        .args(["-INT", &listener.id().to_string()])
        .status()
        .unwrap();
    assert!(listener.wait().unwrap().success());

    let reply = format!("re: {text}");
    let sent = bob.stdout(&["msg", "send", &alice.id, &reply]);
    assert!(sent.contains("stored"), "alice is offline: {sent}");
    alice.inbox_has(&reply);
}

#[test]
fn cli_flows_work_through_a_follower_as_through_the_validator_and_after_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut a = RelayProc::init(root.join("relay-a"), true, None);
    let mut b = RelayProc::init(root.join("relay-b"), false, Some(&a.addr.clone()));
    a.start();
    b.start();
    wait_chain_ready(&a, &b);

    let alice = User::new(root, "alice", &a);
    let bob = User::new(root, "bob", &b);
    registry(&alice, &bob, &a, &b);
    // Bob (follower) first: nothing may depend on the validator having seen him before.
    wallet_and_cdn(&bob, &alice, &b, root, 1);
    wallet_and_cdn(&alice, &bob, &a, root, 1);
    messaging(&alice, &bob, "hello bob, from A");
    messaging(&bob, &alice, "hello alice, from B");

    // Alice messages bob while he is offline; both relays restart; bob's first inbox has it.
    let sent = alice.stdout(&["msg", "send", &bob.id, "while you were away"]);
    assert!(sent.contains("stored"), "{sent}");
    let stop_a = a.stop();
    let stop_b = b.stop();
    eprintln!("idle stop: validator {stop_a:?}, follower {stop_b:?}");
    assert!(
        stop_a < Duration::from_secs(3) && stop_b < Duration::from_secs(3),
        "an idle relay stops at once (validator {stop_a:?}, follower {stop_b:?})"
    );
    b.start();
    a.start();
    // Right after both answer: no waiting for links or the chain.
    assert_eq!(a.get("/health").0, 200);
    assert_eq!(b.get("/health").0, 200);
    bob.inbox_has("while you were away");
    wait_chain_ready(&a, &b);

    // Everything again after the restart.
    wallet_and_cdn(&bob, &alice, &b, root, 2);
    wallet_and_cdn(&alice, &bob, &a, root, 2);
    messaging(&alice, &bob, "after the restart, from A");
    messaging(&bob, &alice, "after the restart, from B");

    // One ordinary run of commands counts no bad frames.
    for relay in [&a, &b] {
        let (_, metrics) = relay.get("/metrics");
        let metrics = String::from_utf8(metrics).unwrap();
        let bad = metrics
            .lines()
            .find(|l| l.starts_with("toprelay_bad_frames_total"))
            .unwrap_or_else(|| panic!("bad_frames in {metrics}"));
        assert!(bad.ends_with(" 0"), "{bad}");
        promtool_accepts(&metrics);
    }
    a.stop();
    b.stop();
}

/// The ids of the relays `top relays --json` lists (through `user`'s relay) once it lists
/// `count` of them.
fn listed(user: &User, count: usize, args: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut cmd = vec!["relays", "--json"];
        cmd.extend_from_slice(args);
        let list = user.json(&cmd);
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() == count {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "`top relays` lists {} relays, not {count}: {list:?}",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn toprelay(args: &[&str], dir: &Path) -> String {
    let out = Command::new(toprelay_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`toprelay {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Both relays registered themselves on start; `top relays` lists them through either, with a
/// measured round trip; the follower deregisters and registers again.
fn registry(alice: &User, bob: &User, a: &RelayProc, b: &RelayProc) {
    let id = |addr: &str| addr.split('@').next().unwrap().to_string();
    for user in [alice, bob] {
        let list = listed(user, 2, &[]);
        let mut ids: Vec<String> = list
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        let mut want = vec![id(&a.addr), id(&b.addr)];
        want.sort();
        assert_eq!(ids, want, "{list:?}");
        for r in &list {
            let addr = r["addr"].as_str().unwrap();
            assert!(addr == a.addr || addr == b.addr, "{r}");
            assert!(r["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
            assert!(
                r["services"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "messaging")
            );
        }
        assert!(listed(user, 0, &["--service", "vpn"]).is_empty());
    }
    let out = toprelay(&["deregister"], &b.dir);
    assert!(out.contains("deregistered"), "{out}");
    listed(alice, 1, &[]);
    let out = toprelay(&["register"], &b.dir);
    assert!(out.contains("registered in block"), "{out}");
    listed(alice, 2, &[]);
    listed(bob, 2, &[]);
}

/// `promtool check metrics` (Debian package `prometheus`, installed by scripts/install-deps.sh)
/// accepts the exposition: every metric has HELP text, names and types are consistent.
fn promtool_accepts(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; run scripts/install-deps.sh as root)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
