//! What the router and the other roles hold of a client's session and of a link: their queues
//! (deliveries in order, answers first), connection and meter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use top_proto::frame::{LinkFrame, MsgId, Reject, SessionFrame};
use top_proto::id::{AccountId, RelayId};
use top_proto::presence::Presence;

use super::router::Serial;

/// Store requests one linked relay may have served at once: a relay that floods stores fills
/// its own budget, not the one local senders use.
pub const PEER_STORES: usize = 256;
use crate::billing::meter::ClientMeter;

/// A client's session, as the router and other roles see it.
#[derive(Clone)]
pub struct SessionOut {
    /// The client.
    pub client: AccountId,
    /// The client's newest signed statement that it is connected here (what links forward).
    pub presence: Arc<Mutex<Presence>>,
    /// Distinguishes this session from the client's others.
    pub serial: Serial,
    /// The client's connection (for opening pipe streams to it).
    pub conn: quinn::Connection,
    /// Deliveries (and `Synced`) to write to the client, in order.
    pub tx: mpsc::Sender<SessionFrame>,
    /// Answers to the client's messages, written first.
    pub answers: mpsc::Sender<SessionFrame>,
    /// The client's meter, when this relay bills.
    pub meter: Option<Arc<ClientMeter>>,
}

impl SessionOut {
    /// The frame that tells linked relays this client is here: its own signed statement.
    pub fn online_frame(&self) -> LinkFrame {
        LinkFrame::Online(
            self.presence
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Store requests sent over a link and awaiting the other relay's answer.
type StoreWaiters = Arc<Mutex<HashMap<MsgId, oneshot::Sender<Option<Reject>>>>>;

/// A link to another relay, as the router and other roles see it.
#[derive(Clone)]
pub struct LinkOut {
    /// The relay at the other end.
    pub relay: RelayId,
    /// Distinguishes this link from others to the same relay.
    pub serial: Serial,
    /// The connection (for pipes and CDN fetches over it).
    pub conn: quinn::Connection,
    /// Forwards, presence, store requests and `MailboxDone` for the link, in order.
    pub tx: mpsc::Sender<LinkFrame>,
    /// Answers to the other relay's forwards and store requests, written first.
    pub answers: mpsc::Sender<LinkFrame>,
    pub(super) stores: StoreWaiters,
    /// Store requests from the other relay being served at once.
    pub(super) peer_stores: Arc<tokio::sync::Semaphore>,
    /// What the other relay owes this one for deliveries and storage it asks for (when this
    /// relay bills).
    pub meter: Option<Arc<crate::billing::meter::ClientMeter>>,
    /// What this relay asked the other to deliver and store: the most it pays for.
    pub count: Arc<crate::billing::link_count::LinkCount>,
}

impl PartialEq for LinkOut {
    fn eq(&self, other: &Self) -> bool {
        self.relay == other.relay && self.serial == other.serial
    }
}

impl LinkOut {
    /// A link about to run.
    pub fn new(
        relay: RelayId,
        serial: Serial,
        conn: quinn::Connection,
        (tx, answers): (mpsc::Sender<LinkFrame>, mpsc::Sender<LinkFrame>),
        (meter, count): (
            Option<Arc<crate::billing::meter::ClientMeter>>,
            Arc<crate::billing::link_count::LinkCount>,
        ),
    ) -> Self {
        Self {
            relay,
            serial,
            conn,
            tx,
            answers,
            stores: Arc::default(),
            peer_stores: Arc::new(tokio::sync::Semaphore::new(PEER_STORES)),
            meter,
            count,
        }
    }

    /// Charges the other relay for delivering a message of `bytes` it forwarded; false when
    /// its credit is used up (its channel unpaid).
    pub fn charge_delivery(&self, bytes: usize) -> bool {
        self.meter
            .as_ref()
            .is_none_or(|m| m.try_carry(top_billing::Service::Msg, bytes as u64))
    }

    /// Like [`LinkOut::charge_delivery`], but with the credit used up waits a while for the
    /// other relay's receipt (holding back this link's reader: the other relay pays or stops).
    pub async fn carry_delivery(&self, bytes: usize) -> bool {
        match &self.meter {
            None => true,
            Some(m) => {
                m.carry(top_billing::Service::Msg, bytes as u64, m.pay_wait)
                    .await
            }
        }
    }

    /// Charges the other relay for keeping a message of `bytes` it asked this relay to store.
    pub fn charge_storage(&self, bytes: usize) {
        if let Some(m) = &self.meter {
            m.record(top_billing::Service::Mailbox, bytes as u64);
        }
    }
}
