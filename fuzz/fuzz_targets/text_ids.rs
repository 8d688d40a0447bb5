//! Ids and relay addresses typed by users or read from config files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use top_proto::addr::RelayAddr;
use top_proto::id::{AccountId, RelayId};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<AccountId>();
        let _ = text.parse::<RelayId>();
        let _ = text.parse::<RelayAddr>();
    }
});
