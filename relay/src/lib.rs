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
//!     bootstrap: vec![],
//!     dev: true, // this relay validates its own dev chain
//!     genesis: None,
//!     validate: false,
//! })?;
//! let relay = Relay::start(dir).await?;
//! println!("serving at {}", relay.addr());
//! relay.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//! The relay is a node ([`node`]) running roles, each in its own folder with its own state behind
//! a small handle: messaging ([`msg::Messaging`]), the embedded chain ([`ledger`], shared as a
//! [`ledger::ChainSlot`] once open), billing ([`billing::Billing`]), the CDN ([`cdn::Cdn`]) and
//! the VPN ([`vpn`]) and realtime pipes ([`realtime`]); beside them runs the control plane ([`control`]: libp2p discovery,
//! content providers and block gossip). Each handle holds the node's [`node::core::Core`] (identity, config,
//! endpoint, metrics, shutdown, tasks) and the other roles' handles it uses; only the node holds
//! the table of all of them ([`node::state::Shared`]), which `relay/tests/import_cycles.rs`
//! checks along with the absence of import circles. Payment arriving is an event on the
//! client's meter that its messaging session listens to. One task per connection accepts
//! streams ([`node::accept`]); each stream's first frame says which role serves it.
//!
//! - **A message**: the sender's session task reads `Send`, meters it, and calls the messaging
//!   handle, which feeds the sans-IO [`msg::router::Router`] under one lock and carries out its
//!   actions at once: `Deliver` into the recipient session's bounded delivery queue (its writer
//!   task batches frames into few writes, answers first from a second queue), `Forward` into a
//!   link's queue, or `Store` in a tracked task (this relay's redb mailbox, group-committed by its
//!   writer thread, or a home relay over a link). The recipient's `Ack` (or a `ForwardResult`)
//!   answers the sender; one not acknowledged within 300 ms is also copied to the mailbox and the
//!   sender told `Durable`; an unanswered hand-over falls back to the mailbox on the router's
//!   clock. Sender task → router → writer task: two tasks and one queue on the relay each way.
//! - **A VPN packet**: the client's datagram is decrypted by its tunnel task at the exit and
//!   written to the TUN device; the TUN reader task routes replies by destination address to the
//!   tunnel's connection as a datagram. A 2-hop entry forwards the UDP packets of the client's
//!   own QUIC connection to the exit, a GRO batch per receive and a GSO batch per send, in one
//!   task for every route upstream and one per route downstream, unread. Both meter bytes
//!   against the client's channel (the entry by what the far ends acknowledged).
//! - **A receipt**: the meter asks for payment once a quarter of the credit window is used; the
//!   billing stream sends the request, verifies the client's signed cumulative receipt, fsyncs it
//!   to the receipt store before it counts, and frees the credit (a delivery held back for lack of
//!   payment resumes: the messaging session listens for that). The settle task puts receipts
//!   worth it on the chain.
//! - **A link**: a relay links only with members ([`node::peers`]): relays registered on the
//!   chain (followed block by block by [`node::registration`], which also registers this relay)
//!   or, without a chain or on a dev chain, the configured ones. The id is the one TLS proved;
//!   a link's privileges are checked per stream. A user is believed to be on another relay only
//!   on the user's own signed presence statement naming it ([`msg::presence`]), fresh and no
//!   older than the newest seen ([`msg::statements`]).
//! - **A CDN chunk**: a `Cdn` stream asks for a range; the store serves chunks from disk, or
//!   fetches the manifest and chunks from linked relays on a miss and checks each against its
//!   hash before keeping or serving it; bytes are metered as CDN usage. The HTTP gateway serves
//!   the same content, paid from the publisher's egress allowance.

#![warn(missing_docs)]

pub mod billing;
pub mod cdn;
pub mod control;
pub mod ledger;
pub mod msg;
pub mod node;
pub mod realtime;
pub mod util;
pub mod vpn;

pub use node::{InitOptions, Relay, RelayError, init};
pub use node::{config, status};
