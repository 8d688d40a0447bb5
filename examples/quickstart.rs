//! Two linked relays and three clients in one process, on loopback: a message across relays, a
//! message to an offline peer delivered when it connects, and a pipe carrying data both ways.
//!
//! Run with `cargo run --release --example quickstart`.

use std::path::Path;

use anyhow::{Context, Result};
use top_client::{Client, Identity, Outcome};
use top_relay::{InitOptions, Relay, init};

async fn start_relay(dir: &Path) -> Result<Relay> {
    init(dir, InitOptions::loopback())?;
    Ok(Relay::start(dir).await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let dir = tempfile::tempdir()?;
    let relay_a = start_relay(&dir.path().join("relay-a")).await?;
    let relay_b = start_relay(&dir.path().join("relay-b")).await?;
    relay_b.add_peer(relay_a.addr());
    relay_a.wait_linked(&relay_b.id()).await;
    println!("relay A  {}", relay_a.addr());
    println!("relay B  {}  (linked to A)", relay_b.addr());

    let (alice_id, bob_id, carol_id) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
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

    let a = relay_a.status();
    let b = relay_b.status();
    println!(
        "\nrelay A: {} messages received, {} stored; relay B: {} delivered, {} pipes opened",
        a.messages_received, a.messages_stored, b.messages_delivered, b.pipes_opened
    );
    for c in [alice, bob, carol] {
        c.close().await;
    }
    relay_a.shutdown().await;
    relay_b.shutdown().await;
    println!("all good");
    Ok(())
}
