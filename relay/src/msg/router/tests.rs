//! The router driven directly, with a virtual clock: sessions and links are plain numbers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use top_proto::frame::{Envelope, MsgId, Outcome, Reject};
use top_proto::id::{AccountId, RelayId};

use super::*;

type TestRouter = Router<u32, u32>;
type TestAction = Action<u32, u32>;

const ALICE_SESSION: u32 = 1;
const BOB_SESSION: u32 = 2;
const LINK_B: u32 = 100;

fn alice() -> AccountId {
    AccountId::from_wire([1; 32])
}
fn bob() -> AccountId {
    AccountId::from_wire([2; 32])
}
fn relay_b() -> RelayId {
    RelayId::from_wire([9; 32])
}

fn msg(n: u8, to: AccountId) -> Envelope {
    Envelope {
        id: MsgId([n; 16]),
        to,
        ttl_secs: 60,
        sealed: Bytes::from(vec![n; 10]),
    }
}

fn drain(r: &mut TestRouter) -> Vec<TestAction> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// Alice is connected here; the router's announcement of her is consumed.
fn with_alice() -> TestRouter {
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_session_open(alice(), 1, ALICE_SESSION);
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::Announce { online: true, .. }]
    ));
    r
}

/// Sends a message for a recipient not known here, to a relay that is one of its homes
/// (or has none linked): the router asks for the homes and is told there are none to go
/// through.
fn send_homeless(r: &mut TestRouter, env: Envelope, from: u32, now: Instant) {
    r.on_send(env, from, now);
    if let Some(Action::FindHomes(pending)) = r.poll_action() {
        r.on_homes(pending, &[], now);
    }
}

fn delivered_ids(actions: &[TestAction], session: u32) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver { session: s, env } if *s == session => Some(env.id.0[0]),
            _ => None,
        })
        .collect()
}

fn answer(actions: &[TestAction]) -> Option<(MsgId, Result<Outcome, Reject>)> {
    actions.iter().find_map(|a| match a {
        Action::AnswerSender { id, result, .. } => Some((*id, *result)),
        _ => None,
    })
}

#[test]
fn a_local_message_is_delivered_and_answered_once_acknowledged() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, now);
    let actions = drain(&mut r);
    assert_eq!(delivered_ids(&actions, ALICE_SESSION), vec![1]);
    assert_eq!(answer(&actions), None, "no answer before the ack");
    assert!(r.on_ack(alice(), MsgId([1; 16])).is_some());
    let actions = drain(&mut r);
    assert_eq!(
        answer(&actions),
        Some((MsgId([1; 16]), Ok(Outcome::Delivered)))
    );
    assert!(
        r.on_ack(alice(), MsgId([1; 16])).is_none(),
        "a second ack finds nothing"
    );
    assert_eq!(r.inflight(), 0);
}

#[test]
fn a_message_for_a_client_on_a_linked_relay_is_forwarded_and_its_answer_relayed() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    assert!(
        matches!(
            drain(&mut r).as_slice(),
            [Action::Announce {
                online: true,
                to: Some(LINK_B),
                ..
            }]
        ),
        "a new link learns who is connected here"
    );
    r.on_presence(relay_b(), bob(), true);
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::PushMailbox {
            done_to: Some(LINK_B),
            ..
        }]
    ));
    r.on_send(msg(1, bob()), ALICE_SESSION, now);
    let actions = drain(&mut r);
    assert!(matches!(
        actions.as_slice(),
        [Action::Forward {
            link: LINK_B,
            store_on_fail: true,
            ..
        }]
    ));
    r.on_forward_result(relay_b(), MsgId([1; 16]), Some(Outcome::Delivered), now);
    assert_eq!(
        answer(&drain(&mut r)),
        Some((MsgId([1; 16]), Ok(Outcome::Delivered)))
    );
}

