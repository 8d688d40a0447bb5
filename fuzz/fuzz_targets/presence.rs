//! Presence statements as links send them: decoding and checking
//! (cheap checks, then the signature) must never panic, whatever the times and ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use top_proto::frame::{LinkFrame, Open, decode_body};
use top_proto::identity::Identity;
use top_proto::presence::{Presence, PRESENCE_MAX_AGE_MS};

fuzz_target!(|data: &[u8]| {
    let relay = Identity::from_seed(&[5; 32]).relay_id();
    let now = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(1_700_000_000_000, u64::from_le_bytes);
    if let Ok(p) = postcard::from_bytes::<Presence>(data) {
        let _ = p.check(&relay, now, PRESENCE_MAX_AGE_MS);
        let _ = p.check(&p.body.relay, now, u64::MAX);
        let _ = p.newer_than(&p.body);
    }
    if let Ok(LinkFrame::Online(p)) = decode_body::<LinkFrame>(data) {
        let _ = p.check(&relay, now, PRESENCE_MAX_AGE_MS);
    }
    let _ = decode_body::<Open>(data);
});
