//! A connection whose full-size packets were lost for a moment (congestion, or a path that shrank
//! and grew back) gets its full datagram size back within seconds, not after quinn's default
//! minute: until then every full-size VPN packet and realtime datagram is refused as too large.
//!
//! Real QUIC on loopback through a UDP forwarder that, during the episode, drops every packet
//! from the client larger than [`DROP_ABOVE`] bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_proto::net::{dial::dial, endpoint};
use top_proto::tls::{BLACK_HOLE_COOLDOWN, server_config};

/// Packets from the client above this size are dropped during the episode.
const DROP_ABOVE: usize = 1300;

/// Forwards UDP between one client and `server`, dropping the client's large packets while
/// `dropping` is set. Runs until the test ends.
async fn forwarder(server: SocketAddr, dropping: Arc<AtomicBool>) -> SocketAddr {
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let to = if from == server {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                if dropping.load(Ordering::Relaxed) && n > DROP_ABOVE {
                    continue;
                }
                server
            };
            socket.send_to(&buf[..n], to).await.ok();
        }
    });
    addr
}

#[tokio::test]
async fn full_datagram_size_returns_soon_after_a_loss_episode() {
    let server_id = Identity::generate();
    let config = server_config(&server_id).unwrap();
    let server =
        endpoint::server_endpoint(config, "127.0.0.1:0".parse().unwrap(), &server_id).unwrap();
    let dropping = Arc::new(AtomicBool::new(false));
    let via = forwarder(server.local_addr().unwrap(), dropping.clone()).await;
    let addr = RelayAddr {
        id: server_id.relay_id(),
        host_port: via.to_string(),
    };
    let client = endpoint::client_endpoint(&addr.host_port).unwrap();
    let accept = async { server.accept().await.unwrap().await.unwrap() };
    let dialer = Identity::generate();
    let (_incoming, conn) = tokio::join!(accept, dial(&client, &dialer, &addr));
    let conn = conn.unwrap();
    let full = conn.max_datagram_size().unwrap();
    assert!(full > DROP_ABOVE, "the path starts at full size ({full})");

    // The episode: full-size datagrams lost, small ones (between them) delivered, until quinn
    // judges the path a black hole and falls back to 1200-byte packets.
    dropping.store(true, Ordering::Relaxed);
    let big = Bytes::from(vec![1u8; full]);
    let small = Bytes::from(vec![2u8; 100]);
    let fell_back = async {
        while conn.stats().path.black_holes_detected == 0 {
            conn.send_datagram(big.clone()).ok();
            tokio::time::sleep(Duration::from_millis(2)).await;
            conn.send_datagram(small.clone()).ok();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fell_back)
        .await
        .expect("the loss episode is judged a black hole");
    assert!(conn.max_datagram_size().unwrap() < full);
    dropping.store(false, Ordering::Relaxed);

    // The path carries full-size packets again: the size comes back after the cooldown and a
    // few probes (quinn's default cooldown alone is a minute).
    let back = async {
        while conn.max_datagram_size().unwrap_or(0) < full {
            conn.send_datagram(small.clone()).ok();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(BLACK_HOLE_COOLDOWN + Duration::from_secs(10), back)
        .await
        .expect("the full datagram size is back within seconds");
    conn.send_datagram(big)
        .expect("a full-size datagram is accepted again");
}
