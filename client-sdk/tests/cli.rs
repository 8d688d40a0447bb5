//! The `top` command as an end user runs it, against a real relay on loopback.

use std::process::{Command, Output};

use top_relay::{InitOptions, Relay, init};

const TOP: &str = env!("CARGO_BIN_EXE_top");

fn top(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(TOP)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn init_send_inbox_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("relay"), InitOptions::loopback()).unwrap();
    let relay = Relay::start(&dir.path().join("relay")).await.unwrap();
    let addr = relay.addr().to_string();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));

    let alice_id = stdout(&top(&alice, &["init", "--relay", &addr]))
        .trim()
        .to_string();
    assert!(alice_id.starts_with("acct1"));
    let bob_id = stdout(&top(&bob, &["init", "--relay", &addr]))
        .trim()
        .to_string();
    assert_eq!(stdout(&top(&bob, &["id"])).trim(), bob_id);

    let sent = stdout(&top(
        &alice,
        &["msg", "send", &bob_id, "hello from the cli"],
    ));
    assert!(sent.contains("stored"), "{sent}");
    let inbox = stdout(&top(&bob, &["msg", "inbox", "--json"]));
    let inbox: serde_json::Value = serde_json::from_str(&inbox).unwrap();
    assert_eq!(inbox[0]["from"], alice_id.as_str());
    assert_eq!(inbox[0]["text"], "hello from the cli");

    // Clear errors for bad input.
    let bad = top(&alice, &["msg", "send", "acct1notanid", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid id"));
    let nobody = dir.path().join("nobody");
    let missing = top(&nobody, &["id"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("top --home"));
    assert!(
        !top(&alice, &["init"]).status.success(),
        "init must not overwrite an identity"
    );
    relay.shutdown().await;
}
