//! Receiving a message: [`Draft`] (the queue ID assigned at once, the
//! body appended in chunks as it arrives, nothing visible until the commit
//! returns, everything staged deleted when it is dropped or aborted), and
//! [`Queue::begin`]/[`Queue::enqueue`] that start one;
//! [`Queue::begin_with_head`] starts one whose header section comes at the
//! commit and whose body can be read back and replaced (mail filters' edits).

use std::sync::Arc;

use crate::Queue;
use crate::Result;
use crate::codec::Record;
use crate::codec::encode_record;
use crate::error::Error;
use crate::inner::Inner;
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::{Change, Delta, Durability};

/// A message being received: its queue ID is assigned at `MAIL FROM` (as
/// Postfix does, so the `client=` log line carries it) and its body is
/// appended in chunks as it arrives. Nothing is visible to the scheduler
/// until [`Draft::commit`] returns; dropping or aborting a draft deletes what
/// was staged (recovery deletes drafts that a crash left behind).
///
/// A body that fits in one chunk is written only at commit, in the same
/// single batch as its envelope: the common small message costs one write.
/// Larger bodies write each full chunk as it fills (not synced, not waiting
/// for anyone's fsync but the group's), together with a `drafts` marker for
/// recovery; the commit writes the last chunk.
#[derive(Debug)]
pub struct Draft {
    inner: Arc<Inner>,
    id: QueueId,
    /// The chunk being filled (never more than `body_chunk` bytes).
    buf: Vec<u8>,
    len: u64,
    /// Chunks handed to the writer so far (counted before the write is
    /// confirmed, so a cleanup covers a write whose answer never came),
    /// including the reserved header slot of a [`Queue::begin_with_head`]
    /// draft: the next chunk's number.
    chunks: u32,
    /// The number of the first body chunk: 1 when chunk 0 is kept for the
    /// header section given at commit, else 0.
    first: u32,
    /// The `drafts` marker has been written (with the first chunk).
    marked: bool,
    /// A chunk write failed: the body is incomplete and must not commit.
    broken: bool,
    /// Committed or aborted (or the commit was handed to the writer): drop
    /// must not clean up.
    finished: bool,
}

impl Queue {
    /// Starts a new message; assigns its queue ID. Writes nothing yet.
    pub fn begin(&self) -> Draft {
        Draft {
            inner: Arc::clone(&self.inner),
            id: self.inner.ids.next(),
            buf: Vec::new(),
            len: 0,
            chunks: 0,
            first: 0,
            marked: false,
            broken: false,
            finished: false,
        }
    }

    /// Starts a message whose header section is not appended but given at
    /// commit ([`Draft::commit_with_head`]): what is appended is the body,
    /// which can be read back ([`Draft::read_chunk`]) and replaced
    /// ([`Draft::restart_body`]) before the commit. This is how edits by
    /// mail filters are stored without rewriting anything: the headers
    /// stay in the caller's memory (they are small) until the commit
    /// writes them as the message's first chunk, and a new body is written
    /// over the old one in chunks as it arrives.
    pub fn begin_with_head(&self) -> Draft {
        let mut d = self.begin();
        d.chunks = 1;
        d.first = 1;
        d
    }

    /// Convenience for small messages: begin + append + commit.
    pub async fn enqueue(&self, envelope: Envelope, body: &[u8], now: UnixMillis) -> Result<QueueId> {
        let mut d = self.begin();
        d.append(body).await?;
        d.commit(envelope, now).await
    }
}

