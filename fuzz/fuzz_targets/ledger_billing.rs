//! Bytes from a client, a follower or another relay on the ledger and billing streams, and the
//! signed things inside them (transactions, receipts, allowances, registry records): decoding,
//! checking and the cheap pre-signature checks must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ledger_lite::wire::{LedgerRequest, LedgerResponse};
use ledger_lite::registry::RelayRecord;
use ledger_lite::{Allowance, Receipt, SignedTx};
use top_billing::wire::{ClientBilling, RelayBilling};
use top_proto::frame::decode_body;

mod common;

use common::STATE;

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<LedgerRequest>(data);
    let _ = decode_body::<LedgerResponse>(data);
    let _ = decode_body::<ClientBilling>(data);
    let _ = decode_body::<RelayBilling>(data);
    if let Ok(tx) = postcard::from_bytes::<SignedTx>(data) {
        let _ = STATE.precheck(&tx);
        let _ = tx.verify();
        let mut state = STATE.clone();
        let _ = state.apply_tx(&tx);
        state.check_invariant().unwrap();
        // The state transition itself, as if the signatures held (a fuzzer cannot forge them).
        let mut state = STATE.clone();
        if state.precheck(&tx).is_ok() {
            let _ = state.apply_verified_tx(&tx);
            state.check_invariant().unwrap();
        }
    }
    if let Ok(r) = postcard::from_bytes::<Receipt>(data) {
        let _ = r.verify();
    }
    if let Ok(a) = postcard::from_bytes::<Allowance>(data) {
        let _ = a.verify();
    }
    if let Ok(record) = postcard::from_bytes::<RelayRecord>(data) {
        let _ = record.check();
        let _ = record.services.names();
    }
});
