//! Realtime pipes through the relay: unreliable, unordered datagram flows between two peers
//! (calls, video, games). The open request ([`serve`]) reserves a flow id on each connection,
//! asks the far side for its own, and splices the peers' Noise handshake; from then on each
//! connection's reader ([`flows`]) forwards datagrams by flow id, metering each payer and
//! dropping (never queueing for long) what the next hop cannot take. Counters: [`metrics`].

pub mod flows;
pub mod metrics;
pub mod serve;
