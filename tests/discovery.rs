//! Discovery at network scale: relays started with one bootstrap address find every registered
//! relay through the DHT, followers take blocks from gossip, a content is found by its provider
//! record, a message crosses the network, and killing relays leaves the rest working (blocks,
//! and messages for users whose homes are left).

mod common;

use std::time::{Duration, Instant};

use common::wait_until_for;
use ledger_lite::Amount;
use top_client::{Client, Directory, Identity, Wallet};
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

/// How many relays the network test runs.
const RELAYS: usize = 30;

/// The bootstrap relay: the dev chain's validator (fast blocks, no billing).
async fn bootstrap(dir: &std::path::Path) -> Relay {
    init(dir, InitOptions::loopback_dev()).unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    config.ledger.block_interval_ms = 200;
    config.billing.enabled = false;
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

/// A relay told only the bootstrap relay's address.
async fn joining(dir: &std::path::Path, through: &Relay) -> Relay {
    init(
        dir,
        InitOptions {
            bootstrap: vec![through.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let mut config = RelayConfig::load(dir).unwrap();
    config.billing.enabled = false;
    config.save(dir).unwrap();
    Relay::start(dir).await.unwrap()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = seed;
    while out.len() < len {
        out.extend_from_slice(blake3::hash(&counter.to_le_bytes()).as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_relays_find_each_other_from_one_bootstrap_address() {
    let dir = tempfile::tempdir().unwrap();
    let first = bootstrap(&dir.path().join("r0")).await;
    let mut relays = vec![first];
    for i in 1..RELAYS {
        let relay = joining(&dir.path().join(format!("r{i}")), &relays[0]).await;
        relays.push(relay);
    }
    let started = Instant::now();
    let registered = relays[0].chain().unwrap();
    let mut heights = registered.subscribe();
    while registered.with_state(|s| s.relays().count()) < RELAYS {
        heights.changed().await.unwrap();
    }
    eprintln!("{RELAYS} relays registered in {:?}", started.elapsed());
    // Every relay holds a current announcement of every relay (its own included).
    wait_until_for(
        "every relay to discover all",
        Duration::from_secs(30),
        async || {
            relays
                .iter()
                .all(|r| r.status().control.discovered == RELAYS)
        },
    )
    .await;
    let discovered_in = started.elapsed();
    eprintln!("{RELAYS} relays discovered each other in {discovered_in:?}");

    // A fresh client, told one relay, lists all of them with round trips measured from here.
    let wallet = Wallet::connect(&relays[0].addr(), Identity::generate())
        .await
        .unwrap();
    let directory = Directory::fetch(&wallet).await.unwrap();
    wallet.close().await;
    let answered = directory
        .relays()
        .iter()
        .filter(|r| r.rtt.is_some())
        .count();
    assert_eq!((directory.relays().len(), answered), (RELAYS, RELAYS));

    // Blocks reach every follower, by gossip.
    let target = relays[0].chain().unwrap().height() + 3;
    wait_until_for(
        "a block on every relay",
        Duration::from_secs(30),
        async || {
            relays
                .iter()
                .all(|r| r.chain().is_some_and(|c| c.height() >= target))
        },
    )
    .await;
    // (A follower takes each block from gossip or from its upstream, whichever comes first.)
    wait_until_for(
        "every follower to take a block from gossip",
        Duration::from_secs(30),
        async || {
            relays
                .iter()
                .skip(1)
                .all(|r| r.status().control.gossiped_blocks > 0)
        },
    )
    .await;

    // A file published on relay 5 is fetched through relay 25's gateway.
    let (origin, gateway) = (5 % RELAYS, 25 % RELAYS);
    let publisher = Client::connect(&relays[origin].addr(), Identity::generate())
        .await
        .unwrap();
    let data = random_bytes(3 << 20, 5);
    let cid = publisher.publish(&data, None).await.unwrap();
    // Relay 25 finds relay 5 by its provider record (once relay 5 has stored it in the DHT)…
    wait_until_for(
        "relay 5 as a provider",
        Duration::from_secs(20),
        async || {
            relays[gateway]
                .control()
                .providers(cid)
                .await
                .contains(&relays[origin].id())
        },
    )
    .await;
    // …and its gateway serves the file, having asked the providers the DHT named.
    let url = format!("http://{}/cdn/{cid}", relays[gateway].http_addr());
    let got = reqwest_like_get(&url).await;
    assert!(got == data, "relay 25 served the file published on relay 5");
    let metrics = relays[gateway].metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("toprelay_cdn_provider_misses_total ") && !l.ends_with(" 0")),
        "the gateway's miss did not use provider records"
    );
    publisher.close().await;

    // Links are made on demand, not to every relay: only the CDN fetch needed any so far.
    let links: Vec<usize> = relays.iter().map(|r| r.linked().len()).collect();
    eprintln!("links per relay after discovery and a CDN fetch: {links:?}");

    // A message from a client of relay 1 reaches a client of the last relay.
    message_crosses(&relays[1], &relays[RELAYS - 1], &relays).await;
    let links: Vec<usize> = relays.iter().map(|r| r.linked().len()).collect();
    eprintln!("links per relay after a message: {links:?}");
    // A full mesh would be 29 links each; a relay links with its clients' homes and the relays
    // its traffic needs.
    assert!(
        links.iter().sum::<usize>() <= 2 * RELAYS && links.iter().all(|n| *n <= RELAYS / 3),
        "links per relay: {links:?}"
    );

    // A client of the last relay (a follower) pays someone: its transaction goes by gossip.
    transfer_by_gossip(&relays[RELAYS - 1]).await;

    // Five relays go; the rest still take blocks.
    for r in relays.drain(RELAYS / 3..RELAYS / 3 + RELAYS / 6) {
        r.shutdown().await;
    }
    let target = relays[0].chain().unwrap().height() + 3;
    wait_until_for(
        "blocks after five relays left",
        Duration::from_secs(30),
        async || {
            relays
                .iter()
                .all(|r| r.chain().is_some_and(|c| c.height() >= target))
        },
    )
    .await;
    // Messages still cross, for users whose home relays are among those left (a user whose
    // homes all left has no mailbox until one comes back: `home_replicas` is the margin).
    let live: Vec<_> = relays.iter().map(|r| r.id()).collect();
    let bob = loop {
        let bob = Identity::generate();
        if relays[0]
            .home_relays(&bob.account_id())
            .iter()
            .all(|h| live.contains(h))
        {
            break bob;
        }
    };
    let last = relays.len() - 1;
    message_crosses_to(&relays[2], &relays[last], &relays, bob).await;
    for r in relays {
        r.shutdown().await;
    }
}

/// A client of `relay` transfers TOP; the relay gossiped the transaction and saw it committed
/// (it did not hand it to its upstream).
async fn transfer_by_gossip(relay: &Relay) {
    let feed = &relay.chain().unwrap().gossip;
    let (by_gossip, upstream) = feed.txs_sent();
    let wallet = Wallet::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    // The faucet is the validator's: that request goes upstream.
    wallet.faucet(Amount::from_top(2).unwrap()).await.unwrap();
    let to = Identity::generate().account_id();
    wallet
        .transfer(to, Amount::from_top(1).unwrap())
        .await
        .unwrap();
    wallet.close().await;
    assert_eq!(
        feed.txs_sent(),
        (by_gossip + 1, upstream),
        "the transfer did not go by gossip"
    );
    let balance = relay
        .chain()
        .unwrap()
        .with_state(|s| s.account(&to).map(|a| a.balance));
    assert_eq!(balance, Some(Amount::from_top(1).unwrap()));
}

/// A client of `from` sends to a client of `to`; it arrives and is acknowledged.
async fn message_crosses(from: &Relay, to: &Relay, all: &[Relay]) {
    message_crosses_to(from, to, all, Identity::generate()).await
}

/// A client of `from` sends to `bob_id` on `to`; it arrives and is acknowledged.
async fn message_crosses_to(from: &Relay, to: &Relay, all: &[Relay], bob_id: Identity) {
    let alice_id = Identity::generate();
    let bob_account = bob_id.account_id();
    let bob = Client::connect(&to.addr(), bob_id).await.unwrap();
    let alice = Client::connect(&from.addr(), alice_id).await.unwrap();
    let sending = Box::pin(alice.send(&bob_account, b"across"));
    let mut sending = Some(sending);
    let mut sent = None;
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                s = async { sending.as_mut().unwrap().await }, if sent.is_none() => sent = Some(s),
                m = bob.recv() => return m,
            }
        }
    })
    .await;
    let Ok(Some(got)) = got else {
        // What each relay did, to see where the message stopped.
        let homes = from.home_relays(&bob_account);
        let index = |id: &top_proto::id::RelayId| all.iter().position(|r| r.id() == *id);
        let homes: Vec<_> = homes.iter().map(index).collect();
        let line = |r: &Relay| {
            let m = r.metrics_text();
            let get = |name: &str| {
                m.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            };
            format!(
                "linked {:?} relayed {} stored {} mailbox {}",
                r.linked().iter().map(index).collect::<Vec<_>>(),
                get("toprelay_messages_relayed_total "),
                get("toprelay_messages_stored_total "),
                r.status().mailbox.messages
            )
        };
        let report: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(i, r)| format!("relay {i}: {}", line(r)))
            .collect();
        panic!(
            "the message did not arrive; sent: {sent:?}; bob's homes {homes:?}; from {:?} to {:?}\n{}",
            index(&from.id()),
            index(&to.id()),
            report.join("\n")
        );
    };
    bob.ack(&got).await.unwrap();
    let sent = match sent {
        Some(s) => s,
        None => sending.take().unwrap().await,
    };
    sent.unwrap();
    drop(sending);
    assert_eq!(got.body.as_slice(), b"across");
    alice.close().await;
    bob.close().await;
}

/// GET over HTTP with curl (a real client, as users run it).
async fn reqwest_like_get(url: &str) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60", url])
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