#[test]
fn a_message_for_an_offline_client_is_stored_and_the_sender_told_so() {
    let now = Instant::now();
    let mut r = with_alice();
    send_homeless(&mut r, msg(1, bob()), ALICE_SESSION, now);
    let Some(Action::Store(pending)) = r.poll_action() else {
        panic!("expected a store");
    };
    r.on_stored(pending, Ok(()));
    assert_eq!(
        answer(&drain(&mut r)),
        Some((MsgId([1; 16]), Ok(Outcome::Stored)))
    );
}

#[test]
fn a_failed_store_is_reported_with_its_reason() {
    let now = Instant::now();
    let mut r = with_alice();
    send_homeless(&mut r, msg(1, bob()), ALICE_SESSION, now);
    let Some(Action::Store(pending)) = r.poll_action() else {
        panic!("expected a store");
    };
    r.on_stored(pending, Err(Reject::QuotaExceeded));
    assert_eq!(
        answer(&drain(&mut r)),
        Some((MsgId([1; 16]), Err(Reject::QuotaExceeded)))
    );
}

#[test]
fn an_unacknowledged_delivery_falls_back_to_the_mailbox_after_the_ack_timeout() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_secs(29));
    let actions = drain(&mut r);
    assert!(
        matches!(actions.as_slice(), [Action::StoreCopy { .. }]),
        "only a durable copy so far: {actions:?}"
    );
    // The copy could not be written (say the mailbox is full): the delivery goes on.
    r.on_copy_stored(
        Handover::Session(alice()),
        &msg(1, alice()),
        Err(Reject::QuotaExceeded),
    );
    r.on_tick(start + Duration::from_secs(31));
    let actions = drain(&mut r);
    assert!(
        matches!(actions.as_slice(), [Action::Store(p)] if p.env.id == MsgId([1; 16])),
        "{actions:?}"
    );
    assert_eq!(r.inflight(), 0);
}

#[test]
fn an_unanswered_forward_fails_after_the_forward_timeout() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_presence(relay_b(), bob(), true);
    r.on_send(msg(1, bob()), ALICE_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_secs(1));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::StoreCopy { .. }]
    ));
    r.on_copy_stored(
        Handover::Link(relay_b()),
        &msg(1, bob()),
        Err(Reject::Unavailable),
    );
    r.on_tick(start + Duration::from_secs(59));
    assert!(drain(&mut r).is_empty(), "not yet");
    r.on_tick(start + Duration::from_secs(61));
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
}

#[test]
fn a_duplicate_id_is_offered_once_and_one_ack_answers_both_origins() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    // The same message from a local sender and forwarded by another relay.
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, now);
    r.on_forwarded(msg(1, alice()), LINK_B, false, now);
    let actions = drain(&mut r);
    assert_eq!(
        delivered_ids(&actions, ALICE_SESSION),
        vec![1],
        "offered once"
    );
    r.on_ack(alice(), MsgId([1; 16]));
    let actions = drain(&mut r);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(answer(&actions).is_some());
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::AnswerLink {
            link: LINK_B,
            outcome: Some(Outcome::Delivered),
            ..
        }
    )));
}

#[test]
fn a_copy_of_an_acknowledged_message_is_answered_without_showing_it_again() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_forwarded(msg(1, alice()), LINK_B, false, now);
    drain(&mut r);
    r.on_ack(alice(), MsgId([1; 16]));
    drain(&mut r);
    // A second home relay pushes the same message.
    r.on_forwarded(msg(1, alice()), LINK_B, false, now);
    let actions = drain(&mut r);
    assert!(
        matches!(
            actions.as_slice(),
            [Action::AnswerLink {
                outcome: Some(Outcome::Delivered),
                ..
            }]
        ),
        "{actions:?}"
    );
}

#[test]
fn messages_from_one_sender_are_offered_in_order() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    for n in 1..=50 {
        r.on_send(msg(n, alice()), BOB_SESSION, now);
    }
    let order = delivered_ids(&drain(&mut r), ALICE_SESSION);
    assert_eq!(order, (1..=50).collect::<Vec<_>>());
}

