//! Proof of relay on 2-hop routes: the exit signs, per tunnel session, cumulative counts of its
//! QUIC connection with the client: the UDP bytes it sent that the client acknowledged, and the
//! UDP bytes it received. An entry relay forwarding that connection's packets is paid by such
//! counts (see [`super::forward`]), never by its own, and the client checks them before it signs
//! the entry's receipt.
//!
//! The exit sends them on a unidirectional stream of the tunnel's connection, to the client
//! (the entry cannot read or alter them; the client passes them on). They name the session by
//! its Noise handshake hash: unique to the session (it covers the client's fresh ephemeral key)
//! and the same at both ends, so with the exit's signature over it nobody can pass off another
//! session's counts as this one's (the hash is not secret; it needs not be).

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::id::AccountId;
use crate::identity::{Identity, verify};

/// Domain tag of received-counts signatures.
const RECEIVED_DOMAIN: &[u8] = b"top/vpn-received/v1";
/// Largest frame on the received-counts stream.
pub const MAX_RECEIVED_FRAME: usize = 256;

/// What the exit states: "on the connection of session `session`, the client acknowledged
/// `delivered` bytes of the UDP packets I sent (QUIC's own authenticated ACKs, counted once
/// loss detection had its time), and I received `received` bytes of UDP packets".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedBody {
    /// The tunnel session's handshake hash.
    pub session: [u8; 32],
    /// UDP bytes the exit sent that the client acknowledged (see [`super::forward::AckedBytes`]).
    pub delivered: u64,
    /// UDP bytes the exit received on the connection (an upper bound: not all authenticated).
    pub received: u64,
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
            delivered: 10_000,
            received: 12_000,
        };
        let ack = Received::sign(&exit, body);
        assert!(ack.check(&exit.account_id(), &session));
        // Another session's counts, the entry's own signature, or inflated counts: refused.
        assert!(!ack.check(&exit.account_id(), &[8; 32]));
        assert!(!Received::sign(&entry, body).check(&exit.account_id(), &session));
        let mut inflated = ack.clone();
        inflated.body.received *= 2;
        assert!(!inflated.check(&exit.account_id(), &session));
    }
}
