//! Relay announcements as a discovery network hands them over: decoding (bounded) and checking
//! (cheap checks, the registry, then the signature) must never panic, whatever the times.
#![no_main]

mod common;

use ledger_lite::announce::Announcement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(1_700_000_000_000, u64::from_le_bytes);
    if let Ok(a) = Announcement::decode(data) {
        let _ = a.check(&common::STATE, now);
        let _ = a.check(&common::STATE, u64::MAX);
        let _ = a.supersedes(&a);
        assert_eq!(Announcement::decode(&a.encode()).ok().as_ref(), Some(&a));
    }
});