#[test]
fn losing_a_link_fails_its_forwards_and_forgets_the_clients_it_announced() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 7, LINK_B);
    r.on_presence(relay_b(), bob(), true);
    r.on_send(msg(1, bob()), ALICE_SESSION, now);
    drain(&mut r);
    // An older link's end changes nothing.
    r.on_link_down(relay_b(), 6, now);
    assert!(drain(&mut r).is_empty());
    r.on_link_down(relay_b(), 7, now);
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
    assert!(r.link_for_client(&bob()).is_none());
    // Now bob is offline: his next message is stored, not forwarded.
    send_homeless(&mut r, msg(2, bob()), ALICE_SESSION, now);
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
}

#[test]
fn a_forward_that_the_other_relay_could_not_deliver_is_stored_here() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_presence(relay_b(), bob(), true);
    drain(&mut r);
    r.on_send(msg(1, bob()), ALICE_SESSION, now);
    drain(&mut r);
    r.on_forward_result(relay_b(), MsgId([1; 16]), None, now);
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
}

#[test]
fn a_full_session_queue_sends_the_message_to_the_mailbox() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, now);
    drain(&mut r);
    r.on_handover_failed(Handover::Session(alice()), MsgId([1; 16]), now);
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
    assert_eq!(r.inflight(), 0);
}

#[test]
fn a_forwarded_message_for_a_client_gone_from_here_is_answered_as_not_delivered() {
    let now = Instant::now();
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_forwarded(msg(1, alice()), LINK_B, false, now);
    // The forwarding relay is also told she left (it believed she was here).
    let gone = |a: &TestAction| matches!(a, Action::Announce { online: false, to: Some(LINK_B), client } if *client == alice());
    let actions = drain(&mut r);
    assert!(
        matches!(
            actions.as_slice(),
            [a, Action::AnswerLink { outcome: None, .. }] if gone(a)
        ),
        "{actions:?}"
    );
    r.on_forwarded(msg(2, alice()), LINK_B, true, now);
    let actions = drain(&mut r);
    assert!(
        matches!(actions.as_slice(), [a, Action::Store(_)] if gone(a)),
        "{actions:?}"
    );
}

#[test]
fn a_new_session_is_offered_what_the_old_one_did_not_acknowledge_and_either_may_ack() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    for n in 1..=3 {
        r.on_forwarded(msg(n, alice()), LINK_B, false, now);
    }
    drain(&mut r);
    r.on_session_open(alice(), 2, 11);
    let actions = drain(&mut r);
    let mut offered = delivered_ids(&actions, 11);
    offered.sort();
    assert_eq!(offered, vec![1, 2, 3]);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Announce {
                online: true,
                to: None,
                ..
            }
        )),
        "linked relays push again for the new session"
    );
    // The old session acknowledges one, the new one another.
    assert!(r.on_ack(alice(), MsgId([1; 16])).is_some());
    assert!(r.on_ack(alice(), MsgId([2; 16])).is_some());
    // The old session closing leaves the new one (and its deliveries) alone.
    r.on_session_closed(alice(), 1, now);
    assert!(
        drain(&mut r)
            .iter()
            .all(|a| matches!(a, Action::AnswerLink { .. }))
    );
    assert_eq!(r.inflight(), 1);
    assert_eq!(r.session(&alice()), Some(&11));
    // The new one closing: she is gone, the last delivery fails.
    r.on_session_closed(alice(), 2, now);
    let actions = drain(&mut r);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Announce { online: false, .. }))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::AnswerLink { outcome: None, .. }))
    );
}

#[test]
fn a_mailbox_push_hands_each_message_once_and_deletes_it_when_acknowledged() {
    let now = Instant::now();
    let mut r = with_alice();
    assert_eq!(
        r.on_stored_message(msg(1, alice()), now),
        Some(Handover::Session(alice()))
    );
    // A second push of the same message while the first is in flight hands nothing more.
    assert_eq!(
        r.on_stored_message(msg(1, alice()), now),
        Some(Handover::Session(alice()))
    );
    assert_eq!(delivered_ids(&drain(&mut r), ALICE_SESSION), vec![1]);
    r.on_ack(alice(), MsgId([1; 16]));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::DeleteStored(id)] if *id == MsgId([1; 16])
    ));
    // An unreachable recipient stops the push.
    assert_eq!(r.on_stored_message(msg(2, bob()), now), None);
}

