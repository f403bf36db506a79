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
//!
//! Log lines about a message name the Postfix program that would have
//! written them as their tracing target (`qmgr` for `removed` and
//! `requeued`, `postsuper` for hold, release and delete), so the daemon's
//! log reads as Postfix's to Postfix log tools.
#![forbid(unsafe_code)]

mod codec;
mod disk;
mod error;
mod ids;
mod keys;
mod model;
mod recover;
mod store;
mod writer;

pub use error::Error;
pub use ids::IdGen;
pub use model::*;
pub use writer::{FSYNC_BATCH_METRIC, WriterStats};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use codec::{DecodeError, Record, decode_backend, decode_quarantine, decode_record, encode_backend};
use codec::{encode_due, encode_quarantine, encode_record};
use disk::DiskWatch;
use ids::{Held, Locks};
use keys::Table;
use store::Store;
use writer::{Change, Delta, Durability, Shared, Writer};

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

/// Admin operations touching many messages work through them in pages of
/// this many, each page one batch (so one admin command never builds an
/// unbounded batch or holds many locks).
const ADMIN_PAGE: usize = 512;

/// A handle to an open queue. Cheap to clone; all clones share one database
/// and one writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// What all clones of a [`Queue`] share.
#[derive(Debug)]
struct Inner {
    /// `None` when opened read-only. Declared first so it is dropped (the
    /// thread joined) before the rest.
    writer: Option<Writer>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    ids: IdGen,
    body_chunk: usize,
    locks: Locks,
    /// One claim at a time (two concurrent claims would only fight over the
    /// same schedule entries), held until a cancelled claim has put its
    /// messages back, so the next claim sees them.
    claim: Arc<tokio::sync::Mutex<()>>,
    /// Serialises backend-record writes with the quarantine of a corrupt
    /// one, so a fresh record is never moved aside by mistake.
    backends: tokio::sync::Mutex<()>,
    changed: tokio::sync::Notify,
    disk: Option<DiskWatch>,
}

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
    /// confirmed, so a cleanup covers a write whose answer never came).
    chunks: u32,
    /// A chunk write failed: the body is incomplete and must not commit.
    broken: bool,
    /// Committed or aborted (or the commit was handed to the writer): drop
    /// must not clean up.
    finished: bool,
}

/// What `envelopes` holds for an ID.
enum Lookup {
    Missing,
    Found(Record),
    /// Undecodable: the raw bytes and why.
    Corrupt(Vec<u8>, DecodeError),
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Storage(format!("queue task failed: {e}"))
}

/// Moves an undecodable record of `table` to the quarantine: one change
/// that copies the bytes there with the reason and deletes the original
/// (and, for an envelope, its in-flight entry). Counts it as quarantined;
/// a caller removing a counted message also subtracts it from `messages`.
pub(crate) fn quarantine_change(table: Table, key: &[u8], raw: &[u8], reason: &str) -> Change {
    let mut c = Change::new(Durability::Synced);
    c.put(Table::Quarantine, keys::quarantine_key(table, key), encode_quarantine(reason, raw));
    c.delete(table, key.to_vec());
    if table == Table::Envelopes {
        c.delete(Table::Inflight, key.to_vec());
    }
    c.delta.quarantined = 1;
    c
}

impl Inner {
    fn writer(&self) -> Result<&Writer> {
        self.writer.as_ref().ok_or(Error::ReadOnly)
    }

