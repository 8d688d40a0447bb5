//! The relay's VPN roles: exit ([`exit`]: TUN device, NAT, tunnels; [`connect`]: proxied
//! connections) and entry of 2-hop routes ([`entry`]); metering ([`budget`]), the address pool
//! ([`pool`]) and counters ([`metrics`]).

pub mod budget;
pub mod connect;
pub mod entry;
pub mod exit;
pub mod metrics;
pub mod pool;