#[test]
fn a_stored_message_whose_delivery_fails_stays_stored_and_can_be_pushed_again() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_stored_message(msg(1, alice()), now);
    drain(&mut r);
    r.on_handover_failed(Handover::Session(alice()), MsgId([1; 16]), now);
    assert!(
        drain(&mut r).is_empty(),
        "no delete, no store: it is still in the mailbox"
    );
    assert_eq!(
        r.on_stored_message(msg(1, alice()), now),
        Some(Handover::Session(alice()))
    );
    assert_eq!(delivered_ids(&drain(&mut r), ALICE_SESSION), vec![1]);
}

#[test]
fn a_client_that_never_acknowledges_gets_a_bounded_number_of_deliveries() {
    let now = Instant::now();
    let mut r = TestRouter::new(RouterConfig {
        max_inflight_per_client: 3,
        ..RouterConfig::default()
    });
    r.on_session_open(alice(), 1, ALICE_SESSION);
    r.on_link_up(relay_b(), 1, LINK_B);
    drain(&mut r);
    for n in 1..=5 {
        r.on_forwarded(msg(n, alice()), LINK_B, true, now);
    }
    let actions = drain(&mut r);
    assert_eq!(delivered_ids(&actions, ALICE_SESSION), vec![1, 2, 3]);
    let stores = actions
        .iter()
        .filter(|a| matches!(a, Action::Store(_)))
        .count();
    assert_eq!(stores, 2, "the rest wait in the mailbox");
}

#[test]
fn a_relay_cannot_claim_more_clients_than_the_limit() {
    let mut r = TestRouter::new(RouterConfig {
        max_presence_per_link: 2,
        ..RouterConfig::default()
    });
    r.on_link_up(relay_b(), 1, LINK_B);
    for n in 1..=3u8 {
        r.on_presence(relay_b(), AccountId::from_wire([n; 32]), true);
    }
    assert!(r.link_for_client(&AccountId::from_wire([2; 32])).is_some());
    assert!(r.link_for_client(&AccountId::from_wire([3; 32])).is_none());
    // Leaving frees a place.
    r.on_presence(relay_b(), AccountId::from_wire([1; 32]), false);
    r.on_presence(relay_b(), AccountId::from_wire([3; 32]), true);
    assert!(r.link_for_client(&AccountId::from_wire([3; 32])).is_some());
    // Presence from a relay that is not linked is ignored.
    let carol = AccountId::from_wire([50; 32]);
    r.on_presence(RelayId::from_wire([8; 32]), carol, true);
    assert!(r.link_for_client(&carol).is_none());
}

#[test]
fn a_slow_recipient_gets_the_sender_a_durable_answer_then_the_delivery() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_millis(299));
    assert!(drain(&mut r).is_empty(), "not due yet");
    r.on_tick(start + Duration::from_millis(300));
    let actions = drain(&mut r);
    let [Action::StoreCopy { env, to }] = actions.as_slice() else {
        panic!("expected a copy: {actions:?}");
    };
    assert_eq!((env.id, *to), (MsgId([1; 16]), Handover::Session(alice())));
    // Asked once, even if the clock ticks on meanwhile.
    r.on_tick(start + Duration::from_millis(400));
    assert!(drain(&mut r).is_empty());
    r.on_copy_stored(Handover::Session(alice()), &msg(1, alice()), Ok(()));
    assert_eq!(
        answer(&drain(&mut r)),
        Some((MsgId([1; 16]), Ok(Outcome::Durable)))
    );
    // The recipient reads and acknowledges at last: the sender hears it was delivered, and the
    // copy goes.
    r.on_ack(alice(), MsgId([1; 16]));
    let actions = drain(&mut r);
    assert_eq!(
        answer(&actions),
        Some((MsgId([1; 16]), Ok(Outcome::Delivered)))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::DeleteStored(id) if *id == MsgId([1; 16])))
    );
}

