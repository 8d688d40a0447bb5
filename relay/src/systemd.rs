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
    // Twice per watchdog period, as systemd advises.
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tick.tick().await;
        if relay.healthy() {
            notify(&[NotifyState::Watchdog]);
        }
    }
}

/// Says the relay is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}
