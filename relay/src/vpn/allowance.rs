//! The kernel's allowance on one direction of a 2-hop route ([`super::kernel`]): credit held
//! ahead of what the kernel forwards, topped up from the counts read each poll, so the kernel
//! never forwards a byte nobody holds credit for.

use std::sync::Arc;

use super::held::ForwardLog;
use crate::billing::meter::ClientMeter;

/// Credit held ahead for the kernel, per direction: at least this...
const AHEAD_MIN: u64 = 4 << 20;
/// ... and at most this (three times what it was offered in the last poll, in between) ...
const AHEAD_MAX: u64 = 32 << 20;
/// ... held in steps of this (a client's credit window is overdrawn by one step at most).
const HOLD_STEP: u64 = 256 * 1024;
/// A free entry's allowance (no meter): the kernel forwards without limit.
pub const UNLIMITED: u64 = 1 << 60;
/// IPv4 and UDP headers: the kernel counts whole packets (a GSO batch counts once), the log
/// counts UDP payload.
pub const HEADERS: u64 = 28;

/// Credit the kernel's allowance is held on (a client's meter).
pub trait Credit {
    /// Holds `bytes` if the credit allows; whether it did.
    fn try_hold(&self, bytes: u64) -> bool;
    /// Lets go of `bytes` held and never used.
    fn release(&self, bytes: u64);
}

impl Credit for ClientMeter {
    fn try_hold(&self, bytes: u64) -> bool {
        ClientMeter::try_hold(self, bytes)
    }
    fn release(&self, bytes: u64) {
        ClientMeter::release(self, bytes)
    }
}

/// The kernel's counts for one direction of a route, read together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes (whole IP packets) the kernel forwarded.
    pub forwarded: u64,
    /// Packets it forwarded.
    pub packets: u64,
    /// Bytes its quota saw: those forwarded, and those over the limit (dropped).
    pub seen: u64,
}

/// One direction's allowance in the kernel: credit held ahead of what the kernel forwards, so
/// it never forwards a byte nobody holds credit for. Credit and the log count UDP payload; the
/// kernel counts whole packets (more), so its limit in those is on the safe side.
pub struct Allowance<C> {
    credit: Option<Arc<C>>,
    log: Arc<ForwardLog>,
    /// Credit held for the kernel in all.
    held: u64,
    /// Payload the kernel forwarded in all (as far as counted).
    payload: u64,
    /// The kernel's counts when last taken.
    last: Counts,
}

impl<C: Credit> Allowance<C> {
    /// An allowance drawing on `credit` (`None`: free), noting what it forwards in `log`.
    pub fn new(credit: Option<Arc<C>>, log: Arc<ForwardLog>) -> Self {
        Self {
            credit,
            log,
            held: 0,
            payload: 0,
            last: Counts::default(),
        }
    }

    /// Takes the kernel's counts: notes what it newly forwarded, holds more credit ahead, and
    /// returns the quota's limit. The quota counts every byte it sees, forwarded or dropped:
    /// the limit is what it saw plus the credit held and not yet used. (Bytes it sees after
    /// this count only lower what it may still forward.)
    pub fn update(&mut self, now: Counts) -> u64 {
        let now = Counts {
            forwarded: now.forwarded.max(self.last.forwarded),
            packets: now.packets.max(self.last.packets),
            seen: now.seen.max(self.last.seen),
        };
        let new = Self::payload_between(self.last, now);
        self.payload += new;
        self.log.record(new);
        // What was offered (forwarded or dropped over the limit), not only what fit.
        let offered = now.seen - self.last.seen;
        self.last = now;
        let Some(credit) = &self.credit else {
            return UNLIMITED;
        };
        let want = offered.saturating_mul(3).clamp(AHEAD_MIN, AHEAD_MAX);
        // Topped up once half is used (the kernel's limit changes every other poll or so).
        if self.ahead() < want / 2 {
            while self.ahead() < want && credit.try_hold(HOLD_STEP) {
                self.held += HOLD_STEP;
            }
        }
        now.seen + self.ahead()
    }

    /// Credit held and not yet used.
    fn ahead(&self) -> u64 {
        self.held.saturating_sub(self.payload)
    }

    /// Notes the kernel's counts, holding no more credit (the route is leaving the kernel).
    pub fn update_without_holding(&mut self, now: Counts) {
        let credit = self.credit.take();
        self.update(now);
        self.credit = credit;
    }

    /// The route left the kernel (its final counts): notes the rest and lets go of the credit
    /// held and never used.
    pub fn end(&mut self, last: Counts) {
        let credit = self.credit.take();
        self.update(last);
        if let Some(credit) = &credit {
            let unused = self.ahead();
            if unused > 0 {
                credit.release(unused);
            }
            self.held = self.payload;
        }
        self.credit = credit;
    }

