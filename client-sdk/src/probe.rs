//! Measuring the round trip to a relay: a QUIC handshake that proves the relay's id, then
//! QUIC's own estimate.

use std::time::{Duration, Instant};

use top_proto::addr::RelayAddr;
use top_proto::identity::Identity;
use top_proto::net::dial::dial;
use top_proto::net::endpoint::client_endpoint;

use crate::error::ClientError;

/// The round trip to `relay` (a throwaway identity dials it; nothing is sent beyond the
/// handshake).
pub async fn round_trip(relay: &RelayAddr) -> Result<Duration, ClientError> {
    let endpoint = client_endpoint(&relay.host_port)?;
    let start = Instant::now();
    let conn = dial(&endpoint, &Identity::generate(), relay).await?;
    // The handshake took at least one round trip; QUIC's estimate is finer once it has one.
    let rtt = conn.rtt().min(start.elapsed());
    conn.close(0u32.into(), b"probe");
    // The endpoint winds down on its own: the round trip is known already.
    drop(endpoint);
    Ok(rtt)
}
