//! At most one mailbox push per client at a time, and a way to wait for the one in progress.
//!
//! A push requested while one runs makes that run do one more pass (so a burst of stores costs a
//! few mailbox scans, not one per message); whoever asked learns only when the run ends that
//! everything stored before its request was handed over. `Synced` and `MailboxDone` are sent
//! after that, so they never overtake a message. Requests carry who to tell at the end (`N`, a
//! link that asked): kept once per run, bounded.

use std::collections::HashMap;

use tokio::sync::watch;
use top_proto::id::AccountId;

/// Most parties told about the end of one run (more than there are links is a flood).
pub const MAX_NOTIFY: usize = 256;

/// A push in progress for one client.
struct Run<N> {
    /// Whether another pass was asked for while this one ran.
    again: bool,
    /// Told when the run ends.
    notify: Vec<N>,
    /// Set when the run ends: `Some(true)` once it handed everything over, `Some(false)` if it
    /// was abandoned.
    done: watch::Sender<Option<bool>>,
}

/// Watches a push run in progress: `Some(completed)` once it ended.
pub type RunEnd = watch::Receiver<Option<bool>>;

/// What a request for a push asks of the caller.
pub struct Requested {
    /// Whether the caller must start the run (none was in progress).
    pub start: bool,
    /// Ends when the run that covers this request ends.
    pub end: RunEnd,
}

/// The push runs in progress, by client.
pub struct PushRuns<N> {
    runs: HashMap<AccountId, Run<N>>,
}

impl<N> Default for PushRuns<N> {
    fn default() -> Self {
        Self {
            runs: HashMap::new(),
        }
    }
}

impl<N: PartialEq> PushRuns<N> {
    /// Asks for a push of `client`'s mailbox; `notify` is told when it ends.
    pub fn request(&mut self, client: AccountId, notify: Option<N>) -> Requested {
        let start = !self.runs.contains_key(&client);
        let run = self.runs.entry(client).or_insert_with(|| Run {
            again: false,
            notify: Vec::new(),
            done: watch::channel(None).0,
        });
        if !start {
            run.again = true;
        }
        if let Some(n) = notify
            && run.notify.len() < MAX_NOTIFY
            && !run.notify.contains(&n)
        {
            run.notify.push(n);
        }
        Requested {
            start,
            end: run.done.subscribe(),
        }
    }

    /// Ends a pass: `None` if another was asked for meanwhile (the caller runs it), else the run
    /// is over and these are to be told.
    pub fn finish(&mut self, client: &AccountId) -> Option<Vec<N>> {
        if let Some(run) = self.runs.get_mut(client)
            && run.again
        {
            run.again = false;
            return None;
        }
        let run = self.runs.remove(client)?;
        run.done.send_replace(Some(true));
        Some(run.notify)
    }

    /// A run stopped before it finished (shutdown): its waiters learn it did not complete.
    pub fn abandon(&mut self, client: &AccountId) {
        if let Some(run) = self.runs.remove(client) {
            run.done.send_replace(Some(false));
        }
    }

    /// Clients with a run in progress.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether no run is in progress.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
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
        let mut runs = PushRuns::<u32>::default();
        assert!(runs.request(client(), None).start);
        let second = runs.request(client(), Some(7));
        assert!(!second.start, "one run at a time");
        let mut waiting = second.end;
        assert_eq!(*waiting.borrow(), None);
        // The first pass ends: another was asked for, so the run goes on and nobody is told.
        assert_eq!(runs.finish(&client()), None);
        assert_eq!(*waiting.borrow_and_update(), None);
        // The extra pass ends: now the waiter learns the run completed, and who asked is told.
        assert_eq!(runs.finish(&client()), Some(vec![7]));
        let end = waiting.wait_for(Option::is_some).await.unwrap();
        assert_eq!(*end, Some(true));
        assert!(runs.is_empty());
        assert!(runs.request(client(), None).start);
    }

    #[tokio::test]
    async fn an_abandoned_run_tells_its_waiters() {
        let mut runs = PushRuns::<u32>::default();
        let mut waiting = runs.request(client(), None).end;
        runs.abandon(&client());
        assert_eq!(
            *waiting.wait_for(Option::is_some).await.unwrap(),
            Some(false)
        );
        assert!(runs.request(client(), None).start, "a new run can start");
    }

    #[test]
    fn a_flood_of_requests_keeps_each_party_once_and_a_bounded_list() {
        let mut runs = PushRuns::<u32>::default();
        for n in 0..10_000u32 {
            runs.request(client(), Some(n % 3));
            runs.request(client(), Some(n));
        }
        let told = loop {
            if let Some(told) = runs.finish(&client()) {
                break told;
            }
        };
        assert_eq!(told.len(), MAX_NOTIFY);
        assert_eq!(&told[..3], &[0, 1, 2]);
    }
}