    /// Wakes the scheduler: everyone waiting in `changed()` now, and the
    /// next caller too (a stored permit), so a wake-up between the
    /// scheduler's check and its wait is not lost.
    fn wake(&self) {
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    fn lookup(&self, id: QueueId) -> Result<Lookup> {
        Ok(match self.store.get(Table::Envelopes, &keys::id_key(id))? {
            None => Lookup::Missing,
            Some(raw) => match decode_record(&raw) {
                Ok(r) => Lookup::Found(r),
                Err(e) => Lookup::Corrupt(raw, e),
            },
        })
    }

    /// Message `id`'s record, or the error to answer with: not found, or
    /// corrupt (then `change` quarantines it).
    fn existing(&self, id: QueueId, change: &mut Change) -> Result<std::result::Result<Record, Error>> {
        Ok(match self.lookup(id)? {
            Lookup::Found(r) => Ok(r),
            Lookup::Missing => Err(Error::NotFound(id)),
            Lookup::Corrupt(raw, e) => Err(Inner::quarantine_envelope(id, &raw, &e.to_string(), change)),
        })
    }

    fn is_inflight(&self, id: QueueId) -> Result<bool> {
        self.store.contains(Table::Inflight, &keys::id_key(id))
    }

    /// The change quarantining message `id`'s corrupt envelope, and the
    /// error its caller reports.
    fn quarantine_envelope(id: QueueId, raw: &[u8], reason: &str, change: &mut Change) -> Error {
        tracing::error!("{id}: corrupt envelope moved to quarantine: {reason}");
        change.extend(quarantine_change(Table::Envelopes, &keys::id_key(id), raw, reason));
        change.delta.messages -= 1;
        Error::Corrupt { key: id.to_string(), reason: reason.to_owned() }
    }

    /// Rewrites a message's record from `before` to `after`, moving its
    /// schedule entry to match. An in-flight message keeps no schedule
    /// entry: with `keep_inflight` it stays in flight (its delivery is still
    /// running and its result will place it); otherwise it leaves the
    /// in-flight set and is scheduled (unless held).
    fn rewrite(
        change: &mut Change,
        id: QueueId,
        before: &Record,
        after: &Record,
        inflight: bool,
        keep_inflight: bool,
    ) {
        if !(inflight && keep_inflight) {
            if inflight {
                change.delete(Table::Inflight, keys::id_key(id).to_vec());
            } else if !before.envelope.held {
                change.delete(Table::Schedule, keys::schedule_key(before.due, id).to_vec());
            }
            // After the delete: when the key is the same, the put wins.
            if !after.envelope.held {
                change.put(Table::Schedule, keys::schedule_key(after.due, id).to_vec(), Vec::new());
            }
        }
        change.put(Table::Envelopes, keys::id_key(id).to_vec(), encode_record(after));
        change.delta.add(Delta::between(Some(&before.envelope), Some(&after.envelope)));
    }

    /// Removes a message: envelope, every body chunk, and its schedule or
    /// in-flight entry.
    fn remove(change: &mut Change, id: QueueId, rec: &Record, inflight: bool) {
        change.delete(Table::Envelopes, keys::id_key(id).to_vec());
        for n in 0..rec.chunks {
            change.delete(Table::Bodies, keys::chunk_key(id, n).to_vec());
        }
        if inflight {
            change.delete(Table::Inflight, keys::id_key(id).to_vec());
        } else if !rec.envelope.held {
            change.delete(Table::Schedule, keys::schedule_key(rec.due, id).to_vec());
        }
        change.delta.add(Delta::between(Some(&rec.envelope), None));
    }

    /// [`Inner::mutate`] for one existing message: `f` gets its record and
    /// the change to add to. A missing message answers
    /// [`Error::NotFound`]; a corrupt one is quarantined and answers
    /// [`Error::Corrupt`].
    async fn mutate_existing<T: Send + 'static>(
        self: &Arc<Self>,
        id: QueueId,
        f: impl FnOnce(&Inner, Record, &mut Change) -> Result<Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.mutate(vec![id], move |inner| {
            let mut change = Change::new(Durability::Synced);
            let answer = match inner.existing(id, &mut change)? {
                Ok(rec) => f(inner, rec, &mut change)?,
                Err(e) => Err(e),
            };
            Ok((change, answer))
        })
        .await
    }

