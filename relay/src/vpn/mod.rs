//! The relay's VPN roles: exit ([`exit`]: TUN device, NAT, tunnels; [`connect`]: proxied
//! connections) and entry of 2-hop routes ([`hop`] on the UDP [`forward`]er), proof of relay
//! between them ([`received`], [`held`]), in the kernel where it can be ([`kernel`]); the address pool ([`pool`]) and counters
//! ([`metrics`]).

pub mod allowance;
pub mod connect;
pub mod exit;
pub mod forward;
pub mod held;
pub mod hop;
pub mod kernel;
pub mod metrics;
pub mod nft;
pub mod pool;
pub mod received;
pub mod route_rules;

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
