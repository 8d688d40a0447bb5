//! One key for both planes: a relay's libp2p identity is its ed25519 relay key, so its peer id
//! and its relay id name the same key and either can be computed from the other.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use top_proto::id::RelayId;
use top_proto::identity::Identity;

/// The libp2p keypair of `identity` (the same ed25519 key).
pub fn keypair(identity: &Identity) -> Result<Keypair, libp2p::identity::DecodingError> {
    // The copy of the seed is zeroed by libp2p as it takes it.
    Keypair::ed25519_from_bytes(identity.signing_key().to_bytes())
}

/// The peer id of `relay`, if its id is a valid ed25519 key.
pub fn peer_id(relay: &RelayId) -> Option<PeerId> {
    let key = ed25519::PublicKey::try_from_bytes(relay.as_bytes()).ok()?;
    Some(PublicKey::from(key).to_peer_id())
}

/// The relay id behind `peer`, if it names an ed25519 key inline (as every relay's does).
pub fn relay_id(peer: &PeerId) -> Option<RelayId> {
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    // Code 0 is the identity hash: the digest is the protobuf-encoded public key itself.
    if hash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    RelayId::from_bytes(key.to_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_and_relay_ids_name_the_same_key() {
        let identity = Identity::generate();
        let keys = keypair(&identity).unwrap();
        let peer = keys.public().to_peer_id();
        assert_eq!(peer_id(&identity.relay_id()), Some(peer));
        assert_eq!(relay_id(&peer), Some(identity.relay_id()));
        // A peer id hashed from a larger key names no relay.
        assert_eq!(relay_id(&PeerId::random()), None);
    }
}
