//! Writing fetched bytes to a file or standard output on a blocking thread, as they are: tokio's
//! file and stdout writers copy every write into a buffer of their own first (in a profile of
//! `top cdn get`, a third of the client's memory copying).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Bytes waiting for the writer thread (a part larger than this waits alone): what a slow
/// reader holds.
const QUEUE_BYTES: usize = 4 << 20;

/// Writes parts in order on a blocking thread; the async side waits only when the queue is full,
/// so a reader that stops reading stalls the fetch, never the runtime.
pub struct WriteOut {
    parts: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    thread: Option<JoinHandle<io::Result<()>>>,
    failed: Option<io::ErrorKind>,
}

impl WriteOut {
    /// Writes to standard output (unbuffered: parts are large).
    pub fn stdout() -> io::Result<Self> {
        let out = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        Ok(Self::spawn(out, |_| Ok(())))
    }

    /// Writes to `file`, synced to disk at the end.
    pub fn file(file: File) -> Self {
        Self::spawn(file, |f| f.sync_all())
    }

    fn spawn(mut out: File, finish: impl FnOnce(&File) -> io::Result<()> + Send + 'static) -> Self {
        let (parts, mut queue) = mpsc::unbounded_channel::<(Bytes, OwnedSemaphorePermit)>();
        let thread = tokio::task::spawn_blocking(move || {
            // Each part's permit is given back once it is written.
            while let Some((part, _permit)) = queue.blocking_recv() {
                out.write_all(&part)?;
            }
            finish(&out)
        });
        Self {
            parts,
            room: Arc::new(Semaphore::new(QUEUE_BYTES)),
            thread: Some(thread),
            failed: None,
        }
    }

    /// Queues `part` after the others; fails with the writer's error once a write failed (and
    /// from then on).
    pub async fn write(&mut self, part: Bytes) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        let want = u32::try_from(part.len().clamp(1, QUEUE_BYTES)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.room.clone().acquire_many_owned(want).await
            && self.parts.send((part, permit)).is_ok()
        {
            return Ok(());
        }
        // The thread stopped: only a failed write stops it early.
        let error = match self.thread.take() {
            Some(thread) => match thread.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => io::Error::other("the writer stopped"),
                Err(e) => io::Error::other(e),
            },
            None => io::Error::other("the writer stopped"),
        };
        self.failed = Some(error.kind());
        Err(error)
    }

    /// Waits until every part is written (and the file synced).
    pub async fn finish(self) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        drop(self.parts);
        match self.thread {
            Some(thread) => thread.await.map_err(io::Error::other)?,
            None => Err(io::Error::other("the writer stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_reach_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = WriteOut::file(File::create(&path).unwrap());
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let part = Bytes::from(vec![i; 1000 + usize::from(i)]);
            expected.extend_from_slice(&part);
            out.write(part).await.unwrap();
        }
        out.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported() {
        // Every write to /dev/full fails (no space left on device).
        let full = File::options().write(true).open("/dev/full").unwrap();
        let mut out = WriteOut::file(full);
        let mut failed = None;
        for _ in 0..64 {
            if let Err(e) = out.write(Bytes::from_static(b"data")).await {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => {
                // And from then on.
                let again = out.write(Bytes::from_static(b"more")).await;
                assert!(again.is_err());
                e
            }
            None => out.finish().await.expect_err("the writes failed"),
        };
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
    }
}
