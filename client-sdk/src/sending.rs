//! A message on its way, and the two stages a sender can wait for: accepted (a relay holds it
//! durably, or the recipient already acknowledged it) and final (delivered, or waiting in the
//! recipient's mailbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use top_proto::frame::{MsgId, Outcome, Reject};

use crate::error::ClientError;

/// What is known of a message sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Sent; no answer yet.
    Waiting,
    /// The relay answered (`Durable` is followed by a final answer).
    Answered(Result<Outcome, Reject>),
    /// The session ended before a final answer.
    Closed,
}

struct Entry {
    bytes: usize,
    stage: watch::Sender<Stage>,
}

/// The messages this client sent and has no final answer for, by id.
#[derive(Clone, Default)]
pub(crate) struct Waiters(Arc<Mutex<HashMap<MsgId, Entry>>>);

impl Waiters {
    /// Starts tracking a message of `bytes` sealed bytes.
    pub(crate) fn register(&self, id: MsgId, bytes: usize) -> watch::Receiver<Stage> {
        let (stage, rx) = watch::channel(Stage::Waiting);
        if let Ok(mut w) = self.0.lock() {
            w.insert(id, Entry { bytes, stage });
        }
        rx
    }

    /// Stops tracking a message that never left.
    pub(crate) fn forget(&self, id: &MsgId) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(id);
        }
    }

    /// The relay answered; returns the message's size when it now waits in a mailbox (storage
    /// the client pays for).
    pub(crate) fn answer(&self, id: MsgId, result: Result<Outcome, Reject>) -> Option<usize> {
        let Ok(mut w) = self.0.lock() else {
            return None;
        };
        let final_answer = result.map_or(true, Outcome::is_final);
        // Kept until the final answer even if nobody waits: a `Stored` then is storage the
        // client pays for and must count.
        let entry = if final_answer {
            w.remove(&id)?
        } else {
            w.get(&id)?.stage.send_replace(Stage::Answered(result));
            return None;
        };
        entry.stage.send_replace(Stage::Answered(result));
        (result == Ok(Outcome::Stored)).then_some(entry.bytes)
    }

    /// The session ended: every message without a final answer learns it.
    pub(crate) fn close_all(&self) {
        if let Ok(mut w) = self.0.lock() {
            for (_, entry) in w.drain() {
                entry.stage.send_replace(Stage::Closed);
            }
        }
    }
}

/// Forgets a registered message unless it was queued (the sending call was cancelled).
pub(crate) struct Unqueued<'a> {
    waiters: &'a Waiters,
    id: Option<MsgId>,
}

impl<'a> Unqueued<'a> {
    pub(crate) fn new(waiters: &'a Waiters, id: MsgId) -> Self {
        Self {
            waiters,
            id: Some(id),
        }
    }

    /// The message is queued: keep tracking it.
    pub(crate) fn sent(&mut self) {
        self.id = None;
    }
}

impl Drop for Unqueued<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.waiters.forget(&id);
        }
    }
}

/// A message sent: wait for it to be accepted, or for its final outcome.
///
/// Dropping it does not cancel the message.
pub struct Sending {
    id: MsgId,
    stage: watch::Receiver<Stage>,
    conn: quinn::Connection,
}

impl Sending {
    pub(crate) fn new(id: MsgId, stage: watch::Receiver<Stage>, conn: quinn::Connection) -> Self {
        Self { id, stage, conn }
    }

    /// The message's id.
    pub fn id(&self) -> MsgId {
        self.id
    }

    /// Resolves once a relay took responsibility for the message: [`Outcome::Durable`] (stored
    /// while its delivery goes on), [`Outcome::Stored`] (the recipient is offline) or
    /// [`Outcome::Delivered`] (it was acknowledged already). Never waits on the recipient's
    /// app for longer than the relay's short accept time.
    pub async fn accepted(&mut self) -> Result<Outcome, ClientError> {
        self.wait(|s| *s != Stage::Waiting).await
    }

    /// Resolves with the final outcome: [`Outcome::Delivered`] once the recipient acknowledged
    /// it, or [`Outcome::Stored`] if it waits in the recipient's mailbox.
    pub async fn delivered(mut self) -> Result<Outcome, ClientError> {
        self.wait(|s| match s {
            Stage::Waiting => false,
            Stage::Answered(Ok(outcome)) => outcome.is_final(),
            Stage::Answered(Err(_)) | Stage::Closed => true,
        })
        .await
    }

    async fn wait(&mut self, done: impl Fn(&Stage) -> bool) -> Result<Outcome, ClientError> {
        let stage = match self.stage.wait_for(|s| done(s)).await {
            Ok(stage) => *stage,
            // Tracking ended without a final answer.
            Err(_) => Stage::Closed,
        };
        match stage {
            Stage::Answered(Ok(outcome)) => Ok(outcome),
            Stage::Answered(Err(reason)) => Err(ClientError::Rejected(reason)),
            Stage::Waiting | Stage::Closed => Err(match self.conn.close_reason() {
                Some(e) => ClientError::Connection(e),
                None => ClientError::Closed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MsgId {
        MsgId([n; 16])
    }

    #[test]
    fn a_durable_answer_keeps_tracking_until_the_final_one() {
        let w = Waiters::default();
        let mut rx = w.register(id(1), 100);
        assert_eq!(w.answer(id(1), Ok(Outcome::Durable)), None);
        assert_eq!(
            *rx.borrow_and_update(),
            Stage::Answered(Ok(Outcome::Durable))
        );
        assert_eq!(w.answer(id(1), Ok(Outcome::Delivered)), None);
        assert_eq!(*rx.borrow(), Stage::Answered(Ok(Outcome::Delivered)));
        assert!(w.0.lock().unwrap().is_empty(), "no longer tracked");
    }

    #[test]
    fn a_stored_message_reports_its_size_once_even_with_nobody_waiting() {
        let w = Waiters::default();
        drop(w.register(id(1), 100));
        assert_eq!(w.answer(id(1), Ok(Outcome::Durable)), None);
        assert_eq!(w.answer(id(1), Ok(Outcome::Stored)), Some(100));
        assert_eq!(
            w.answer(id(1), Ok(Outcome::Stored)),
            None,
            "a repeat counts nothing"
        );
        assert!(w.0.lock().unwrap().is_empty());
    }

    #[test]
    fn closing_fails_what_has_no_final_answer() {
        let w = Waiters::default();
        let rx = w.register(id(1), 1);
        w.close_all();
        assert_eq!(*rx.borrow(), Stage::Closed);
    }
}
