//! Billing for the TOP relay network, as sans-IO state machines: what a service costs
//! ([`Prices`]), what a relay has carried and may still carry unpaid ([`Meter`]), and what a
//! client agrees to sign ([`Payer`]). The relay and the SDK drive them over an `Open::Billing`
//! stream whose frames are in [`wire`].

#![warn(missing_docs)]

pub mod meter;
pub mod payer;
pub mod prices;
pub mod wire;

pub use meter::{Meter, ReceiptError};
pub use payer::{PayError, Payer};
pub use prices::{Prices, STORED_COPIES, Service, Usage, sent_message_bytes, stored_message_usage};
