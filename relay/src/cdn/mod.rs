//! The CDN role: content-addressed chunks on disk, served to clients and over HTTP.

pub mod chunks;
pub mod egress;
pub mod gateway;
pub mod metrics;
pub mod serve;
pub mod store;
