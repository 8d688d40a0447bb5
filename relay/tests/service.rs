//! `toprelay` as a system service: the unit file passes `systemd-analyze verify`, and the
//! relay tells systemd it is ready only once it serves (endpoint, HTTP port and chain).

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_toprelay");
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/systemd/toprelay.service"
);
const DROP_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/systemd/toprelay.service.d/vpn-exit.conf"
);

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    // The unit as installed: our binary where it says /usr/bin/toprelay, our man page where
    // `Documentation=` points.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("CapabilityBoundingSet=\n"));
    std::fs::write(
        tmp.path().join("toprelay.service"),
        unit.replace("/usr/bin/toprelay", BIN),
    )
    .unwrap();
    let drop_ins = tmp.path().join("toprelay.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::copy(DROP_IN, drop_ins.join("vpn-exit.conf")).unwrap();
    let man = tmp.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    std::fs::write(man.join("toprelay.1"), run(&["man"])).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify"])
        .arg(tmp.path().join("toprelay.service"))
        .env("MANPATH", tmp.path().join("man"))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", tmp.path().display()))
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/install-deps.sh)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // Warnings (an unknown key, a misspelt system call group) fail too.
    assert!(said.trim().is_empty(), "{said}");
}

fn spawn_run(dir: &Path, notify: Option<&Path>) -> Child {
    // As systemd starts it: WATCHDOG_PID is the relay's own pid (the shell execs it).
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "WATCHDOG_PID=$$ exec \"$0\" run --data-dir \"$1\"",
        BIN,
    ])
    .arg(dir)
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(dir.with_extension("log")).unwrap());
    if let Some(socket) = notify {
        cmd.env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", "400000");
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("relay1"), "{line}");
    child
}

/// `GET /api/status` (None while the port does not answer).
fn status(http: u16) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
    s.write_all(b"GET /api/status HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[test]
fn ready_only_once_the_chain_is_up_then_watchdog_while_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    // The upstream (a dev chain's validator) is made but not started yet.
    let upstream_port = free_port();
    let upstream = tmp.path().join("upstream");
    let listen = format!("127.0.0.1:{upstream_port}");
    let upstream_addr = run(&[
        "init",
        "--dev",
        "--listen",
        &listen,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        upstream.to_str().unwrap(),
    ]);
    // The follower joins through it.
    let http = free_port();
    let follower = tmp.path().join("follower");
    run(&[
        "init",
        "--listen",
        "127.0.0.1:0",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--bootstrap",
        upstream_addr.trim(),
        "--data-dir",
        follower.to_str().unwrap(),
    ]);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let _follower = Killed(spawn_run(&follower, Some(&socket_path)));

    // It serves HTTP, but without its chain it has not said it is ready.
    let before = status(http).expect("the follower's HTTP port answers once `run` printed");
    assert!(before["ledger"].is_null(), "{before}");
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let early = socket.recv(&mut buf);
    assert!(
        early.is_err(),
        "notified before the chain opened: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).to_string())
    );

    // The upstream comes up: the follower fetches the genesis, opens its chain, then says so.
    let _upstream = Killed(spawn_run(&upstream, None));
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let n = socket.recv(&mut buf).expect("READY=1 within a minute");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS=serving relay1"), "{first}");
    let after = status(http).expect("still serving");
    assert!(!after["ledger"].is_null(), "ready without a chain: {after}");

    // Then the watchdog, twice per WATCHDOG_USEC (0.4 s) while healthy.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let n = socket.recv(&mut buf).expect("WATCHDOG=1");
        let said = String::from_utf8_lossy(&buf[..n]);
        assert!(said.contains("WATCHDOG=1"), "{said}");
        pings += 1;
    }
    assert!(start.elapsed() < Duration::from_secs(30));
}
