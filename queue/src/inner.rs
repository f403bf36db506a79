//! What every clone of a [`Queue`](crate::Queue) shares ([`Inner`]), and
//! the primitives every operation is built from: looking a message up
//! (quarantining it when it cannot be decoded), rewriting or removing its
//! record and schedule entry within one change, running a read-modify-write
//! under the message's lock stripes on the blocking pool (never half-done
//! when its caller is cancelled), and reads on the caller's worker when
//! RocksDB can answer them from memory.
//!
//! Owns no policy: the operations of `handle.rs`, `claim.rs`, `admin.rs`,
//! `draft.rs` and `backend_records.rs` decide what to change.

use std::sync::Arc;

use crate::Result;
use crate::codec::{DecodeError, Record, decode_record, encode_quarantine, encode_record};
use crate::disk::DiskWatch;
use crate::error::Error;
use crate::ids::{IdGen, Locks};
use crate::keys::{self, Table};
use crate::model::*;
use crate::store::Store;
use crate::writer::{Bookkeeping, Change, Delta, Durability, Job, Reply, Writer};

/// What all clones of a [`Queue`] share.
#[derive(Debug)]
pub(crate) struct Inner {
    /// `None` when opened read-only. Declared first so it is dropped (the
    /// thread joined) before the rest.
    pub(crate) writer: Option<Writer>,
    pub(crate) store: Arc<Store>,
    pub(crate) books: Arc<Bookkeeping>,
    pub(crate) ids: IdGen,
    pub(crate) body_chunk: usize,
    pub(crate) locks: Locks,
    /// One claim at a time (two concurrent claims would only fight over the
    /// same schedule entries), held until a cancelled claim has put its
    /// messages back, so the next claim sees them.
    pub(crate) claim: Arc<tokio::sync::Mutex<()>>,
    /// Serialises backend-record writes with the quarantine of a corrupt
    /// one, so a fresh record is never moved aside by mistake.
    pub(crate) backends: tokio::sync::Mutex<()>,
    pub(crate) changed: tokio::sync::Notify,
    pub(crate) disk: Option<DiskWatch>,
    /// Test hook (`debug_fail_commits`): new messages are refused.
    pub(crate) fail_commits: std::sync::atomic::AtomicBool,
}

/// What `envelopes` holds for an ID.
pub(crate) enum Lookup {
    Missing,
    Found(Record),
    /// Undecodable: the raw bytes and why.
    Corrupt(Vec<u8>, DecodeError),
}

/// What `envelopes` holds for `id`.
pub(crate) fn lookup(store: &Store, id: QueueId) -> Result<Lookup> {
    Ok(match store.get(Table::Envelopes, &keys::id_key(id))? {
        None => Lookup::Missing,
        Some(raw) => match decode_record(&raw) {
            Ok(r) => Lookup::Found(r),
            Err(e) => Lookup::Corrupt(raw, e),
        },
    })
}

/// Message `id`'s record, or the error to answer with: not found, or
/// corrupt (then `change` quarantines it).
pub(crate) fn existing(
    store: &Store,
    id: QueueId,
    change: &mut Change,
) -> Result<std::result::Result<Record, Error>> {
    Ok(match lookup(store, id)? {
        Lookup::Found(r) => Ok(r),
        Lookup::Missing => Err(Error::NotFound(id)),
        Lookup::Corrupt(raw, e) => Err(Inner::quarantine_envelope(id, &raw, &e.to_string(), change)),
    })
}

