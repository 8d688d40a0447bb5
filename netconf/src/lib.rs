//! Host network configuration for the VPN, done with the standard tools (`ip`, `nft`) so that
//! every change is a command a user can read, and, without the rights, print and run by hand.
//!
//! - [`cmd`]: running command lists; [`tun`]: TUN devices.
//! - [`exit`]: an exit relay's forwarding and NAT; [`exit6`]: its IPv6 side.
//! - [`client`]: a client's routes, DNS and kill switch, recorded so they can be undone exactly,
//!   even by another process after a crash.

#![warn(missing_docs)]

pub mod client;
pub mod cmd;
pub mod exit;
pub mod exit6;
pub mod tun;

pub use cmd::{Cmd, NetError};
