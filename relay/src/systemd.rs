//! Telling systemd how the relay is (`Type=notify`): `READY=1` once it serves, `WATCHDOG=1`
//! while it is healthy, `STOPPING=1` on the way out. Without `NOTIFY_SOCKET` all of it is a
//! no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use top_relay::Relay;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Reports readiness, then pings the watchdog while healthy; never returns.
pub async fn report(relay: &Relay) {
    if relay.ready().await {
        let status = format!("serving {}", relay.addr());
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return std::future::pending().await;
    }
    // Twice per watchdog period, as systemd advises; only while the relay answers on its HTTP
    // port (the runtime, the accept path of a port and the server task all alive).
    let period = Duration::from_micros(usec / 2);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if relay.healthy() && answers_health(relay.http_addr(), period).await {
            notify(&[NotifyState::Watchdog]);
        }
    }
}

/// Whether `GET /health` on `http` answers `ok` within `limit`.
async fn answers_health(http: std::net::SocketAddr, limit: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        s.take(4096).read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(limit, ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Says the relay is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}