#[test]
fn a_durable_message_whose_recipient_leaves_is_stored_without_a_second_store() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_millis(300));
    drain(&mut r);
    r.on_copy_stored(Handover::Session(alice()), &msg(1, alice()), Ok(()));
    drain(&mut r);
    r.on_session_closed(alice(), 1, start);
    let actions = drain(&mut r);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Store(_))),
        "{actions:?}"
    );
    assert_eq!(
        answer(&actions),
        Some((MsgId([1; 16]), Ok(Outcome::Stored)))
    );
}

#[test]
fn a_copy_finished_after_the_ack_is_deleted() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    r.on_tick(start + Duration::from_millis(300));
    drain(&mut r);
    r.on_ack(alice(), MsgId([1; 16]));
    drain(&mut r);
    r.on_copy_stored(Handover::Session(alice()), &msg(1, alice()), Ok(()));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::DeleteStored(_)]
    ));
}

#[test]
fn a_mailbox_push_is_not_cut_short_by_the_live_traffic_limit() {
    let now = Instant::now();
    let mut r = TestRouter::new(RouterConfig {
        max_inflight_per_client: 2,
        ..RouterConfig::default()
    });
    r.on_session_open(alice(), 1, ALICE_SESSION);
    drain(&mut r);
    for n in 1..=5 {
        assert_eq!(
            r.on_stored_message(msg(n, alice()), now),
            Some(Handover::Session(alice())),
            "stored message {n}"
        );
    }
    assert_eq!(
        delivered_ids(&drain(&mut r), ALICE_SESSION),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn a_forged_envelope_reusing_an_id_does_not_ride_on_the_real_ones_ack() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    r.on_link_up(relay_b(), 1, LINK_B);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, now);
    let mut forged = msg(1, alice());
    forged.sealed = Bytes::from_static(b"forged");
    r.on_forwarded(forged, LINK_B, false, now);
    let actions = drain(&mut r);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::AnswerLink { outcome: None, .. })),
        "the forged one is refused: {actions:?}"
    );
}

#[test]
fn a_prompt_acknowledgement_needs_no_durable_copy() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_presence(relay_b(), bob(), true);
    drain(&mut r);
    r.on_send(msg(1, bob()), ALICE_SESSION, start);
    drain(&mut r);
    r.on_forward_result(relay_b(), MsgId([1; 16]), Some(Outcome::Delivered), start);
    drain(&mut r);
    r.on_tick(start + Duration::from_secs(1));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn a_failed_copy_leaves_the_sender_waiting_for_the_final_answer() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_millis(300));
    drain(&mut r);
    r.on_copy_stored(
        Handover::Session(alice()),
        &msg(1, alice()),
        Err(Reject::Unavailable),
    );
    assert!(drain(&mut r).is_empty(), "no answer yet");
    r.on_ack(alice(), MsgId([1; 16]));
    assert_eq!(
        answer(&drain(&mut r)),
        Some((MsgId([1; 16]), Ok(Outcome::Delivered)))
    );
}

#[test]
fn a_relay_cannot_end_a_forward_with_a_durable_answer() {
    let now = Instant::now();
    let mut r = with_alice();
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_presence(relay_b(), bob(), true);
    r.on_send(msg(1, bob()), ALICE_SESSION, now);
    drain(&mut r);
    r.on_forward_result(relay_b(), MsgId([1; 16]), Some(Outcome::Durable), now);
    let actions = drain(&mut r);
    assert!(
        matches!(actions.as_slice(), [Action::Store(_)]),
        "treated as not delivered: {actions:?}"
    );
}

/// Bob on this relay sends to alice on relay B; the copy is due.
fn forwarded_and_copy_due(start: Instant) -> TestRouter {
    let mut r = TestRouter::new(RouterConfig::default());
    r.on_session_open(bob(), 2, BOB_SESSION);
    r.on_link_up(relay_b(), 1, LINK_B);
    r.on_presence(relay_b(), alice(), true);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    drain(&mut r);
    r.on_tick(start + Duration::from_millis(300));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::StoreCopy { .. }]
    ));
    r
}

