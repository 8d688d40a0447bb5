//! What the root-only VPN tests share: a network namespace of the test's own, and ICMP echo
//! requests to send through a tunnel.
#![allow(dead_code)]

use std::future::Future;
use std::net::Ipv4Addr;

/// Runs `test` on a thread in a network namespace of its own (loopback up), on a current-thread
/// runtime (threads it would spawn would not share the namespace); false when not root.
pub fn in_own_netns<F: Future<Output = ()>>(test: impl FnOnce() -> F + Send + 'static) -> bool {
    if !top_netconf::cmd::is_root() {
        eprintln!("skipped: needs root (CI runs it as root)");
        return false;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only; it has no other effect on the process.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    })
    .join()
    .unwrap();
    true
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request from `src` to `dst` carrying `payload`.
pub fn ping(src: Ipv4Addr, dst: Ipv4Addr, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = 20 + icmp.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&icmp);
    p
}
