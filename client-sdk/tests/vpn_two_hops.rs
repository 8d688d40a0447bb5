//! Proof of relay on 2 hops (root only: a real exit with a TUN device, in a network namespace of
//! this test's own). The path from the entry to the exit loses a tenth of its large packets
//! and forges packets in their place (a UDP forwarder in between, as a bad link or an entry
//! that drops would): the entry still carries the tunnel, but is paid only for the bytes the far
//! end acknowledged (the exit, of the client's packets; the client, of the exit's), never for
//! its own count of what it forwarded nor for the forgeries the exit received.
//! The client's send and open paths allocate nothing per packet (a counting allocator).

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
/// 1,000 bytes or more each way, and sends a forgery of the same size instead (as an entry
/// would that hopes to be paid for what it dropped).
struct LossyLink {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    dropped_bytes: Arc<AtomicU64>,
}

/// What the link does to packets while armed.
#[derive(Clone)]
struct Tamper {
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    dropped_bytes: Arc<AtomicU64>,
}

impl Tamper {
    /// Every tenth large packet (`large` counts them) is dropped, and in its place goes one as
    /// large that cannot authenticate (its header, and so its connection, kept): what the far
    /// end received still adds up.
    fn pass(&self, packet: &mut [u8], large: &mut u64) {
        let n = packet.len();
        if n < 1_000 || !self.armed.load(Ordering::Relaxed) {
            return;
        }
        *large += 1;
        if large.is_multiple_of(10) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes.fetch_add(n as u64, Ordering::Relaxed);
            for b in &mut packet[n - 16..] {
                *b ^= 0x5a;
            }
        }
    }
}

async fn lossy_link(target: SocketAddr) -> LossyLink {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let (armed, dropped, dropped_bytes) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let peer = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let addr = front.local_addr().unwrap();
    let tamper = Tamper {
        armed: armed.clone(),
        dropped: dropped.clone(),
        dropped_bytes: dropped_bytes.clone(),
    };
    let (f, b, p, t) = (front.clone(), back.clone(), peer.clone(), tamper.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut large = 0u64;
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *p.lock().unwrap() = Some(from);
            t.pass(&mut buf[..n], &mut large);
            b.send(&buf[..n]).await.ok();
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut large = 0u64;
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *peer.lock().unwrap();
            if let Some(to) = to {
                tamper.pass(&mut buf[..n], &mut large);
                front.send_to(&buf[..n], to).await.ok();
            }
        }
    });
    LossyLink {
        addr,
        armed,
        dropped,
        dropped_bytes,
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

    link.armed.store(false, Ordering::Relaxed);
    let dropped = link.dropped_bytes.load(Ordering::Relaxed);
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
    // The client's count of what both ends acknowledged settles (loss detection's time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (owed, quic) = loop {
        let before = tunnel.entry_usage().unwrap().vpn;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let owed = tunnel.entry_usage().unwrap().vpn;
        if owed == before && owed > 0 {
            break (owed, tunnel.quic_stats());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counts never settled"
        );
    };
    let (sent, received) = (quic.udp_tx.bytes, quic.udp_rx.bytes);
    eprintln!(
        "UDP sent {sent} B, received {received} B, the link dropped {dropped} B; the entry is \
         owed {owed} B"
    );
    assert!(dropped > 128 * 1024, "too little lost to tell claims apart");
    // Nothing the link dropped is owed ...
    assert!(
        owed + dropped <= sent + received,
        "owed {owed} + dropped {dropped} > {}",
        sent + received
    );
    // ... and nearly all that arrived is (what is not: packets in flight when the counts were
    // taken, MTU probes).
    assert!(
        owed + dropped + 64 * 1024 >= sent + received,
        "owed only {owed} of {}",
        sent + received - dropped
    );
    // The entry is paid for what it delivered ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while entry_state.signed.load(Ordering::Relaxed) < cost(owed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the entry was not paid for what it carried: {} < {}",
            entry_state.signed.load(Ordering::Relaxed),
            cost(owed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... it billed exactly that, and once they settled let go of the bytes it forwarded that
    // never arrived (the credit they held is free again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let proven = metric(&entry, "vpn_upstream_proven_bytes")
            + metric(&entry, "vpn_downstream_proven_bytes");
        let lost =
            metric(&entry, "vpn_upstream_lost_bytes") + metric(&entry, "vpn_downstream_lost_bytes");
        if proven == owed && lost >= dropped * 9 / 10 {
            eprintln!("entry: {proven} B proven, {lost} B let go as lost");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry: {proven} B proven of {owed} owed, {lost} B let go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and for nothing else (64 KiB of slack for traffic in flight at most), far below its
    // own count of what it forwarded.
    let signed = entry_state.signed.load(Ordering::Relaxed);
    assert!(
        signed <= cost(owed + 64 * 1024),
        "{signed} > {}",
        cost(owed)
    );
    assert!(signed < cost(sent + received));
    tunnel.close();
    entry.shutdown().await;
    exit.shutdown().await;
}
