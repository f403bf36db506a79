//! Reads that run on the caller's async worker when RocksDB can answer
//! them from memory.
//!
//! Every hop to tokio's blocking pool wakes a pool thread and then, with
//! the answer, the worker again: two context switches and a futex or two,
//! the largest share of a relayed message's CPU after TCP. Most reads of a
//! relayed message need no disk: its envelope and body were written
//! moments before and are still in RocksDB's memtables. So a read first
//! runs on the worker itself ([`attempt`]) with RocksDB's `kBlockCacheTier`
//! (memtables and block cache only; a read that would touch a file answers
//! `Incomplete` instead) and a budget of keys, and only if it needs the
//! disk or more keys than that does it run again on the blocking pool. A
//! worker is thus never blocked on I/O, and never for longer than a few
//! dozen in-memory lookups.
//!
//! The mode is a thread-local that [`crate::store::Store`]'s reads consult:
//! each read asks [`read_tier`], and a failed read passes its error through
//! [`note_error`], which marks the attempt as missed when RocksDB said
//! `Incomplete`. The closure of an attempt must therefore be safe to run
//! twice (a read that writes nothing and whose effects, such as a raised
//! scan floor, follow only from what it read).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::model::{QueueId, UnixMillis};

/// Where the queue's hot reads ran since open ([`crate::Queue::read_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Answered on the caller's worker from memory.
    pub near: u64,
    /// Run on the blocking pool: tried on the worker first but needing the
    /// disk or more keys than an attempt may read, or known to (data
    /// written more than moments ago, more keys than the budget).
    pub moved: u64,
}

/// The counters behind [`ReadStats`], one set per open queue.
#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    near: AtomicU64,
    moved: AtomicU64,
}

impl ReadCounters {
    /// Counts a read: answered on the worker (`true`) or on the pool.
    pub(crate) fn count(&self, answered: bool) {
        let c = if answered { &self.near } else { &self.moved };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ReadStats {
        ReadStats { near: self.near.load(Ordering::Relaxed), moved: self.moved.load(Ordering::Relaxed) }
    }
}

/// Keys one attempt may read on the worker: a claim of a few messages, or
/// a small body's envelope and chunks. More moves the read to the pool.
pub(crate) const KEY_BUDGET: u32 = 48;

/// How recent data must be for an attempt to be worth making: written in
/// the last two seconds, it is most likely still in a memtable. Older data
/// (a backlog draining after an outage) mostly is not, and an attempt that
/// misses costs its lookups twice; such reads go to the pool at once. A
/// hint only: an attempt is correct however old the data.
const FRESH_MS: u64 = 2_000;

/// Whether a message with this ID arrived recently enough, by the newest
/// ID the queue has issued (its IDs are arrival times in microseconds).
pub(crate) fn fresh_id(id: QueueId, newest: QueueId) -> bool {
    newest.as_micros().saturating_sub(id.as_micros()) <= FRESH_MS * 1_000
}

/// Whether a schedule entry due at `due` was written recently enough: due
/// times of new mail are their commit times.
pub(crate) fn fresh_due(due: UnixMillis, now: UnixMillis) -> bool {
    now.saturating_sub(due) <= FRESH_MS
}

#[derive(Clone, Copy)]
struct Attempt {
    left: u32,
    missed: bool,
}

thread_local! {
    static ATTEMPT: Cell<Option<Attempt>> = const { Cell::new(None) };
}

/// Ends the attempt however `f` returns (a panic included), so the thread
/// never stays in memory-only mode.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        ATTEMPT.set(None);
    }
}

/// Runs `f` on this thread with the store's reads limited to memory and to
/// [`KEY_BUDGET`] keys. `None` when a read needed the disk or the budget
/// ran out: run `f` again where it may block.
pub(crate) fn attempt<T>(f: impl FnOnce() -> Result<T, Error>) -> Option<Result<T, Error>> {
    ATTEMPT.set(Some(Attempt { left: KEY_BUDGET, missed: false }));
    let reset = Reset;
    let result = f();
    let missed = ATTEMPT.get().is_some_and(|a| a.missed);
    drop(reset);
    (!missed).then_some(result)
}

/// Called by each read of the store before it reads a key: `Ok(true)` when
/// the read must stay in memory (an attempt is running), `Ok(false)` for a
/// normal read, and an error when the attempt's budget is spent.
pub(crate) fn read_tier() -> Result<bool, Error> {
    let Some(mut a) = ATTEMPT.get() else { return Ok(false) };
    if a.left == 0 {
        return Err(miss());
    }
    a.left -= 1;
    ATTEMPT.set(Some(a));
    Ok(true)
}

/// Ends the running attempt as missed: the error its read returns.
pub(crate) fn miss() -> Error {
    if let Some(mut a) = ATTEMPT.get() {
        a.missed = true;
        ATTEMPT.set(Some(a));
    }
    Error::Storage("read moved off the async worker".into())
}

/// Marks the attempt as missed when RocksDB could not answer from memory.
pub(crate) fn note_error(e: &rocksdb::Error) {
    if e.kind() == rocksdb::ErrorKind::Incomplete {
        miss();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_that_spends_its_budget_is_missed_and_the_mode_ends() {
        let r = attempt(|| {
            for _ in 0..KEY_BUDGET {
                assert!(read_tier()?, "reads stay in memory during an attempt");
            }
            read_tier()
        });
        assert!(r.is_none(), "one key over the budget");
        assert!(!read_tier().unwrap(), "no attempt after it");
        let r = attempt(read_tier);
        assert!(matches!(r, Some(Ok(true))), "a read within the budget answers");
    }

    #[test]
    fn only_data_of_the_last_two_seconds_counts_as_fresh() {
        let id = |ms: u64| QueueId::from_micros(ms * 1_000);
        assert!(fresh_id(id(10_000), id(12_000)));
        assert!(!fresh_id(id(10_000), id(12_001)), "a backlog's message");
        assert!(fresh_id(id(12_000), id(10_000)), "newer than the newest seen");
        assert!(fresh_due(10_000, 12_000));
        assert!(!fresh_due(10_000, 12_001));
        assert!(fresh_due(13_000, 12_000), "due in the future");
    }

    #[test]
    fn a_panicking_attempt_leaves_the_thread_in_normal_mode() {
        let r = std::panic::catch_unwind(|| attempt(|| -> Result<(), Error> { panic!("a bug") }));
        assert!(r.is_err());
        assert!(!read_tier().unwrap());
    }
}