/// Whether message `id` is claimed for delivery.
pub(crate) fn is_inflight(store: &Store, id: QueueId) -> Result<bool> {
    store.contains(Table::Inflight, &keys::id_key(id))
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> Error {
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
    pub(crate) fn writer(&self) -> Result<&Writer> {
        self.writer.as_ref().ok_or(Error::ReadOnly)
    }

    /// Wakes the scheduler: everyone waiting in `changed()` now, and the
    /// next caller too (a stored permit), so a wake-up between the
    /// scheduler's check and its wait is not lost.
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    pub(crate) fn lookup(&self, id: QueueId) -> Result<Lookup> {
        lookup(&self.store, id)
    }

    /// Message `id`'s record, or the error to answer with: not found, or
    /// corrupt (then `change` quarantines it).
    pub(crate) fn existing(
        &self,
        id: QueueId,
        change: &mut Change,
    ) -> Result<std::result::Result<Record, Error>> {
        existing(&self.store, id, change)
    }

    pub(crate) fn is_inflight(&self, id: QueueId) -> Result<bool> {
        is_inflight(&self.store, id)
    }

    /// The change quarantining message `id`'s corrupt envelope, and the
    /// error its caller reports.
    pub(crate) fn quarantine_envelope(id: QueueId, raw: &[u8], reason: &str, change: &mut Change) -> Error {
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
    pub(crate) fn rewrite(
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
    pub(crate) fn remove(change: &mut Change, id: QueueId, rec: &Record, inflight: bool) {
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
    pub(crate) async fn mutate_existing<T: Send + 'static>(
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
    pub(crate) async fn mutate<T: Send + 'static>(
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

    /// [`Inner::mutate_existing`] with `f` run on the writer thread
    /// ([`Writer::run_job`]) instead of the blocking pool: one thread
    /// hand-off fewer. Only for a read as cheap as one hot envelope (a
    /// delivery's result): the thread commits nothing else meanwhile. On a
    /// read-only queue it fails with [`Error::ReadOnly`] like any write.
    pub(crate) async fn mutate_existing_on_writer<T: Send + 'static>(
        self: &Arc<Self>,
        id: QueueId,
        f: impl FnOnce(&Store, Record, &mut Change) -> Result<Result<T>> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(self);
        let task = tokio::spawn(async move {
            let held = inner.locks.lock([id]).await;
            let (tx, rx) = tokio::sync::oneshot::channel::<Result<T>>();
            // Captures no `Inner`: the job may be dropped on the writer
            // thread, which must never drop the last handle (and join
            // itself).
            let job: Job = Box::new(move |store| {
                let mut change = Change::new(Durability::Synced);
                let answer = match existing(store, id, &mut change) {
                    Ok(Ok(rec)) => f(store, rec, &mut change),
                    Ok(Err(e)) => Ok(Err(e)),
                    Err(e) => Err(e),
                };
                let answer = match answer {
                    Ok(a) => a,
                    // A failed read writes nothing, as in `mutate`.
                    Err(e) => {
                        change = Change::new(Durability::Synced);
                        Err(e)
                    }
                };
                let reply: Reply = Box::new(move |written| {
                    let _ = tx.send(written.and(answer));
                });
                (change, reply)
            });
            inner.writer()?.run_job(job)?;
            let answer = rx.await.map_err(|_| Error::Closed)?;
            drop(held);
            answer
        });
        task.await.map_err(join_error)?
    }

    /// Runs `f` as an in-memory attempt on this worker (`in_memory.rs`):
    /// `None` when it must run on the blocking pool instead. Counted in
    /// [`crate::Queue::read_stats`].
    pub(crate) fn attempt_near<T>(&self, f: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
        let r = crate::in_memory::attempt(f);
        self.books.reads.count(r.is_some());
        r
    }

    /// Runs a read on this worker when RocksDB has what it reads in memory
    /// and it reads few keys (see `in_memory.rs`), else on the blocking
    /// pool. `f` may run twice, so it must only read. A read known to need
    /// more keys than an attempt may read (`keys`, at least) goes to the
    /// pool at once rather than spend an attempt's budget for nothing.
    pub(crate) async fn read_near<T: Send + 'static>(
        self: &Arc<Self>,
        keys: usize,
        f: impl Fn(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if keys > crate::in_memory::KEY_BUDGET as usize {
            self.books.reads.count(false);
        } else if let Some(r) = self.attempt_near(|| f(self)) {
            return r;
        }
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(join_error)?
    }

    /// Runs a read on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(join_error)?
    }

    /// Quarantines the envelopes of `ids` that are still undecodable (found
    /// by an unlocked scan; re-checked under their locks).
    pub(crate) async fn quarantine_ids(self: &Arc<Self>, ids: Vec<QueueId>) -> Result<()> {
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

    /// `oldest_arrival` for `stats()`: the first live envelope, found from
    /// the envelope floor (IDs grow with time, so it is the oldest).
    pub(crate) fn oldest_arrival(&self) -> Result<Option<UnixMillis>> {
        let scan = self.books.envelope_floor.begin();
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
