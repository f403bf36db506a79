//! Queue-ID issuing and per-message serialisation.
//!
//! [`IdGen`] is the queue's one reader of the system clock; every other time
//! is passed in by the caller. [`Locks`] serialises the read-modify-write
//! operations on one message (claim, record, hold, delete, ...) so each
//! computes its batch from the state the previous one left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::model::QueueId;

/// Issues queue IDs: microseconds since the Unix epoch, strictly increasing
/// within a process (`max(now, last + 1)`), and seeded at open from the
/// largest ID the queue has ever stored, so IDs never repeat across restarts
/// even when the clock steps back.
#[derive(Debug)]
pub struct IdGen {
    last: AtomicU64,
}

impl IdGen {
    /// A generator whose first ID is greater than `floor`.
    pub fn new(floor: QueueId) -> Self {
        IdGen { last: AtomicU64::new(floor.as_micros()) }
    }

    /// The next ID.
    pub fn next(&self) -> QueueId {
        let now = wall_clock_micros();
        let prev = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last.saturating_add(1))))
            // The closure always returns Some, so this is the Ok value.
            .unwrap_or_else(|last| last);
        QueueId::from_micros(now.max(prev.saturating_add(1)))
    }

    /// The last ID issued (or the seed).
    pub fn last(&self) -> QueueId {
        QueueId::from_micros(self.last.load(Ordering::Acquire))
    }
}

/// The system clock in microseconds. The queue reads the wall clock here
/// and nowhere else (the writer thread's idle sync times only its own
/// wait, on the monotonic clock): a queue ID *is* a timestamp, and it must
/// be taken when the message starts, not passed down through every caller.
#[allow(clippy::disallowed_methods)]
fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lock stripes over queue IDs. An operation on some messages takes the
/// stripes of their IDs (in stripe order, so two multi-message operations
/// never deadlock) for its whole read → compute → synced write, and the
/// write is awaited in a spawned task holding the guards, so even a
/// cancelled caller cannot let a second operation read a state that a
/// queued write is about to change.
///
/// Striping bounds memory (no per-message lock objects) at the cost of
/// occasionally serialising two unrelated messages that share a stripe.
pub(crate) struct Locks {
    stripes: Vec<Arc<Mutex<()>>>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("stripes", &self.stripes.len()).finish()
    }
}

/// Number of stripes: far more than the concurrent deliveries of one host,
/// so contention between unrelated messages stays rare.
const STRIPES: usize = 1024;

/// Guards of the stripes an operation holds.
pub(crate) type Held = Vec<OwnedMutexGuard<()>>;

impl Locks {
    pub(crate) fn new() -> Self {
        Locks { stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect() }
    }

    fn stripe(id: QueueId) -> usize {
        // IDs are consecutive microseconds; a multiplicative hash spreads
        // bursts of neighbouring IDs over all stripes.
        (id.as_micros().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % STRIPES
    }

    /// Locks the stripes of `ids`, in stripe order.
    pub(crate) async fn lock(&self, ids: impl IntoIterator<Item = QueueId>) -> Held {
        let mut idx: Vec<usize> = ids.into_iter().map(Self::stripe).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut held = Vec::with_capacity(idx.len());
        for i in idx {
            held.push(Arc::clone(&self.stripes[i]).lock_owned().await);
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_and_respect_the_seed() {
        let far_future = QueueId::from_micros(wall_clock_micros() + 3_600_000_000);
        let g = IdGen::new(far_future);
        let mut prev = g.next();
        assert!(prev > far_future, "a clock behind the seed must not repeat IDs");
        for _ in 0..10_000 {
            let id = g.next();
            assert!(id > prev);
            prev = id;
        }
        assert_eq!(g.last(), prev);
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = Arc::new(IdGen::new(QueueId::from_micros(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..5_000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<QueueId> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[tokio::test]
    async fn stripes_are_taken_once_each() {
        let locks = Locks::new();
        let id = QueueId::from_micros(42);
        let held = locks.lock([id, id, QueueId::from_micros(43)]).await;
        assert!(held.len() <= 2);
        assert!(locks.stripes[Locks::stripe(id)].try_lock().is_err());
        drop(held);
        assert!(locks.stripes[Locks::stripe(id)].try_lock().is_ok());
    }
}
