//! Getting a connection's full datagram size back once quinn fell back to 1200-byte packets.
//!
//! After a black hole (real, or congestion quinn took for one) quinn probes the path again once
//! [`BLACK_HOLE_COOLDOWN`] passed, but only when the connection's driver runs, and it has no
//! timer of its own for that. A connection whose every datagram is now refused as too large (a
//! realtime flow, a VPN's downstream) sends nothing, so nothing runs its driver until the next
//! keep-alive, seconds later: every datagram of those seconds is lost. Each sender that is
//! refused tells its [`MtuNudge`], which wakes the connection at most every
//! [`NUDGE_INTERVAL`], so the probes leave as soon as the cooldown ends.
//!
//! [`BLACK_HOLE_COOLDOWN`]: crate::tls::BLACK_HOLE_COOLDOWN

use std::time::{Duration, Instant};

use crate::tls::SEND_WINDOW;

/// Shortest time between two wake-ups of a connection by one refused sender.
pub const NUDGE_INTERVAL: Duration = Duration::from_millis(100);

/// One sender's wake-ups of a connection that refuses its datagrams as too large.
#[derive(Debug, Default)]
pub struct MtuNudge {
    last: Option<Instant>,
}

impl MtuNudge {
    /// A datagram was refused as too large on `conn`: wakes its driver (so that it probes the
    /// path when it may), at most every [`NUDGE_INTERVAL`].
    pub fn refused(&mut self, conn: &quinn::Connection) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < NUDGE_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        // Quinn's public way to wake a connection's driver: setting a window (to the value
        // every connection here has, `transport_config`'s, so nothing else changes).
        conn.set_send_window(SEND_WINDOW);
    }
}