    /// Runs a read-modify-write on some messages: takes their lock stripes,
    /// computes the change from the current state on the blocking pool,
    /// writes it, and only then releases the stripes.
    ///
    /// All of it runs in a spawned task, so a caller that is cancelled (a
    /// timeout, a dropped connection) never leaves a change half-done or
    /// lets another operation read a state a queued write is about to
    /// change. `compute` returns the change and the caller's answer; the
    /// change is written even when the answer is an error (a quarantine
    /// reported as `Corrupt`). On a read-only queue only reads get here and
    /// quarantine changes are skipped.
    async fn mutate<T: Send + 'static>(
        self: &Arc<Self>,
        ids: Vec<QueueId>,
        compute: impl FnOnce(&Inner) -> Result<(Change, Result<T>)> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(self);
        let task = tokio::spawn(async move {
            let held = inner.locks.lock(ids.iter().copied()).await;
            let reader = Arc::clone(&inner);
            let (change, answer) =
                tokio::task::spawn_blocking(move || compute(&reader)).await.map_err(join_error)??;
            if !change.is_empty()
                && let Some(w) = &inner.writer
            {
                w.submit(change).await?;
            }
            drop(held);
            answer
        });
        task.await.map_err(join_error)?
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(join_error)?
    }

    /// Quarantines the envelopes of `ids` that are still undecodable (found
    /// by an unlocked scan; re-checked under their locks).
    async fn quarantine_ids(self: &Arc<Self>, ids: Vec<QueueId>) -> Result<()> {
        if ids.is_empty() || self.writer.is_none() {
            return Ok(());
        }
        self.mutate(ids.clone(), move |inner| {
            let mut change = Change::new(Durability::Synced);
            for id in ids {
                if let Lookup::Corrupt(raw, e) = inner.lookup(id)? {
                    let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                }
            }
            Ok((change, Ok(())))
        })
        .await
    }

    /// Claims up to `limit` due messages; the caller holds the claim lock.
    /// Returns them with the stripes still held, so a caller that went away
    /// can put them back before anyone else touches them.
    async fn claim(self: &Arc<Self>, now: UnixMillis, limit: usize) -> Result<(Vec<QueuedMessage>, Held)> {
        let writer = self.writer()?;
        let scan = self.shared.schedule_floor.begin();
        let start = scan.start.clone();
        let upper = keys::schedule_upper(now);
        // 1. Candidates: the first `limit` entries due by `now`, from the
        //    floor (entries below it are known deleted; never the whole
        //    schedule).
        let candidates = self
            .read(move |inner| {
                let mut out = Vec::with_capacity(limit.min(4096));
                inner.store.scan(Table::Schedule, &start, upper.as_ref().map(|u| &u[..]), |k, _| {
                    if let Some((due, id)) = keys::parse_schedule_key(k) {
                        out.push((k.to_vec(), due, id));
                    } else {
                        tracing::error!("schedule: ignoring malformed key {k:?}");
                    }
                    Ok(out.len() < limit)
                })?;
                Ok(out)
            })
            .await?;
        let full = candidates.len() >= limit;
        let last_key = candidates.last().map(|c| c.0.clone());
        // 2. Lock them, then re-check each against the current state: a
        //    hold, delete, requeue or second claim may have got there first.
        let held = self.locks.lock(candidates.iter().map(|c| c.2)).await;
        let (change, claimed) = self
            .read(move |inner| {
                let mut change = Change::new(Durability::Buffered);
                let mut claimed = Vec::with_capacity(candidates.len());
                for (key, due, id) in candidates {
                    if !inner.store.contains(Table::Schedule, &key)? {
                        continue; // moved by someone else meanwhile
                    }
                    match inner.lookup(id)? {
                        Lookup::Found(rec) if !rec.envelope.held && rec.due == due => {
                            // Claimed: the schedule entry becomes an
                            // in-flight entry. Not synced: if a crash loses
                            // this, the entry is simply still scheduled.
                            change.delete(Table::Schedule, key);
                            change.put(Table::Inflight, keys::id_key(id).to_vec(), encode_due(due));
                            claimed.push(QueuedMessage { id, envelope: rec.envelope, due });
                        }
                        Lookup::Found(_) | Lookup::Missing => {
                            tracing::warn!("{id}: removing stale schedule entry (due {due})");
                            change.delete(Table::Schedule, key);
                        }
                        Lookup::Corrupt(raw, e) => {
                            change.delete(Table::Schedule, key);
                            let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                        }
                    }
                }
                Ok((change, claimed))
            })
            .await?;
        if !change.is_empty() {
            writer.submit(change).await?;
        }
        // 3. Everything below where this scan stopped is gone now.
        match (full, last_key, upper) {
            (true, Some(k), _) => scan.raise(&keys::successor(&k)),
            (false, _, Some(u)) => scan.raise(&u),
            (false, _, None) => scan.raise(&[0xff; keys::SCHEDULE_KEY_LEN + 1]),
            (true, None, _) => {}
        }
        Ok((claimed, held))
    }

    /// Puts claimed messages whose claimer went away back in the schedule
    /// at the due time they were claimed at. The caller holds their stripes.
    async fn unclaim(self: &Arc<Self>, msgs: Vec<QueuedMessage>) -> Result<()> {
        let writer = self.writer()?;
        let change = self
            .read(move |inner| {
                let mut change = Change::new(Durability::Buffered);
                for m in msgs {
                    let Lookup::Found(rec) = inner.lookup(m.id)? else { continue };
                    if inner.is_inflight(m.id)? {
                        change.delete(Table::Inflight, keys::id_key(m.id).to_vec());
                        if !rec.envelope.held {
                            change.put(
                                Table::Schedule,
                                keys::schedule_key(rec.due, m.id).to_vec(),
                                Vec::new(),
                            );
                        }
                    }
                }
                Ok(change)
            })
            .await?;
        writer.submit(change).await
    }

    /// `oldest_arrival` for `stats()`: the first live envelope, found from
    /// the envelope floor (IDs grow with time, so it is the oldest).
    fn oldest_arrival(&self) -> Result<Option<UnixMillis>> {
        let scan = self.shared.envelope_floor.begin();
        let Some(k) = self.store.first_key(Table::Envelopes, &scan.start, None)? else {
            return Ok(None);
        };
        scan.raise(&k);
        let Some(id) = keys::parse_id_key(&k) else { return Ok(None) };
        Ok(Some(match self.store.get(Table::Envelopes, &k)?.map(|raw| decode_record(&raw)) {
            Some(Ok(r)) => r.envelope.arrival,
            // Undecodable or just removed: the ID is its start time.
            _ => id.as_micros() / 1000,
        }))
    }
}

