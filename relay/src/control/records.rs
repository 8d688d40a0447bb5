//! What the DHT holds: a relay's signed announcement under its id, and which relays provide a
//! piece of content under its CID. An announcement counts only if it checks against the chain's
//! registry now ([`Announcement::check`]), whoever stored or passed it on; a provider counts only
//! if it is a registered relay (libp2p already takes a provider record only from the provider).

use ledger_lite::announce::{AnnounceError, Announcement};
use ledger_lite::tx::ChainId;
use libp2p::kad::{Record, RecordKey};
use top_proto::cdn::Cid;
use top_proto::id::RelayId;

/// Prefix of announcement keys.
const RELAY_PREFIX: &[u8] = b"/top/relay/";
/// Prefix of content keys.
const CONTENT_PREFIX: &[u8] = b"/top/cdn/";

/// The DHT key of `relay`'s announcement.
pub fn relay_key(relay: &RelayId) -> RecordKey {
    RecordKey::new(&[RELAY_PREFIX, relay.as_bytes()].concat())
}

/// The DHT key under which relays provide `cid`.
pub fn content_key(cid: &Cid) -> RecordKey {
    RecordKey::new(&[CONTENT_PREFIX, &cid.0[..]].concat())
}

/// Why a record is not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The key is not an announcement's.
    #[error("not an announcement key")]
    NotAnnouncementKey,
    /// The announcement names another relay than its key.
    #[error("the announcement names another relay than its key")]
    KeyMismatch,
    /// The announcement itself does not count.
    #[error(transparent)]
    Announcement(#[from] AnnounceError),
}

/// The relay an announcement key names.
fn relay_of_key(key: &RecordKey) -> Option<RelayId> {
    let id = key.as_ref().strip_prefix(RELAY_PREFIX)?;
    RelayId::from_bytes(id.try_into().ok()?).ok()
}

/// The announcement in `record`, if it counts on `chain` at `now_ms` for a relay `registered`
/// says the registry holds. Cheap checks first: the key, the size (in decode), the relay it
/// names, the form and lifetime, the registry; the signature last.
pub fn checked_announcement(
    record: &Record,
    chain: &ChainId,
    registered: impl Fn(&RelayId) -> bool,
    now_ms: u64,
) -> Result<Announcement, RecordError> {
    let relay = relay_of_key(&record.key).ok_or(RecordError::NotAnnouncementKey)?;
    let announcement = Announcement::decode(&record.value)?;
    if announcement.body.relay != relay {
        return Err(RecordError::KeyMismatch);
    }
    announcement.check_form(chain, now_ms)?;
    if !registered(&relay) {
        return Err(AnnounceError::NotRegistered.into());
    }
    announcement.check_signature()?;
    Ok(announcement)
}

/// Whether `key` is a content key (the prefix and a 32-byte CID).
pub fn is_content_key(key: &RecordKey) -> bool {
    key.as_ref()
        .strip_prefix(CONTENT_PREFIX)
        .is_some_and(|cid| cid.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::identity::Identity;

    #[test]
    fn keys_name_what_they_hold() {
        let relay = Identity::generate().relay_id();
        assert_eq!(relay_of_key(&relay_key(&relay)), Some(relay));
        let cid = Cid([7; 32]);
        assert_eq!(relay_of_key(&content_key(&cid)), None);
        assert_eq!(relay_of_key(&RecordKey::new(&b"/top/relay/short")), None);
        assert!(is_content_key(&content_key(&cid)));
        assert!(!is_content_key(&relay_key(&relay)));
        assert!(!is_content_key(&RecordKey::new(&b"/top/cdn/short")));
    }
}
