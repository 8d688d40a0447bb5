//! At most one mailbox push per client at a time, and a way to wait for the one in progress.
//!
//! A push requested while one runs makes that run do one more pass (so a burst of stores costs a
//! few mailbox scans, not one per message) and waits for it to end: whoever asked learns only
//! then that everything stored before its request was handed over. `Synced` and `MailboxDone`
//! are sent after such a wait, so they never overtake a message.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;
use top_proto::id::AccountId;

use crate::state::lock;

/// A push in progress for one client.
struct Run {
    /// Whether another pass was asked for while this one ran.
    again: bool,
    /// Set when the run ends: `Some(true)` once it handed everything over, `Some(false)` if it
    /// was abandoned (its task cancelled).
    done: watch::Sender<Option<bool>>,
}

/// Watches a push run in progress: `Some(completed)` once it ended.
pub type RunEnd = watch::Receiver<Option<bool>>;

/// The push runs in progress, by client.
#[derive(Default)]
pub struct PushRuns {
    runs: Mutex<HashMap<AccountId, Run>>,
}

impl PushRuns {
    /// Claims the push for `client`: `Ok` if the caller runs it, or `Err` with a watch on the
    /// run in progress (which is told to run once more).
    pub fn claim(&self, client: AccountId) -> Result<(), RunEnd> {
        let mut runs = lock(&self.runs);
        match runs.get_mut(&client) {
            Some(run) => {
                run.again = true;
                Err(run.done.subscribe())
            }
            None => {
                let (done, _) = watch::channel(None);
                runs.insert(client, Run { again: false, done });
                Ok(())
            }
        }
    }

    /// Ends a pass; true if another was asked for meanwhile and the caller must run it.
    pub fn finish(&self, client: &AccountId) -> bool {
        let mut runs = lock(&self.runs);
        match runs.get_mut(client) {
            Some(run) if run.again => {
                run.again = false;
                true
            }
            _ => {
                if let Some(run) = runs.remove(client) {
                    run.done.send_replace(Some(true));
                }
                false
            }
        }
    }

    /// A run ended before it finished: whoever waits on it runs the push itself.
    pub fn abandon(&self, client: &AccountId) {
        if let Some(run) = lock(&self.runs).remove(client) {
            run.done.send_replace(Some(false));
        }
    }

    /// Clients with a run in progress.
    pub fn len(&self) -> usize {
        lock(&self.runs).len()
    }

    /// Whether no run is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> AccountId {
        AccountId::from_wire([3; 32])
    }

    #[tokio::test]
    async fn a_second_request_waits_for_the_extra_pass_it_asked_for() {
        let runs = PushRuns::default();
        runs.claim(client()).unwrap();
        let mut waiting = runs.claim(client()).unwrap_err();
        assert_eq!(*waiting.borrow(), None);
        // The first pass ends: another was asked for, so the run goes on and nobody is told.
        assert!(runs.finish(&client()));
        assert_eq!(*waiting.borrow_and_update(), None);
        // The extra pass ends: now the waiter learns the run completed.
        assert!(!runs.finish(&client()));
        let end = waiting.wait_for(Option::is_some).await.unwrap();
        assert_eq!(*end, Some(true));
        assert!(runs.is_empty());
        runs.claim(client()).unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_run_tells_its_waiters_to_push_themselves() {
        let runs = PushRuns::default();
        runs.claim(client()).unwrap();
        let mut waiting = runs.claim(client()).unwrap_err();
        runs.abandon(&client());
        assert_eq!(
            *waiting.wait_for(Option::is_some).await.unwrap(),
            Some(false)
        );
        assert!(runs.claim(client()).is_ok(), "the waiter can claim it now");
    }
}
