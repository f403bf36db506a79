//! The group-commit writer: one thread that owns every write to the queue.
//!
//! Callers describe a state change as a [`Change`] — a list of puts and
//! deletes plus the [`Delta`] it makes to the queue-wide counters — and send
//! it with a oneshot for the answer. The thread takes the first change
//! waiting, drains every other one already queued, builds ONE `WriteBatch`
//! with all of them and the updated counters record, writes it (synced if
//! any change asked for it) and answers everyone. Under load one fsync thus
//! covers as many changes as arrived during the previous one.
//!
//! What this guarantees:
//! - each caller's change is atomic (it lies inside one atomic batch) and is
//!   applied after every change sent before it (one thread, FIFO);
//! - the counters record is in the same batch as the changes it counts, so
//!   after any crash it is exactly as current as the data: open never scans;
//! - a synced change also makes every earlier buffered change durable: they
//!   are earlier records of the same sequential WAL, and RocksDB's synced
//!   write syncs every live WAL file up to its own record.
//!
//! Each synced write records how many changes it carried in the
//! [`FSYNC_BATCH_METRIC`] histogram through the `metrics` facade: the crate
//! names no exporter, so nothing is recorded unless the program installed
//! one (the daemon does; tests and the admin fallback need not).
//!
//! A group of buffered changes only is written without an fsync; the thread
//! syncs the WAL by itself when such a write has waited
//! [`SYNC_BUFFERED_WITHIN`] for a synced one.
//!
//! The thread never touches message semantics: it applies what it is given.
//! It also runs the dead-prefix compaction (see `store.rs`) on a helper
//! thread after enough deletions.
//!
//! It also knows whether writes work ([`Bookkeeping::failing`]): after a
//! failed write (a full file system, or RocksDB refusing writes after a
//! background error) the queue takes no new mail until a write succeeds
//! again. While writes fail and nobody writes, the thread probes once a
//! second with a write that changes nothing (the counters record as it
//! is), so the queue notices by itself when space is free again or
//! RocksDB has resumed from a background error (it resumes on its own
//! from the errors it can recover from; its C API, which rust-rocksdb
//! wraps, has no `Resume` to ask it to), and takes mail again. A write is
//! refused before RocksDB sees it when the file system lacks room (see
//! `disk.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use crate::codec::{Counters, encode_counters};
use crate::error::Error;
use crate::keys::{COUNTERS_KEY, Table};
use crate::store::{COMPACT_AFTER_DELETES, Floor, Store};

mod delta;
pub(crate) use delta::Delta;

/// One write inside a change.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// `[from, to)`; used only for drafts whose chunk count is unknown.
    DeleteRange(Table, Vec<u8>, Vec<u8>),
}

/// How far a change must get before its caller hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk (the WAL fsynced) before the answer.
    Synced,
    /// In the WAL (the OS page cache) before the answer; made durable by the
    /// next synced write, or by the thread's own sync once it has been idle
    /// for [`SYNC_BUFFERED_WITHIN`]. Survives a process crash, not a power
    /// loss in that window — used where losing the change is harmless (a
    /// claim, a staged chunk, a verification answer).
    Buffered,
}

/// One caller's atomic state change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub ops: Vec<Op>,
    pub delta: Delta,
    pub durability: Durability,
}

impl Change {
    pub(crate) fn new(durability: Durability) -> Self {
        Change { ops: Vec::new(), delta: Delta::default(), durability }
    }

    pub(crate) fn put(&mut self, t: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(t, key.into(), value.into()));
    }

    pub(crate) fn delete(&mut self, t: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(t, key.into()));
    }

    pub(crate) fn delete_range(&mut self, t: Table, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeleteRange(t, from.into(), to.into()));
    }

    /// Appends another change (for callers that batch several messages).
    pub(crate) fn extend(&mut self, other: Change) {
        self.ops.extend(other.ops);
        self.delta.add(other.delta);
        if other.durability == Durability::Synced {
            self.durability = Durability::Synced;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.delta == Delta::default()
    }

    fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put(_, k, v) | Op::DeleteRange(_, k, v) => k.len() + v.len(),
                Op::Delete(_, k) => k.len(),
            })
            .sum()
    }
}

