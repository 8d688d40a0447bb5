//! Loopback ports for relays started by tests (shared with `cli/tests` by path).

use std::sync::atomic::{AtomicU16, Ordering};

/// First port handed out, and how many follow it (below the kernel's ephemeral range, 32768
/// and up on Linux).
const RANGE: (u16, u16) = (20_000, 12_000);

/// A loopback port free for both UDP (QUIC) and TCP (the relay's HTTP API, and its consensus
/// transport, which listens on the QUIC port's number) right now. Picked below the ephemeral
/// range: a port from it (what binding port 0 gives) can, before the relay binds it, become the
/// source port of another process's outgoing TCP connection, and a validator whose consensus
/// transport cannot listen never joins. Each call in a process takes the next port, from a
/// start that differs per process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (first, count) = RANGE;
    let start = (std::process::id() % u32::from(count)) as u16;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + (start.wrapping_add(step.wrapping_mul(7)) % count);
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if udp.is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
