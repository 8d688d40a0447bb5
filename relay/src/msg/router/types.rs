//! What the router takes and gives: its limits, where a delivery came from, a delivery in
//! flight, and the actions it asks of its driver.

use std::time::{Duration, Instant};

use top_proto::frame::{Envelope, MsgId, Outcome, Reject};
use top_proto::id::{AccountId, RelayId};

/// Distinguishes sessions (and links) of the same client (or relay).
pub type Serial = u64;

/// Limits and timeouts of the router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// A delivery a client has not acknowledged in this time goes back to the mailbox.
    pub ack_timeout: Duration,
    /// A forward another relay has not answered in this time counts as failed.
    pub forward_timeout: Duration,
    /// A local sender's message not yet acknowledged in this time is also stored durably, and
    /// the sender told (`Durable`), so it need not wait on a slow recipient.
    pub accept_after: Duration,
    /// How often deliveries are checked against the ack and forward timeouts.
    pub sweep_every: Duration,
    /// Deliveries awaiting one client's acknowledgement; beyond it messages wait in the mailbox.
    pub max_inflight_per_client: usize,
    /// Deliveries from mailbox pushes (this relay's and linked relays') awaiting one client's
    /// acknowledgement: enough for several home relays' full quotas.
    pub max_pushed_per_client: usize,
    /// Forwards awaiting one relay's answer; beyond it messages go to the mailbox.
    pub max_forwards_per_link: usize,
    /// Clients one linked relay may say are connected to it.
    pub max_presence_per_link: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            forward_timeout: Duration::from_secs(60),
            accept_after: Duration::from_millis(300),
            sweep_every: Duration::from_secs(1),
            max_inflight_per_client: 4096,
            max_pushed_per_client: 32_768,
            max_forwards_per_link: 65_536,
            max_presence_per_link: 100_000,
        }
    }
}

/// Who waits for the result of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<S, L> {
    /// A sender's session on this relay: answer it; store the message if it cannot be delivered.
    Sender(S),
    /// Another relay that forwarded the message: answer it.
    Link {
        /// The link to answer on.
        link: L,
        /// Whether to store the message if it cannot be delivered.
        store_on_fail: bool,
    },
    /// This relay's mailbox: delete the message once delivered.
    Mailbox,
}

/// A message handed over and awaiting its answer.
#[derive(Debug, Clone)]
pub struct Pending<S, L> {
    /// The message.
    pub env: Envelope,
    /// Who to tell.
    pub origin: Origin<S, L>,
    /// When it was handed over.
    pub since: Instant,
    /// Whether a durable copy was stored and the sender told so.
    pub durable: bool,
    /// Whether it went to a home relay to be forwarded on (it waits twice the forward timeout:
    /// the home's own forward must time out first).
    pub relayed: bool,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Action<S, L> {
    /// Write `env` to the client's session; report failure with [`super::Router::on_handover_failed`].
    Deliver {
        /// The session.
        session: S,
        /// The message.
        env: Envelope,
    },
    /// Forward `env` over a link; report failure with [`super::Router::on_handover_failed`].
    Forward {
        /// The link to the relay the recipient is connected to.
        link: L,
        /// The message.
        env: Envelope,
        /// Whether that relay stores it if the recipient is gone.
        store_on_fail: bool,
        /// Whether that relay is a home of the recipient, asked to forward it on
        /// ([`top_proto::frame::LinkFrame::Relay`]).
        relayed: bool,
    },
    /// A local sender's message for a recipient whose relay is not known here: the driver
    /// finds the recipient's home relays and calls [`super::Router::on_homes`].
    FindHomes(Pending<S, L>),
    /// Tell the relay on `link` where `client` is (its own statement, which the driver holds).
    Located {
        /// The relay that sent a message for `client` through this one.
        link: L,
        /// The client.
        client: AccountId,
    },
    /// Tell a local sender what became of its message.
    AnswerSender {
        /// The sender's session.
        session: S,
        /// The message.
        id: MsgId,
        /// Its size, for billing storage.
        bytes: usize,
        /// Delivered, stored, or why not.
        result: Result<Outcome, Reject>,
    },
    /// Tell a relay that forwarded a message what became of it.
    AnswerLink {
        /// The link it came on.
        link: L,
        /// The message.
        id: MsgId,
        /// Its sealed size (the forwarding relay pays for its storage when stored).
        bytes: usize,
        /// `None`: neither delivered nor stored.
        outcome: Option<Outcome>,
    },
    /// Store the message at the recipient's home relays, then call [`super::Router::on_stored`].
    Store(Pending<S, L>),
    /// Store a copy of a message still being delivered in this relay's mailbox (not pushed: it
    /// is in flight), then call [`super::Router::on_copy_stored`].
    StoreCopy {
        /// The message.
        env: Envelope,
        /// Where it was handed over.
        to: Handover,
    },
    /// A stored message was delivered: delete it from the mailbox.
    DeleteStored(MsgId),
    /// A message whose durable copy is here was stored by another relay: delete the copy unless
    /// this relay is one of its recipient's homes (then the copy is the stored message).
    StoredElsewhere(Envelope),
    /// A message whose durable copy is here could not be delivered: it waits in a mailbox,
    /// this one if this relay is a home of its recipient, else the homes' (where its
    /// recipient's relay asks for mail).
    Stranded(Envelope),
    /// Tell linked relays whether `client` is connected here (they push what they hold for it):
    /// the driver tells only its home relays that it is, and every link that it left.
    Announce {
        /// The client.
        client: AccountId,
        /// Connected or gone.
        online: bool,
        /// One link, or `None` for every link.
        to: Option<L>,
    },
    /// Push the mailbox of `client` to where it is now (and, for a link, say `MailboxDone`).
    PushMailbox {
        /// The client.
        client: AccountId,
        /// The link that asked, to be told when the push is done.
        done_to: Option<L>,
    },
}

/// Where a handed-over message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// To the session of this client.
    Session(AccountId),
    /// Over the link to this relay.
    Link(RelayId),
}
