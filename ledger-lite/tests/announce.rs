//! Relay announcements count only when the registry holds the relay, the relay signed them, and
//! they are within their lifetime: what a stranger's key, a forger, a replayer of an old one
//! or a flood of oversized bytes gets is refused, each with its own reason.

mod common;

use common::{World, top};
use ledger_lite::announce::*;
use ledger_lite::registry::{RelayRecord, Services};
use ledger_lite::*;
use top_proto::id::RelayId;
use top_proto::identity::Identity;

const NOW: u64 = 1_800_000_000_000;

/// A world where person 0 is a registered relay.
fn world() -> World {
    let mut w = World::new(3);
    let tx = w.tx(
        0,
        TxKind::RegisterRelay {
            record: Box::new(RelayRecord {
                addrs: vec!["10.0.0.1:4433".into()],
                services: Services::default(),
                prices: registry::Prices::default(),
                region: "eu-west".into(),
            }),
            stake: top(10),
        },
    );
    w.run(tx).unwrap();
    w
}

fn relay_id(who: &Identity) -> RelayId {
    who.relay_id()
}

fn body(w: &World, relay: RelayId) -> AnnouncementBody {
    AnnouncementBody {
        chain: w.chain(),
        relay,
        addrs: vec!["relay.example:4433".into(), "[2001:db8::1]:4433".into()],
        control: vec!["/ip4/10.0.0.1/udp/4434/quic-v1".into()],
        issued_ms: NOW,
        expires_ms: NOW + 60 * 60 * 1000,
    }
}

#[test]
fn a_registered_relays_own_announcement_counts_and_travels_intact() {
    let w = world();
    let me = &w.people[0];
    let a = body(&w, relay_id(me)).sign(me);
    assert_eq!(a.check(&w.state, NOW), Ok(()));
    let back = Announcement::decode(&a.encode()).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.check(&w.state, NOW + 1000), Ok(()));
    // A later one replaces it; an older one does not.
    let mut later = body(&w, relay_id(me));
    later.issued_ms += 1;
    let later = later.sign(me);
    assert!(later.supersedes(&a) && !a.supersedes(&later));
}

#[test]
fn strangers_forgers_and_other_chains_are_refused() {
    let w = world();
    let me = &w.people[0];
    // A fresh key announcing itself: not a relay.
    let stranger = Identity::generate();
    let own = body(&w, relay_id(&stranger)).sign(&stranger);
    assert_eq!(own.check(&w.state, NOW), Err(AnnounceError::NotRegistered));
    // A registered person who is not a relay.
    let person = &w.people[1];
    let unregistered = body(&w, relay_id(person)).sign(person);
    assert_eq!(
        unregistered.check(&w.state, NOW),
        Err(AnnounceError::NotRegistered)
    );
    // A stranger signing in the relay's name (to send its users elsewhere).
    let posing = body(&w, relay_id(me)).sign(&stranger);
    assert_eq!(
        posing.check(&w.state, NOW),
        Err(AnnounceError::BadSignature)
    );
    // The relay's own announcement with an address changed on the way.
    let mut altered = body(&w, relay_id(me)).sign(me);
    altered.body.addrs[0] = "attacker.example:4433".into();
    assert_eq!(
        altered.check(&w.state, NOW),
        Err(AnnounceError::BadSignature)
    );
    // Signed for another chain.
    let mut other = body(&w, relay_id(me));
    other.chain = ChainId([9; 32]);
    let other = other.sign(me);
    assert_eq!(other.check(&w.state, NOW), Err(AnnounceError::WrongChain));
}

#[test]
fn announcements_live_a_bounded_time() {
    let w = world();
    let me = &w.people[0];
    let a = body(&w, relay_id(me)).sign(me);
    // Replayed after it expired.
    assert_eq!(
        a.check(&w.state, a.body.expires_ms),
        Err(AnnounceError::Expired)
    );
    // Issued beyond the clock skew allowed.
    assert_eq!(
        a.check(&w.state, NOW - ANNOUNCE_SKEW_MS - 1),
        Err(AnnounceError::FromTheFuture)
    );
    assert_eq!(a.check(&w.state, NOW - ANNOUNCE_SKEW_MS), Ok(()));
    // Valid for too long, or expiring before it was issued.
    let mut forever = body(&w, relay_id(me));
    forever.expires_ms = forever.issued_ms + MAX_ANNOUNCE_TTL_MS + 1;
    let forever = forever.sign(me);
    assert_eq!(
        forever.check(&w.state, NOW),
        Err(AnnounceError::BadLifetime)
    );
    let mut backwards = body(&w, relay_id(me));
    backwards.expires_ms = backwards.issued_ms - 1;
    let backwards = backwards.sign(me);
    assert_eq!(
        backwards.check(&w.state, NOW),
        Err(AnnounceError::BadLifetime)
    );
}

#[test]
fn announcements_are_bounded_and_well_formed() {
    let w = world();
    let me = &w.people[0];
    let with = |addrs: Vec<&str>, control: Vec<&str>| {
        let mut b = body(&w, relay_id(me));
        b.addrs = addrs.into_iter().map(String::from).collect();
        b.control = control.into_iter().map(String::from).collect();
        b.sign(me).check(&w.state, NOW)
    };
    assert_eq!(with(vec![], vec![]), Err(AnnounceError::BadAddresses));
    let five = vec!["a:1", "a:2", "a:3", "a:4", "a:5"];
    assert_eq!(with(five, vec![]), Err(AnnounceError::BadAddresses));
    assert_eq!(
        with(vec!["0.0.0.0:4433"], vec![]),
        Err(AnnounceError::BadAddresses)
    );
    assert_eq!(with(vec!["a:1"], vec![]), Ok(()));
    let long = "/".repeat(registry::MAX_ADDR_LEN + 1);
    assert_eq!(
        with(vec!["a:1"], vec![&long]),
        Err(AnnounceError::BadAddresses)
    );
    assert_eq!(
        with(vec!["a:1"], vec!["/ip4/1.2.3.4 /udp/1"]),
        Err(AnnounceError::BadAddresses)
    );
    let many = vec!["/a"; MAX_CONTROL_ADDRS + 1];
    assert_eq!(with(vec!["a:1"], many), Err(AnnounceError::BadAddresses));
    // Oversized bytes are refused before decoding; garbage and trailing bytes do not decode.
    let huge = vec![0u8; MAX_ANNOUNCE_BYTES + 1];
    assert_eq!(
        Announcement::decode(&huge),
        Err(AnnounceError::TooLarge(MAX_ANNOUNCE_BYTES + 1))
    );
    assert_eq!(
        Announcement::decode(&[1, 2, 3]),
        Err(AnnounceError::Malformed)
    );
    let mut trailing = body(&w, relay_id(me)).sign(me).encode();
    trailing.push(0);
    assert_eq!(
        Announcement::decode(&trailing),
        Err(AnnounceError::Malformed)
    );
}
