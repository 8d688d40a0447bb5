//! Dialing a relay by `<relay-id>@<host>:<port>`: the one connect path for clients and relays.

use std::sync::Arc;
use std::time::Duration;

use crate::addr::RelayAddr;
use crate::id::RelayId;
use crate::identity::Identity;
use crate::tls::{SERVER_NAME, TlsError, client_config, transport_config_toward};

/// How long a dial may take, resolution and handshake included.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The address answered with another relay's id.
    #[error("relay at {addr} is {found}, not {expected}; check the relay address you were given")]
    WrongRelay {
        /// The address dialed.
        addr: String,
        /// The id asked for.
        expected: RelayId,
        /// The id the relay proved.
        found: RelayId,
    },
    /// The QUIC/TLS handshake failed.
    #[error("cannot connect to relay {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// Nothing answered in time.
    #[error("relay {0} did not answer within {DIAL_TIMEOUT:?}; is it running and reachable?")]
    Timeout(String),
    /// Local TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Connects `endpoint` to the relay at `addr`, proving `identity` and requiring `addr.id`.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    addr: &RelayAddr,
) -> Result<quinn::Connection, DialError> {
    let host = addr.host_port.clone();
    let attempt = async {
        let socket = tokio::net::lookup_host(&host)
            .await
            .map_err(|source| DialError::Resolve {
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| DialError::Resolve {
                host: host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            })?;
        let (mut config, observed) = client_config(identity, addr.id)?;
        config.transport_config(Arc::new(transport_config_toward(socket)));
        let connecting = endpoint
            .connect_with(config, socket, SERVER_NAME)
            .map_err(|e| DialError::Connect {
                addr: host.clone(),
                reason: e.to_string(),
            })?;
        connecting.await.map_err(|e| match observed.get() {
            Some(found) if found != addr.id => DialError::WrongRelay {
                addr: host.clone(),
                expected: addr.id,
                found,
            },
            _ => DialError::Connect {
                addr: host.clone(),
                reason: e.to_string(),
            },
        })
    };
    tokio::time::timeout(DIAL_TIMEOUT, attempt)
        .await
        .map_err(|_| DialError::Timeout(host.clone()))?
}
