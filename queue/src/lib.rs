//! sluice's durable mail queue: the only code that touches RocksDB.
//!
//! What it promises (see DESIGN.md, "Contracts that never bend"):
//! - a message exists once, and only once, [`Draft::commit`] has returned:
//!   its body, envelope and schedule entry are then on disk in one synced
//!   `WriteBatch`;
//! - every later state change of a message (claim, result, hold, release,
//!   delete, requeue) is one `WriteBatch`;
//! - after a crash, what was in flight is due again (a duplicate delivery is
//!   possible, a lost message is not);
//! - opening a queue never reads message bodies;
//! - one corrupt record is reported and quarantined, never a panic and never
//!   the loss of the others.
//!
//! The API speaks mail and never returns RocksDB types. Writes that must be
//! durable go to one writer thread that merges concurrent callers' batches
//! into one synced write (group commit); reads run on tokio's blocking pool.
#![forbid(unsafe_code)]

mod error;
mod model;

pub use error::Error;
pub use model::*;

use std::path::Path;
use std::time::Duration;

/// Result alias for queue operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the queue is opened. `Default` is what a production MX wants.
#[derive(Debug, Clone)]
pub struct Options {
    /// In-flight messages found at open are spread evenly over this window
    /// from "now" so a restart does not fire them all at once.
    pub recovery_spread: Duration,
    /// Bodies are stored in chunks of at most this many bytes, so a session
    /// never buffers more than one chunk however large the message.
    pub body_chunk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { recovery_spread: Duration::from_secs(5), body_chunk: 256 * 1024 }
    }
}

/// Backpressure limits for [`Queue::admit`]; zero means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// `sluice_queue_high_water` message count.
    pub max_messages: u64,
    /// `sluice_queue_high_water` bytes.
    pub max_bytes: u64,
    /// `queue_minfree` in bytes.
    pub min_free: u64,
}

/// What happened to a message after [`Queue::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Every recipient is final: envelope and body are gone.
    Removed,
    /// Some recipients are still pending or deferred; due again at this time.
    Scheduled(UnixMillis),
}

/// A handle to an open queue. Cheap to clone; all clones share one database
/// and one writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    _private: (),
}

/// A message being received: its queue ID is assigned at `MAIL FROM` (as
/// Postfix does, so the `client=` log line carries it) and its body is
/// appended in chunks as it arrives. Nothing is visible to the scheduler
/// until [`Draft::commit`] returns; dropping or aborting a draft deletes what
/// was staged (recovery deletes drafts that a crash left behind).
#[derive(Debug)]
pub struct Draft {
    _private: (),
}

impl Queue {
    /// Opens (creating if needed) the queue under `dir`, recovering after a
    /// crash: staged drafts are deleted and claimed (in-flight) messages are
    /// due again, spread over `opts.recovery_spread` from `now`.
    pub fn open(dir: &Path, opts: &Options, now: UnixMillis) -> Result<Queue> {
        let _ = (dir, opts, now);
        todo!()
    }

    /// Opens an existing queue read-only (for `sluice queue list` while the
    /// daemon is down). Write methods return [`Error::ReadOnly`].
    pub fn open_read_only(dir: &Path) -> Result<Queue> {
        let _ = dir;
        todo!()
    }

    /// Starts a new message; assigns its queue ID.
    pub fn begin(&self) -> Draft {
        todo!()
    }

    /// Convenience for small messages: begin + append + commit.
    pub async fn enqueue(&self, envelope: Envelope, body: &[u8], now: UnixMillis) -> Result<QueueId> {
        let _ = (envelope, body, now);
        todo!()
    }

    /// Up to `limit` messages whose due time is at or before `now`, oldest
    /// due first. Each is moved from the schedule to the in-flight set in one
    /// batch, so a second call does not return it again; its result must be
    /// recorded with [`Queue::record`] (or it is due again after a restart).
    pub async fn claim_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<QueuedMessage>> {
        let _ = (now, limit);
        todo!()
    }

    /// The earliest due time in the schedule, if any (held and in-flight
    /// messages are not in the schedule).
    pub async fn next_due(&self) -> Result<Option<UnixMillis>> {
        todo!()
    }

