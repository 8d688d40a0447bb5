//! One live session per channel: receipts are cumulative per channel, so two sessions billing
//! one channel at once would be paid only once (the chain settles the largest receipt). The
//! newest session to take a channel ends the billing of the one before it: its meter carries
//! nothing more and its billing stream closes (its connection, which may be an entry relay's
//! carrying others, stays).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ledger_lite::ChannelId;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::meter::ClientMeter;
use crate::util::lock;

/// The session billing one channel.
struct Live {
    conn: usize,
    meter: Arc<ClientMeter>,
    ended: CancellationToken,
}

/// The session billing each channel now.
#[derive(Default)]
pub struct LiveChannels(Mutex<HashMap<ChannelId, Live>>);

impl LiveChannels {
    /// The session of `meter` on connection `conn` bills `channel` from now on; the session
    /// billing it before stops. Returns what ends this session's billing when another takes it.
    pub fn take(
        &self,
        channel: ChannelId,
        conn: &quinn::Connection,
        meter: &Arc<ClientMeter>,
    ) -> CancellationToken {
        let ended = CancellationToken::new();
        let before = lock(&self.0).insert(
            channel,
            Live {
                conn: conn.stable_id(),
                meter: meter.clone(),
                ended: ended.clone(),
            },
        );
        if let Some(old) = before {
            // Another billing stream of the same session (same meter) only ends the older
            // stream; another session's meter stops carrying.
            if !Arc::ptr_eq(&old.meter, meter) {
                info!("a newer session took a channel: the older one stops billing it");
                lock(&old.meter.meter).stop();
            }
            old.ended.cancel();
        }
        ended
    }

    /// The session on `conn` stopped billing `channel`.
    pub fn release(&self, channel: &ChannelId, conn: &quinn::Connection, meter: &Arc<ClientMeter>) {
        let mut live = lock(&self.0);
        if live
            .get(channel)
            .is_some_and(|l| l.conn == conn.stable_id() && Arc::ptr_eq(&l.meter, meter))
        {
            live.remove(channel);
        }
    }

    /// Channels billed now.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// Whether no channel is billed now.
    pub fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }
}