/// Counts of what the writer has done, for the benchmark and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Changes applied (each caller's request is one).
    pub changes: u64,
    /// `WriteBatch`es written (each holds one or more changes).
    pub writes: u64,
    /// Writes done with sync (WAL fsyncs).
    pub syncs: u64,
}

/// Name of the histogram of changes per synced write (the group-commit
/// batch size). The daemon describes it and sets its buckets with its other
/// metric names; it is defined here so the name has one owner.
pub const FSYNC_BATCH_METRIC: &str = "sluice_queue_fsync_batch_size";

/// The queue's live bookkeeping, shared by the writer thread and the
/// queue handles: the counters as of the last write, the scan floors, and
/// what the writer has done.
#[derive(Debug, Default)]
pub(crate) struct Bookkeeping {
    /// The counters as of the last successful write.
    pub counters: Mutex<Counters>,
    pub schedule_floor: Floor,
    pub envelope_floor: Floor,
    changes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    /// Why the last write failed, while no write has succeeded since.
    failing: Mutex<Option<String>>,
    /// A failure every write reports instead of writing (a test hook:
    /// `Queue::debug_fail_writes`).
    injected: Mutex<Option<String>>,
    /// Where reads ran (`in_memory.rs`).
    pub reads: crate::in_memory::ReadCounters,
}

impl Bookkeeping {
    pub(crate) fn new(counters: Counters) -> Self {
        Bookkeeping { counters: Mutex::new(counters), ..Bookkeeping::default() }
    }

