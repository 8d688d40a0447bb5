//! The I/O half of the protocol: what touches sockets and tasks. Everything else in this crate
//! is pure (bytes, ids, keys and time in, bytes and decisions out).
//!
//! - [`endpoint`]: QUIC endpoints (stateless resets keyed by the relay's identity).
//! - [`dial`]: connecting to a relay whose id the TLS certificate must prove.
//! - [`route_mtu`]: how large a packet a connection to a peer may search for.
//! - [`path_mtu`]: waking a connection whose datagrams are refused, so it probes its path again.
//! - [`writer`]: the writer task of a stream, batching frames into few writes.
//! - [`rpc`]: one request, one response, in order, over a stream.
//! - [`cdn_fetch`]: the requesting side of a CDN fetch, checking every chunk it hands out.

pub mod cdn_fetch;
pub mod dial;
pub mod endpoint;
pub mod path_mtu;
pub mod route_mtu;
pub mod rpc;
pub mod writer;
