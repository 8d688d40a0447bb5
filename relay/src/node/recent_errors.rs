//! The last warnings and errors this process logged, for the dashboard: a `tracing` layer
//! keeping a bounded ring of them.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Most entries kept.
pub const KEPT: usize = 32;
/// Longest message kept (longer ones are cut).
const MAX_CHARS: usize = 400;

/// One warning or error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecentError {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

static RECENT: Mutex<VecDeque<RecentError>> = Mutex::new(VecDeque::new());

/// The warnings and errors logged lately, oldest first.
pub fn recent() -> Vec<RecentError> {
    let ring = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    ring.iter().cloned().collect()
}

/// The layer that keeps them (add it to the subscriber).
pub struct RecentErrors;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= MAX_CHARS {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let mut text = message.0.trim_end().to_string();
        if let Some((cut, _)) = text.char_indices().nth(MAX_CHARS) {
            text.truncate(cut);
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let entry = RecentError {
            time_ms,
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: text,
        };
        let mut ring = RECENT.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= KEPT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_warnings_and_errors_only() {
        let subscriber = tracing_subscriber::registry().with(RecentErrors);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for i in 0..KEPT + 5 {
                tracing::warn!(peer = i, "slow {}", "x".repeat(1000));
            }
            tracing::error!("the last");
        });
        let kept = recent();
        assert_eq!(kept.len(), KEPT);
        let last = kept.last().unwrap();
        assert_eq!(
            (last.level.as_str(), last.message.as_str()),
            ("ERROR", "the last")
        );
        assert!(kept.iter().all(|e| e.message.chars().count() <= MAX_CHARS));
        assert!(!kept.iter().any(|e| e.message.contains("not kept")));
    }
}
