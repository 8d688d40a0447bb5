//! Two linked relays and three clients in one process, on loopback, on the embedded defaults:
//! relay A runs a dev chain (it is the validator, with a faucet), relay B follows it. Clients get
//! test TOP from the faucet, lock a deposit, and every message and pipe byte is paid through
//! channels and signed receipts; a file is published, fetched through the other relay and served
//! over HTTP against the publisher's allowance; the relays settle on their own, 10% of each fee
//! is burned, and the run ends with a table of who paid, earned and burned, and the supply check.
//!
//! Run with `cargo run --release --example quickstart`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use top_client::{Amount, Client, Identity, Outcome, Wallet};
use top_relay::{InitOptions, Relay, init};

async fn start_relay(dir: &Path, opts: InitOptions) -> Result<Relay> {
    init(dir, opts)?;
    Ok(Relay::start(dir).await?)
}

/// A new identity with 10 TOP from the faucet, 2 of them locked as a deposit.
async fn funded_identity(relay: &Relay) -> Result<Identity> {
    let id = Identity::generate();
    let wallet = Wallet::connect(&relay.addr(), id.clone()).await?;
    wallet.faucet("10".parse()?).await?;
    wallet.deposit("2".parse()?).await?;
    wallet.close().await;
    Ok(id)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let dir = tempfile::tempdir()?;
    let relay_a = start_relay(&dir.path().join("relay-a"), InitOptions::loopback_dev()).await?;
    let relay_b = start_relay(
        &dir.path().join("relay-b"),
        InitOptions {
            peers: vec![relay_a.addr()],
            ..InitOptions::loopback()
        },
    )
    .await?;
    relay_a.wait_linked(&relay_b.id()).await;
    println!("relay A  {}  (dev chain validator)", relay_a.addr());
    println!(
        "relay B  {}  (linked to A, follows its chain)",
        relay_b.addr()
    );
    while relay_b.chain().is_none_or(|c| c.height() == 0) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (alice_id, bob_id, carol_id) = (
        funded_identity(&relay_a).await?,
        funded_identity(&relay_a).await?,
        funded_identity(&relay_a).await?,
    );
    let carol = carol_id.account_id();
    let alice = Client::connect(&relay_a.addr(), alice_id).await?;
    let bob = Client::connect(&relay_b.addr(), bob_id).await?;
    alice.synced().await?;
    bob.synced().await?;
    println!("alice    {} on relay A", alice.id());
    println!("bob      {} on relay B", bob.id());
    println!("carol    {} offline", carol);

    // 1. Online message across relays: A forwards to B, bob acknowledges, alice hears "delivered".
    // `send` returns once bob acknowledged, so bob reads concurrently.
    let (outcome, msg) = tokio::try_join!(
        async {
            Ok::<_, anyhow::Error>(
                alice
                    .send(&bob.id(), b"hi bob, this went through two relays")
                    .await?,
            )
        },
        async {
            let msg = bob.recv().await.context("bob's connection closed")?;
            bob.ack(&msg).await?;
            Ok(msg)
        },
    )?;
    println!(
        "\n1. alice -> bob: {outcome:?}; bob read \"{}\"",
        String::from_utf8_lossy(&msg.body)
    );
    anyhow::ensure!(outcome == Outcome::Delivered && msg.from == alice.id());
    // A burst more: alice's relay A is paid for each delivery and pays relay B for its part.
    let burst = 50;
    let body = vec![b'.'; 4000];
    tokio::try_join!(
        async {
            for _ in 0..burst {
                let outcome = alice.send(&bob.id(), &body).await?;
                anyhow::ensure!(outcome == Outcome::Delivered, "{outcome:?}");
            }
            Ok(())
        },
        async {
            for _ in 0..burst {
                let msg = bob.recv().await.context("bob's connection closed")?;
                bob.ack(&msg).await?;
            }
            Ok(())
        },
    )?;
    println!("   and {burst} more of 4000 bytes, each delivered (bob pays nothing for them)");

    // 2. Offline message: stored, sealed, in carol's mailbox on her home relays.
    let outcome = alice
        .send(&carol, b"carol, read this when you are back")
        .await?;
    println!("2. alice -> carol (offline): {outcome:?} in her mailbox");
    anyhow::ensure!(outcome == Outcome::Stored);
    let carol = Client::connect(&relay_b.addr(), carol_id).await?;
    let msg = carol.recv().await.context("carol's connection closed")?;
    carol.ack(&msg).await?;
    println!(
        "   carol connects to relay B and reads \"{}\" from {}",
        String::from_utf8_lossy(&msg.body),
        msg.from.short()
    );
    anyhow::ensure!(msg.from == alice.id());

    // 3. A pipe from alice to bob through both relays, end-to-end encrypted with Noise IK.
    let (mut pipe, mut incoming) = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(alice.open_pipe(&bob.id()).await?) },
        async { bob.accept_pipe().await.context("no incoming pipe") },
    )?;
    pipe.send(b"ping from alice").await?;
    let got = incoming.recv().await?.context("pipe closed")?;
    incoming.send(b"pong from bob").await?;
    let back = pipe.recv().await?.context("pipe closed")?;
    println!(
        "3. pipe alice <-> bob: bob got \"{}\", alice got \"{}\"",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&back)
    );
    anyhow::ensure!(incoming.peer() == alice.id());

    // 4. CDN: alice publishes a file with relay A as its origin; bob fetches it through relay B
    // (a miss there: B fetches the chunks from A, checking each against the content id), and a
    // plain HTTP GET on relay A's gateway serves it once alice gave A an egress allowance.
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let cid = alice
        .publish(&file, Some("application/octet-stream"))
        .await?;
    let fetched = bob.fetch(&cid).await?.bytes().await?;
    anyhow::ensure!(fetched == file, "bob got other bytes");
    let path = format!("/cdn/{cid}");
    let (before, _) = http_get(relay_a.http_addr(), &path).await?;
    alice.allow_egress(&cid, "0.01".parse()?).await?;
    let (status, body) = http_get(relay_a.http_addr(), &path).await?;
    println!(
        "4. alice published {} bytes as {cid}\n   bob fetched them through relay B (verified); \
         HTTP GET on relay A: \"{before}\" without an allowance, \"{status}\" with one",
        file.len()
    );
    anyhow::ensure!(status.contains("200") && body == file, "gateway: {status}");

    let a = relay_a.status();
    let b = relay_b.status();
    println!(
        "\nrelay A: {} messages received, {} stored; relay B: {} delivered, {} pipes opened",
        a.messages_received, a.messages_stored, b.messages_delivered, b.pipes_opened
    );
    let people = [
        ("alice", alice.id()),
        ("bob", bob.id()),
        ("carol", carol.id()),
    ];
    // Quiet sessions are asked for a receipt within a second; then they can go.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in [alice, bob, carol] {
        c.close().await;
    }
    // The relays settle on their own once the sessions are over.
    println!("waiting for the relays to settle their receipts...");
    let settled = |r: &Relay| {
        r.status()
            .ledger
            .is_some_and(|l| l.receipts_taken > 0 && !l.pending_worth_settling)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(settled(&relay_a) && settled(&relay_b)) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "settlement timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_fees(&relay_a, &relay_b, &people)?;
    relay_b.shutdown().await;
    relay_a.shutdown().await;
    println!("all good");
    Ok(())
}

