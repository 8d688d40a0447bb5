//! Finding where a user is without every relay hearing of every user: a relay tells only a
//! user's home relays that the user is connected to it. A relay that does not know where a
//! user is sends through a home (which forwards on once and answers with the user's own
//! statement: `Located`) or, for a pipe, asks its homes (`Locate`). A statement is believed
//! only if the user signed it, it names a member relay, and it is the newest seen of the user;
//! cheap checks come first, the signature last. The relay it names is then linked with and
//! believed to serve the user until it says the user left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use top_proto::frame::LinkFrame;
use top_proto::id::{AccountId, RelayId};
use top_proto::presence::{PRESENCE_MAX_AGE_MS, Presence};

use super::driver::Messaging;
use super::handles::{LinkOut, SessionOut};
use super::router::Router;
use crate::util::{lock, unix_now_ms};

/// How long a pipe waits for its peer to be found.
pub const LOCATE_WAIT: Duration = Duration::from_secs(3);

impl Messaging {
    /// Sends the newest statement of `client` seen here to the relay on `link`.
    pub(super) fn tell_located(&self, link: &LinkOut, client: &AccountId) {
        let Some(p) = lock(&self.statements).get(client) else {
            return;
        };
        if p.body.relay == link.relay {
            return;
        }
        // Advisory: dropped when the link's queue is full (never a task per frame).
        if link.tx.try_send(LinkFrame::Located(p)).is_err() {
            self.metrics.frames_dropped.inc();
        }
    }

    /// A linked relay asks where `client` is: answered with its newest statement if this
    /// relay believes it (the user is connected here, or at the relay the statement names).
    pub fn locate_asked(&self, link: &LinkOut, client: AccountId) {
        let known = {
            let r = self.router();
            r.session(&client).is_some() || r.link_for_client(&client).is_some()
        };
        if known {
            self.tell_located(link, &client);
        }
    }

    /// A linked relay (`from`) says where a user is, with the user's statement, answering this
    /// relay's question: believed if it passes the checks; the relay it names is linked with
    /// and then believed to serve the user. An answer nobody asked for is not taken.
    pub fn located(self: &Arc<Self>, from: RelayId, p: Presence) {
        let relay = p.body.relay;
        let now = Instant::now();
        let believed = lock(&self.asked).answered(from, p.body.client, now)
            && relay != self.me
            && self.peers.is_member(&relay)
            && lock(&self.statements).is_current(&p)
            && p.check(&relay, unix_now_ms(), PRESENCE_MAX_AGE_MS).is_ok();
        if !believed {
            self.metrics.presence_refused.inc();
            return;
        }
        lock(&self.statements).note(&p);
        self.wants.want(relay, now);
        lock(&self.located).note(p.body.client, relay, now);
        let mut r = self.router();
        if r.link(&relay).is_some() {
            self.believe_located(&mut r, relay);
            self.drive(&mut r, now);
            drop(r);
            self.links_changed.notify_waiters();
        }
    }

    /// The link to `relay` is up: the users found there are believed to be there (if their
    /// newest statement still names it).
    pub(super) fn believe_located(&self, r: &mut Router<SessionOut, LinkOut>, relay: RelayId) {
        for client in lock(&self.located).take(&relay) {
            let current = lock(&self.statements)
                .get(&client)
                .is_some_and(|p| p.body.relay == relay);
            if current {
                r.on_presence(relay, client, true);
            }
        }
    }

    /// The link to the relay `client` is connected to: known here, or found through its
    /// homes within [`LOCATE_WAIT`].
    pub async fn locate(self: &Arc<Self>, client: &AccountId) -> Option<LinkOut> {
        if let Some(link) = self.link_for_client(client) {
            return Some(link);
        }
        let homes: Vec<RelayId> = self
            .peers
            .home_relays(client)
            .into_iter()
            .filter(|h| *h != self.me && self.peers.is_member(h))
            .collect();
        if homes.is_empty() {
            return None;
        }
        let now = Instant::now();
        for home in &homes {
            self.wants.want(*home, now);
        }
        let mut asked = Vec::new();
        let search = async {
            loop {
                let changed = self.links_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(link) = self.link_for_client(client) {
                    return link;
                }
                for home in &homes {
                    if asked.contains(home) {
                        continue;
                    }
                    if let Some(link) = self.link(home) {
                        let ask = LinkFrame::Locate { client: *client };
                        lock(&self.asked).note(*home, *client, Instant::now());
                        if link.tx.try_send(ask).is_ok() {
                            asked.push(*home);
                        }
                    }
                }
                changed.await;
            }
        };
        tokio::time::timeout(LOCATE_WAIT, search).await.ok()
    }
}