    /// The kernel's counts as last taken.
    pub fn last(&self) -> Counts {
        self.last
    }

    /// UDP payload bytes the kernel forwarded between the counts `before` and `now`: a
    /// packet's headers off each packet (a batch the kernel counts once holds at least a
    /// packet per 1,500 bytes).
    pub fn payload_between(before: Counts, now: Counts) -> u64 {
        let bytes = now.forwarded.saturating_sub(before.forwarded);
        let packets = now.packets.saturating_sub(before.packets).max(bytes / 1500);
        bytes.saturating_sub(packets.saturating_mul(HEADERS))
    }

    /// Credit held for the kernel in all (what it may forward).
    pub fn held(&self) -> u64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A client's credit: `room` bytes may be held.
    struct Room {
        room: AtomicU64,
        held: AtomicU64,
    }

    impl Credit for Room {
        fn try_hold(&self, bytes: u64) -> bool {
            let held = self.held.load(Ordering::Relaxed);
            if held >= self.room.load(Ordering::Relaxed) {
                return false;
            }
            self.held.store(held + bytes, Ordering::Relaxed);
            true
        }
        fn release(&self, bytes: u64) {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// The kernel's quota: passes a packet while what it saw (that packet too) stays within
    /// the limit; counts every packet it sees.
    struct Quota {
        limit: u64,
        seen: u64,
        forwarded: u64,
        packets: u64,
    }

    impl Quota {
        fn packet(&mut self, len: u64) -> bool {
            self.seen += len;
            if self.seen > self.limit {
                return false;
            }
            self.forwarded += len;
            self.packets += 1;
            true
        }
        fn counts(&self) -> Counts {
            Counts {
                forwarded: self.forwarded,
                packets: self.packets,
                seen: self.seen,
            }
        }
    }

    #[test]
    fn the_kernel_never_forwards_more_than_is_held() {
        let credit = Arc::new(Room {
            room: AtomicU64::new(4 << 20),
            held: AtomicU64::new(0),
        });
        let log = Arc::new(ForwardLog::default());
        let mut a = Allowance::new(Some(credit.clone()), log.clone());
        let mut q = Quota {
            limit: a.update(Counts::default()),
            seen: 0,
            forwarded: 0,
            packets: 0,
        };
        // A client that never pays: bursts of packets between polls, some between the two
        // counters' reads (what was seen is read first), some between a count and the limit
        // it led to (counted only next time).
        for _ in 0..50 {
            for _ in 0..1000 {
                q.packet(1400);
            }
            let seen_first = q.seen;
            for _ in 0..10 {
                q.packet(1400);
            }
            let counts = Counts {
                seen: seen_first,
                ..q.counts()
            };
            for _ in 0..100 {
                q.packet(1400);
            }
            q.limit = a.update(counts);
            let payload = q.forwarded - HEADERS * q.packets;
            assert!(payload <= a.held(), "{payload} > {}", a.held());
        }
        // The credit ran out: the kernel stopped at what was held (within a packet of it).
        assert!(a.held() <= (4 << 20) + HOLD_STEP);
        // (The kernel counts headers too: it stops short of the held payload by those.)
        assert!(q.forwarded + 1400 > a.held());
        // When the route ends, what was held and never forwarded goes back; everything the
        // kernel forwarded is in the log (as UDP payload).
        a.end(q.counts());
        let payload = q.forwarded - HEADERS * q.packets;
        assert_eq!(credit.held.load(Ordering::Relaxed), payload);
        assert_eq!(log.bytes(), payload);
    }

    #[test]
    fn a_paying_client_keeps_its_allowance_ahead() {
        let credit = Arc::new(Room {
            room: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
        });
        let mut a = Allowance::new(Some(credit), Arc::new(ForwardLog::default()));
        let mut limit = a.update(Counts::default());
        assert_eq!(limit, AHEAD_MIN);
        let mut q = Quota {
            limit,
            seen: 0,
            forwarded: 0,
            packets: 0,
        };
        for _ in 0..10 {
            // 10 MiB per poll: the allowance grows to twice that ahead.
            while q.forwarded < limit && q.packet(1000) {}
            limit = a.update(q.counts());
            q.limit = limit;
        }
        let payload = q.forwarded - HEADERS * q.packets;
        assert!(a.held() - payload >= 2 * 1000 * 1000, "{}", a.held());
        assert!(a.held() - payload <= AHEAD_MAX + HOLD_STEP);
        // A free entry's kernel is unlimited.
        let mut free = Allowance::<Room>::new(None, Arc::new(ForwardLog::default()));
        assert_eq!(free.update(Counts::default()), UNLIMITED);
    }
}