impl Draft {
    /// The queue ID assigned to this message.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Bytes staged so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends body bytes. Full chunks are written (unsynced) as they fill;
    /// the commit's sync makes them durable together with the envelope.
    ///
    /// A chunk is written only once more bytes arrive after it is full, so
    /// a body of exactly one chunk still commits in one batch. Waits for the
    /// writer (never blocks the async worker); after a failed write the
    /// draft refuses to commit.
    pub async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        if self.broken {
            return Err(Error::Storage(format!("{}: an earlier body write failed", self.id)));
        }
        if self.inner.fail_commits.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Storage(format!("{}: new messages refused (test hook)", self.id)));
        }
        let chunk = self.inner.body_chunk;
        self.len += bytes.len() as u64;
        while self.buf.len() + bytes.len() > chunk {
            let room = chunk - self.buf.len();
            self.buf.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            let full = std::mem::take(&mut self.buf);
            // Broken until the write is confirmed: if this future is
            // dropped mid-write, the draft cannot commit a body whose chunk
            // may be missing.
            self.broken = true;
            self.write_chunk(full).await?;
            self.broken = false;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    async fn write_chunk(&mut self, data: Vec<u8>) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Buffered);
        if !self.marked {
            // The marker recovery looks for: a crash before the commit must
            // not leave these chunks behind forever.
            change.put(Table::Drafts, keys::id_key(self.id).to_vec(), Vec::new());
        }
        let n = self.chunks;
        self.chunks =
            self.chunks.checked_add(1).ok_or_else(|| Error::Storage("body has too many chunks".into()))?;
        self.marked = true;
        change.put(Table::Bodies, keys::chunk_key(self.id, n).to_vec(), data);
        writer.submit(change).await
    }

    /// Body chunk `n` (from 0, the header slot not counted) as staged so
    /// far, None past the last. Chunks are as large as the queue's
    /// `body_chunk` (the last one smaller); reading one does not change
    /// the draft. Stored chunks are read on the blocking pool.
    pub async fn read_chunk(&self, n: u32) -> Result<Option<Vec<u8>>> {
        if self.broken {
            return Err(Error::Storage(format!("{}: an earlier body write failed", self.id)));
        }
        let Some(index) = n.checked_add(self.first) else { return Ok(None) };
        if index == self.chunks {
            return Ok((!self.buf.is_empty()).then(|| self.buf.clone()));
        }
        if index > self.chunks {
            return Ok(None);
        }
        let store = Arc::clone(&self.inner.store);
        let key = keys::chunk_key(self.id, index);
        let chunk = tokio::task::spawn_blocking(move || store.get(Table::Bodies, &key))
            .await
            .map_err(crate::inner::join_error)??;
        match chunk {
            Some(c) => Ok(Some(c)),
            None => Err(Error::Storage(format!("{}: staged body chunk {n} is missing", self.id))),
        }
    }

    /// Drops the body appended so far (its stored chunks are deleted) so a
    /// new one can be appended, keeping the queue ID and the header slot.
    /// Also clears an earlier write failure: every chunk it may have left
    /// is deleted too.
    pub async fn restart_body(&mut self) -> Result<()> {
        self.buf.clear();
        self.len = 0;
        if self.chunks > self.first {
            let writer = self.inner.writer()?;
            let mut change = Change::new(Durability::Buffered);
            let (_, end) = keys::chunk_range(self.id);
            change.delete_range(Table::Bodies, keys::chunk_key(self.id, self.first).to_vec(), end.to_vec());
            // Broken until the delete is confirmed: a half-known state must
            // not commit.
            self.broken = true;
            writer.submit(change).await?;
            self.chunks = self.first;
        }
        self.broken = false;
        Ok(())
    }

    /// Makes the message durable and due at `now`: the last chunk, the
    /// envelope (with `size` set from the staged length) and the schedule
    /// entry in one synced batch. Only after this returns may a session
    /// answer `250`.
    ///
    /// Why earlier chunks are durable too although they were written without
    /// sync: every write goes through the one writer thread into RocksDB's
    /// write-ahead log, which is sequential; the chunks are earlier records
    /// of that log than this batch, and a synced write syncs the log (every
    /// live log file) up to its own record. Recovery replays the log as a
    /// prefix (point-in-time mode), so whenever this batch survives, the
    /// chunks before it survive too.
    ///
    /// A held envelope (`envelope.held`) is stored without a schedule
    /// entry. If the commit fails, nothing is cleaned up here: the outcome of
    /// a failed synced write is uncertain, and the draft marker lets
    /// recovery remove the chunks if the batch really did not land.
    pub async fn commit(self, envelope: Envelope, now: UnixMillis) -> Result<QueueId> {
        self.commit_with_head(Vec::new(), envelope, now).await
    }

    /// [`Draft::commit`] for a [`Queue::begin_with_head`] draft: `head`
    /// (the header section, with the empty line that ends it when the
    /// message has one) is written as the first chunk in the same synced
    /// batch, in front of the body. On a draft from [`Queue::begin`] the
    /// head must be empty.
    pub async fn commit_with_head(
        mut self,
        head: Vec<u8>,
        mut envelope: Envelope,
        now: UnixMillis,
    ) -> Result<QueueId> {
        if self.first == 0 && !head.is_empty() {
            return Err(Error::Storage(format!("{}: no header slot in this draft", self.id)));
        }
        if self.broken {
            return Err(Error::Storage(format!("{}: an earlier body write failed", self.id)));
        }
        if self.inner.fail_commits.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Storage(format!("{}: new messages refused (test hook)", self.id)));
        }
        let inner = Arc::clone(&self.inner);
        let writer = inner.writer()?;
        let id = self.id;
        let mut change = Change::new(Durability::Synced);
        let mut chunks = self.chunks;
        let head_len = head.len() as u64;
        if !self.buf.is_empty() {
            change.put(Table::Bodies, keys::chunk_key(id, chunks).to_vec(), std::mem::take(&mut self.buf));
            chunks += 1;
        }
        if self.first == 1 {
            change.put(Table::Bodies, keys::chunk_key(id, 0).to_vec(), head);
        }
        if self.marked {
            change.delete(Table::Drafts, keys::id_key(id).to_vec());
        }
        envelope.size = self.len + head_len;
        let rec = Record { envelope, due: now, chunks };
        if !rec.envelope.held {
            change.put(Table::Schedule, keys::schedule_key(now, id).to_vec(), Vec::new());
        }
        change.put(Table::Envelopes, keys::id_key(id).to_vec(), encode_record(&rec));
        change.delta = Delta::footprint(&rec.envelope);
        change.delta.max_id = id.as_micros();
        // From here the batch belongs to the writer: even if this future is
        // dropped, it is written, so dropping the draft must not clean up.
        self.finished = true;
        writer.submit(change).await?;
        // No log line here: the `from=<...>, size=..., nrcpt=...` line is
        // the queue manager's, written when delivery takes the message, as
        // Postfix's qmgr does.
        inner.wake();
        Ok(id)
    }

    /// Deletes what was staged.
    pub async fn abort(mut self) -> Result<()> {
        self.finished = true;
        match self.cleanup() {
            Some(change) => self.inner.writer()?.submit(change).await,
            None => Ok(()),
        }
    }

    /// Test hook: forgets the draft without cleaning up, as a crash would
    /// leave it (its chunks and marker stay for recovery to find). Not for
    /// production use.
    #[doc(hidden)]
    pub fn debug_abandon(mut self) {
        self.finished = true;
    }

    /// The change deleting the staged chunks and marker, if any were written.
    fn cleanup(&self) -> Option<Change> {
        if !self.marked {
            return None;
        }
        let mut change = Change::new(Durability::Buffered);
        for n in self.first..self.chunks {
            change.delete(Table::Bodies, keys::chunk_key(self.id, n).to_vec());
        }
        change.delete(Table::Drafts, keys::id_key(self.id).to_vec());
        Some(change)
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Queued behind this draft's chunk writes (the writer is FIFO);
        // nobody waits for it. If it is lost in a crash, recovery finds the
        // marker and removes the chunks.
        if let (Some(change), Some(w)) = (self.cleanup(), &self.inner.writer) {
            tracing::debug!("{}: unfinished message discarded", self.id);
            w.submit_detached(change);
        }
    }
}
