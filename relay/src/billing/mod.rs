//! The billing role: per-connection meters and terms ([`meter`]), the billing stream that takes
//! receipts ([`stream`]), the durable receipt store ([`receipts`]) and settlement on the chain
//! ([`settle`]).

pub mod meter;
pub mod receipts;
pub mod settle;
pub mod stream;
