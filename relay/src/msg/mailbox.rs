//! Durable mailboxes for offline recipients, on redb with group commit.
//!
//! One writer thread owns all writes: it takes every operation queued since its last commit,
//! applies them in one write transaction and commits (fsync) once, and only then answers the
//! inserts. So a message is acknowledged to its sender only after it is on disk, and a crash at
//! any point loses no acknowledged message, while a burst of messages costs one fsync.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use top_proto::frame::{Envelope, MsgId, Reject};
use top_proto::id::AccountId;

use crate::node::config::MailboxConfig;

/// recipient (32) ‖ sequence (8, big endian) → [`StoredMail`]
const MAIL: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("mail");
/// message id → mail key
const MAIL_IDS: TableDefinition<&[u8; 16], &[u8; 40]> = TableDefinition::new("mail_ids");
/// recipient → (count, bytes)
const USAGE: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("mail_usage");
/// named counters
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const MAX_BATCH: usize = 4096;
/// Deletions waiting for the writer at most.
const MAX_DELETES: usize = 1 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed to open or read.
    #[error("store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct StoredMail {
    expires_at: u64,
    env: Envelope,
}

enum Op {
    Insert {
        env: Envelope,
        expires_at: u64,
        reply: oneshot::Sender<Result<(), Reject>>,
    },
    /// Take the deletions waiting in the list.
    Wake,
    Sweep {
        now: u64,
        reply: oneshot::Sender<u64>,
    },
}

/// Totals over all mailboxes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxStats {
    /// Messages waiting.
    pub messages: u64,
    /// Sealed bytes waiting.
    pub bytes: u64,
}

/// Handle to the mailbox store; cheap to clone.
#[derive(Clone)]
pub struct Mailbox {
    db: Arc<Database>,
    ops: mpsc::Sender<Op>,
    limits: MailboxConfig,
    deletes: Arc<std::sync::Mutex<Vec<MsgId>>>,
    writer: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Mailbox {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, limits: MailboxConfig) -> Result<Self, StoreError> {
        let db = Arc::new(Database::create(path).map_err(db_err)?);
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(MAIL).map_err(db_err)?;
            txn.open_table(MAIL_IDS).map_err(db_err)?;
            txn.open_table(USAGE).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let (ops, rx) = mpsc::channel(65_536);
        let writer_db = db.clone();
        let writer_limits = limits.clone();
        let deletes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer_deletes = deletes.clone();
        let writer = std::thread::Builder::new()
            .name("mailbox-writer".into())
            .spawn(move || write_loop(&writer_db, &writer_limits, &writer_deletes, rx))
            .map_err(db_err)?;
        Ok(Self {
            db,
            ops,
            limits,
            deletes,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
        })
    }

    /// Stores `env` durably; returns once committed. Storing an id twice stores it once.
    pub async fn insert(&self, env: Envelope, now: u64) -> Result<(), Reject> {
        let ttl = env.ttl_secs.min(self.limits.ttl_secs);
        let expires_at = now.saturating_add(u64::from(ttl));
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(Op::Insert {
                env,
                expires_at,
                reply,
            })
            .await
            .map_err(|_| Reject::Unavailable)?;
        rx.await.unwrap_or(Err(Reject::Unavailable))
    }

    /// Deletes a delivered message (committed with the next batch). Never waits: deletions
    /// wait in their own bounded list, and when that is full the message stays until it is
    /// delivered again or expires.
    pub fn delete(&self, id: MsgId) {
        {
            let mut deletes = crate::util::lock(&self.deletes);
            if deletes.len() >= MAX_DELETES {
                return;
            }
            deletes.push(id);
        }
        // Wakes the writer; if its queue is full it is busy and takes the list with its batch.
        self.ops.try_send(Op::Wake).ok();
    }

