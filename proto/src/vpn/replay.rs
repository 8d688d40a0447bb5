//! The anti-replay window for explicit per-packet nonces (RFC 6479, as in WireGuard).
//!
//! Datagrams may arrive out of order or not at all; a nonce is accepted once, and only if it is
//! newer than the window's lower edge. [`ReplayWindow::check`] runs before decryption (cheap
//! rejection), [`ReplayWindow::update`] only after the packet authenticated, so forged packets
//! can never move the window.

/// Words of the bitmap.
const BLOCKS: usize = 32;
/// Bits per word.
const BLOCK_BITS: u64 = 64;
/// How far behind the newest nonce a packet may still arrive.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;
/// Nonces at or above this are never accepted (Noise reserves `u64::MAX`; rekey long before).
pub const REJECT_AFTER: u64 = u64::MAX - 1;

/// Which nonces were seen recently.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The newest nonce accepted.
    newest: u64,
    bits: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            newest: 0,
            bits: [0; BLOCKS],
        }
    }

    fn slot(nonce: u64) -> (usize, u64) {
        let block = (nonce / BLOCK_BITS) as usize % BLOCKS;
        (block, 1u64 << (nonce % BLOCK_BITS))
    }

    /// Whether `nonce` would be accepted (not too old, not seen). Does not change the window.
    pub fn check(&self, nonce: u64) -> bool {
        if nonce >= REJECT_AFTER {
            return false;
        }
        if nonce > self.newest {
            return true;
        }
        if self.newest - nonce > WINDOW {
            return false;
        }
        let (block, bit) = Self::slot(nonce);
        self.bits[block] & bit == 0
    }

    /// Marks `nonce` as seen; returns false (and changes nothing) when it must be dropped.
    pub fn update(&mut self, nonce: u64) -> bool {
        if !self.check(nonce) {
            return false;
        }
        if nonce > self.newest {
            let current = self.newest / BLOCK_BITS;
            let target = nonce / BLOCK_BITS;
            let clear = (target - current).min(BLOCKS as u64);
            for i in 1..=clear {
                self.bits[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.newest = nonce;
        }
        let (block, bit) = Self::slot(nonce);
        self.bits[block] |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_each_nonce_once_in_any_order() {
        let mut w = ReplayWindow::new();
        for n in [0, 5, 3, 4, 1, 2, 100, 99] {
            assert!(w.update(n), "first time {n}");
        }
        for n in [0, 5, 3, 100, 99] {
            assert!(!w.update(n), "replay {n}");
        }
    }

    #[test]
    fn too_old_and_reserved_nonces_are_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.update(10_000));
        assert!(!w.check(10_000 - WINDOW - 1));
        assert!(w.update(10_000 - WINDOW));
        assert!(!w.update(u64::MAX));
        assert!(!w.update(REJECT_AFTER));
    }

    #[test]
    fn a_big_jump_clears_the_old_bits() {
        let mut w = ReplayWindow::new();
        assert!(w.update(1));
        assert!(w.update(1 + 64 * BLOCKS as u64));
        // Slot of 1 was reused by the jump, but 1 is now too old anyway.
        assert!(!w.update(1));
        assert!(w.update(2 + 64 * BLOCKS as u64));
    }

    proptest! {
        /// Against a model: a nonce is accepted iff unseen and within the window of the newest.
        #[test]
        fn matches_a_set_model(nonces in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut newest = 0u64;
            for n in nonces {
                let fresh = !seen.contains(&n) && (n > newest || newest - n <= WINDOW);
                prop_assert_eq!(w.update(n), fresh, "nonce {}", n);
                if fresh {
                    seen.insert(n);
                    newest = newest.max(n);
                }
            }
        }
    }
}