    pub(crate) fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The injected failure, if a test set one.
    fn injected_failure(&self) -> Result<(), Error> {
        match &*self.injected.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(Error::Storage(why.clone())),
            None => Ok(()),
        }
    }

    /// Test hook: makes every write fail with `why` (until `None`).
    pub(crate) fn inject_failure(&self, why: Option<String>) {
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Why writes are failing, if the last one did.
    pub(crate) fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the outcome of a write; logs the changes of state once.
    fn note_write(&self, result: &Result<(), Error>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match (result, failing.is_some()) {
            (Ok(()), true) => {
                tracing::warn!("queue: writes work again; taking new mail");
                *failing = None;
            }
            (Err(e), false) => {
                tracing::error!("queue: writes fail ({e}); no new mail is taken until they work again");
                *failing = Some(e.to_string());
            }
            _ => {}
        }
    }

    pub(crate) fn writer_stats(&self) -> WriterStats {
        WriterStats {
            changes: self.changes.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

/// Writes `changes` as one batch together with the updated counters record,
/// then publishes the counters and lowers the floors. The writer thread's
/// unit of work, also used by recovery before the thread starts. Returns the
/// number of deletions written.
pub(crate) fn write_group<'a>(
    store: &Store,
    books: &Bookkeeping,
    changes: impl IntoIterator<Item = &'a Change>,
) -> Result<u64, Error> {
    let mut batch = WriteBatch::default();
    let before = books.counters();
    let mut counters = before;
    let mut sync = false;
    let mut deletes = 0u64;
    let mut n = 0u64;
    let mut schedule_min: Option<&[u8]> = None;
    let mut envelope_min: Option<&[u8]> = None;
    for c in changes {
        n += 1;
        sync |= c.durability == Durability::Synced;
        c.delta.apply(&mut counters);
        for op in &c.ops {
            match op {
                Op::Put(t, k, v) => {
                    batch.put_cf(store.cf(*t)?, k, v);
                    let min = match t {
                        Table::Schedule => &mut schedule_min,
                        Table::Envelopes => &mut envelope_min,
                        _ => continue,
                    };
                    if min.is_none_or(|m| k.as_slice() < m) {
                        *min = Some(k);
                    }
                }
                Op::Delete(t, k) => {
                    batch.delete_cf(store.cf(*t)?, k);
                    deletes += 1;
                }
                Op::DeleteRange(t, from, to) => {
                    batch.delete_range_cf(store.cf(*t)?, from, to);
                    deletes += 1;
                }
            }
        }
    }
    if counters != before {
        batch.put_cf(store.cf(Table::Meta)?, COUNTERS_KEY, encode_counters(&counters));
    }
    let written = room_for(store, batch.size_in_bytes() as u64)
        .and_then(|()| books.injected_failure())
        .and_then(|()| store.write(batch, sync));
    books.note_write(&written.as_ref().map(|_| ()).map_err(Error::again));
    written?;
    // Published only after the write: readers never see counters or floors
    // ahead of the data (see `Floor` for why lowering must come after).
    *books.counters.lock().unwrap_or_else(|p| p.into_inner()) = counters;
    if let Some(k) = schedule_min {
        books.schedule_floor.lower(k);
    }
    if let Some(k) = envelope_min {
        books.envelope_floor.lower(k);
    }
    books.changes.fetch_add(n, Ordering::Relaxed);
    books.writes.fetch_add(1, Ordering::Relaxed);
    if sync {
        books.syncs.fetch_add(1, Ordering::Relaxed);
        // Only synced writes: a buffered write costs no fsync, and counting
        // it would make the batches look smaller than the fsyncs they are.
        // `n` is at most MAX_GROUP_CHANGES, exact as f64.
        metrics::histogram!(FSYNC_BATCH_METRIC).record(n as f64);
    }
    Ok(deletes)
}

type Answer = oneshot::Sender<Result<(), Error>>;

/// Told how the write of a [`Job`]'s change went.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// A read-modify-write run on the writer thread itself ([`Writer::run_job`]):
/// it reads the store as it is and returns its change and who to tell.
/// Saves the caller's hop to the blocking pool for the read, a thread
/// wake-up and two context switches; kept for reads that are cheap and
/// hot (one envelope just claimed), since the thread writes nothing else
/// while a job runs.
pub(crate) type Job = Box<dyn FnOnce(&Store) -> (Change, Reply) + Send>;

/// Whom the thread answers for a change of its group.
enum Waiter {
    Channel(Answer),
    Call(Reply),
}

impl Waiter {
    fn answer(self, r: Result<(), Error>) {
        // The caller may have gone away (cancelled); the change is written
        // regardless.
        match self {
            Waiter::Channel(a) => {
                let _ = a.send(r);
            }
            Waiter::Call(f) => f(r),
        }
    }
}

enum Msg {
    Write(Change, Option<Answer>),
    Job(Job),
    Close(Answer),
}

/// Ok when the queue's file system has room for a write of `bytes` above
/// [`WRITE_FLOOR`](crate::disk::WRITE_FLOOR); a free space that cannot be
/// read lets the write go on (RocksDB reports a full disk itself).
fn room_for(store: &Store, bytes: u64) -> Result<(), Error> {
    if store.is_read_only() {
        return Ok(());
    }
    match crate::disk::free_bytes(store.dir()) {
        Ok(free) if free < crate::disk::WRITE_FLOOR.saturating_add(bytes) => Err(Error::NoSpace(format!(
            "{free} bytes free on the queue's file system, below the {} it keeps",
            crate::disk::WRITE_FLOOR
        ))),
        _ => Ok(()),
    }
}

/// How often a failing queue tries a write that changes nothing, to find
/// out that writes work again when nobody else writes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest a buffered change waits for an fsync. The next synced
/// write makes it durable anyway (one sequential WAL); when none comes,
/// the thread syncs the WAL itself once it has had nothing to write for
/// this long, so the window in which a power loss can undo a buffered
/// change (a claim: the message is then simply due again) is bounded, not
/// left to the kernel's writeback.
const SYNC_BUFFERED_WITHIN: Duration = Duration::from_secs(1);

/// The probe: the counters record rewritten as it is, synced.
fn probe(store: &Store, books: &Bookkeeping) {
    let run = || -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(Table::Meta)?, COUNTERS_KEY, encode_counters(&books.counters()));
        room_for(store, batch.size_in_bytes() as u64)?;
        books.injected_failure()?;
        store.write(batch, true)
    };
    books.note_write(&run());
}

/// The writer thread's monotonic clock, for its idle sync only: a timeout
/// of the thread's own wait, which decides nothing about any message (the
/// queue's policies take their `now` from the caller).
#[allow(clippy::disallowed_methods)]
fn monotonic_now() -> Instant {
    Instant::now()
}

