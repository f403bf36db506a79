//! The [`Queue`] handle: opening (with recovery) and closing, the
//! backpressure check, counters, reading one message, and the scheduler's
//! wake-up. The other operations live by concern beside it: `draft.rs`
//! (receiving a message), `claim.rs` (the scheduler's claim and record),
//! `admin.rs` (the administrator's commands), `backend_records.rs` (gate
//! state) and `debug.rs` (test hooks).

use std::sync::Arc;

use crate::error::Error;
use crate::ids::{IdGen, Locks};
use crate::inner::{Inner, Lookup};
use crate::keys::Table;
use crate::model::*;
use crate::writer::{Change, Durability, Writer};
use crate::{AcceptLimits, Options, ReadStats, Result};
use std::path::Path;

use crate::disk::DiskWatch;
use crate::recover;
use crate::writer::WriterStats;

/// A handle to an open queue. Cheap to clone; all clones share one database
/// and one writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl Queue {
    fn from_opened(o: recover::Opened, opts: &Options, writable: bool) -> Result<Queue> {
        let dir = o.store.dir().to_path_buf();
        let writer =
            if writable { Some(Writer::start(Arc::clone(&o.store), Arc::clone(&o.books))?) } else { None };
        Ok(Queue {
            inner: Arc::new(Inner {
                writer,
                disk: writable.then(|| DiskWatch::start(&dir)),
                store: o.store,
                books: o.books,
                ids: IdGen::new(o.last_id),
                body_chunk: opts.body_chunk.max(1),
                locks: Locks::new(),
                claim: Arc::new(tokio::sync::Mutex::new(())),
                backends: tokio::sync::Mutex::new(()),
                changed: tokio::sync::Notify::new(),
                fail_commits: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Opens (creating if needed) the queue under `dir`, recovering after a
    /// crash: staged drafts are deleted and claimed (in-flight) messages are
    /// due again, spread over `opts.recovery_spread` from `now`.
    ///
    /// Blocks (it opens RocksDB and replays its log): call it at startup or
    /// from a blocking context. Fails with [`Error::Locked`] when another
    /// process has the queue open.
    pub fn open(dir: &Path, opts: &Options, now: UnixMillis) -> Result<Queue> {
        let opened = recover::open(dir, opts, now)?;
        Queue::from_opened(opened, opts, true)
    }

    /// Opens an existing queue read-only (for `sluice queue list` while the
    /// daemon is down). Write methods return [`Error::ReadOnly`].
    pub fn open_read_only(dir: &Path) -> Result<Queue> {
        let opened = recover::open_read_only(dir)?;
        Queue::from_opened(opened, &Options::default(), false)
    }

    /// Whether new mail may be accepted now: [`Error::Full`] when the queue
    /// is at or above a high-water mark, [`Error::DiskLow`] when the file
    /// system holding it has less free space than `limits.min_free`
    /// (`statvfs`, cached for a second so it is cheap to call on every
    /// `MAIL`), [`Error::Unwritable`] while writes fail (a full file
    /// system, RocksDB stopped by a background error) until one succeeds.
    pub fn admit(&self, limits: &AcceptLimits) -> Result<()> {
        let Some(disk) = &self.inner.disk else { return Err(Error::ReadOnly) };
        if let Some(why) = self.inner.books.failing() {
            return Err(Error::Unwritable(why));
        }
        let c = self.inner.books.counters();
        if (limits.max_messages > 0 && c.messages >= limits.max_messages)
            || (limits.max_bytes > 0 && c.bytes >= limits.max_bytes)
        {
            return Err(Error::Full { messages: c.messages, bytes: c.bytes });
        }
        let free = disk.free();
        if free < limits.min_free.max(crate::disk::ADMIT_FLOOR) {
            return Err(Error::DiskLow { free });
        }
        Ok(())
    }

    /// Counters kept by the writer; no scan. `oldest_arrival` is one seek
    /// and one read (the first live envelope), done on the blocking pool as
    /// every read is, never on the caller's async worker.
    ///
    /// The counters are exact except after an undecodable envelope was
    /// quarantined: its size, recipients and hold flag could not be read, so
    /// `bytes`, `recipients_pending` and `held` may keep counting them.
    pub async fn stats(&self) -> Stats {
        let c = self.inner.books.counters();
        let oldest_arrival = self.inner.read(|inner| inner.oldest_arrival()).await.unwrap_or_else(|e| {
            tracing::warn!("queue: cannot find the oldest message: {e}");
            None
        });
        Stats {
            messages: c.messages,
            bytes: c.bytes,
            held: c.held,
            recipients_pending: c.recipients_pending,
            oldest_arrival,
            quarantined: c.quarantined,
        }
    }

    /// RocksDB's memory for the queue (memtables), read from its in-memory
    /// counters: cheap enough to call on every status request. A table whose
    /// figure cannot be read counts as 0 (the figure is for operators and
    /// benches, never a decision).
    pub fn memory(&self) -> MemoryStats {
        let store = &self.inner.store;
        let of = |t: Table| store.memtable_bytes(t).unwrap_or(0);
        MemoryStats { memtables: Table::ALL.iter().map(|&t| of(t)).sum(), body_memtables: of(Table::Bodies) }
    }

    /// What the group-commit writer has done since open: changes applied,
    /// batches written, and fsyncs. `changes / syncs` is how many callers
    /// shared each fsync.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.books.writer_stats()
    }

    /// Where the hot reads (a claim, a body, the next due time) ran since
    /// open: on the caller's worker from memory, or on the blocking pool.
    pub fn read_stats(&self) -> ReadStats {
        self.inner.books.reads.stats()
    }

    /// Resolves when a message is committed or made due (release, requeue)
    /// after this call: the scheduler's wake-up. May also resolve once for
    /// a change just before the call (never misses one).
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }

    /// Waits until every write handed to the writer is on disk, then stops
    /// the writer thread. Later writes fail with [`Error::Closed`]. Closing
    /// twice, or a read-only queue, is fine.
    ///
    /// Also flushes RocksDB's memtables, so the next open has no log to
    /// replay; this can take a moment with a large unflushed memtable.
    pub async fn close(&self) -> Result<()> {
        match &self.inner.writer {
            None => Ok(()),
            Some(w) => match w.close().await {
                Err(Error::Closed) => Ok(()),
                r => r,
            },
        }
    }

    /// The whole body of a message, in order (what `sluice queue show`
    /// prints). Delivery and bounces read bodies chunk by chunk instead
    /// ([`Queue::body_reader`]), never whole.
    ///
    /// A body that does not match its envelope (a missing chunk, a different
    /// length) is reported as [`Error::Corrupt`] and the message is moved to
    /// the quarantine, so it is not attempted again and again.
    pub async fn body(&self, id: QueueId) -> Result<Vec<u8>> {
        let mut reader = self.body_reader(id).await?;
        let mut body = Vec::with_capacity(usize::try_from(reader.len()).unwrap_or(0).min(64 << 20));
        while let Some(chunk) = reader.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The envelope and current due time (`None` when held or in flight).
    /// A missing message is `Ok(None)`; a corrupt one is quarantined and
    /// reported as [`Error::Corrupt`].
    pub async fn envelope(&self, id: QueueId) -> Result<Option<(Envelope, Option<UnixMillis>)>> {
        self.inner
            .mutate(vec![id], move |inner| {
                let mut change = Change::new(Durability::Synced);
                match inner.lookup(id)? {
                    Lookup::Missing => Ok((change, Ok(None))),
                    Lookup::Corrupt(raw, e) => {
                        let err = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                        Ok((change, Err(err)))
                    }
                    Lookup::Found(r) => {
                        let due = (!r.envelope.held && !inner.is_inflight(id)?).then_some(r.due);
                        Ok((change, Ok(Some((r.envelope, due)))))
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(dir.path(), &Default::default(), 1).expect("open");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job: crate::writer::Job = Box::new(move |_| {
            let _answer = tx;
            panic!("a job's bug");
        });
        q.inner.writer().expect("writer").run_job(job).expect("sent");
        assert!(rx.await.is_err(), "the caller hears nothing and is not left waiting");
        let id = q
            .enqueue(
                Envelope { recipients: vec![Recipient::new("r@x")], ..Envelope::default() },
                b"still written",
                2,
            )
            .await
            .expect("commits go on");
        assert_eq!(q.body(id).await.expect("body"), b"still written");
    }
}