    /// Records the outcome of one delivery attempt for some of a claimed
    /// message's recipients (by index into `envelope.recipients`) and, if
    /// any recipient is still not final, schedules it at `next_due`. One
    /// synced batch. A message whose recipients are all final is removed,
    /// body included.
    pub async fn record(
        &self,
        id: QueueId,
        results: &[(usize, Outcome)],
        next_due: UnixMillis,
        now: UnixMillis,
    ) -> Result<Recorded> {
        let _ = (id, results, next_due, now);
        todo!()
    }

    /// Sets flags on a claimed or queued message's envelope (delay warning
    /// sent, bounce notified) without changing its schedule.
    pub async fn update_envelope(
        &self,
        id: QueueId,
        f: impl FnOnce(&mut Envelope) + Send + 'static,
    ) -> Result<()> {
        let _ = (id, f);
        todo!()
    }

    /// The whole body of a message, in order.
    pub async fn body(&self, id: QueueId) -> Result<Vec<u8>> {
        let _ = id;
        todo!()
    }

    /// The envelope and current due time (`None` when held or in flight).
    pub async fn envelope(&self, id: QueueId) -> Result<Option<(Envelope, Option<UnixMillis>)>> {
        let _ = id;
        todo!()
    }

    /// Holds messages (`postsuper -h`): they leave the schedule until
    /// released. Returns how many were changed.
    pub async fn hold(&self, ids: &[QueueId]) -> Result<usize> {
        let _ = ids;
        todo!()
    }

    /// Releases held messages (`postsuper -H`), due at `now`.
    pub async fn release(&self, ids: &[QueueId], now: UnixMillis) -> Result<usize> {
        let _ = (ids, now);
        todo!()
    }

    /// Deletes messages (`postsuper -d`), body included.
    pub async fn delete(&self, ids: &[QueueId]) -> Result<usize> {
        let _ = ids;
        todo!()
    }

    /// Makes queued (not held) messages due at `now` (`postqueue -f`,
    /// `postsuper -r`); `None` means all.
    pub async fn requeue(&self, ids: Option<&[QueueId]>, now: UnixMillis) -> Result<usize> {
        let _ = (ids, now);
        todo!()
    }

    /// Messages matching `filter`, in queue-ID order, with their due time.
    pub async fn list(&self, filter: Filter) -> Result<Vec<(QueueId, Envelope, Option<UnixMillis>)>> {
        let _ = filter;
        todo!()
    }

    /// Whether new mail may be accepted now: [`Error::Full`] when the queue
    /// is above a high-water mark, [`Error::DiskLow`] when the file system
    /// holding it has less free space than `limits.min_free` (`statvfs`,
    /// cached for a second so it is cheap to call on every `MAIL`).
    pub fn admit(&self, limits: &Admission) -> Result<()> {
        let _ = limits;
        todo!()
    }

    /// Counters kept by the writer; no scan.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Stores a backend's breaker/pause record (one synced batch).
    pub async fn put_backend(&self, name: &str, record: &BackendRecord) -> Result<()> {
        let _ = (name, record);
        todo!()
    }

    /// All stored backend records.
    pub async fn backends(&self) -> Result<Vec<(String, BackendRecord)>> {
        todo!()
    }

    /// Resolves when a message is committed or made due (release, requeue)
    /// after this call: the scheduler's wake-up.
    pub async fn changed(&self) {
        todo!()
    }

    /// Waits until every write handed to the writer is on disk, then stops
    /// the writer thread. Later writes fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        todo!()
    }
}

impl Draft {
    /// The queue ID assigned to this message.
    pub fn id(&self) -> QueueId {
        todo!()
    }

    /// Bytes staged so far.
    pub fn len(&self) -> u64 {
        todo!()
    }

    /// True when nothing has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends body bytes. Full chunks are written (unsynced) as they fill;
    /// the commit's sync makes them durable together with the envelope.
    pub async fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let _ = bytes;
        todo!()
    }

    /// Makes the message durable and due at `now`: the last chunk, the
    /// envelope (with `size` set from the staged length) and the schedule
    /// entry in one synced batch. Only after this returns may a session
    /// answer `250`.
    pub async fn commit(self, envelope: Envelope, now: UnixMillis) -> Result<QueueId> {
        let _ = (envelope, now);
        todo!()
    }

    /// Deletes what was staged.
    pub async fn abort(self) -> Result<()> {
        todo!()
    }
}
