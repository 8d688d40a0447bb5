//! Four validators, each on its own consensus thread, agree over real authenticated TCP on
//! loopback: a transaction submitted to one is gossiped and finalized by all, with one
//! validator gone the other three go on finalizing, and it catches up when it comes back.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use top_consensus::app::Ledger;
use top_consensus::service::{ServiceConfig, ServiceError, ValidatorService};
use top_proto::identity::Identity;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

fn height(ledger: &Ledger) -> u64 {
    ledger.height()
}

async fn reach(ledgers: &[&Arc<Ledger>], height: u64) {
    let all = async {
        for ledger in ledgers {
            ledger.wait_finalized(height).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .unwrap_or_else(|_| panic!("height {height} not finalized within a minute"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_over_tcp_and_three_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<Identity> = (0..4u8)
        .map(|i| Identity::from_seed(&[i + 30; 32]))
        .collect();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let user = Identity::from_seed(&[99; 32]);
    let genesis = common::consensus_genesis("loopback", &ids, &user);
    let validators: Vec<_> = ids
        .iter()
        .map(|i| i.account_id())
        .zip(addrs.clone())
        .collect();
    let mut services: Vec<Option<ValidatorService>> = ids
        .iter()
        .zip(&addrs)
        .enumerate()
        .map(|(i, (id, addr))| {
            let config = ServiceConfig {
                identity: id.clone(),
                validators: validators.clone(),
                listen: *addr,
                genesis: genesis.clone(),
                storage: dir.path().join(format!("v{i}")),
                leader_timeout: Duration::from_millis(500),
                chain: None,
                block_interval: Duration::ZERO,
                report: top_consensus::misbehaviour::ignore(),
            };
            Some(ValidatorService::start(config).unwrap())
        })
        .collect();
    let mut ledgers: Vec<Arc<Ledger>> = services
        .iter()
        .map(|s| s.as_ref().unwrap().ledger().clone())
        .collect();

    // Ten transfers, all submitted to validator 0: gossiped, and finalized everywhere.
    let chain = genesis.state().unwrap().chain;
    let to = Identity::from_seed(&[98; 32]).account_id();
    for nonce in 0..10 {
        let tx = common::transfer(chain, &user, to, nonce, 1);
        services[0].as_ref().unwrap().submit(tx);
    }
    let all: Vec<&Arc<Ledger>> = ledgers.iter().collect();
    let included = async {
        loop {
            let top = height(&ledgers[0]);
            reach(&all, top + 1).await;
            let txs: usize = ledgers[0]
                .finalized()
                .iter()
                .map(|b| b.block().txs.len())
                .sum();
            if txs >= 10 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), included)
        .await
        .expect("the ten transfers finalized");
    let reached = ledgers.iter().map(|l| height(l)).min().unwrap();
    reach(&all, reached).await;
    for ledger in &ledgers[1..] {
        for (a, b) in ledgers[0].finalized().iter().zip(ledger.finalized().iter()) {
            assert_eq!(a.hash(), b.hash(), "two blocks at one height");
        }
    }

    // One validator stops: the other three still make a quorum.
    services[3].take().unwrap().stop();
    let three: Vec<&Arc<Ledger>> = ledgers[..3].iter().collect();
    let top = ledgers[..3].iter().map(|l| height(l)).max().unwrap();
    reach(&three, top + 3).await;
    for ledger in &ledgers[1..3] {
        for (a, b) in ledgers[0].finalized().iter().zip(ledger.finalized().iter()) {
            assert_eq!(a.hash(), b.hash(), "two blocks at one height");
        }
    }

    // It comes back, on its own stores: it catches up with the others. (The stores are its
    // own again once nothing holds the stopped one's ledger.)
    drop(ledgers.pop());
    let config = ServiceConfig {
        identity: ids[3].clone(),
        validators: validators.clone(),
        listen: addrs[3],
        genesis: genesis.clone(),
        storage: dir.path().join("v3"),
        leader_timeout: Duration::from_millis(500),
        chain: None,
        block_interval: Duration::ZERO,
        report: top_consensus::misbehaviour::ignore(),
    };
    let back = ValidatorService::start(config).unwrap();
    let behind = back.ledger().height();
    assert!(behind > 0, "it kept what it had committed");
    let top = ledgers[..3].iter().map(|l| height(l)).max().unwrap();
    let four = [&ledgers[0], &ledgers[1], &ledgers[2], back.ledger()];
    reach(&four, top + 2).await;
    back.stop();
    for service in services.into_iter().flatten() {
        service.stop();
    }
}

/// A validator whose consensus port is taken (here by an outgoing connection's source port,
/// as another process's ephemeral port can be) does not start: it would otherwise run on with
/// a transport nobody can reach, its chain never moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_consensus_port_fails_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let taken = held.local_addr().unwrap();
    let id = Identity::from_seed(&[40; 32]);
    let user = Identity::from_seed(&[99; 32]);
    let genesis = common::consensus_genesis("taken", std::slice::from_ref(&id), &user);
    let config = ServiceConfig {
        identity: id.clone(),
        validators: vec![(id.account_id(), taken)],
        listen: taken,
        genesis,
        storage: dir.path().join("v"),
        leader_timeout: Duration::from_millis(500),
        chain: None,
        block_interval: Duration::ZERO,
        report: top_consensus::misbehaviour::ignore(),
    };
    match ValidatorService::start(config) {
        Err(ServiceError::Listen { addr, .. }) => assert_eq!(addr, taken),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("started on a port another socket holds"),
    }
}
