//! The router with links on demand: a message for a recipient not known here goes through one
//! of its homes, which forwards it on once and says where the recipient is.

use std::time::{Duration, Instant};

use bytes::Bytes;
use top_proto::frame::{Envelope, MsgId, Outcome};
use top_proto::id::{AccountId, RelayId};

use super::*;

type TestRouter = Router<u32, u32>;
type TestAction = Action<u32, u32>;

const SENDER_SESSION: u32 = 1;
const LINK_HOME: u32 = 100;
const LINK_OTHER_HOME: u32 = 101;
const LINK_FAR: u32 = 102;

fn sender() -> AccountId {
    AccountId::from_wire([1; 32])
}
fn recipient() -> AccountId {
    AccountId::from_wire([2; 32])
}
fn home() -> RelayId {
    RelayId::from_wire([7; 32])
}
fn other_home() -> RelayId {
    RelayId::from_wire([8; 32])
}
fn far() -> RelayId {
    RelayId::from_wire([9; 32])
}

fn msg(n: u8) -> Envelope {
    Envelope {
        id: MsgId([n; 16]),
        to: recipient(),
        ttl_secs: 60,
        sealed: Bytes::from(vec![n; 10]),
    }
}

fn drain(r: &mut TestRouter) -> Vec<TestAction> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// A relay with a local sender and a link to the recipient's second home only.
fn sender_relay() -> TestRouter {
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_session_open(sender(), 1, SENDER_SESSION);
    r.on_link_up(other_home(), 1, LINK_OTHER_HOME);
    drain(&mut r);
    r
}

/// Sends message `n` to the recipient, not known here, whose homes are the two homes.
fn send_via_homes(r: &mut TestRouter, n: u8, now: Instant) -> Vec<TestAction> {
    r.on_send(msg(n), SENDER_SESSION, now);
    let Some(Action::FindHomes(pending)) = r.poll_action() else {
        panic!("the router asks for the recipient's homes");
    };
    r.on_homes(pending, &[home(), other_home()], now);
    drain(r)
}

#[test]
fn a_message_for_a_recipient_not_known_here_goes_through_a_linked_home() {
    let now = Instant::now();
    let mut r = sender_relay();
    let actions = send_via_homes(&mut r, 1, now);
    // The first home is not linked: the second carries it, asked to forward it on.
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Forward {
                link: LINK_OTHER_HOME,
                relayed: true,
                store_on_fail: true,
                ..
            }]
        ),
        "{actions:?}"
    );
    r.on_forward_result(other_home(), MsgId([1; 16]), Some(Outcome::Delivered), now);
    assert!(drain(&mut r).iter().any(|a| matches!(
        a,
        Action::AnswerSender {
            result: Ok(Outcome::Delivered),
            ..
        }
    )));
}

#[test]
fn with_no_home_linked_the_message_is_stored() {
    let now = Instant::now();
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_session_open(sender(), 1, SENDER_SESSION);
    drain(&mut r);
    let actions = send_via_homes(&mut r, 1, now);
    assert!(
        matches!(actions.as_slice(), [Action::Store(_)]),
        "{actions:?}"
    );
}

#[test]
fn a_relayed_message_waits_twice_the_forward_timeout() {
    let start = Instant::now();
    let config = RouterConfig::default();
    let mut r = sender_relay();
    send_via_homes(&mut r, 1, start);
    r.on_tick(start + config.accept_after);
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::StoreCopy { .. }]
    ));
    r.on_copy_stored(Handover::Link(other_home()), &msg(1), Ok(()));
    drain(&mut r);
    let given_up = |actions: &[TestAction]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Stranded(env) if env.id == MsgId([1; 16])))
    };
    r.on_tick(start + config.forward_timeout + Duration::from_secs(1));
    let actions = drain(&mut r);
    assert!(
        !given_up(&actions),
        "the home's own forward may still be answered: {actions:?}"
    );
    r.on_tick(start + config.forward_timeout * 2 + Duration::from_secs(2));
    let actions = drain(&mut r);
    assert!(given_up(&actions), "{actions:?}");
}

/// A home relay, linked with the sending relay and (when `far_known`) with the relay the
/// recipient is connected to.
fn home_relay(far_known: bool) -> TestRouter {
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_link_up(other_home(), 1, LINK_HOME);
    if far_known {
        r.on_link_up(far(), 2, LINK_FAR);
        r.on_presence(far(), recipient(), true);
    }
    drain(&mut r);
    r
}

#[test]
fn a_home_forwards_a_relayed_message_on_once_and_says_where_the_recipient_is() {
    let now = Instant::now();
    let mut r = home_relay(true);
    r.on_relayed(msg(1), LINK_HOME, other_home(), now);
    let actions = drain(&mut r);
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::Forward {
                    link: LINK_FAR,
                    relayed: false,
                    store_on_fail: true,
                    ..
                },
                Action::Located {
                    link: LINK_HOME,
                    ..
                },
            ]
        ),
        "{actions:?}"
    );
    r.on_forward_result(far(), MsgId([1; 16]), Some(Outcome::Delivered), now);
    assert!(drain(&mut r).iter().any(|a| matches!(
        a,
        Action::AnswerLink {
            link: LINK_HOME,
            outcome: Some(Outcome::Delivered),
            ..
        }
    )));
}

#[test]
fn a_home_never_sends_a_relayed_message_back_where_it_came_from() {
    let now = Instant::now();
    let mut r = home_relay(false);
    // The sending relay itself claims the recipient: relaying it back would loop.
    r.on_presence(other_home(), recipient(), true);
    drain(&mut r);
    r.on_relayed(msg(1), LINK_HOME, other_home(), now);
    let actions = drain(&mut r);
    assert!(
        matches!(actions.as_slice(), [Action::Store(_)]),
        "{actions:?}"
    );
}

#[test]
fn a_home_delivers_to_its_own_client_and_stores_for_one_away() {
    let now = Instant::now();
    let mut r = home_relay(false);
    r.on_relayed(msg(1), LINK_HOME, other_home(), now);
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
    r.on_session_open(recipient(), 5, 9);
    drain(&mut r);
    r.on_relayed(msg(2), LINK_HOME, other_home(), now);
    let actions = drain(&mut r);
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::Deliver { session: 9, .. },
                Action::Located {
                    link: LINK_HOME,
                    ..
                }
            ]
        ),
        "{actions:?}"
    );
}

#[test]
fn a_copy_of_a_message_another_relay_stored_is_let_go() {
    let start = Instant::now();
    let mut r = sender_relay();
    r.on_link_up(far(), 2, LINK_FAR);
    r.on_presence(far(), recipient(), true);
    drain(&mut r);
    r.on_send(msg(1), SENDER_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_millis(300));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::StoreCopy { .. }]
    ));
    r.on_copy_stored(Handover::Link(far()), &msg(1), Ok(()));
    drain(&mut r);
    r.on_forward_result(far(), MsgId([1; 16]), Some(Outcome::Stored), start);
    let actions = drain(&mut r);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::StoredElsewhere(env) if env.id == MsgId([1; 16]))),
        "{actions:?}"
    );
}
