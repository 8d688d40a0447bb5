//! The relay's VPN roles: exit ([`exit`]: TUN device, NAT, tunnels; [`connect`]: proxied
//! connections) and entry of 2-hop routes ([`entry`]), proof of relay between them
//! ([`received`], [`upstream`]); the address pool
//! ([`pool`]) and counters ([`metrics`]).

pub mod connect;
pub mod entry;
pub mod exit;
pub mod metrics;
pub mod pool;
pub mod received;
pub mod upstream;

/// Spends `bytes` of a VPN `budget`; false (and counted) when the credit window is used up.
pub fn spend(
    core: &crate::node::core::Core,
    budget: &mut crate::billing::budget::Budget,
    bytes: usize,
) -> bool {
    let allowed = budget.allow(bytes);
    if !allowed {
        core.metrics.vpn.dropped_unpaid.inc();
    }
    allowed
}