impl Queue {
    fn from_opened(o: recover::Opened, opts: &Options, writable: bool) -> Result<Queue> {
        let dir = o.store.dir().to_path_buf();
        let writer =
            if writable { Some(Writer::start(Arc::clone(&o.store), Arc::clone(&o.shared))?) } else { None };
        Ok(Queue {
            inner: Arc::new(Inner {
                writer,
                disk: writable.then(|| DiskWatch::start(&dir)),
                store: o.store,
                shared: o.shared,
                ids: IdGen::new(o.last_id),
                body_chunk: opts.body_chunk.max(1),
                locks: Locks::new(),
                claim: Arc::new(tokio::sync::Mutex::new(())),
                backends: tokio::sync::Mutex::new(()),
                changed: tokio::sync::Notify::new(),
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

    /// Starts a new message; assigns its queue ID. Writes nothing yet.
    pub fn begin(&self) -> Draft {
        Draft {
            inner: Arc::clone(&self.inner),
            id: self.inner.ids.next(),
            buf: Vec::new(),
            len: 0,
            chunks: 0,
            broken: false,
            finished: false,
        }
    }

    /// Convenience for small messages: begin + append + commit.
    pub async fn enqueue(&self, envelope: Envelope, body: &[u8], now: UnixMillis) -> Result<QueueId> {
        let mut d = self.begin();
        d.append(body).await?;
        d.commit(envelope, now).await
    }

    /// Up to `limit` messages whose due time is at or before `now`, oldest
    /// due first. Each is moved from the schedule to the in-flight set in one
    /// batch, so a second call does not return it again; its result must be
    /// recorded with [`Queue::record`] (or it is due again after a restart).
    ///
    /// Reads at most `limit` schedule entries past the floor (never the
    /// whole queue). A corrupt envelope met on the way is quarantined and
    /// skipped. Cancel-safe: if the caller goes away before the answer, the
    /// claimed messages are put back.
    pub async fn claim_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.inner.writer()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let one_at_a_time = Arc::clone(&inner.claim).lock_owned().await;
            let result = inner.claim(now, limit).await;
            // Let go of the queue before answering, so a caller that then
            // closes and drops it can reopen the directory at once.
            let weak = Arc::downgrade(&inner);
            drop(inner);
            match result {
                Ok((msgs, held)) => {
                    if let Err(Ok(msgs)) = tx.send(Ok(msgs))
                        && !msgs.is_empty()
                        && let Some(inner) = weak.upgrade()
                    {
                        tracing::debug!("claim cancelled: returning {} messages to the schedule", msgs.len());
                        if let Err(e) = inner.unclaim(msgs).await {
                            tracing::error!("cannot return claimed messages to the schedule: {e}");
                        }
                    }
                    drop(held);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            drop(one_at_a_time);
        });
        rx.await.map_err(|_| Error::Storage("queue claim task failed".into()))?
    }

    /// The earliest due time in the schedule, if any (held and in-flight
    /// messages are not in the schedule).
    pub async fn next_due(&self) -> Result<Option<UnixMillis>> {
        self.inner
            .read(|inner| {
                let scan = inner.shared.schedule_floor.begin();
                let first = inner.store.first_key(Table::Schedule, &scan.start, None)?;
                match first {
                    Some(k) => {
                        scan.raise(&k);
                        Ok(keys::parse_schedule_key(&k).map(|(due, _)| due))
                    }
                    None => Ok(None),
                }
            })
            .await
    }

    /// Records the outcome of one delivery attempt for some of a claimed
    /// message's recipients (by index into `envelope.recipients`) and, if
    /// any recipient is still not final, schedules it at `next_due`. One
    /// synced batch. A message whose recipients are all final is removed,
    /// body included.
    ///
    /// A held message is not scheduled (its release will). A message deleted
    /// meanwhile gives [`Error::NotFound`] and stays deleted. Indexes beyond
    /// the recipient list are ignored (and logged).
    pub async fn record(
        &self,
        id: QueueId,
        results: &[(usize, Outcome)],
        next_due: UnixMillis,
        now: UnixMillis,
    ) -> Result<Recorded> {
        self.inner.writer()?;
        let results = results.to_vec();
        self.inner
            .mutate_existing(id, move |inner, rec, change| {
                let inflight = inner.is_inflight(id)?;
                let mut after = rec.clone();
                for (idx, outcome) in &results {
                    if !after.envelope.apply(*idx, outcome, now) {
                        tracing::warn!("{id}: result for recipient #{idx} ignored: no such recipient");
                    }
                }
                if after.envelope.is_done() {
                    Inner::remove(change, id, &rec, inflight);
                    tracing::info!(target: "qmgr", "{id}: removed");
                    return Ok(Ok(Recorded::Removed));
                }
                after.due = next_due;
                Inner::rewrite(change, id, &rec, &after, inflight, false);
                Ok(Ok(Recorded::Scheduled(next_due)))
            })
            .await
    }

    /// Sets flags on a claimed or queued message's envelope (delay warning
    /// sent, bounce notified) without changing its schedule. The body size
    /// cannot be changed; a change of `held` moves the schedule entry as
    /// hold/release would.
    pub async fn update_envelope(
        &self,
        id: QueueId,
        f: impl FnOnce(&mut Envelope) + Send + 'static,
    ) -> Result<()> {
        self.inner.writer()?;
        self.inner
            .mutate_existing(id, move |inner, rec, change| {
                let mut after = rec.clone();
                f(&mut after.envelope);
                after.envelope.size = rec.envelope.size;
                if after != rec {
                    Inner::rewrite(change, id, &rec, &after, inner.is_inflight(id)?, true);
                }
                Ok(Ok(()))
            })
            .await
    }

    /// The whole body of a message, in order.
    ///
    /// A body that does not match its envelope (a missing chunk, a different
    /// length) is reported as [`Error::Corrupt`] and the message is moved to
    /// the quarantine, so it is not attempted again and again.
    pub async fn body(&self, id: QueueId) -> Result<Vec<u8>> {
        self.inner
            .mutate_existing(id, move |inner, rec, change| {
                let mut body =
                    Vec::with_capacity(usize::try_from(rec.envelope.size).unwrap_or(0).min(64 << 20));
                let mut problem = None;
                for n in 0..rec.chunks {
                    match inner.store.get(Table::Bodies, &keys::chunk_key(id, n))? {
                        Some(c) => body.extend_from_slice(&c),
                        None => {
                            problem = Some(format!("body chunk {n} of {} is missing", rec.chunks));
                            break;
                        }
                    }
                }
                if problem.is_none() && body.len() as u64 != rec.envelope.size {
                    problem =
                        Some(format!("body has {} bytes, envelope says {}", body.len(), rec.envelope.size));
                }
                match problem {
                    None => Ok(Ok(body)),
                    Some(reason) => {
                        // The envelope is readable, so the counters can be
                        // corrected exactly.
                        tracing::error!("{id}: damaged body, message moved to quarantine: {reason}");
                        let raw = encode_record(&rec);
                        change.extend(quarantine_change(Table::Envelopes, &keys::id_key(id), &raw, &reason));
                        change.delta.add(Delta::between(Some(&rec.envelope), None));
                        if !rec.envelope.held && !inner.is_inflight(id)? {
                            change.delete(Table::Schedule, keys::schedule_key(rec.due, id).to_vec());
                        }
                        let err = Error::Corrupt { key: id.to_string(), reason };
                        Ok(Err(err))
                    }
                }
            })
            .await
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

    /// Applies `f` to each existing message among `ids`, page by page, one
    /// synced batch per page. `f` adds its writes to the change and says
    /// whether it changed the message; returns how many it changed.
    async fn for_each_message(
        &self,
        ids: &[QueueId],
        what: &'static str,
        f: impl Fn(&mut Change, QueueId, &Record, bool) -> bool + Clone + Send + 'static,
    ) -> Result<usize> {
        self.inner.writer()?;
        let mut total = 0;
        for page in ids.chunks(ADMIN_PAGE) {
            let mut page = page.to_vec();
            page.sort_unstable();
            page.dedup();
            let f = f.clone();
            total += self
                .inner
                .mutate(page.clone(), move |inner| {
                    let mut change = Change::new(Durability::Synced);
                    let mut n = 0;
                    for id in page {
                        match inner.lookup(id)? {
                            Lookup::Missing => {}
                            Lookup::Corrupt(raw, e) => {
                                let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                            }
                            Lookup::Found(rec) => {
                                if f(&mut change, id, &rec, inner.is_inflight(id)?) {
                                    // Only the administrator holds and deletes.
                                    tracing::info!(target: "postsuper", "{id}: {what}");
                                    n += 1;
                                }
                            }
                        }
                    }
                    Ok((change, Ok(n)))
                })
                .await?;
        }
        Ok(total)
    }

    /// Holds messages (`postsuper -h`): they leave the schedule until
    /// released. Returns how many were changed. An in-flight message stays
    /// in flight; when its result is recorded it is not scheduled.
    pub async fn hold(&self, ids: &[QueueId]) -> Result<usize> {
        self.for_each_message(ids, "placed on hold", |change, id, rec, inflight| {
            if rec.envelope.held {
                return false;
            }
            let mut after = rec.clone();
            after.envelope.held = true;
            Inner::rewrite(change, id, rec, &after, inflight, true);
            true
        })
        .await
    }

    /// Releases held messages (`postsuper -H`), due at `now`.
    pub async fn release(&self, ids: &[QueueId], now: UnixMillis) -> Result<usize> {
        let total = self
            .for_each_message(ids, "released from hold", move |change, id, rec, inflight| {
                if !rec.envelope.held {
                    return false;
                }
                let mut after = rec.clone();
                after.envelope.held = false;
                after.due = now;
                Inner::rewrite(change, id, rec, &after, inflight, true);
                true
            })
            .await?;
        if total > 0 {
            self.inner.wake();
        }
        Ok(total)
    }

    /// Deletes messages (`postsuper -d`), body included. Safe while a
    /// message is in flight: its later [`Queue::record`] finds it gone.
    pub async fn delete(&self, ids: &[QueueId]) -> Result<usize> {
        self.for_each_message(ids, "removed", |change, id, rec, inflight| {
            Inner::remove(change, id, rec, inflight);
            true
        })
        .await
    }

    /// Makes queued (not held) messages due at `now` (`postqueue -f`,
    /// `postsuper -r`); `None` means all. Messages already due, held or in
    /// flight are left as they are and not counted.
    pub async fn requeue(&self, ids: Option<&[QueueId]>, now: UnixMillis) -> Result<usize> {
        self.inner.writer()?;
        let total = match ids {
            Some(ids) => {
                let mut total = 0;
                for page in ids.chunks(ADMIN_PAGE) {
                    let page = page.to_vec();
                    total += self.requeue_page(page.into_iter().map(|id| (None, id)).collect(), now).await?;
                }
                total
            }
            None => {
                // Walk the schedule past `now`, page by page. Moved entries
                // land at `now`, behind the cursor, so none is seen twice.
                let Some(mut cursor) = keys::schedule_upper(now).map(|u| u.to_vec()) else { return Ok(0) };
                let mut total = 0;
                loop {
                    let from = cursor.clone();
                    let page = self
                        .inner
                        .read(move |inner| {
                            let mut out = Vec::new();
                            inner.store.scan(Table::Schedule, &from, None, |k, _| {
                                if let Some((due, id)) = keys::parse_schedule_key(k) {
                                    out.push((Some(due), id));
                                }
                                Ok(out.len() < ADMIN_PAGE)
                            })?;
                            Ok(out)
                        })
                        .await?;
                    let Some(&(Some(due), id)) = page.last() else { break };
                    cursor = keys::successor(&keys::schedule_key(due, id));
                    total += self.requeue_page(page, now).await?;
                }
                total
            }
        };
        if total > 0 {
            self.inner.wake();
        }
        Ok(total)
    }

    /// Requeues one page: each `(expected due, id)` is moved to `now` if it
    /// is still scheduled (at that due time, when one is given) after `now`.
    async fn requeue_page(&self, page: Vec<(Option<UnixMillis>, QueueId)>, now: UnixMillis) -> Result<usize> {
        let ids: Vec<QueueId> = page.iter().map(|p| p.1).collect();
        self.inner
            .mutate(ids, move |inner| {
                let mut change = Change::new(Durability::Synced);
                let mut n = 0;
                let mut seen = std::collections::HashSet::new();
                for (expect, id) in page {
                    if !seen.insert(id) {
                        continue;
                    }
                    match inner.lookup(id)? {
                        Lookup::Found(rec)
                            if !rec.envelope.held
                                && rec.due > now
                                && expect.is_none_or(|d| d == rec.due)
                                && !inner.is_inflight(id)? =>
                        {
                            let mut after = rec.clone();
                            after.due = now;
                            Inner::rewrite(&mut change, id, &rec, &after, false, false);
                            tracing::info!(target: "qmgr", "{id}: requeued");
                            n += 1;
                        }
                        Lookup::Corrupt(raw, e) => {
                            let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                        }
                        _ => {}
                    }
                }
                Ok((change, Ok(n)))
            })
            .await
    }

    /// Messages matching `filter`, in queue-ID order, with their due time.
    /// Corrupt envelopes met on the way are skipped (logged) and
    /// quarantined.
    pub async fn list(&self, filter: Filter) -> Result<Vec<(QueueId, Envelope, Option<UnixMillis>)>> {
        let (found, corrupt) = self
            .inner
            .read(move |inner| {
                let start = match filter.after {
                    Some(id) => keys::successor(&keys::id_key(id)),
                    None => inner.shared.envelope_floor.get(),
                };
                let limit = filter.limit.unwrap_or(usize::MAX);
                let domain =
                    filter.rcpt_domain.as_deref().map(|d| d.trim_start_matches('@').to_ascii_lowercase());
                let mut found = Vec::new();
                let mut corrupt = Vec::new();
                if limit == 0 {
                    return Ok((found, corrupt));
                }
                inner.store.scan(Table::Envelopes, &start, None, |k, v| {
                    let Some(id) = keys::parse_id_key(k) else { return Ok(true) };
                    let rec = match decode_record(v) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("{id}: corrupt envelope skipped: {e}");
                            corrupt.push(id);
                            return Ok(true);
                        }
                    };
                    let e = &rec.envelope;
                    if filter.held.is_some_and(|h| h != e.held)
                        || (filter.deferred_only
                            && !e.recipients.iter().any(|r| matches!(r.state, RcptState::Deferred { .. })))
                        || domain.as_deref().is_some_and(|d| {
                            !e.recipients.iter().any(|r| {
                                r.address.rsplit_once('@').is_some_and(|(_, dom)| dom.eq_ignore_ascii_case(d))
                            })
                        })
                    {
                        return Ok(true);
                    }
                    let due = (!e.held && !inner.is_inflight(id)?).then_some(rec.due);
                    found.push((id, rec.envelope, due));
                    Ok(found.len() < limit)
                })?;
                Ok((found, corrupt))
            })
            .await?;
        self.inner.quarantine_ids(corrupt).await?;
        Ok(found)
    }

    /// Records moved to the quarantine, at most `limit` of them.
    pub async fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>> {
        self.inner
            .read(move |inner| {
                let mut out = Vec::new();
                if limit == 0 {
                    return Ok(out);
                }
                inner.store.scan(Table::Quarantine, &[], None, |k, v| {
                    let (table, key) = keys::parse_quarantine_key(k).unwrap_or(("?", k));
                    let key = match (table, keys::parse_id_key(key)) {
                        ("envelopes" | "inflight" | "drafts", Some(id)) => id.to_string(),
                        _ => String::from_utf8_lossy(key).into_owned(),
                    };
                    let (reason, size) = match decode_quarantine(v) {
                        Ok((reason, raw)) => (reason, raw.len()),
                        Err(e) => (format!("unreadable quarantine record: {e}"), v.len()),
                    };
                    out.push(Quarantined { table: table.to_owned(), key, reason, size });
                    Ok(out.len() < limit)
                })?;
                Ok(out)
            })
            .await
    }

    /// Whether new mail may be accepted now: [`Error::Full`] when the queue
    /// is at or above a high-water mark, [`Error::DiskLow`] when the file
    /// system holding it has less free space than `limits.min_free`
    /// (`statvfs`, cached for a second so it is cheap to call on every
    /// `MAIL`).
    pub fn admit(&self, limits: &Admission) -> Result<()> {
        let Some(disk) = &self.inner.disk else { return Err(Error::ReadOnly) };
        let c = self.inner.shared.counters();
        if (limits.max_messages > 0 && c.messages >= limits.max_messages)
            || (limits.max_bytes > 0 && c.bytes >= limits.max_bytes)
        {
            return Err(Error::Full { messages: c.messages, bytes: c.bytes });
        }
        let free = disk.free();
        if limits.min_free > 0 && free < limits.min_free {
            return Err(Error::DiskLow { free });
        }
        Ok(())
    }

    /// Counters kept by the writer; no scan. `oldest_arrival` is one seek
    /// and one read (the first live envelope), done on the calling thread.
    ///
    /// The counters are exact except after an undecodable envelope was
    /// quarantined: its size, recipients and hold flag could not be read, so
    /// `bytes`, `recipients_pending` and `held` may keep counting them.
    pub fn stats(&self) -> Stats {
        let c = self.inner.shared.counters();
        let oldest_arrival = self.inner.oldest_arrival().unwrap_or_else(|e| {
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

    /// What the group-commit writer has done since open: changes applied,
    /// batches written, and fsyncs. `changes / syncs` is how many callers
    /// shared each fsync.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.shared.writer_stats()
    }

    /// Stores a backend's breaker/pause record (one synced batch).
    pub async fn put_backend(&self, name: &str, record: &BackendRecord) -> Result<()> {
        let writer = self.inner.writer()?;
        let _g = self.inner.backends.lock().await;
        let mut change = Change::new(Durability::Synced);
        change.put(Table::Meta, keys::backend_key(name), encode_backend(record));
        writer.submit(change).await
    }

    /// All stored backend records. A corrupt one is quarantined and left out.
    pub async fn backends(&self) -> Result<Vec<(String, BackendRecord)>> {
        let _g = self.inner.backends.lock().await;
        let (found, corrupt) = self
            .inner
            .read(|inner| {
                let mut found = Vec::new();
                let mut corrupt = Vec::new();
                inner.store.scan(Table::Meta, keys::BACKEND_PREFIX, Some(keys::BACKEND_END), |k, v| {
                    let name = keys::parse_backend_key(k).map(str::to_owned);
                    match (name, decode_backend(v)) {
                        (Some(name), Ok(rec)) => found.push((name, rec)),
                        (name, Err(e)) => {
                            tracing::error!("backend record {name:?} is corrupt: {e}");
                            corrupt.push(quarantine_change(Table::Meta, k, v, &e.to_string()));
                        }
                        (None, Ok(_)) => tracing::error!("backend record with a non-UTF-8 name ignored"),
                    }
                    Ok(true)
                })?;
                Ok((found, corrupt))
            })
            .await?;
        if let Some(w) = &self.inner.writer {
            for change in corrupt {
                w.submit(change).await?;
            }
        }
        Ok(found)
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

    /// Test hook: stores `raw` as the envelope record of `id` (scheduled at
    /// `due` when given) without any checking, to exercise corruption
    /// handling. Not for production use.
    #[doc(hidden)]
    pub async fn debug_put_raw_envelope(
        &self,
        id: QueueId,
        raw: &[u8],
        due: Option<UnixMillis>,
    ) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Synced);
        change.put(Table::Envelopes, keys::id_key(id).to_vec(), raw.to_vec());
        if let Some(due) = due {
            change.put(Table::Schedule, keys::schedule_key(due, id).to_vec(), Vec::new());
        }
        change.delta = Delta { messages: 1, max_id: id.as_micros(), ..Delta::default() };
        writer.submit(change).await
    }

    /// Test hook: the number of keys in a table (`bodies`, `envelopes`,
    /// `schedule`, `inflight`, `drafts`, `meta`, `quarantine`). Scans the
    /// whole table. Not for production use.
    #[doc(hidden)]
    pub async fn debug_table_len(&self, table: &str) -> Result<usize> {
        let Some(&t) = Table::ALL.iter().find(|t| t.name() == table) else {
            return Err(Error::Storage(format!("no table {table}")));
        };
        self.inner
            .read(move |inner| {
                let mut n = 0;
                inner.store.scan(t, &[], None, |_, _| {
                    n += 1;
                    Ok(true)
                })?;
                Ok(n)
            })
            .await
    }

    /// Test hook: deletes body chunk `n` of `id`, to exercise the detection
    /// of a damaged body. Not for production use.
    #[doc(hidden)]
    pub async fn debug_delete_chunk(&self, id: QueueId, n: u32) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Synced);
        change.delete(Table::Bodies, keys::chunk_key(id, n).to_vec());
        writer.submit(change).await
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
        if self.chunks == 0 {
            // The marker recovery looks for: a crash before the commit must
            // not leave these chunks behind forever.
            change.put(Table::Drafts, keys::id_key(self.id).to_vec(), Vec::new());
        }
        let n = self.chunks;
        self.chunks =
            self.chunks.checked_add(1).ok_or_else(|| Error::Storage("body has too many chunks".into()))?;
        change.put(Table::Bodies, keys::chunk_key(self.id, n).to_vec(), data);
        writer.submit(change).await
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
    pub async fn commit(mut self, mut envelope: Envelope, now: UnixMillis) -> Result<QueueId> {
        if self.broken {
            return Err(Error::Storage(format!("{}: an earlier body write failed", self.id)));
        }
        let inner = Arc::clone(&self.inner);
        let writer = inner.writer()?;
        let id = self.id;
        let mut change = Change::new(Durability::Synced);
        let mut chunks = self.chunks;
        if !self.buf.is_empty() {
            change.put(Table::Bodies, keys::chunk_key(id, chunks).to_vec(), std::mem::take(&mut self.buf));
            chunks += 1;
        }
        if self.chunks > 0 {
            change.delete(Table::Drafts, keys::id_key(id).to_vec());
        }
        envelope.size = self.len;
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
        if self.chunks == 0 {
            return None;
        }
        let mut change = Change::new(Durability::Buffered);
        for n in 0..self.chunks {
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