#[test]
fn a_copy_finished_after_the_other_relay_delivered_is_deleted() {
    let start = Instant::now();
    let mut r = forwarded_and_copy_due(start);
    r.on_forward_result(relay_b(), MsgId([1; 16]), Some(Outcome::Delivered), start);
    drain(&mut r);
    r.on_copy_stored(Handover::Link(relay_b()), &msg(1, alice()), Ok(()));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::DeleteStored(_)]
    ));
}

#[test]
fn a_stored_answer_from_the_other_relay_keeps_the_copy() {
    let start = Instant::now();
    let mut r = forwarded_and_copy_due(start);
    r.on_copy_stored(Handover::Link(relay_b()), &msg(1, alice()), Ok(()));
    drain(&mut r);
    r.on_forward_result(relay_b(), MsgId([1; 16]), Some(Outcome::Stored), start);
    let actions = drain(&mut r);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteStored(_))),
        "one id is stored once: the copy may be the stored message: {actions:?}"
    );
    assert_eq!(
        answer(&actions),
        Some((MsgId([1; 16]), Ok(Outcome::Stored)))
    );
}

#[test]
fn a_delivery_failing_while_its_copy_is_written_waits_for_the_copy() {
    let start = Instant::now();
    let mut r = forwarded_and_copy_due(start);
    r.on_link_down(relay_b(), 1, start);
    assert!(
        drain(&mut r).is_empty(),
        "no second store while the copy is written"
    );
    r.on_copy_stored(Handover::Link(relay_b()), &msg(1, alice()), Ok(()));
    let actions = drain(&mut r);
    assert_eq!(
        answer(&actions),
        Some((MsgId([1; 16]), Ok(Outcome::Stored)))
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Store(_))));
}

#[test]
fn a_delivery_failing_while_its_copy_fails_is_stored_the_usual_way() {
    let start = Instant::now();
    let mut r = forwarded_and_copy_due(start);
    r.on_link_down(relay_b(), 1, start);
    drain(&mut r);
    r.on_copy_stored(
        Handover::Link(relay_b()),
        &msg(1, alice()),
        Err(Reject::Unavailable),
    );
    assert!(matches!(drain(&mut r).as_slice(), [Action::Store(_)]));
}

#[test]
fn a_durable_message_not_acknowledged_in_time_waits_in_a_mailbox() {
    let start = Instant::now();
    let mut r = with_alice();
    r.on_session_open(bob(), 2, BOB_SESSION);
    drain(&mut r);
    r.on_send(msg(1, alice()), BOB_SESSION, start);
    r.on_tick(start + Duration::from_millis(300));
    drain(&mut r);
    r.on_copy_stored(Handover::Session(alice()), &msg(1, alice()), Ok(()));
    drain(&mut r);
    r.on_tick(start + Duration::from_secs(31));
    let actions = drain(&mut r);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Stranded(env) if env.id == MsgId([1; 16]))),
        "{actions:?}"
    );
}

#[test]
fn another_relays_push_has_its_own_bound_above_the_live_one() {
    let now = Instant::now();
    let mut r = TestRouter::new(RouterConfig {
        max_inflight_per_client: 2,
        max_pushed_per_client: 4,
        ..RouterConfig::default()
    });
    r.on_session_open(alice(), 1, ALICE_SESSION);
    r.on_link_up(relay_b(), 1, LINK_B);
    drain(&mut r);
    for n in 1..=6 {
        r.on_forwarded(msg(n, alice()), LINK_B, false, now);
    }
    let actions = drain(&mut r);
    assert_eq!(delivered_ids(&actions, ALICE_SESSION), vec![1, 2, 3, 4]);
    let refused = actions
        .iter()
        .filter(|a| matches!(a, Action::AnswerLink { outcome: None, .. }))
        .count();
    assert_eq!(
        refused, 2,
        "beyond the push bound: the pushing relay keeps them"
    );
}
