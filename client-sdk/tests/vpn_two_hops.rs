//! Proof of relay on 2 hops (root only: a real exit with a TUN device, in a network namespace of
//! this test's own). The path from the entry to the exit loses a tenth of its large packets
//! (a UDP forwarder in between, as a bad link or an entry that drops would): the entry still
//! carries the tunnel, but is paid only for the datagrams the exit acknowledged receiving and
//! for those it delivered to the client, never for its own count of what it forwarded. The
//! client's send and open paths allocate nothing per packet (a counting allocator).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use top_client::vpn::tunnel::{Tunnel, TunnelOptions};
use top_client::{BillingOptions, Identity, RelayAddr, Wallet};
use top_proto::alloc_count::{CountingAllocator, allocations};
use top_relay::{InitOptions, Relay, init};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const PINGS: u16 = 3000;

/// An ICMP echo request of about 1,100 bytes from `src` to `dst`.
fn ping(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    common::ping(src, dst, seq, &[0xab; 1_064])
}

/// A counter of `relay`'s metrics.
fn metric(relay: &Relay, name: &str) -> u64 {
    let prefix = format!("toprelay_{name}_total ");
    relay
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A UDP forwarder to `target` for one peer; once `armed`, it drops every tenth packet of
/// 1,000 bytes or more on the way to `target`.
struct LossyLink {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

async fn lossy_link(target: SocketAddr) -> LossyLink {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let (armed, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let peer = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let addr = front.local_addr().unwrap();
    let (f, b, a, d, p) = (
        front.clone(),
        back.clone(),
        armed.clone(),
        dropped.clone(),
        peer.clone(),
    );
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut large = 0u64;
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *p.lock().unwrap() = Some(from);
            if n >= 1_000 && a.load(Ordering::Relaxed) {
                large += 1;
                if large.is_multiple_of(10) {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            b.send(&buf[..n]).await.ok();
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *peer.lock().unwrap();
            if let Some(to) = to {
                front.send_to(&buf[..n], to).await.ok();
            }
        }
    });
    LossyLink {
        addr,
        armed,
        dropped,
    }
}

#[test]
fn an_entry_is_paid_only_for_what_the_exit_acknowledged() {
    common::in_own_netns(run);
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let exit_dir = dir.path().join("exit");
    init(&exit_dir, InitOptions::loopback_dev()).unwrap();
    let mut c = top_relay::config::RelayConfig::load(&exit_dir).unwrap();
    c.vpn_exit = true;
    c.vpn.tun = "topq0".into();
    c.vpn.pool = "10.83.0.0/24".parse().unwrap();
    c.vpn.nat = false;
    c.ledger.block_interval_ms = 50;
    c.save(&exit_dir).unwrap();
    let exit = Relay::start(&exit_dir).await.unwrap();
    let entry_dir = dir.path().join("entry");
    init(
        &entry_dir,
        InitOptions {
            peers: vec![exit.addr()],
            ..InitOptions::loopback()
        },
    )
    .unwrap();
    let entry = Relay::start(&entry_dir).await.unwrap();
    // The entry registers itself on the exit's chain, then they link.
    tokio::time::timeout(Duration::from_secs(30), exit.wait_linked(&entry.id()))
        .await
        .expect("the exit links with the entry once it is registered");

    let me = Identity::generate();
    let wallet = Wallet::connect(&exit.addr(), me.clone()).await.unwrap();
    wallet.faucet("100".parse().unwrap()).await.unwrap();
    wallet.deposit("20".parse().unwrap()).await.unwrap();
    wallet.close().await;

    // The client names the exit at the lossy link's address: the entry dials it there.
    let link = lossy_link(exit.addr().host_port.parse().unwrap()).await;
    let options = TunnelOptions {
        exit: RelayAddr {
            id: exit.id(),
            host_port: link.addr.to_string(),
        },
        via: Some(entry.addr()),
        billing: BillingOptions::default(),
    };
    // The entry may not have seen the deposit yet: open once it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tunnel = loop {
        match Tunnel::open(me.clone(), options.clone()).await {
            Ok(t) => break t,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("tunnel not open yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no tunnel: {e}"),
        }
    };
    assert!(tunnel.billing().0.is_some() && tunnel.billing().1.is_some());
    let (addr, gateway) = (tunnel.address(), Ipv4Addr::from(tunnel.lease().gateway));
    let (mut sender, mut receiver) = (tunnel.sender().unwrap(), tunnel.receiver().unwrap());
    let stats = tunnel.stats();

    link.armed.store(true, Ordering::Relaxed);
    // Everything here (client, relays, quinn) runs on this thread: the counts are theirs.
    let (opening, sending) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let whole = allocations();
    let replies = async {
        let mut buf = vec![0u8; 2048];
        let mut got = 0u32;
        while let Ok(Ok(datagram)) =
            tokio::time::timeout(Duration::from_secs(3), receiver.next_datagram()).await
        {
            let before = allocations();
            let opened = receiver.open(&datagram, &mut buf);
            opening.set(opening.get() + allocations() - before);
            got += u32::from(opened.is_some());
        }
        got
    };
    let packets: Vec<Vec<u8>> = (0..PINGS).map(|seq| ping(addr, gateway, seq)).collect();
    let pings = async {
        for (seq, packet) in packets.iter().enumerate() {
            let before = allocations();
            sender.send(packet).unwrap();
            sending.set(sending.get() + allocations() - before);
            if seq % 16 == 15 {
                // A steady stream, not one burst the path would drop anyway.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let (got, ()) = tokio::join!(replies, pings);
    let whole = allocations() - whole;
    eprintln!(
        "allocations: {} sending {PINGS} packets, {} opening {got}; {whole} in all (quinn's \
         receive path copies each UDP datagram; tokio; both relays; the client), {:.1} per \
         round trip",
        sending.get(),
        opening.get(),
        whole as f64 / f64::from(got.max(1))
    );
    // An arena of 256 KiB per ~230 packets, and quinn's queue growing now and then.
    assert!(
        sending.get() * 20 < u64::from(PINGS),
        "{} allocations",
        sending.get()
    );
    assert_eq!(opening.get(), 0, "opening a datagram allocated");
    // Its counts, complete: what it received is counted once the receiver is gone.
    drop((sender, receiver));
    assert!(got > 0, "no replies through the tunnel");
    assert!(
        link.dropped.load(Ordering::Relaxed) > 50,
        "the link lost nothing"
    );

    let sent = stats.bytes_sent.load(Ordering::Relaxed);
    let received = stats.bytes_received.load(Ordering::Relaxed);
    let acked = stats.bytes_acked.load(Ordering::Relaxed);
    eprintln!("sent {sent} B, exit acknowledged {acked} B, received {received} B, {got} replies");
    assert!(acked > 0, "the exit acknowledged nothing");
    assert!(
        sent - acked > 128 * 1024,
        "too little lost to tell claims apart"
    );
    let entry_state = tunnel.billing().0.unwrap().clone();
    let prices = entry_state.prices;
    let cost = |bytes: u64| {
        top_billing::Usage {
            vpn: bytes,
            ..Default::default()
        }
        .cost(&prices)
        .unwrap()
        .units() as u64
    };
    let proven = tunnel.entry_usage().unwrap().vpn;
    assert_eq!(proven, received + acked.min(sent));
    // The entry is paid for everything the exit acknowledged and it delivered...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while entry_state.signed.load(Ordering::Relaxed) < cost(proven) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the entry was not paid for what it carried: {} < {}",
            entry_state.signed.load(Ordering::Relaxed),
            cost(proven)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The entry billed exactly what the exit acknowledged, and once they settled let go of
    // the datagrams it forwarded that never arrived (the credit they held is free again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let proven_up = metric(&entry, "vpn_upstream_proven_bytes");
        let lost = metric(&entry, "vpn_upstream_lost_bytes");
        // (On loopback the client's datagrams all reach the entry: what the exit missed is
        // what the link dropped.)
        if proven_up == acked && lost >= (sent - acked) * 9 / 10 {
            eprintln!("entry: {proven_up} B proven, {lost} B let go as lost");
            assert!(acked + lost <= sent, "{acked} + {lost} > {sent}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry: {proven_up} B proven of {acked} acknowledged, {lost} B let go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and for nothing the exit never got (64 KiB of slack for traffic in flight at most),
    // far below its own count of what it forwarded.
    let signed = entry_state.signed.load(Ordering::Relaxed);
    assert!(
        signed <= cost(proven + 64 * 1024),
        "{signed} > {}",
        cost(proven)
    );
    assert!(signed < cost(sent + received));
    tunnel.close();
    entry.shutdown().await;
    exit.shutdown().await;
}
