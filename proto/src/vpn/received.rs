//! Proof of relay on 2-hop routes: the exit signs, per tunnel session, how many of the client's
//! datagrams reached it intact (cumulative counts). The entry relay between them is billed by
//! these counts, not by its own, and the client checks them before it signs the entry's receipt.
//!
//! The exit sends them on a unidirectional stream of the connection carrying the tunnel (an
//! entry reads them on its way to the client). They name the session by its Noise handshake
//! hash: unique to the session (it covers the client's fresh ephemeral key) and the same at
//! both ends, so with the exit's signature over it an entry cannot pass off another session's
//! counts as this one's (the hash is not secret; it needs not be).

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::id::AccountId;
use crate::identity::{Identity, verify};

/// Domain tag of received-counts signatures.
const RECEIVED_DOMAIN: &[u8] = b"top/vpn-received/v1";
/// Largest frame on the received-counts stream.
pub const MAX_RECEIVED_FRAME: usize = 256;

/// What the exit states: "of session `session`, I received `datagrams` datagrams, `bytes` bytes,
/// that authenticated (replays and forgeries are not counted)".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedBody {
    /// The tunnel session's handshake hash.
    pub session: [u8; 32],
    /// Datagrams received so far.
    pub datagrams: u64,
    /// Their bytes, as sent (what a relay meters).
    pub bytes: u64,
}

/// A [`ReceivedBody`] signed by the exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// What is stated.
    pub body: ReceivedBody,
    /// ed25519 by the exit over the domain tag and the body.
    pub signature: Signature,
}

fn signed_bytes(body: &ReceivedBody) -> Vec<u8> {
    let mut bytes = RECEIVED_DOMAIN.to_vec();
    postcard::to_io(body, &mut bytes).ok();
    bytes
}

impl Received {
    /// The exit `identity` states `body`.
    pub fn sign(identity: &Identity, body: ReceivedBody) -> Self {
        let signature = identity.sign(&signed_bytes(&body));
        Self { body, signature }
    }

    /// Whether `exit` signed this for `session`.
    pub fn check(&self, exit: &AccountId, session: &[u8; 32]) -> bool {
        self.body.session == *session && verify(exit, &signed_bytes(&self.body), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exit_can_state_counts_and_only_for_its_session() {
        let exit = Identity::from_seed(&[1; 32]);
        let entry = Identity::from_seed(&[2; 32]);
        let session = [7; 32];
        let body = ReceivedBody {
            session,
            datagrams: 10,
            bytes: 12_000,
        };
        let ack = Received::sign(&exit, body);
        assert!(ack.check(&exit.account_id(), &session));
        // Another session's counts, the entry's own signature, or inflated counts: refused.
        assert!(!ack.check(&exit.account_id(), &[8; 32]));
        assert!(!Received::sign(&entry, body).check(&exit.account_id(), &session));
        let mut inflated = ack.clone();
        inflated.body.bytes *= 2;
        assert!(!inflated.check(&exit.account_id(), &session));
    }
}
