//! The VPN client: tunnels to exit relays ([`tunnel`]), the TUN-device client with routes, DNS and
//! kill switch ([`device`]), and the SOCKS5 proxy for use without root ([`socks`]).

pub mod device;
pub mod socks;
pub mod tunnel;
