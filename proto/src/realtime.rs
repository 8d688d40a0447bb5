//! Realtime pipes, sans-IO: a Noise `IK` handshake between the two peers on the pipe's control
//! stream, then payloads sealed one per QUIC datagram with an explicit nonce (the VPN's datagram
//! keys, so loss and reordering are fine and the receiver's replay window drops replays), behind
//! a 4-byte flow id that each relay on the path reads and rewrites. The flow id is not
//! authenticated: it only routes; the nonce and payload are.
//!
//! Datagram layout: `[flow: u32 LE][KIND_PACKET][nonce: u64 LE][AES-256-GCM ciphertext + tag]`.

use crate::id::AccountId;
use crate::identity::Identity;
use crate::vpn::cipher::{
    DatagramOpener, DatagramSealer, TunnelKeys, VpnCryptoError, ik_initiator, ik_responder,
    session_of,
};

/// Binds realtime handshakes to their purpose (a VPN handshake can never be taken for one).
const PROLOGUE: &[u8] = b"top realtime/1";
/// Bytes of the flow id in front of every realtime datagram.
pub const FLOW_HEADER: usize = 4;
/// Bytes a realtime datagram adds to the payload it carries.
pub const OVERHEAD: usize = FLOW_HEADER + crate::vpn::cipher::OVERHEAD;
/// Largest handshake message on the control stream.
pub const MAX_HANDSHAKE: usize = crate::vpn::cipher::MAX_HANDSHAKE;
/// What the opener seals (as its first datagram, nonce 0) to prove it holds the keys: a
/// responder answers a replayed first message, but only the real opener can confirm it.
const CONFIRMATION: &[u8] = b"top realtime/1 confirm";
/// Bytes of the key confirmation record.
pub const CONFIRMATION_LEN: usize = OVERHEAD + CONFIRMATION.len();

/// The flow id of `datagram`, if it is long enough to carry one.
pub fn flow_of(datagram: &[u8]) -> Option<u32> {
    let head: [u8; FLOW_HEADER] = datagram.get(..FLOW_HEADER)?.try_into().ok()?;
    Some(u32::from_le_bytes(head))
}

/// Writes `flow` as the flow id of `datagram` (at least [`FLOW_HEADER`] bytes long).
pub fn set_flow(datagram: &mut [u8], flow: u32) {
    if let Some(head) = datagram.get_mut(..FLOW_HEADER) {
        head.copy_from_slice(&flow.to_le_bytes());
    }
}

/// The opener's side of a realtime handshake, waiting for the peer's reply.
pub struct RealtimeInitiator {
    hs: snow::HandshakeState,
    peer: AccountId,
}

impl RealtimeInitiator {
    /// Starts a handshake with `peer`; returns the state and the first message to send.
    pub fn start(identity: &Identity, peer: &AccountId) -> Result<(Self, Vec<u8>), VpnCryptoError> {
        let (hs, msg) = ik_initiator(identity, peer, PROLOGUE)?;
        Ok((Self { hs, peer: *peer }, msg))
    }

    /// Reads the peer's reply; returns the pipe's keys.
    pub fn finish(mut self, reply: &[u8]) -> Result<RealtimeKeys, VpnCryptoError> {
        let mut payload = [0u8; 64];
        self.hs
            .read_message(reply, &mut payload)
            .map_err(|_| VpnCryptoError::Handshake("reply rejected"))?;
        let session = session_of(&self.hs)?;
        let transport = self
            .hs
            .into_stateless_transport_mode()
            .map_err(|_| VpnCryptoError::Handshake("incomplete"))?;
        Ok(RealtimeKeys {
            keys: TunnelKeys::new(transport, session),
            peer: self.peer,
        })
    }
}

