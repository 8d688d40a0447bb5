//! A UDP forwarder between one client and a server on loopback that, while told to, drops the
//! packets of one direction larger than a size: a path whose full-size packets are lost for a
//! while (congestion quinn takes for a black hole, or a path that shrank and grew back).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Packets larger than this are dropped while dropping is on.
pub const DROP_ABOVE: usize = 1300;

/// Which packets the forwarder drops.
#[derive(Default)]
pub struct Lossy {
    /// Large packets from the client to the server.
    pub from_client: AtomicBool,
    /// Large packets from the server to the client.
    pub to_client: AtomicBool,
}

/// Starts a forwarder to `server`; returns the address clients dial instead. It runs until the
/// test's runtime ends.
pub async fn forwarder(server: SocketAddr, lossy: Arc<Lossy>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let (to, dropping) = if from == server {
                match client {
                    Some(c) => (c, &lossy.to_client),
                    None => continue,
                }
            } else {
                client = Some(from);
                (server, &lossy.from_client)
            };
            if n > DROP_ABOVE && dropping.load(Ordering::Relaxed) {
                continue;
            }
            socket.send_to(&buf[..n], to).await.ok();
        }
    });
    addr
}
