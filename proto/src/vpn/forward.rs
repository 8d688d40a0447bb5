//! 2-hop routes. The client asks its entry relay (`Open::Forward`) to forward the UDP packets of
//! its own QUIC connection to the exit; the entry answers with the port it forwards from
//! ([`ForwardReply`]) and from then on forwards, between the client's address and the exit's,
//! packets it can neither read nor alter (end-to-end QUIC, and the tunnel's Noise inside).
//!
//! Proof of relay: the entry is paid for the UDP bytes it carried that the far end acknowledged.
//! QUIC's ACKs are authenticated with keys only the client and the exit hold, so each end knows
//! which of its packets arrived ([`AckedBytes`]). On the forward stream the client states, again
//! and again ([`Delivered`]), its own count (its packets the exit acknowledged) and the exit's
//! signed one (the exit's packets the client acknowledged, [`super::received`]); it pays the
//! entry for no more than these, and the entry bills by them, not by what it forwarded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::received::Received;

/// Largest frame on a forward stream.
pub const MAX_FORWARD_FRAME: usize = 512;

/// Entry → client, first on a forward stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Forwarding: send the connection's packets to this UDP port of the entry's address.
    Ready {
        /// The entry's forwarding port.
        port: u16,
    },
    /// Why the entry will not forward.
    Refused(String),
}

/// Client → entry, repeatedly on a forward stream: what the entry delivered so far (both
/// cumulative, UDP bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The client's packets the exit acknowledged (the client's own [`AckedBytes`]).
    pub up: u64,
    /// The exit's latest signed counts (the exit's packets the client acknowledged), once any.
    pub down: Option<Received>,
}

/// Loss detection's time before a sent byte counts as acknowledged or lost: this, plus
/// [`RTTS_TO_SETTLE`] round trips.
const SETTLE_BASE: Duration = Duration::from_millis(30);
/// Round trips (smoothed) added to [`SETTLE_BASE`]: QUIC declares a packet lost within about
/// 9/8 of one once a later one is acknowledged.
const RTTS_TO_SETTLE: u32 = 4;
/// Checkpoints kept (each at least a sixteenth of the settling time after the previous).
const CHECKPOINTS: usize = 64;

/// Largest MTU probe (a lost probe is not in quinn's lost bytes: it is taken off at this size).
const PROBE_BYTES: u64 = crate::tls::MAX_UDP_PAYLOAD as u64;

/// UDP bytes one end of a QUIC connection sent that its peer acknowledged: those sent long
/// enough before the latest acknowledgement for loss detection to have judged them, less those
/// it declared lost (lost MTU probes at their largest size). The peer's ACKs are authenticated
/// (a relay between them can neither forge nor alter them), so a packet a relay dropped is lost
/// here, and a relay that holds back every ACK stops the count where it is. Not covered: packets
/// that carry only ACKs are never declared lost (a few bytes), and a loss found only after the
/// settling time (ACKs a relay holds back longer than that) counts until it is found; the
/// stated count never goes back.
#[derive(Debug, Default)]
pub struct AckedBytes {
    checkpoints: VecDeque<(Instant, u64)>,
    acks_seen: u64,
    last_ack: Option<Instant>,
    last_look: Option<Instant>,
    stated: u64,
}

