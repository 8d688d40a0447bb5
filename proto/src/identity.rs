//! An ed25519 key pair: the identity of a relay, client or account, and its key file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey};
use zeroize::Zeroizing;

use crate::id::{AccountId, Id, IdKind, RelayId};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not hold a 32-byte ed25519 secret key.
    #[error("key file {path} is not a TOP identity key (expected 32 bytes, found {len})")]
    Malformed {
        /// The key file.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Refused to overwrite an existing identity.
    #[error("key file {0} already exists; refusing to overwrite an identity")]
    Exists(String),
}

/// An ed25519 signing key with the ids derived from it.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The identity whose secret seed is `seed` (deterministic; for tests and key files).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// This key as an id of kind `K`.
    pub fn id<K: IdKind>(&self) -> Id<K> {
        Id::from_key(&self.key.verifying_key())
    }

    /// This key as a relay id.
    pub fn relay_id(&self) -> RelayId {
        self.id()
    }

    /// This key as an account (client) id.
    pub fn account_id(&self) -> AccountId {
        self.id()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.key.sign(msg)
    }

    /// The ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The X25519 private key for Noise, derived from the ed25519 secret as libsodium does.
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_scalar_bytes())
    }

    /// Writes the secret seed to `path` with mode 0600; never overwrites an existing file.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let name = path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: name.clone(),
            source,
        };
        if path.exists() {
            return Err(KeyFileError::Exists(name));
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(self.key.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a key file written by [`Identity::save`]; warns when others can read it.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let name = path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: name.clone(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "key file {name} has mode {mode:o}; other users may read it. Fix: chmod 600 {name}"
            );
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(io)?);
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::Malformed {
                path: name.clone(),
                len: bytes.len(),
            })?;
        Ok(Self::from_seed(seed))
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.account_id())
    }
}

/// Verifies `sig` over `msg` by `id` with the one rule every node uses.
///
/// The rule is ZIP-215 (`ed25519-zebra`): its single and batch verification accept exactly the
/// same signatures, so a ledger that batch-verifies a block can never disagree with a node that
/// checks the same signatures one by one. (dalek's `verify_strict` and `verify_batch` differ on
/// signatures with small-order components, which would let a crafted receipt split the chain.)
pub fn verify<K: IdKind>(id: &Id<K>, msg: &[u8], sig: &Signature) -> bool {
    ed25519_zebra::VerificationKey::try_from(*id.as_bytes())
        .is_ok_and(|key| key.verify(sig, msg).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = Identity::generate();
        id.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().account_id(), id.account_id());
        assert!(matches!(id.save(&path), Err(KeyFileError::Exists(_))));
    }

    #[test]
    fn malformed_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::Malformed { len: 5, .. })
        ));
    }

    #[test]
    fn signatures_verify_only_for_their_signer() {
        let a = Identity::generate();
        let b = Identity::generate();
        let sig = a.sign(b"hello");
        assert!(verify(&a.account_id(), b"hello", &sig));
        assert!(!verify(&b.account_id(), b"hello", &sig));
        assert!(!verify(&a.account_id(), b"hellO", &sig));
    }
}
