//! Writing fetched bytes to a file or standard output on a blocking thread, as they are: tokio's
//! file and stdout writers copy every write into a buffer of their own first (in a profile of
//! `top cdn get`, a third of the client's memory copying).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Parts waiting for the writer thread (each at most a chunk): what a slow reader holds.
const QUEUE: usize = 4;

/// Writes parts in order on a blocking thread; the async side waits only when the queue is full,
/// so a reader that stops reading stalls the fetch, never the runtime.
pub struct WriteOut {
    parts: mpsc::Sender<Bytes>,
    thread: JoinHandle<io::Result<()>>,
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
        let (parts, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(part) = queue.blocking_recv() {
                out.write_all(&part)?;
            }
            finish(&out)
        });
        Self { parts, thread }
    }

    /// Queues `part` after the others; fails with the writer's error once a write failed.
    pub async fn write(&mut self, part: Bytes) -> io::Result<()> {
        if self.parts.send(part).await.is_ok() {
            return Ok(());
        }
        // The thread stopped: only a failed write stops it early.
        match (&mut self.thread).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(io::Error::other("the writer stopped")),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// Waits until every part is written (and the file synced).
    pub async fn finish(self) -> io::Result<()> {
        drop(self.parts);
        self.thread.await.map_err(io::Error::other)?
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
        for _ in 0..=QUEUE + 1 {
            if let Err(e) = out.write(Bytes::from_static(b"data")).await {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => e,
            None => out.finish().await.expect_err("the writes failed"),
        };
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    }
}
