//! The messaging role: client sessions, links to other relays, mailboxes and pipes.
//!
//! [`router::Router`] decides, without I/O, where a message goes and what happens when it cannot
//! be handed over; [`driver::Messaging`] feeds it events from the [`session`] and [`link`] tasks
//! and carries out its actions on their queues, on the [`mailbox`] and by pushes
//! ([`push_runs`]). [`presence`] believes a linked relay serves a user only on the user's
//! signed statement. [`pipe`] splices pipe streams between peers.

pub mod delivered;
pub mod driver;
pub mod handles;
pub mod homes;
pub mod link;
pub mod locate;
pub mod located;
pub mod mailbox;
pub mod pipe;
pub mod presence;
pub mod push_runs;
pub mod pushes;
pub mod router;
pub mod session;
pub mod statements;
pub mod stores;
pub mod wants;

pub use driver::Messaging;
pub use handles::{LinkOut, SessionOut};
