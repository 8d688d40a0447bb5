//! The `toprelay` command as a node owner runs it: init, status, run, graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_toprelay");

fn toprelay(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn status_json(dir: &std::path::Path) -> serde_json::Value {
    let out = toprelay(&["status", "--json"], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn init_status_run_and_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let out = Command::new(BIN)
        .args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let addr: top_proto::addr::RelayAddr = printed
        .trim()
        .parse()
        .expect("init prints <relay-id>@<host>:<port>");

    // A second init refuses to overwrite the identity and says why.
    let again = toprelay(&["init"], &dir);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a relay"));

    let stopped = status_json(&dir);
    assert_eq!(stopped["id"], addr.id.to_string());
    assert_eq!(stopped["running"], false);

    // Run with fixed ports so `status` can find the HTTP port from the config.
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &config,
        text.replace("http = \"127.0.0.1:0\"", &format!("http = \"{http}\"")),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let running: top_proto::addr::RelayAddr = line.trim().parse().unwrap();
    assert_eq!(running.id, addr.id);

    let live = status_json(&dir);
    assert_eq!(live["running"], true);
    assert_eq!(live["id"], addr.id.to_string());
    assert_eq!(live["sessions"], 0);
    let human = String::from_utf8(toprelay(&["status"], &dir).stdout).unwrap();
    assert!(human.contains("state:   running"), "{human}");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait().unwrap()));
    let status = exit
        .recv_timeout(Duration::from_secs(15))
        .expect("relay did not stop after SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[test]
fn bad_arguments_and_config_say_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["init", "--listen", "nowhere", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = Command::new(BIN)
        .args(["init", "--peer", "relay1bad@h:1", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad relay id"));
    let missing = toprelay(&["run"], &tmp.path().join("none"));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("toprelay init"));
}

#[test]
fn config_check_completions_and_man_page() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let out = toprelay(&["init", "--http", "127.0.0.1:0"], &dir);
    assert!(out.status.success());
    let ok = toprelay(&["config", "check"], &dir);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with(": ok\n"));

    // Every problem is listed, each saying what to do; the exit status says there were some.
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("http = \"127.0.0.1:0\"", "http = \"0.0.0.0:7780\"")
        .replace("max_connections = 10000", "max_connections = 0");
    std::fs::write(&config, text).unwrap();
    let bad = Command::new(BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(said.contains("set http_token"), "{said}");
    assert!(
        said.contains("max_connections must be at least 1"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2 problem(s)"));

    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete -F _toprelay"));
    let man = Command::new(BIN).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH toprelay 1") && man.contains("config"),
        "{man}"
    );
}
