//! A connection whose full-size packets were lost for a moment gets its full datagram size back
//! within seconds, not after quinn's default minute: until then every full-size VPN packet and
//! realtime datagram is refused as too large. Quinn's black-hole detector cannot tell a path that
//! shrank from congestion that lost full-size packets (what a realtime flood did); this test
//! makes the detector fire the way it can see (bursts of lost large packets between delivered
//! small ones) and then lets large packets through again, as congestion that ended does. The
//! sender then sends only datagrams that are refused, so only its [`MtuNudge`] gets the probes
//! out before the next keep-alive.
//!
//! Real QUIC on loopback through a UDP forwarder that, during the episode, drops every packet
//! from the client larger than `DROP_ABOVE` bytes. (`tests/realtime.rs` does the same to a
//! relay's hop to a realtime receiver.)

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::lossy::{DROP_ABOVE, Lossy, forwarder};
use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_proto::net::path_mtu::MtuNudge;
use top_proto::net::{dial::dial, endpoint};
use top_proto::tls::{BLACK_HOLE_COOLDOWN, MAX_UDP_PAYLOAD, server_config, server_config_toward};

#[tokio::test]
async fn full_datagram_size_returns_soon_after_a_loss_episode() {
    let server_id = Identity::generate();
    let config = server_config(&server_id).unwrap();
    let server =
        endpoint::server_endpoint(config, "127.0.0.1:0".parse().unwrap(), &server_id).unwrap();
    let lossy = Arc::new(Lossy::default());
    let via = forwarder(server.local_addr().unwrap(), lossy.clone()).await;
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
    lossy.from_client.store(true, Ordering::Relaxed);
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
    lossy.from_client.store(false, Ordering::Relaxed);

    // The path carries full-size packets again. The sender keeps trying full-size datagrams
    // (refused as too large: nothing goes out) and nothing else, as a realtime sender or a VPN
    // downstream does; its nudges let the probes leave once the cooldown ends. (Quinn's default
    // cooldown alone is a minute; without the nudges nothing would run the connection before
    // the next keep-alive.)
    let mut nudge = MtuNudge::default();
    let back = async {
        loop {
            match conn.send_datagram(big.clone()) {
                Ok(()) => break,
                Err(quinn::SendDatagramError::TooLarge) => nudge.refused(&conn),
                Err(e) => panic!("sending: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(BLACK_HOLE_COOLDOWN + Duration::from_secs(5), back)
        .await
        .expect("the full datagram size is back within seconds");
    assert!(conn.max_datagram_size().unwrap() >= full);
}

/// On loopback (64 KiB MTU) a connection finds the largest packets it may send, and a bulk
/// stream carried in them does not make the path a black hole: quinn sends up to 10 packets in one GSO send, which the
/// kernel refuses (EMSGSIZE, every batch lost, the path judged a black hole) once 10 packets
/// exceed one 64 KiB datagram.
#[tokio::test]
async fn loopback_carries_bulk_streams_in_the_largest_packets() {
    let server_id = Identity::generate();
    let config = server_config(&server_id).unwrap();
    let server =
        endpoint::server_endpoint(config.clone(), "127.0.0.1:0".parse().unwrap(), &server_id)
            .unwrap();
    let addr = RelayAddr {
        id: server_id.relay_id(),
        host_port: server.local_addr().unwrap().to_string(),
    };
    let client = endpoint::client_endpoint(&addr.host_port).unwrap();
    // As a relay accepts: a peer on this host gets the config that searches for larger packets.
    let accept = async {
        let incoming = server.accept().await.unwrap();
        let toward = server_config_toward(&config, incoming.remote_address()).unwrap();
        incoming.accept_with(toward).unwrap().await.unwrap()
    };
    let dialer = Identity::generate();
    let (served, conn) = tokio::join!(accept, dial(&client, &dialer, &addr));
    let conn = conn.unwrap();

    // The server sends 64 MiB on one stream; the client reads it all.
    const BULK: usize = 64 << 20;
    let send = async {
        let mut send = served.open_uni().await.unwrap();
        let block = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..BULK >> 20 {
            send.write_chunk(block.clone()).await.unwrap();
        }
        send.finish().unwrap();
        send.stopped().await.ok();
    };
    let receive = async {
        let mut recv = conn.accept_uni().await.unwrap();
        let mut got = 0;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
            got += chunk.bytes.len();
        }
        got
    };
    let (_, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("the stream arrives");
    assert_eq!(got, BULK);
    let path = served.stats().path;
    assert_eq!(
        path.current_mtu, MAX_UDP_PAYLOAD,
        "the sender's packets: {path:?}"
    );
    assert!(path.current_mtu > 1452, "larger than Ethernet's");
    assert_eq!(path.black_holes_detected, 0, "{path:?}");
}