    /// Deletes expired messages; returns how many.
    pub async fn sweep(&self, now: u64) -> u64 {
        let (reply, rx) = oneshot::channel();
        if self.ops.send(Op::Sweep { now, reply }).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Messages waiting for `to`, oldest first, not yet expired at `now`.
    pub fn pending_for(&self, to: &AccountId, now: u64) -> Result<Vec<Envelope>, StoreError> {
        self.mail_of(to, usize::MAX, |stored| stored.expires_at > now)
    }

    /// Messages waiting for `to` that `keep` takes, oldest first, at most `limit`.
    fn mail_of(
        &self,
        to: &AccountId,
        limit: usize,
        keep: impl Fn(&StoredMail) -> bool,
    ) -> Result<Vec<Envelope>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let mail = txn.open_table(MAIL).map_err(db_err)?;
        let (lo, hi) = (mail_key(to, 0), mail_key(to, u64::MAX));
        let mut out = Vec::new();
        for row in mail.range::<&[u8; 40]>(&lo..=&hi).map_err(db_err)? {
            let (_, value) = row.map_err(db_err)?;
            let stored: StoredMail = postcard::from_bytes(value.value()).map_err(db_err)?;
            if keep(&stored) {
                out.push(stored.env);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Messages waiting for `to` that were stored at least `age_secs` before `now` and have
    /// not expired, oldest first, at most `limit`.
    pub fn settled_for(
        &self,
        to: &AccountId,
        now: u64,
        age_secs: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let ttl_limit = self.limits.ttl_secs;
        self.mail_of(to, limit, |stored| {
            // Stored at its expiry less its time to live (the expiry is what is kept).
            let ttl = u64::from(stored.env.ttl_secs.min(ttl_limit));
            let stored_at = stored.expires_at.saturating_sub(ttl);
            stored.expires_at > now && stored_at.saturating_add(age_secs) <= now
        })
    }

    /// Recipients with messages waiting here, in id order after `after`, at most `limit`.
    pub fn recipients(
        &self,
        after: Option<AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let usage = txn.open_table(USAGE).map_err(db_err)?;
        let rows = match &after {
            Some(a) => usage.range::<&[u8; 32]>(a.as_bytes()..).map_err(db_err)?,
            None => usage.iter().map_err(db_err)?,
        };
        let mut out = Vec::new();
        for row in rows {
            let (key, v) = row.map_err(db_err)?;
            let id = AccountId::from_wire(*key.value());
            if Some(id) == after || v.value().0 == 0 {
                continue;
            }
            out.push(id);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Those of `clients` with messages waiting here.
    pub fn holding_mail(&self, clients: Vec<AccountId>) -> Result<Vec<AccountId>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let usage = txn.open_table(USAGE).map_err(db_err)?;
        let mut out = Vec::new();
        for client in clients {
            let count = usage.get(client.as_bytes()).map_err(db_err)?;
            if count.is_some_and(|c| c.value().0 > 0) {
                out.push(client);
            }
        }
        Ok(out)
    }

    /// Totals over every mailbox.
    pub fn stats(&self) -> Result<MailboxStats, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let usage = txn.open_table(USAGE).map_err(db_err)?;
        let mut stats = MailboxStats::default();
        for row in usage.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            let (count, bytes) = v.value();
            stats.messages += count;
            stats.bytes += bytes;
        }
        Ok(stats)
    }

    /// Stops the writer after it has committed everything queued (once the last handle closes).
    pub fn close(self) {
        let Self { ops, writer, .. } = self;
        drop(ops);
        if Arc::strong_count(&writer) == 1 {
            let handle = writer.lock().ok().and_then(|mut w| w.take());
            if let Some(handle) = handle {
                handle.join().ok();
            }
        }
    }
}

fn mail_key(to: &AccountId, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(to.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn write_loop(
    db: &Database,
    limits: &MailboxConfig,
    deletes: &std::sync::Mutex<Vec<MsgId>>,
    mut rx: mpsc::Receiver<Op>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let deleted = std::mem::take(&mut *crate::util::lock(deletes));
        let mut replies = Vec::with_capacity(batch.len());
        let committed = apply_batch(db, limits, batch, &deleted, &mut replies);
        for reply in replies {
            match reply {
                Reply::Insert(tx, result) => {
                    let result = if committed.is_ok() {
                        result
                    } else {
                        Err(Reject::Unavailable)
                    };
                    tx.send(result).ok();
                }
                Reply::Sweep(tx, n) => {
                    tx.send(if committed.is_ok() { n } else { 0 }).ok();
                }
            }
        }
        if let Err(e) = committed {
            tracing::error!("mailbox commit failed: {e}");
        }
    }
    // Closing: deletions still listed are committed too.
    let deleted = std::mem::take(&mut *crate::util::lock(deletes));
    if !deleted.is_empty()
        && let Err(e) = apply_batch(db, limits, Vec::new(), &deleted, &mut Vec::new())
    {
        tracing::error!("mailbox commit failed: {e}");
    }
}

enum Reply {
    Insert(oneshot::Sender<Result<(), Reject>>, Result<(), Reject>),
    Sweep(oneshot::Sender<u64>, u64),
}

fn apply_batch(
    db: &Database,
    limits: &MailboxConfig,
    batch: Vec<Op>,
    deleted: &[MsgId],
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut mail = txn.open_table(MAIL).map_err(db_err)?;
        let mut ids = txn.open_table(MAIL_IDS).map_err(db_err)?;
        let mut usage = txn.open_table(USAGE).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let mut next_seq = meta
            .get("next_seq")
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut tables = Tables {
            mail: &mut mail,
            ids: &mut ids,
            usage: &mut usage,
        };
        for op in batch {
            match op {
                Op::Insert {
                    env,
                    expires_at,
                    reply,
                } => {
                    let result = tables.insert(limits, env, expires_at, &mut next_seq)?;
                    replies.push(Reply::Insert(reply, result));
                }
                Op::Wake => {}
                Op::Sweep { now, reply } => {
                    let n = tables.sweep(now)?;
                    replies.push(Reply::Sweep(reply, n));
                }
            }
        }
        for id in deleted {
            tables.delete(id)?;
        }
        meta.insert("next_seq", next_seq).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

struct Tables<'a, 't> {
    mail: &'a mut redb::Table<'t, &'static [u8; 40], &'static [u8]>,
    ids: &'a mut redb::Table<'t, &'static [u8; 16], &'static [u8; 40]>,
    usage: &'a mut redb::Table<'t, &'static [u8; 32], (u64, u64)>,
}

impl Tables<'_, '_> {
    fn insert(
        &mut self,
        limits: &MailboxConfig,
        env: Envelope,
        expires_at: u64,
        next_seq: &mut u64,
    ) -> Result<Result<(), Reject>, StoreError> {
        if self.ids.get(&env.id.0).map_err(db_err)?.is_some() {
            return Ok(Ok(()));
        }
        let to = env.to;
        let size = env.sealed.len() as u64;
        let (count, bytes) = self.usage_of(&to)?;
        if count + 1 > limits.max_messages || bytes + size > limits.max_bytes {
            return Ok(Err(Reject::QuotaExceeded));
        }
        let key = mail_key(&to, *next_seq);
        *next_seq += 1;
        let id = env.id;
        let value = postcard::to_stdvec(&StoredMail { expires_at, env }).map_err(db_err)?;
        self.mail.insert(&key, value.as_slice()).map_err(db_err)?;
        self.ids.insert(&id.0, &key).map_err(db_err)?;
        self.usage
            .insert(to.as_bytes(), (count + 1, bytes + size))
            .map_err(db_err)?;
        Ok(Ok(()))
    }

    fn usage_of(&self, to: &AccountId) -> Result<(u64, u64), StoreError> {
        Ok(self
            .usage
            .get(to.as_bytes())
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or((0, 0)))
    }

    fn delete(&mut self, id: &MsgId) -> Result<(), StoreError> {
        let Some(key) = self.ids.remove(&id.0).map_err(db_err)?.map(|v| *v.value()) else {
            return Ok(());
        };
        self.remove_mail(&key)
    }

    fn remove_mail(&mut self, key: &[u8; 40]) -> Result<(), StoreError> {
        let Some(value) = self.mail.remove(key).map_err(db_err)? else {
            return Ok(());
        };
        let stored: StoredMail = postcard::from_bytes(value.value()).map_err(db_err)?;
        drop(value);
        let to = stored.env.to;
        let size = stored.env.sealed.len() as u64;
        let (count, bytes) = self.usage_of(&to)?;
        if count <= 1 {
            self.usage.remove(to.as_bytes()).map_err(db_err)?;
        } else {
            self.usage
                .insert(to.as_bytes(), (count - 1, bytes.saturating_sub(size)))
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn sweep(&mut self, now: u64) -> Result<u64, StoreError> {
        let mut expired = Vec::new();
        for row in self.mail.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let stored: StoredMail = postcard::from_bytes(value.value()).map_err(db_err)?;
            if stored.expires_at <= now {
                expired.push((*key.value(), stored.env.id));
            }
        }
        for (key, id) in &expired {
            self.ids.remove(&id.0).map_err(db_err)?;
            self.remove_mail(key)?;
        }
        Ok(expired.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use top_proto::identity::Identity;

    fn env(to: AccountId, body: &'static [u8]) -> Envelope {
        Envelope {
            id: MsgId::random(),
            to,
            ttl_secs: 60,
            sealed: Bytes::from_static(body),
        }
    }

    #[tokio::test]
    async fn stores_in_order_dedups_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let to = Identity::generate().account_id();
        let (a, b) = (env(to, b"one"), env(to, b"two"));
        {
            let mb = Mailbox::open(&path, MailboxConfig::default()).unwrap();
            mb.insert(a.clone(), 0).await.unwrap();
            mb.insert(b.clone(), 0).await.unwrap();
            mb.insert(a.clone(), 0).await.unwrap();
            mb.close();
        }
        let mb = Mailbox::open(&path, MailboxConfig::default()).unwrap();
        assert_eq!(mb.pending_for(&to, 1).unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(mb.stats().unwrap().messages, 2);
        mb.delete(a.id);
        assert_eq!(mb.sweep(1).await, 0);
        assert_eq!(mb.pending_for(&to, 1).unwrap(), vec![b]);
        assert_eq!(mb.sweep(1000).await, 1, "expired after its ttl");
        assert_eq!(mb.stats().unwrap().messages, 0);
    }

    #[tokio::test]
    async fn enforces_quota_per_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxConfig {
            max_messages: 2,
            ..MailboxConfig::default()
        };
        let mb = Mailbox::open(&dir.path().join("s.redb"), limits).unwrap();
        let to = Identity::generate().account_id();
        let other = Identity::generate().account_id();
        mb.insert(env(to, b"1"), 0).await.unwrap();
        mb.insert(env(to, b"2"), 0).await.unwrap();
        assert_eq!(
            mb.insert(env(to, b"3"), 0).await,
            Err(Reject::QuotaExceeded)
        );
        mb.insert(env(other, b"1"), 0).await.unwrap();
    }

    #[tokio::test]
    async fn recipients_page_through_all_once_and_settled_mail_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let mb = Mailbox::open(&dir.path().join("s.redb"), MailboxConfig::default()).unwrap();
        let mut all: Vec<AccountId> = (0..7).map(|_| Identity::generate().account_id()).collect();
        for to in &all {
            mb.insert(env(*to, b"x"), 100).await.unwrap();
        }
        // Pages of 3: each recipient once, in id order, then none.
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = mb.recipients(after, 3).unwrap();
            let Some(last) = page.last().copied() else {
                break;
            };
            assert!(page.len() <= 3);
            seen.extend(page);
            after = Some(last);
        }
        all.sort();
        assert_eq!(seen, all);
        // Stored at 100 with a 60 s life: settled 30 s later, not 10 s later; gone at 160.
        let to = all[0];
        mb.insert(env(to, b"y"), 100).await.unwrap();
        assert!(mb.settled_for(&to, 110, 30, 64).unwrap().is_empty());
        assert_eq!(mb.settled_for(&to, 130, 30, 64).unwrap().len(), 2);
        assert_eq!(
            mb.settled_for(&to, 130, 30, 1).unwrap().len(),
            1,
            "at most the limit"
        );
        assert!(
            mb.settled_for(&to, 160, 30, 64).unwrap().is_empty(),
            "expired"
        );
    }
}
