//! Prices per MiB of each service, usage counters, and the exact cost of a usage.

pub use ledger_lite::registry::Prices;
use ledger_lite::{Amount, AmountError};
use serde::{Deserialize, Serialize};

/// Bytes in a MiB.
pub const MIB: u128 = 1 << 20;

/// The message bytes a sender pays for a message of `len` sealed bytes: sending it and
/// delivering it (recipients pay nothing for messages they did not ask for).
pub fn sent_message_bytes(len: usize) -> u64 {
    (len as u64).saturating_mul(2)
}

/// How many copies of a stored message the network keeps: one on each of its recipient's home
/// relays. The sender pays for each.
pub const STORED_COPIES: u64 = 2;

/// What a sender pays, beyond [`sent_message_bytes`], when its message of `len` sealed bytes is
/// stored for an offline recipient: keeping each of the [`STORED_COPIES`], and delivering each
/// copy but the one already paid at sending (every home relay may push its copy).
pub fn stored_message_usage(len: usize) -> Usage {
    let len = len as u64;
    Usage {
        msg: len.saturating_mul(STORED_COPIES - 1),
        mailbox: len.saturating_mul(STORED_COPIES),
        ..Usage::default()
    }
}

/// A metered service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Messages sent or delivered.
    Msg,
    /// Messages stored in a mailbox (charged on top of `Msg`).
    Mailbox,
    /// Bytes through a pipe, both directions.
    Pipe,
    /// VPN bytes (tunnel datagrams and proxied streams), both directions.
    Vpn,
    /// CDN bytes: chunks fetched (paid once verified) and published.
    Cdn,
}

/// Bytes used per service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Message bytes.
    pub msg: u64,
    /// Mailbox bytes.
    pub mailbox: u64,
    /// Pipe bytes.
    pub pipe: u64,
    /// VPN bytes.
    #[serde(default)]
    pub vpn: u64,
    /// CDN bytes.
    #[serde(default)]
    pub cdn: u64,
}

impl Usage {
    /// The exact cost of this usage at `prices`: per service ⌈bytes × price / MiB⌉, summed.
    pub fn cost(&self, prices: &Prices) -> Result<Amount, AmountError> {
        let one = |bytes: u64, price: Amount| -> Result<Amount, AmountError> {
            let units = u128::from(bytes)
                .checked_mul(price.units())
                .ok_or(AmountError::Overflow)?;
            Ok(Amount::from_units(units.div_ceil(MIB)))
        };
        one(self.msg, prices.msg)?
            .checked_add(one(self.mailbox, prices.mailbox)?)?
            .checked_add(one(self.pipe, prices.pipe)?)?
            .checked_add(one(self.vpn, prices.vpn)?)?
            .checked_add(one(self.cdn, prices.cdn)?)
    }

    /// Adds `bytes` of `service`.
    pub fn add(&mut self, service: Service, bytes: u64) {
        let slot = match service {
            Service::Msg => &mut self.msg,
            Service::Mailbox => &mut self.mailbox,
            Service::Pipe => &mut self.pipe,
            Service::Vpn => &mut self.vpn,
            Service::Cdn => &mut self.cdn,
        };
        *slot = slot.saturating_add(bytes);
    }

    /// All bytes.
    pub fn total(&self) -> u64 {
        self.msg
            .saturating_add(self.mailbox)
            .saturating_add(self.pipe)
            .saturating_add(self.vpn)
            .saturating_add(self.cdn)
    }

    /// Whether every counter of `self` is at most `other`'s plus `slack`.
    pub fn within(&self, other: &Usage, slack: u64) -> bool {
        self.msg <= other.msg.saturating_add(slack)
            && self.mailbox <= other.mailbox.saturating_add(slack)
            && self.pipe <= other.pipe.saturating_add(slack)
            && self.vpn <= other.vpn.saturating_add(slack)
            && self.cdn <= other.cdn.saturating_add(slack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_per_service_and_is_exact() {
        let prices = Prices {
            msg: Amount::from_units(10_000_000), // 0.01 TOP per MiB
            mailbox: Amount::from_units(3),
            pipe: Amount::ZERO,
            vpn: Amount::from_units(1),
            cdn: Amount::from_units(7),
        };
        let usage = Usage {
            msg: 1 << 20,
            mailbox: 1,
            pipe: 5 << 30,
            vpn: 3 << 20,
            cdn: (1 << 20) + 1,
        };
        // 10^7 + ⌈3/MiB⌉ + 0 + 3 + ⌈7·(MiB+1)/MiB⌉ = 10_000_000 + 1 + 3 + 8
        assert_eq!(usage.cost(&prices).unwrap(), Amount::from_units(10_000_012));
        assert_eq!(Usage::default().cost(&prices).unwrap(), Amount::ZERO);
        let huge = Prices {
            msg: Amount::from_units(u128::MAX),
            ..prices
        };
        assert!(usage.cost(&prices).is_ok());
        assert!(
            Usage {
                msg: 2,
                ..Usage::default()
            }
            .cost(&huge)
            .is_err()
        );
    }
}
