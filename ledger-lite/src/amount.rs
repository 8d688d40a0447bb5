//! Exact amounts of TOP in integer base units (1 TOP = 10^9 units), with checked arithmetic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Base units in one TOP.
pub const UNITS_PER_TOP: u128 = 1_000_000_000;
const DECIMALS: usize = 9;

/// An amount of TOP in base units. Arithmetic is checked: overflow is an error, never a wrap.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Amount(u128);

/// Why an amount could not be parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// The result would not fit.
    #[error("amount overflow")]
    Overflow,
    /// The result would be negative.
    #[error("insufficient amount")]
    Underflow,
    /// The text is not an amount of TOP.
    #[error("`{0}` is not an amount of TOP (examples: 1, 1.5, 0.000000001)")]
    Parse(String),
}

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// An amount of base units.
    pub const fn from_units(units: u128) -> Self {
        Self(units)
    }

    /// Whole TOP; fails on overflow.
    pub fn from_top(top: u128) -> Result<Self, AmountError> {
        top.checked_mul(UNITS_PER_TOP)
            .map(Self)
            .ok_or(AmountError::Overflow)
    }

    /// The base units.
    pub const fn units(self) -> u128 {
        self.0
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: Self) -> Result<Self, AmountError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or(AmountError::Overflow)
    }

    /// `self - other`, or an error if `other` is larger.
    pub fn checked_sub(self, other: Self) -> Result<Self, AmountError> {
        self.0
            .checked_sub(other.0)
            .map(Self)
            .ok_or(AmountError::Underflow)
    }

    /// `self + other`, capped at the largest amount (for display totals, never for money moves).
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero if `other` is larger.
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// The burned share of a fee: ⌈fee / 10⌉, never less than 10%.
    pub fn burn_share(self) -> Self {
        Self(self.0.div_ceil(10))
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    /// Decimal TOP without trailing zeros: `1.5`, `0.000000001`, `12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_TOP;
        let frac = self.0 % UNITS_PER_TOP;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:0DECIMALS$}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses decimal TOP (`1`, `1.5`, `.25`), at most 9 decimals, exactly.
    fn from_str(s: &str) -> Result<Self, AmountError> {
        let bad = || AmountError::Parse(s.to_string());
        let t = s.trim();
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if (whole.is_empty() && frac.is_empty())
            || frac.len() > DECIMALS
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        // Only digits remain, so a failed parse means too many of them.
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| AmountError::Overflow)?
        };
        let frac_units: u128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<DECIMALS$}").parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(UNITS_PER_TOP)
            .and_then(|w| w.checked_add(frac_units))
            .map(Self)
            .ok_or(AmountError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_decimals_exactly() {
        for (text, units) in [
            ("1", UNITS_PER_TOP),
            ("1.5", 1_500_000_000),
            ("0.000000001", 1),
            (".25", 250_000_000),
        ] {
            let a: Amount = text.parse().unwrap();
            assert_eq!(a.units(), units, "{text}");
        }
        assert_eq!(Amount::from_units(1_500_000_000).to_string(), "1.5");
        assert_eq!(Amount::from_units(1).to_string(), "0.000000001");
        assert_eq!(Amount::from_units(12 * UNITS_PER_TOP).to_string(), "12");
        for bad in ["", ".", "1.0000000001", "-1", "1e9", "1.5.5", "abc", " 1 2"] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "999999999999999999999999999999999999999".parse::<Amount>(),
            Err(AmountError::Overflow)
        );
    }

    #[test]
    fn burn_is_a_ceiling_tenth() {
        assert_eq!(Amount::from_units(100).burn_share(), Amount::from_units(10));
        assert_eq!(Amount::from_units(101).burn_share(), Amount::from_units(11));
        assert_eq!(Amount::from_units(1).burn_share(), Amount::from_units(1));
        assert_eq!(Amount::ZERO.burn_share(), Amount::ZERO);
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(
            Amount::from_units(u128::MAX).checked_add(Amount::from_units(1)),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            Amount::ZERO.checked_sub(Amount::from_units(1)),
            Err(AmountError::Underflow)
        );
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(units in any::<u64>()) {
            let a = Amount::from_units(units as u128);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }

        #[test]
        fn burn_at_least_a_tenth(fee in any::<u64>()) {
            let fee = Amount::from_units(fee as u128);
            let burn = fee.burn_share();
            prop_assert!(burn.units() * 10 >= fee.units());
            prop_assert!(burn <= fee);
        }
    }
}
