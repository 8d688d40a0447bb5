//! Sealed payloads as a recipient gets them from relays: opening junk must fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use top_proto::identity::Identity;
use top_proto::seal::Opener;

fuzz_target!(|data: &[u8]| {
    let mut opener = Opener::new(Identity::from_seed(&[9; 32]));
    let _ = opener.open(data);
});