/// A plain HTTP/1.1 GET: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, response[end + 4..].to_vec()))
}

/// The table of fees: what each account paid, what each relay earned and burned, and the supply.
fn print_fees(a: &Relay, b: &Relay, people: &[(&str, top_client::AccountId)]) -> Result<()> {
    let chain = a.chain().context("relay A has no chain")?;
    let relays = [("relay A", a), ("relay B", b)];
    chain.with_state(|s| {
        println!(
            "\n{:<10} {:>16} {:>16} {:>16}",
            "account", "fees paid", "relay earned", "burned"
        );
        for (name, id) in people {
            let paid = s
                .channels()
                .filter(|(_, c)| c.payer == *id)
                .fold(Amount::ZERO, |sum, (_, c)| sum.saturating_add(c.settled));
            println!(
                "{name:<10} {:>16} {:>16} {:>16}",
                format!("{paid} TOP"),
                "-",
                "-"
            );
        }
        // A relay's account is the same key as its relay id.
        let account = |r: &Relay| top_client::AccountId::from_bytes(*r.addr().id.as_bytes());
        let ids = [account(a)?, account(b)?];
        for ((name, _), id) in relays.iter().zip(ids) {
            let acc = s.account(&id).cloned().unwrap_or_default();
            let paid = s
                .channels()
                .filter(|(_, c)| c.payer == id)
                .fold(Amount::ZERO, |sum, (_, c)| sum.saturating_add(c.settled));
            println!(
                "{name:<10} {:>16} {:>16} {:>16}",
                format!("{paid} TOP"),
                format!("{} TOP", acc.fees_earned),
                format!("{} TOP", acc.fees_burned)
            );
        }
        println!("\nrelay-to-relay (the sender's relay pays the recipient's for its part):");
        for (from, to) in [(0, 1), (1, 0)] {
            for (_, c) in s
                .channels()
                .filter(|(_, c)| c.payer == ids[from] && c.relay == ids[to])
            {
                println!(
                    "  {} -> {}: channel locks {} TOP, settled {} TOP for {} bytes",
                    relays[from].0, relays[to].0, c.lock, c.settled, c.settled_bytes
                );
            }
        }
        let accounted = s.total_supply().checked_add(s.burned)?;
        println!(
            "\nsupply: genesis {} TOP = in existence {} TOP + burned {} TOP: {}",
            s.genesis_supply,
            s.total_supply(),
            s.burned,
            if accounted == s.genesis_supply && s.check_invariant().is_ok() {
                "holds"
            } else {
                "BROKEN"
            }
        );
        anyhow::ensure!(s.check_invariant().is_ok(), "supply invariant broken");
        anyhow::ensure!(!s.burned.is_zero(), "nothing was burned");
        Ok(())
    })
}
