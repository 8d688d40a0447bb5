//! Typed, checksummed public-key identifiers (`relay1…`, `acct1…`).
//!
//! Every relay, client and account is an ed25519 key pair; its public key is its id. Ids are shown
//! to people as bech32m strings whose human-readable prefix says what kind of id it is, so a relay
//! id pasted where an account id is expected is rejected instead of silently misused.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use bech32::{Bech32m, Hrp};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string or byte slice is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string is not bech32m or its checksum is wrong (a typo).
    #[error("`{0}` is not a valid id (bad encoding or checksum: check for a typo)")]
    Encoding(String),
    /// The prefix names another kind of id.
    #[error("`{got}…` is not a {want} id; {want} ids start with `{want}1`")]
    WrongKind {
        /// The prefix found.
        got: String,
        /// The prefix expected.
        want: &'static str,
    },
    /// The payload is not 32 bytes or not a valid ed25519 point.
    #[error("id is not a valid ed25519 public key")]
    BadKey,
}

/// Marker for a kind of id: fixes the bech32 prefix.
pub trait IdKind: 'static {
    /// Human-readable bech32 prefix, e.g. `relay`.
    const PREFIX: &'static str;
}

/// Marker type for relay ids (`relay1…`).
#[derive(Debug)]
pub enum Relay {}
/// Marker type for account and client ids (`acct1…`).
#[derive(Debug)]
pub enum Account {}

impl IdKind for Relay {
    const PREFIX: &'static str = "relay";
}
impl IdKind for Account {
    const PREFIX: &'static str = "acct";
}

/// An ed25519 public key used as the identifier of a relay or an account.
pub struct Id<K: IdKind> {
    key: [u8; 32],
    kind: PhantomData<K>,
}

/// The id of a relay node.
pub type RelayId = Id<Relay>;
/// The id of an account; also the id of a client (peer) on the network.
pub type AccountId = Id<Account>;

impl<K: IdKind> Id<K> {
    /// Wraps a public key, checking it is a valid ed25519 point.
    pub fn from_bytes(key: [u8; 32]) -> Result<Self, IdError> {
        let key = VerifyingKey::from_bytes(&key).map_err(|_| IdError::BadKey)?;
        Ok(Self::from_key(&key))
    }

    /// Wraps a verifying key.
    pub fn from_key(key: &VerifyingKey) -> Self {
        Self {
            key: key.to_bytes(),
            kind: PhantomData,
        }
    }

    /// The raw 32 public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Wraps 32 bytes from the wire without decompressing the point (which costs ~10 µs).
    ///
    /// Routing only compares ids; whoever uses one as a key ([`Id::verifying_key`],
    /// [`Id::x25519_public`]) gets the check then.
    pub fn from_wire(key: [u8; 32]) -> Self {
        Self {
            key,
            kind: PhantomData,
        }
    }

    /// The ed25519 verifying key; fails if the id is not a valid point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdError> {
        VerifyingKey::from_bytes(&self.key).map_err(|_| IdError::BadKey)
    }

    /// The X25519 public key Noise uses for this id (the birational map of the ed25519 key).
    pub fn x25519_public(&self) -> Result<[u8; 32], IdError> {
        Ok(self.verifying_key()?.to_montgomery().to_bytes())
    }

    /// XOR distance between two ids, for choosing home relays.
    pub fn xor_distance<L: IdKind>(&self, other: &Id<L>) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.key[i] ^ other.key[i];
        }
        d
    }

    /// A short form for logs: the prefix and the first characters.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s.chars().take(K::PREFIX.len() + 9).collect()
    }
}

impl<K: IdKind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: IdKind> Copy for Id<K> {}
impl<K: IdKind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<K: IdKind> Eq for Id<K> {}
impl<K: IdKind> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}
impl<K: IdKind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: IdKind> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(K::PREFIX);
        match bech32::encode::<Bech32m>(hrp, &self.key) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        let (hrp, data) = bech32::decode(s).map_err(|_| IdError::Encoding(s.to_string()))?;
        if hrp.as_str() != K::PREFIX {
            return Err(IdError::WrongKind {
                got: hrp.to_string(),
                want: K::PREFIX,
            });
        }
        let key: [u8; 32] = data.try_into().map_err(|_| IdError::BadKey)?;
        Self::from_bytes(key)
    }
}

impl<K: IdKind> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.key.serialize(s)
        }
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Self::from_wire(<[u8; 32]>::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn round_trips_through_text() {
        let id = Identity::generate().account_id();
        let text = id.to_string();
        assert!(text.starts_with("acct1"));
        assert_eq!(text.parse::<AccountId>().unwrap(), id);
    }

    #[test]
    fn rejects_wrong_kind_and_typos() {
        let id = Identity::generate().relay_id();
        let text = id.to_string();
        assert!(matches!(
            text.parse::<AccountId>(),
            Err(IdError::WrongKind { .. })
        ));
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(matches!(typo.parse::<RelayId>(), Err(IdError::Encoding(_))));
    }

    #[test]
    fn binary_form_is_the_raw_key() {
        let id = Identity::generate().account_id();
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(&bytes[..], id.as_bytes());
    }
}
