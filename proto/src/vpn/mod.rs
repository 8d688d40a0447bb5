//! The VPN data plane, sans-IO: tunnel handshake and lease ([`cipher`]), the replay window
//! ([`replay`]), the IPv4 header checks ([`packet`]) and the control-stream frames.

pub mod cipher;
pub mod forward;
pub mod packet;
pub mod received;
pub mod replay;

use serde::{Deserialize, Serialize};

/// Frames of a tunnel's control stream (`Open::Vpn`), in order: client `Hello`, exit `Welcome`
/// or `Refused`; the stream then stays open for the session's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VpnFrame {
    /// Client → exit: the first Noise message.
    Hello(Vec<u8>),
    /// Exit → client: the Noise reply carrying the lease.
    Welcome(Vec<u8>),
    /// Exit → client: why the exit will not carry this tunnel.
    Refused(String),
}

/// Frames of a proxied connection's stream (`Open::Connect`), inside its Noise pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectRequest {
    /// Connect to a host name (resolved at the exit) or address literal, and port.
    Host(String, u16),
}

/// The exit's answer to a [`ConnectRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectReply {
    /// Connected; bytes follow.
    Connected,
    /// The name did not resolve.
    NotFound,
    /// The exit's policy forbids the destination.
    Forbidden,
    /// The destination refused or did not answer.
    Unreachable,
    /// Unpaid usage exceeds the exit's credit window.
    PaymentRequired,
}
