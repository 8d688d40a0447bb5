//! The TOP relay daemon as a library: start relays in-process (tests, examples) or via `toprelay`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), top_relay::RelayError> {
//! use top_relay::{InitOptions, Relay, init};
//! let dir = std::path::Path::new("/tmp/relay-a");
//! init(dir, InitOptions {
//!     listen: "127.0.0.1:7700".parse().unwrap(),
//!     http: "127.0.0.1:7780".parse().unwrap(),
//!     public_addr: None,
//!     peers: vec![],
//!     dev: true, // this relay validates its own dev chain
//! })?;
//! let relay = Relay::start(dir).await?;
//! println!("serving at {}", relay.addr());
//! relay.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//! One task per connection accepts streams; each stream's first frame says what it is (a client's
//! messaging session, a pipe, a link from another relay). Sessions and links each have a writer
//! task fed by a bounded queue that batches frames into few writes. Messages go to a local
//! session, over a link to the relay the recipient is on, or else into the mailboxes of the
//! recipient's home relays; every hand-over is tracked until acknowledged, and anything not
//! acknowledged falls back to the mailbox, so nothing accepted is dropped.

#![warn(missing_docs)]

pub mod billing;
pub mod cdn;
pub mod chain;
pub mod chain_api;
pub mod chain_setup;
pub mod config;
pub mod delivered;
pub mod delivery;
pub mod forwarded;
pub mod http;
pub mod link;
pub mod mailbox;
pub mod metrics;
pub mod node;
pub mod pipe;
pub mod push_runs;
pub mod receipts;
pub mod server;
pub mod session;
pub mod state;
pub mod status;
pub mod upstream;
pub mod vpn;

pub use node::{InitOptions, Relay, RelayError, init};
