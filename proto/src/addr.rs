//! Relay addresses as users write them: `<relay-id>@<host>:<port>`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{IdError, RelayId};

/// Why a relay address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// No `@` between id and host.
    #[error("`{0}` is not a relay address; expected <relay-id>@<host>:<port>")]
    Shape(String),
    /// The id part is invalid.
    #[error("bad relay id in `{addr}`: {source}")]
    Id {
        /// The whole address.
        addr: String,
        /// What is wrong with the id.
        source: IdError,
    },
    /// The host part has no valid port.
    #[error("`{0}` has no valid port; expected <host>:<port>")]
    Port(String),
}

/// A relay's id and where to reach it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddr {
    /// The relay's id: the connection fails unless the relay proves it holds this key.
    pub id: RelayId,
    /// `host:port` of the relay's QUIC endpoint.
    pub host_port: String,
}

impl RelayAddr {
    /// An address from an id and a socket address.
    pub fn new(id: RelayId, addr: SocketAddr) -> Self {
        Self {
            id,
            host_port: addr.to_string(),
        }
    }
}

impl FromStr for RelayAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let s = s.trim();
        let (id, host_port) = s
            .split_once('@')
            .ok_or_else(|| AddrError::Shape(s.to_string()))?;
        let id = id.parse().map_err(|source| AddrError::Id {
            addr: s.to_string(),
            source,
        })?;
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or_else(|| AddrError::Port(host_port.to_string()))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(AddrError::Port(host_port.to_string()));
        }
        Ok(Self {
            id,
            host_port: host_port.to_string(),
        })
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.host_port)
    }
}

impl fmt::Debug for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.host_port)
    }
}

impl Serialize for RelayAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RelayAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn parses_and_prints() {
        let id = Identity::generate().relay_id();
        let text = format!("{id}@127.0.0.1:7700");
        let addr: RelayAddr = text.parse().unwrap();
        assert_eq!(addr.id, id);
        assert_eq!(addr.to_string(), text);
    }

    #[test]
    fn rejects_bad_shapes() {
        let id = Identity::generate().relay_id();
        assert!(matches!(
            "127.0.0.1:7700".parse::<RelayAddr>(),
            Err(AddrError::Shape(_))
        ));
        assert!(matches!(
            format!("{id}@localhost").parse::<RelayAddr>(),
            Err(AddrError::Port(_))
        ));
        assert!(matches!(
            format!("{id}@h:99999").parse::<RelayAddr>(),
            Err(AddrError::Port(_))
        ));
        assert!(matches!(
            "acct1xyz@h:1".parse::<RelayAddr>(),
            Err(AddrError::Id { .. })
        ));
    }
}