/// Answers a realtime handshake: returns the reply to send and the keys, which name the
/// authenticated opener.
pub fn respond(
    identity: &Identity,
    first: &[u8],
) -> Result<(Vec<u8>, RealtimeKeys), VpnCryptoError> {
    let (mut hs, peer) = ik_responder(identity, first, PROLOGUE)?;
    let mut reply = vec![0u8; MAX_HANDSHAKE];
    let n = hs
        .write_message(&[], &mut reply)
        .map_err(|_| VpnCryptoError::Handshake("write"))?;
    reply.truncate(n);
    let session = session_of(&hs)?;
    let transport = hs
        .into_stateless_transport_mode()
        .map_err(|_| VpnCryptoError::Handshake("incomplete"))?;
    Ok((
        reply,
        RealtimeKeys {
            keys: TunnelKeys::new(transport, session),
            peer,
        },
    ))
}

/// An established realtime pipe's keys and its authenticated peer.
pub struct RealtimeKeys {
    keys: TunnelKeys,
    peer: AccountId,
}

impl RealtimeKeys {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> AccountId {
        self.peer
    }

    /// The sending half and the receiving half (with its replay window).
    pub fn split(self) -> (RealtimeSealer, RealtimeOpener) {
        let (sealer, opener) = self.keys.split();
        (RealtimeSealer(sealer), RealtimeOpener(opener))
    }
}

/// Seals outgoing realtime payloads; `&self`: each call takes the next nonce atomically.
pub struct RealtimeSealer(DatagramSealer);

impl RealtimeSealer {
    /// Writes the datagram carrying `payload` under `flow` into `out`; returns its length.
    pub fn seal(&self, flow: u32, payload: &[u8], out: &mut [u8]) -> Result<usize, VpnCryptoError> {
        let body = out.get_mut(FLOW_HEADER..).ok_or(VpnCryptoError::TooLarge)?;
        let n = self.0.seal(payload, body)?;
        set_flow(out, flow);
        Ok(FLOW_HEADER + n)
    }
}

