//! The CDN's counters on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters of the CDN role.
#[derive(Default)]
pub struct CdnMetrics {
    /// Files published here.
    pub published: Counter,
    /// Chunk bytes sent to SDK clients and peer relays.
    pub bytes_quic: Counter,
    /// Body bytes sent through the HTTP gateway.
    pub bytes_http: Counter,
    /// Chunks read from this relay's own disk (cache hits and its own publications).
    pub local_chunks: Counter,
    /// Chunks fetched from peer relays on a miss.
    pub peer_chunks: Counter,
    /// Chunks a peer served that did not match their hash (fetched elsewhere instead).
    pub bad_peer_chunks: Counter,
    /// Chunks found corrupt on this relay's own disk (dropped and fetched again).
    pub bad_local_chunks: Counter,
    /// Misses whose sources the DHT named (provider records).
    pub provider_misses: Counter,
}

impl CdnMetrics {
    /// Registers every counter under `cdn_`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "cdn_published",
            "Files published here",
            self.published.clone(),
        );
        r.register(
            "cdn_bytes_quic",
            "Chunk bytes sent over QUIC",
            self.bytes_quic.clone(),
        );
        r.register(
            "cdn_bytes_http",
            "Body bytes sent by the HTTP gateway",
            self.bytes_http.clone(),
        );
        r.register(
            "cdn_local_chunks",
            "Chunks read from this relay's own disk (hits)",
            self.local_chunks.clone(),
        );
        r.register(
            "cdn_peer_chunks",
            "Chunks fetched from peers on a miss",
            self.peer_chunks.clone(),
        );
        r.register(
            "cdn_bad_peer_chunks",
            "Chunks from peers that failed verification",
            self.bad_peer_chunks.clone(),
        );
        r.register(
            "cdn_bad_local_chunks",
            "Chunks found corrupt on local disk",
            self.bad_local_chunks.clone(),
        );
        r.register(
            "cdn_provider_misses",
            "Misses whose sources the DHT named (provider records)",
            self.provider_misses.clone(),
        );
    }
}