/// A merged group never grows past these, so one slow giant batch cannot
/// hold many small synced commits hostage, and memory stays bounded.
const MAX_GROUP_CHANGES: usize = 1024;
const MAX_GROUP_BYTES: usize = 16 << 20;

/// Handle to the writer thread. Dropping it stops the thread after the
/// changes already sent and waits for it.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Write(c, _) => write!(f, "Write({} ops)", c.ops.len()),
            Msg::Job(_) => f.write_str("Job"),
            Msg::Close(_) => f.write_str("Close"),
        }
    }
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// The channel is unbounded on purpose: every caller but a dropped
    /// draft's cleanup waits for its answer, so what is queued is bounded by
    /// the number of concurrent callers (sessions and deliveries, which have
    /// their own configured limits), and sending never blocks an async task.
    pub(crate) fn start(store: Arc<Store>, books: Arc<Bookkeeping>) -> Result<Writer, Error> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-queue-writer".into())
            .spawn(move || run(store, books, rx))
            .map_err(|e| Error::Storage(format!("cannot start the queue writer thread: {e}")))?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    fn send(&self, msg: Msg) -> Result<(), Error> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| Error::Closed),
            None => Err(Error::Closed),
        }
    }

    /// Applies a change and waits until it is as durable as it asked.
    pub(crate) async fn submit(&self, change: Change) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Write(change, Some(tx)))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs `job` on the writer thread, after every change sent before it,
    /// and writes its change in the thread's next group. The job is
    /// dropped unrun if the thread is gone or closing.
    pub(crate) fn run_job(&self, job: Job) -> Result<(), Error> {
        self.send(Msg::Job(job))
    }

    /// Queues a change without waiting (cleanup from `Drop`). It is still
    /// ordered after everything sent before it.
    pub(crate) fn submit_detached(&self, change: Change) {
        if let Err(e) = self.send(Msg::Write(change, None)) {
            tracing::debug!("queue writer gone, change dropped: {e}");
        }
    }

    /// Writes everything sent so far, syncs the WAL, and stops the thread.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Close(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after what is queued.
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("queue writer thread panicked");
        }
    }
}

fn run(store: Arc<Store>, books: Arc<Bookkeeping>, rx: mpsc::Receiver<Msg>) {
    let mut maintenance: Option<JoinHandle<()>> = None;
    let mut deletes_since_compaction = 0u64;
    let mut group: Vec<(Change, Option<Waiter>)> = Vec::new();
    let mut closing: Option<Answer> = None;
    // When the oldest buffered change not yet synced was written.
    let mut unsynced: Option<Instant> = None;
    while closing.is_none() {
        let first = if books.failing().is_some() {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    probe(&store, &books);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else if let Some(since) = unsynced {
            match rx.recv_timeout(SYNC_BUFFERED_WITHIN.saturating_sub(since.elapsed())) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A failed sync is a failed write: logged once, no new
                    // mail until the probe's synced write works again
                    // (which syncs these changes too).
                    let synced = books.injected_failure().and_then(|()| store.sync_wal());
                    books.note_write(&synced);
                    if synced.is_ok() {
                        books.syncs.fetch_add(1, Ordering::Relaxed);
                        unsynced = None;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            let Ok(first) = rx.recv() else { break };
            first
        };
        let mut bytes = 0;
        let mut next = Some(first);
        // Drain what queued up during the previous write: this is the group.
        while let Some(m) = next.take() {
            match m {
                Msg::Write(c, a) => {
                    bytes += c.bytes();
                    group.push((c, a.map(Waiter::Channel)));
                }
                // Computed now, against the store as the previous group left
                // it: the caller holds the message's lock stripes, so no
                // change to it can be waiting in this group.
                //
                // A job that panics loses its own answer (its caller gets
                // `Closed` when the unwinding drops the sender), never this
                // thread, which every commit goes through: a job only reads,
                // so the store is as it was.
                Msg::Job(job) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&store)))
                {
                    Ok((c, reply)) if c.is_empty() => reply(Ok(())),
                    Ok((c, reply)) => {
                        bytes += c.bytes();
                        group.push((c, Some(Waiter::Call(reply))));
                    }
                    Err(_) => tracing::error!("queue writer: a job panicked; it changes nothing"),
                },
                Msg::Close(a) => closing = Some(a),
            }
            if closing.is_none() && group.len() < MAX_GROUP_CHANGES && bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let result = write_group(&store, &books, group.iter().map(|(c, _)| c));
            match &result {
                Ok(d) => {
                    deletes_since_compaction += d;
                    if group.iter().any(|(c, _)| c.durability == Durability::Synced) {
                        unsynced = None;
                    } else if unsynced.is_none() {
                        unsynced = Some(monotonic_now());
                    }
                }
                Err(e) => tracing::error!("queue write of {} changes failed: {e}", group.len()),
            }
            for (_, answer) in group.drain(..) {
                if let Some(a) = answer {
                    a.answer(match &result {
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.again()),
                    });
                }
            }
        }
        if deletes_since_compaction >= COMPACT_AFTER_DELETES
            && maintenance.as_ref().is_none_or(|h| h.is_finished())
        {
            deletes_since_compaction = 0;
            if let Some(h) = maintenance.take() {
                let _ = h.join();
            }
            let (store, books) = (Arc::clone(&store), Arc::clone(&books));
            maintenance = std::thread::Builder::new()
                .name("sluice-queue-compact".into())
                .spawn(move || compact_dead_prefixes(&store, &books))
                .map_err(|e| tracing::warn!("cannot start queue compaction: {e}"))
                .ok();
        }
    }
    if let Some(h) = maintenance.take() {
        let _ = h.join();
    }
    if let Some(a) = closing {
        let r = store.sync_wal();
        // Not needed for durability (the log has it all): it spares the next
        // open replaying the log, which holds recent bodies.
        if r.is_ok()
            && let Err(e) = store.flush_all()
        {
            tracing::warn!("queue: flush at close failed (the log will be replayed at open): {e}");
        }
        // Release the database before answering, so a caller that closes
        // and drops the queue can reopen it at once.
        drop(store);
        let _ = a.send(r);
    }
}

