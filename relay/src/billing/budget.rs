//! Metering datagram paths (VPN, realtime pipes) without a lock per packet: credit is drawn
//! from the connection's meter in chunks, and packets spend it locally.

use std::sync::Arc;

use top_billing::Service;

use crate::billing::meter::ClientMeter;

/// Credit drawn from the meter at once. Small enough that usage recorded ahead of traffic stays
/// well inside the slack a client allows when it checks a pay request (64 KiB).
pub const CHUNK: u64 = 16 * 1024;

/// One direction's local credit on a connection's meter (unmetered relays: always allowed).
pub struct Budget {
    meter: Option<Arc<ClientMeter>>,
    service: Service,
    /// Credit is held until proven rather than billed at once (see `ClientMeter::try_hold`).
    held: bool,
    left: u64,
}

impl Budget {
    /// A budget drawing on `meter` for `service`.
    pub fn new(meter: Option<Arc<ClientMeter>>, service: Service) -> Self {
        Self {
            meter,
            service,
            held: false,
            left: 0,
        }
    }

    /// A budget for VPN bytes whose billing waits for proof: it holds credit as it spends.
    pub fn held(meter: Option<Arc<ClientMeter>>) -> Self {
        Self {
            held: true,
            ..Self::new(meter, Service::Vpn)
        }
    }

    /// The meter this budget draws on (`None`: unmetered).
    pub fn meter(&self) -> Option<&Arc<ClientMeter>> {
        self.meter.as_ref()
    }

    /// Spends `bytes`; false when the credit window is used up (the packet must be dropped).
    pub fn allow(&mut self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let Some(meter) = &self.meter else {
            return true;
        };
        if self.left < bytes {
            // Whole chunks covering the shortfall: one receive may be a GRO batch of up to
            // 64 KiB, more than a chunk (one chunk drawn for it left `left` short, and the
            // subtraction below wrapped into unlimited credit).
            let need = (bytes - self.left).div_ceil(CHUNK).saturating_mul(CHUNK);
            let drawn = if self.held {
                meter.try_hold(need)
            } else {
                meter.try_carry(self.service, need)
            };
            if !drawn {
                return false;
            }
            self.left = self.left.saturating_add(need);
        }
        self.left = self.left.saturating_sub(bytes);
        true
    }
}
