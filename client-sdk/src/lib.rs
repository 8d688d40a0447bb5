//! Client SDK of the TOP relay network: end-to-end encrypted messages, pipes and realtime
//! (datagram) pipes through relays,
//! the VPN, the CDN (publish, fetch verified content), and the relay registry ([`Wallet::relays`],
//! [`round_trip`], and [`Directory::pick`] to choose a relay for a service).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use top_client::{Client, Identity};
//!
//! let relay = "relay1…@127.0.0.1:7700".parse()?;
//! let client = Client::connect(&relay, Identity::generate()).await?;
//! let peer = "acct1…".parse()?;
//! client.send(&peer, b"hello").await?;          // delivered, or stored for an offline peer
//! while let Some(msg) = client.recv().await {   // messages sent to this client
//!     println!("{}: {}", msg.from, String::from_utf8_lossy(&msg.body));
//!     client.ack(&msg).await?;
//! }
//! let mut pipe = client.open_pipe(&peer).await?; // a bidirectional encrypted channel
//! pipe.send(b"ping").await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cdn;
mod client;
pub mod directory;
mod error;
mod fetch;
mod payment;
mod pipe;
pub mod probe;
mod realtime;
mod sending;
pub mod vpn;
mod wallet;

pub use cdn::Progress;
pub use client::{Client, ClientOptions, DEFAULT_TTL_SECS, Message};
pub use directory::{Criteria, Directory, Listed, Network, network_of};
pub use error::{BillingError, ClientError, LedgerError, RealtimeError, VpnError};
pub use fetch::Fetch;
pub use ledger_lite::{Amount, ChannelId};
pub use payment::{BillingOptions, BillingState, UsageCounter};
pub use pipe::{Pipe, PipeReader, PipeWriter};
pub use probe::round_trip;
pub use realtime::{
    RealtimeCounts, RealtimePipe, RealtimeReceiver, RealtimeSender, RealtimeStats,
    SEND_QUEUE_LIMIT, Sent,
};
pub use sending::Sending;
pub use top_proto::addr::RelayAddr;
pub use top_proto::cdn::Cid;
pub use top_proto::cdn_wire::CdnRefusal;
pub use top_proto::frame::{MAX_BODY_LEN, MsgId, Outcome, Reject};
pub use top_proto::id::{AccountId, RelayId};
pub use top_proto::identity::Identity;
pub use top_proto::net::cdn_fetch::FetchError;
pub use wallet::{Committed, Wallet};
