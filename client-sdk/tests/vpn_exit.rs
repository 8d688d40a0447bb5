//! A real exit relay (TUN device, nftables) in a network namespace of this test's own (root
//! only): a client without deposit is refused clearly; a raw tunnel client's bad datagrams
//! (replays, wrong keys, altered or truncated bytes, non-IP and spoofed packets) are dropped and
//! counted while good packets still get answers; the exit removes its NAT rules on shutdown.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_client::vpn::tunnel::{Tunnel, TunnelOptions};
use top_client::{BillingOptions, Identity};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::vpn::VpnFrame;
use top_proto::vpn::cipher::TunnelInitiator;
use top_relay::{InitOptions, Relay, init};

/// An ICMP echo request from `src` to `dst`.
fn ping(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    common::ping(src, dst, seq, b"top vpn test")
}

async fn metric(relay: &Relay, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(relay.http_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("toprelay_{name}_total ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn exit_config(dir: &std::path::Path, tun: &str, pool: &str, nat: bool) {
    let mut c = top_relay::config::RelayConfig::load(dir).unwrap();
    c.vpn_exit = true;
    c.vpn.tun = tun.into();
    c.vpn.pool = pool.parse().unwrap();
    c.vpn.nat = nat;
    c.ledger.block_interval_ms = 100;
    c.save(dir).unwrap();
}

#[test]
fn exit_refuses_unpaid_and_drops_bad_datagrams() {
    common::in_own_netns(run);
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();

    // A paid exit: a client with no deposit gets a clear refusal.
    let paid_dir = dir.path().join("paid");
    init(&paid_dir, InitOptions::loopback_dev()).unwrap();
    exit_config(&paid_dir, "topa0", "10.78.0.0/24", false);
    let paid = Relay::start(&paid_dir).await.unwrap();
    let options = TunnelOptions {
        exit: paid.addr(),
        via: None,
        billing: BillingOptions::default(),
    };
    let refused = Tunnel::open(Identity::generate(), options).await;
    let message = refused
        .err()
        .expect("a client without deposit was served")
        .to_string();
    assert!(message.contains("deposit"), "{message}");
    paid.shutdown().await;

    // A free exit with NAT, for a raw tunnel client.
    let free_dir = dir.path().join("free");
    init(&free_dir, InitOptions::loopback()).unwrap();
    exit_config(&free_dir, "topb0", "10.79.0.0/24", true);
    let exit = Relay::start(&free_dir).await.unwrap();
    let nft = |args: &[&str]| {
        std::process::Command::new("nft")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(nft(&["list", "table", "ip", "top_exit"]).status.success());

    let me = Identity::generate();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = top_proto::net::dial::dial(&endpoint, &me, &exit.addr())
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Open::Vpn).unwrap())
        .await
        .unwrap();
    let mut out = FramedWrite::new(send, FrameCodec::<VpnFrame>::new(4096));
    let mut frames = FramedRead::new(recv, FrameCodec::<VpnFrame>::new(4096));
    let exit_id = top_proto::id::AccountId::from_bytes(*exit.id().as_bytes()).unwrap();
    let (initiator, hello) = TunnelInitiator::start(&me, &exit_id).unwrap();
    out.send(VpnFrame::Hello(hello)).await.unwrap();
    let Some(Ok(VpnFrame::Welcome(reply))) = frames.next().await else {
        panic!("no welcome");
    };
    let (lease, keys) = initiator.finish(&reply).unwrap();
    let (sealer, mut opener) = keys.split();
    let (addr, gateway) = (Ipv4Addr::from(lease.addr), Ipv4Addr::from(lease.gateway));
    assert_eq!(gateway, Ipv4Addr::new(10, 79, 0, 1));

    let seal = |packet: &[u8]| {
        let mut buf = vec![0u8; packet.len() + 64];
        let n = sealer.seal(packet, &mut buf).unwrap();
        buf.truncate(n);
        bytes::Bytes::from(buf)
    };
    // A good packet gets its answer through the tunnel.
    let mut answered = 0;
    let mut plain = vec![0u8; 65_536];
    let mut expect_reply = async |conn: &quinn::Connection, seq: u16| {
        let datagram = tokio::time::timeout(Duration::from_secs(5), conn.read_datagram())
            .await
            .expect("no answer through the tunnel")
            .unwrap();
        let n = opener.open(&datagram, &mut plain).unwrap();
        assert_eq!(plain[9], 1, "ICMP");
        assert_eq!(plain[20], 0, "echo reply");
        assert_eq!(u16::from_be_bytes([plain[26], plain[27]]), seq);
        assert_eq!(&plain[16..20], &addr.octets());
        assert!(n > 28);
        answered += 1;
    };
    let good = seal(&ping(addr, gateway, 1));
    conn.send_datagram(good.clone()).unwrap();
    expect_reply(&conn, 1).await;

    // Replay, altered, truncated, foreign-key, non-IP and spoofed datagrams.
    conn.send_datagram(good.clone()).unwrap();
    let mut altered = seal(&ping(addr, gateway, 9)).to_vec();
    altered[20] ^= 0x40;
    conn.send_datagram(altered.into()).unwrap();
    conn.send_datagram(bytes::Bytes::from_static(b"\x01short"))
        .unwrap();
    conn.send_datagram(bytes::Bytes::from_static(&[0xff; 40]))
        .unwrap();
    let mut foreign = good.to_vec();
    foreign[1] = 200; // a fresh nonce under which the tag no longer matches
    conn.send_datagram(foreign.into()).unwrap();
    conn.send_datagram(seal(b"definitely not an IP packet"))
        .unwrap();
    conn.send_datagram(seal(&ping(Ipv4Addr::new(10, 79, 0, 99), gateway, 2)))
        .unwrap();
    let too_big = vec![0u8; conn.max_datagram_size().unwrap() + 1];
    assert!(matches!(
        conn.send_datagram(too_big.into()),
        Err(quinn::SendDatagramError::TooLarge)
    ));

    // The tunnel still works after all that, and every bad datagram was counted.
    conn.send_datagram(seal(&ping(addr, gateway, 3))).unwrap();
    expect_reply(&conn, 3).await;
    assert_eq!(answered, 2);
    assert_eq!(metric(&exit, "vpn_dropped_replay").await, 1);
    assert_eq!(metric(&exit, "vpn_dropped_decrypt").await, 2);
    assert_eq!(metric(&exit, "vpn_dropped_malformed").await, 2);
    assert_eq!(metric(&exit, "vpn_dropped_bad_packet").await, 2);
    assert_eq!(metric(&exit, "vpn_packets_in").await, 2);

    conn.close(0u32.into(), b"done");
    exit.shutdown().await;
    assert!(
        !nft(&["list", "table", "ip", "top_exit"]).status.success(),
        "the exit left its NAT rules behind"
    );
}
