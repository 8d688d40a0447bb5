//! The VPN client: tunnels to exit relays ([`tunnel`]) and the SOCKS5 proxy for use without
//! root ([`socks`]). The TUN-device client with routes, DNS and kill switch (`top vpn up`) lives
//! in the CLI crate, so apps do not pay for host network changes.

pub mod hop;
pub mod proof;
pub mod socks;
pub mod tunnel;