/// Compacts the range below the first live key of each time-ordered table.
/// Everything there is deleted, so the compaction drops the tombstones and
/// the values they cover, and later scans and blob GC have less to do.
fn compact_dead_prefixes(store: &Store, books: &Bookkeeping) {
    let run = || -> Result<(), Error> {
        let schedule = books.schedule_floor.begin();
        let first = store.first_key(Table::Schedule, &schedule.start, None)?;
        store.compact(Table::Schedule, first.as_deref())?;
        if let Some(k) = &first {
            schedule.raise(k);
        }
        let envelopes = books.envelope_floor.begin();
        let first = store.first_key(Table::Envelopes, &envelopes.start, None)?;
        // Envelope, in-flight, draft and body keys all start with the queue
        // ID, so the first live ID bounds the dead prefix of all four.
        for t in [Table::Envelopes, Table::Inflight, Table::Bodies] {
            store.compact(t, first.as_deref())?;
        }
        if let Some(k) = &first {
            envelopes.raise(k);
        }
        Ok(())
    };
    match run() {
        Ok(()) => tracing::debug!("queue: compacted dead key ranges"),
        Err(e) => tracing::warn!("queue: compaction of dead key ranges failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Envelope, Recipient};

    fn env(size: u64, held: bool, rcpts: usize) -> Envelope {
        Envelope {
            recipients: (0..rcpts).map(|i| Recipient::new(format!("r{i}@x"))).collect(),
            size,
            held,
            ..Envelope::default()
        }
    }

    #[test]
    fn deltas_sum_to_the_difference_of_footprints() {
        let a = env(100, false, 3);
        let b = env(100, true, 1);
        let mut c = Counters::default();
        Delta::footprint(&a).apply(&mut c);
        Delta::between(Some(&a), Some(&b)).apply(&mut c);
        assert_eq!((c.messages, c.bytes, c.held, c.recipients_pending), (1, 100, 1, 1));
        Delta::between(Some(&b), None).apply(&mut c);
        assert_eq!(c, Counters::default());
        Delta { messages: -5, ..Delta::default() }.apply(&mut c);
        assert_eq!(c.messages, 0, "counters saturate instead of wrapping");
    }
}