impl AckedBytes {
    /// The count now, from the connection's `stats`.
    pub fn update(&mut self, stats: &quinn::ConnectionStats, now: Instant) -> u64 {
        let settle = SETTLE_BASE.saturating_add(stats.path.rtt.saturating_mul(RTTS_TO_SETTLE));
        let sent = stats.udp_tx.bytes;
        if stats.frame_rx.acks > self.acks_seen {
            // It arrived since the last look (at the first, only now is known).
            self.acks_seen = stats.frame_rx.acks;
            self.last_ack = Some(self.last_look.unwrap_or(now));
        }
        self.last_look = Some(now);
        if self
            .checkpoints
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= settle / 16)
        {
            if self.checkpoints.len() == CHECKPOINTS {
                self.checkpoints.pop_front();
            }
            self.checkpoints.push_back((now, sent));
        }
        // What was sent `settle` before the latest ACK (none yet: nothing).
        let Some(horizon) = self.last_ack.and_then(|at| at.checked_sub(settle)) else {
            return self.stated;
        };
        let settled = self
            .checkpoints
            .iter()
            .rev()
            .find(|(at, _)| *at <= horizon)
            .map_or(0, |(_, bytes)| *bytes);
        let lost = stats
            .path
            .lost_bytes
            .saturating_add(stats.path.lost_plpmtud_probes.saturating_mul(PROBE_BYTES));
        self.stated = self.stated.max(settled.saturating_sub(lost));
        self.stated
    }

    /// The count last stated.
    pub fn stated(&self) -> u64 {
        self.stated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sent: u64, lost: u64, acks: u64) -> quinn::ConnectionStats {
        let mut s = quinn::ConnectionStats::default();
        s.udp_tx.bytes = sent;
        s.path.lost_bytes = lost;
        s.path.rtt = Duration::from_millis(5);
        s.frame_rx.acks = acks;
        s
    }

    #[test]
    fn counts_only_what_settled_and_was_not_lost_and_never_goes_back() {
        let mut acked = AckedBytes::default();
        let t0 = Instant::now() + Duration::from_secs(1);
        let ms = |n| t0 + Duration::from_millis(n);
        // Sent, but loss detection has not had its time: nothing yet.
        assert_eq!(acked.update(&stats(10_000, 0, 1), t0), 0);
        assert_eq!(acked.update(&stats(20_000, 0, 2), ms(20)), 0);
        // An ACK arrived between 50 and 70 ms (taken as at 50): what was sent 50 ms (30 + 4 × 5)
        // before that, less what was lost.
        assert_eq!(acked.update(&stats(30_000, 0, 2), ms(50)), 0);
        assert_eq!(acked.update(&stats(40_000, 2_000, 3), ms(70)), 8_000);
        assert_eq!(acked.update(&stats(50_000, 2_000, 4), ms(90)), 18_000);
        // More declared lost later does not take back what was stated.
        assert_eq!(acked.update(&stats(50_000, 30_000, 5), ms(95)), 18_000);
        assert_eq!(acked.stated(), 18_000);
    }

    #[test]
    fn a_relay_that_holds_back_every_ack_stops_the_count() {
        let mut acked = AckedBytes::default();
        let t0 = Instant::now() + Duration::from_secs(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(acked.update(&stats(10_000, 0, 1), t0), 0);
        assert_eq!(acked.update(&stats(15_000, 0, 1), ms(50)), 0);
        assert_eq!(acked.update(&stats(20_000, 0, 2), ms(60)), 10_000);
        // From here no ACK arrives (the packets are dropped, and so no loss is declared): what
        // was sent meanwhile is never counted, however long ago.
        for (i, t) in (70..2_000).step_by(10).enumerate() {
            let sent = 30_000 + 10_000 * i as u64;
            assert_eq!(acked.update(&stats(sent, 0, 2), ms(t)), 10_000, "at {t} ms");
        }
        // Lost MTU probes are taken off too.
        let mut probed = AckedBytes::default();
        assert_eq!(probed.update(&stats(100_000, 0, 1), t0), 0);
        assert_eq!(probed.update(&stats(150_000, 0, 1), ms(50)), 0);
        let mut s = stats(200_000, 0, 2);
        s.path.lost_plpmtud_probes = 2;
        assert_eq!(probed.update(&s, ms(60)), 100_000 - 2 * PROBE_BYTES);
        // A huge round trip only waits.
        let mut slow = stats(200_000, 0, 3);
        slow.path.rtt = Duration::MAX;
        assert_eq!(probed.update(&slow, ms(70)), 100_000 - 2 * PROBE_BYTES);
    }
}