impl RealtimeSealer {
    /// The key confirmation the opener sends once its handshake finished (before any
    /// datagram: it takes nonce 0).
    pub fn confirmation(&self) -> Result<Vec<u8>, VpnCryptoError> {
        let mut out = vec![0u8; CONFIRMATION_LEN];
        let n = self.seal(0, CONFIRMATION, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

/// Opens incoming realtime datagrams; refuses replays, stale nonces and forgeries.
pub struct RealtimeOpener(DatagramOpener);

impl RealtimeOpener {
    /// Checks the opener's key confirmation: it proves the opener holds the keys (and is not
    /// a relay replaying an old first message).
    pub fn check_confirmation(&mut self, record: &[u8]) -> Result<(), VpnCryptoError> {
        let mut plain = [0u8; CONFIRMATION.len()];
        match self.open(record, &mut plain) {
            Ok(n) if &plain[..n] == CONFIRMATION => Ok(()),
            Ok(_) => Err(VpnCryptoError::Decrypt),
            Err(e) => Err(e),
        }
    }

    /// Decrypts `datagram` (flow id included) into `out`; returns the payload's length.
    pub fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Result<usize, VpnCryptoError> {
        let body = datagram
            .get(FLOW_HEADER..)
            .ok_or(VpnCryptoError::Malformed)?;
        self.0.open(body, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RealtimeKeys, RealtimeKeys) {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let (init, first) = RealtimeInitiator::start(&alice, &bob.account_id()).unwrap();
        let (reply, b) = respond(&bob, &first).unwrap();
        let a = init.finish(&reply).unwrap();
        assert_eq!(a.peer(), bob.account_id());
        assert_eq!(b.peer(), alice.account_id());
        (a, b)
    }

    #[test]
    fn datagrams_cross_in_any_order_once_under_any_flow_id() {
        let (a, b) = pair();
        let ((a_seal, _), (_, mut b_open)) = (a.split(), b.split());
        let mut sealed = Vec::new();
        for i in 0..4u8 {
            let mut out = [0u8; 1500];
            let n = a_seal.seal(7, &[i; 1200], &mut out).unwrap();
            assert_eq!(n, 1200 + OVERHEAD);
            assert_eq!(flow_of(&out[..n]), Some(7));
            sealed.push(out[..n].to_vec());
        }
        let mut plain = [0u8; 1500];
        for i in [2usize, 0, 3] {
            // A relay rewrites the flow id: the payload still opens.
            set_flow(&mut sealed[i], 99);
            let n = b_open.open(&sealed[i], &mut plain).unwrap();
            assert_eq!(&plain[..n], &[i as u8; 1200][..]);
        }
        assert_eq!(
            b_open.open(&sealed[0], &mut plain),
            Err(VpnCryptoError::Replay)
        );
        assert!(b_open.open(&sealed[1], &mut plain).is_ok());
    }

    #[test]
    fn forged_short_and_foreign_datagrams_are_refused_without_moving_the_window() {
        let (a, b) = pair();
        let (other, _) = pair();
        let ((a_seal, mut a_open), (b_seal, mut b_open)) = (a.split(), b.split());
        let (other_seal, _) = other.split();
        let mut out = [0u8; 256];
        let mut plain = [0u8; 256];
        let n = a_seal.seal(1, b"frame", &mut out).unwrap();
        let mut flipped = out[..n].to_vec();
        flipped[FLOW_HEADER + 12] ^= 1;
        assert_eq!(
            b_open.open(&flipped, &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        assert!(b_open.open(&out[..n], &mut plain).is_ok());
        assert_eq!(
            b_open.open(&out[..3], &mut plain),
            Err(VpnCryptoError::Malformed)
        );
        other_seal.seal(1, b"nonce 0", &mut out).unwrap();
        let n = other_seal.seal(1, b"frame", &mut out).unwrap();
        assert_eq!(
            b_open.open(&out[..n], &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        // Bob's own datagram (past the nonces he has seen) reflected back to him does not open.
        b_seal.seal(1, b"nonce 0", &mut out).unwrap();
        let n = b_seal.seal(1, b"frame", &mut out).unwrap();
        assert_eq!(
            b_open.open(&out[..n], &mut plain),
            Err(VpnCryptoError::Decrypt)
        );
        assert!(a_open.open(&out[..n], &mut plain).is_ok());
        assert_eq!(
            a_seal.seal(1, &[0u8; 300], &mut out),
            Err(VpnCryptoError::TooLarge)
        );
    }

    #[test]
    fn only_the_real_opener_can_confirm_a_replayed_first_message() {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let (init, first) = RealtimeInitiator::start(&alice, &bob.account_id()).unwrap();
        let (reply, b) = respond(&bob, &first).unwrap();
        let (a_seal, _) = init.finish(&reply).unwrap().split();
        let (_, mut b_open) = b.split();
        b_open
            .check_confirmation(&a_seal.confirmation().unwrap())
            .unwrap();
        // A relay replays Alice's first message: Bob answers, but nobody can confirm it.
        let (_, replayed) = respond(&bob, &first).unwrap();
        assert_eq!(replayed.peer(), alice.account_id());
        let (_, mut replayed_open) = replayed.split();
        let old = a_seal.confirmation().unwrap();
        assert!(replayed_open.check_confirmation(&old).is_err());
        let (mallory_seal, _) = pair().0.split();
        let forged = mallory_seal.confirmation().unwrap();
        assert!(replayed_open.check_confirmation(&forged).is_err());
        assert!(replayed_open.check_confirmation(b"short").is_err());
    }

    #[test]
    fn a_vpn_handshake_is_not_a_realtime_one() {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let (_, first) =
            crate::vpn::cipher::TunnelInitiator::start(&alice, &bob.account_id()).unwrap();
        assert!(respond(&bob, &first).is_err());
        let (_, first) = RealtimeInitiator::start(&alice, &bob.account_id()).unwrap();
        assert!(crate::vpn::cipher::TunnelResponder::read(&bob, &first).is_err());
        assert!(respond(&Identity::generate(), &first).is_err());
    }

    #[test]
    fn sealing_and_opening_allocate_nothing() {
        let (a, b) = pair();
        let ((a_seal, _), (_, mut b_open)) = (a.split(), b.split());
        let (mut out, mut plain) = ([0u8; 1500], [0u8; 1500]);
        let payload = [5u8; 1200];
        let before = crate::alloc_count::allocations();
        for _ in 0..1000 {
            let n = a_seal.seal(3, &payload, &mut out).unwrap();
            b_open.open(&out[..n], &mut plain).unwrap();
        }
        assert_eq!(crate::alloc_count::allocations() - before, 0);
    }
}
