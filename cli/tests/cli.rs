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
        .env_remove("TOP_BOOTSTRAP")
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

#[tokio::test(flavor = "multi_thread")]
async fn wallet_commands_on_a_dev_chain() {
    let dir = tempfile::tempdir().unwrap();
    let relay_dir = dir.path().join("relay");
    init(&relay_dir, InitOptions::loopback_dev()).unwrap();
    let mut config = top_relay::config::RelayConfig::load(&relay_dir).unwrap();
    config.ledger.block_interval_ms = 100;
    config.save(&relay_dir).unwrap();
    let relay = Relay::start(&relay_dir).await.unwrap();
    let addr = relay.addr().to_string();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    stdout(&top(&alice, &["init", "--relay", &addr]));
    let bob_id = stdout(&top(&bob, &["init", "--relay", &addr]))
        .trim()
        .to_string();

    let got = stdout(&top(&alice, &["wallet", "faucet", "100"]));
    assert!(got.contains("received 100 TOP"), "{got}");
    stdout(&top(&alice, &["wallet", "transfer", &bob_id, "1.5"]));
    stdout(&top(&alice, &["wallet", "deposit", "10"]));
    let out = stdout(&top(&alice, &["wallet", "withdraw", "4"]));
    assert!(out.contains("returns to your balance at block"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&top(&alice, &["wallet", "balance", "--json"]))).unwrap();
    assert_eq!(
        json["balance"],
        88_500_000_000u64 - 3 * top_relay::ledger::setup::DEV_MIN_FEE_UNITS as u64,
        "exact base units: 100 - 1.5 - 10 - three transaction fees"
    );
    assert_eq!(json["deposit"], 6_000_000_000u64);
    assert_eq!(json["unbonding"][0]["amount"], 4_000_000_000u64);
    let text = stdout(&top(&bob, &["wallet", "balance"]));
    assert!(text.contains("balance:  1.5 TOP"), "{text}");
    let granted = stdout(&top(
        &alice,
        &["wallet", "grant", &bob_id, "--cap", "2", "--expires", "1h"],
    ));
    assert!(granted.contains("may spend up to 2 TOP"), "{granted}");

    // Clear errors, nothing changed.
    let bad = top(&alice, &["wallet", "transfer", &bob_id, "1.2.3"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an amount of TOP"));
    let broke = top(&bob, &["wallet", "transfer", &bob_id, "1000"]);
    assert!(!broke.status.success());
    assert!(String::from_utf8_lossy(&broke.stderr).contains("insufficient balance"));
    let too_much = top(&alice, &["wallet", "faucet", "1000000"]);
    assert!(String::from_utf8_lossy(&too_much.stderr).contains("at most"));
    let chain: serde_json::Value =
        serde_json::from_str(&stdout(&top(&alice, &["wallet", "chain", "--json"]))).unwrap();
    assert_eq!(chain["invariant_ok"], true);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_without_a_relay_picks_a_registered_relay_through_a_bootstrap_address() {
    let dir = tempfile::tempdir().unwrap();
    let relay_dir = dir.path().join("relay");
    init(&relay_dir, InitOptions::loopback_dev()).unwrap();
    let mut config = top_relay::config::RelayConfig::load(&relay_dir).unwrap();
    config.ledger.block_interval_ms = 100;
    config.save(&relay_dir).unwrap();
    let relay = Relay::start(&relay_dir).await.unwrap();
    let mut heights = relay.chain().unwrap().subscribe();
    while !relay.chain().unwrap().with_state(|s| {
        s.relays()
            .any(|(id, _, _)| id.as_bytes() == relay.id().as_bytes())
    }) {
        heights.changed().await.unwrap();
    }

    // Nothing to start from: a clear error, and no identity left behind.
    let alice = dir.path().join("alice");
    let lost = Command::new(TOP)
        .arg("--home")
        .arg(&alice)
        .arg("init")
        .env_remove("TOP_BOOTSTRAP")
        .output()
        .unwrap();
    assert!(!lost.status.success());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("--bootstrap"));
    assert!(!alice.join("identity.key").exists());

    // Through a bootstrap address: the registered relay, measured and remembered.
    let out = top(&alice, &["init", "--bootstrap", &relay.addr().to_string()]);
    stdout(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("chose relay {}", relay.addr())),
        "{said}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&top(&alice, &["relays", "--json"]))).unwrap();
    assert_eq!(listed[0]["id"], relay.id().to_string());
    assert!(listed[0]["rtt_ms"].is_number(), "{listed}");

    // Through a genesis file that lists the relay as a bootstrap relay.
    let genesis_path = dir.path().join("network.json");
    let mut genesis = relay.chain().unwrap().genesis();
    genesis.bootstrap = vec![relay.addr()];
    std::fs::write(&genesis_path, serde_json::to_string(&genesis).unwrap()).unwrap();
    let bob = dir.path().join("bob");
    let out = top(&bob, &["init", "--genesis", genesis_path.to_str().unwrap()]);
    stdout(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("chose relay {}", relay.addr())),
        "{said}"
    );
    relay.shutdown().await;
}

/// Errors are one plain message, even with RUST_BACKTRACE set (common among Rust users); the
/// full report is behind -v.
#[test]
fn errors_print_a_message_not_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody");
    let toprelay = std::path::Path::new(TOP).with_file_name("toprelay");
    let mut runs = vec![(
        Command::new(TOP)
            .arg("--home")
            .arg(&nobody)
            .arg("id")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap(),
        "top --home",
    )];
    if toprelay.exists() {
        runs.push((
            Command::new(&toprelay)
                .args(["run", "--data-dir"])
                .arg(&nobody)
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap(),
            "toprelay init",
        ));
    }
    for (out, hint) in runs {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(hint), "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    }
    let verbose = Command::new(TOP)
        .arg("--home")
        .arg(&nobody)
        .args(["-v", "id"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        err.contains("Stack backtrace"),
        "-v shows the full report: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_says_what_each_channel_cost_per_service() {
    let dir = tempfile::tempdir().unwrap();
    let relay_dir = dir.path().join("relay");
    init(&relay_dir, InitOptions::loopback_dev()).unwrap();
    let mut config = top_relay::config::RelayConfig::load(&relay_dir).unwrap();
    config.ledger.block_interval_ms = 100;
    config.save(&relay_dir).unwrap();
    let relay = Relay::start(&relay_dir).await.unwrap();
    let addr = relay.addr().to_string();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    stdout(&top(&alice, &["init", "--relay", &addr]));
    let bob_id = stdout(&top(&bob, &["init", "--relay", &addr]))
        .trim()
        .to_string();
    // Nothing paid yet: no channels, VPN down.
    let before: serde_json::Value =
        serde_json::from_str(&stdout(&top(&alice, &["status", "--json"]))).unwrap();
    assert_eq!(before["channels"].as_array().map(Vec::len), Some(0));
    assert_eq!(before["vpn"]["state"], "down");
    assert_eq!(before["relay_reached"], true);

    stdout(&top(&alice, &["wallet", "faucet", "100"]));
    stdout(&top(&alice, &["wallet", "deposit", "10"]));
    let text = "x".repeat(20_000);
    for _ in 0..3 {
        stdout(&top(&alice, &["msg", "send", &bob_id, &text]));
    }
    // The channel the relay opened is "unknown" until a block has it: wait for that block.
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        status = serde_json::from_str(&stdout(&top(&alice, &["status", "--json"]))).unwrap();
        if status["channels"][0]["state"] != "unknown" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let channels = status["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "one channel with the relay: {status}");
    let c = &channels[0];
    assert_eq!(c["relay"], addr.as_str());
    assert_eq!(c["state"], "open");
    // Three sends of 20 kB and their storage: what this machine counted, costed per service.
    assert!(c["usage"]["msg"].as_u64().unwrap() >= 60_000, "{c}");
    assert!(c["cost"]["msg"].as_u64().unwrap() > 0, "{c}");
    assert!(c["cost"]["mailbox"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["cost"]["vpn"], 0);
    let lock = c["lock"].as_u64().unwrap();
    assert_eq!(
        status["deposit"].as_u64().unwrap() + lock,
        10_000_000_000,
        "the deposit not locked, plus the channel's lock: {status}"
    );
    let human = stdout(&top(&alice, &["status"]));
    assert!(
        human.contains("channel ") && human.contains("msg "),
        "{human}"
    );
    assert!(human.contains("vpn:      down"), "{human}");

    // With the relay gone, the local record still answers.
    relay.shutdown().await;
    let offline = stdout(&top(&alice, &["status"]));
    assert!(offline.contains("not reached"), "{offline}");
    assert!(offline.contains("channel "), "{offline}");
}

#[test]
fn completions_and_man_page() {
    let bash = Command::new(TOP)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete -F _top"));
    let zsh = Command::new(TOP)
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&zsh.stdout).contains("#compdef top"));
    let man = Command::new(TOP).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH top 1") && man.contains("status"), "{man}");
}
