//! Wire protocol of the TOP relay network, shared by relays and clients.
//!
//! - [`id`]: typed ids (`relay1…`, `acct1…`); [`identity`]: ed25519 keys and key files;
//!   [`addr`]: `<relay-id>@<host>:<port>` addresses.
//! - [`frame`]: length-prefixed, versioned stream frames.
//! - [`seal`]: sealed (Noise `X`) messages; [`pipe_crypto`]: Noise `IK` pipes.
//! - [`presence`]: a user's signed statement of the relay it is connected to.
//! - [`cdn`]: content ids, manifests and chunk checks; [`cdn_wire`]: the CDN stream's frames.
//! - [`vpn`]: the VPN data plane (tunnel keys, replay window, packet checks); [`realtime`]:
//!   realtime (datagram) pipes on the same keys, behind a flow id relays rewrite.
//! - [`tls`]: QUIC/TLS configuration whose certificates are bound to ed25519 ids.
//!
//! All of the above is sans-IO: bytes, keys and time in; bytes and decisions out. What touches
//! sockets and tasks lives apart in [`net`]: endpoints, dialing, the stream writer task, request
//! and response over a stream, and the CDN fetch driver.
//!
//! ```
//! use top_proto::identity::Identity;
//! use top_proto::seal::{Opener, SealedContent, Sealer};
//! use top_proto::frame::MsgId;
//!
//! let (alice, bob) = (Identity::generate(), Identity::generate());
//! let content = SealedContent { id: MsgId::random(), sent_ms: 0, body: b"hi"[..].into() };
//! let sealed = Sealer::new(alice.clone()).seal(&bob.account_id(), &content).unwrap();
//! let (from, opened) = Opener::new(bob).open(&sealed).unwrap();
//! assert_eq!((from, &opened.body[..]), (alice.account_id(), &b"hi"[..]));
//! ```

#![warn(missing_docs)]

pub mod addr;
#[cfg(any(test, feature = "alloc-count"))]
pub mod alloc_count;
pub mod cdn;
pub mod cdn_wire;
pub mod frame;
pub mod id;
pub mod identity;
pub mod net;
pub mod pipe_crypto;
pub mod presence;
pub mod realtime;
pub mod seal;
pub mod tls;
pub mod vpn;

/// ALPN protocol id of the TOP wire protocol.
pub const ALPN: &[u8] = b"top/1";
