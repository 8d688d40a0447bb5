//! Where users are, on their own word: a linked relay is believed to serve a user only with a
//! statement the user signed naming that relay, no older than the newest statement of that user
//! seen here. Cheap checks (newest, relay, time) come before the signature.

use std::sync::Arc;
use std::time::Instant;

use top_proto::id::{AccountId, RelayId};
use top_proto::presence::{PRESENCE_MAX_AGE_MS, PRESENCE_SKEW_MS, Presence, PresenceError};

use super::driver::{Messaging, late_frame};
use super::handles::SessionOut;
use crate::util::{lock, unix_now_ms};

impl Messaging {
    /// Notes the statement of a client that opened a session here: an older one forwarded
    /// later by another relay is not believed.
    pub(super) fn note_local_presence(&self, session: &SessionOut) {
        let current = lock(&session.presence).clone();
        lock(&self.statements).note(&current);
    }

    /// Whether `p` is at least as new as every statement of its user seen here.
    pub fn is_current_presence(&self, p: &Presence) -> bool {
        lock(&self.statements).is_current(p)
    }

    /// A linked relay forwards a user's statement that the user is connected to it.
    pub fn presence_online(self: &Arc<Self>, relay: RelayId, p: Presence) {
        let believed = lock(&self.statements).is_current(&p)
            && p.check(&relay, unix_now_ms(), PRESENCE_MAX_AGE_MS).is_ok();
        if !believed {
            self.metrics.presence_refused.inc();
            return;
        }
        lock(&self.statements).note(&p);
        let now = Instant::now();
        let mut r = self.router();
        r.on_presence(relay, p.body.client, true);
        self.drive(&mut r, now);
    }

    /// A linked relay says a user left it (this withdraws only that relay's own claim).
    pub fn presence_offline(self: &Arc<Self>, relay: RelayId, client: AccountId) {
        let now = Instant::now();
        let mut r = self.router();
        r.on_presence(relay, client, false);
        self.drive(&mut r, now);
    }

    /// A client connected here re-signed its statement: it replaces the session's and goes
    /// out to its home relays (a statement must be fresh for them to go on believing it).
    pub fn refresh_presence(
        self: &Arc<Self>,
        session: &SessionOut,
        p: Presence,
    ) -> Result<(), PresenceError> {
        if p.body.client != session.client {
            return Err(PresenceError::WrongClient);
        }
        p.check(&self.me, unix_now_ms(), PRESENCE_SKEW_MS)?;
        {
            let mut current = lock(&session.presence);
            if !p.newer_than(&current.body) {
                return Err(PresenceError::Stale);
            }
            *current = p;
        }
        self.note_local_presence(session);
        self.announce(session);
        Ok(())
    }

    /// Sends `session`'s statement to its home relays' links (waiting for room where a queue
    /// is full).
    fn announce(&self, session: &SessionOut) {
        let frame = session.online_frame();
        let homes = self.pinned_homes(&session.client);
        let late: Vec<_> = self
            .linked()
            .into_iter()
            .filter(|link| homes.contains(&link.relay))
            .filter_map(|link| late_frame(&link, frame.clone()))
            .collect();
        self.send_late(late);
    }

    /// Linked relays whose users' statements grew too old without a fresh one are no longer
    /// believed to serve them.
    pub(super) fn expire_presence(self: &Arc<Self>) {
        let oldest = unix_now_ms().saturating_sub(PRESENCE_MAX_AGE_MS);
        // Expired statements are forgotten: their age alone refuses them from now on.
        let stale = lock(&self.statements).take_older_than(oldest);
        if stale.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut r = self.router();
        for body in stale {
            // Withdraws the claim only if that relay is the one believed now.
            r.on_presence(body.relay, body.client, false);
        }
        self.drive(&mut r, now);
    }
}
