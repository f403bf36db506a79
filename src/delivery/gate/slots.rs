//! The concurrency slots of one backend: a semaphore holding as many
//! permits as the adaptive limit ([`super::concurrency`]) allows. A delivery
//! runs only while it holds a [`Slot`].
//!
//! Owns the counting (in use, peak) and the shrinking without interrupting
//! anyone: permits in use when the limit falls are recorded as debt and
//! forgotten as they come back. Never decides the limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The concurrency slots of one backend: a semaphore holding `limit`
/// permits. A delivery runs only while it holds a [`Slot`], taken with
/// `try_acquire_owned` (never a count checked and then incremented).
///
/// Shrinking takes permits out of the semaphore; permits that are in use at
/// that moment are recorded as debt and forgotten as they come back, so the
/// number of slots in use converges on the new limit without interrupting a
/// delivery.
#[derive(Debug)]
pub struct Slots {
    sem: Arc<Semaphore>,
    inner: Arc<SlotsInner>,
}

#[derive(Debug)]
struct SlotsInner {
    /// The limit the permits add up to (available + in use − debt).
    limit: Mutex<SlotsLimit>,
    in_use: AtomicU32,
    peak: AtomicU32,
    /// Signalled when a slot comes back or the limit grows.
    freed: Notify,
}

#[derive(Debug)]
struct SlotsLimit {
    limit: u32,
    debt: u32,
}

/// One running delivery's slot; returned to the backend when dropped.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<SlotsInner>,
}

impl Slots {
    /// `limit` slots.
    pub fn new(limit: u32) -> Slots {
        let limit = limit.max(1);
        Slots {
            sem: Arc::new(Semaphore::new(limit as usize)),
            inner: Arc::new(SlotsInner {
                limit: Mutex::new(SlotsLimit { limit, debt: 0 }),
                in_use: AtomicU32::new(0),
                peak: AtomicU32::new(0),
                freed: Notify::new(),
            }),
        }
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.sem).try_acquire_owned().ok()?;
        let now = self.inner.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.peak.fetch_max(now, Ordering::AcqRel);
        Some(Slot { permit: Some(permit), inner: Arc::clone(&self.inner) })
    }

    /// Resolves after a slot was returned or the limit grew (a wake-up, not
    /// a reservation: try again with [`Slots::try_acquire`]).
    pub async fn freed(&self) {
        self.inner.freed.notified().await
    }

    /// Changes the number of slots.
    pub fn set_limit(&self, new: u32) {
        let new = new.max(1);
        let mut l = self.inner.limit.lock().unwrap_or_else(|e| e.into_inner());
        if new > l.limit {
            let mut grow = new - l.limit;
            let repaid = grow.min(l.debt);
            l.debt -= repaid;
            grow -= repaid;
            if grow > 0 {
                self.sem.add_permits(grow as usize);
            }
            l.limit = new;
            drop(l);
            self.inner.freed.notify_one();
        } else if new < l.limit {
            let shrink = l.limit - new;
            let taken = self.sem.forget_permits(shrink as usize) as u32;
            l.debt += shrink - taken;
            l.limit = new;
        }
    }

    /// The current number of slots.
    pub fn limit(&self) -> u32 {
        self.inner.limit.lock().unwrap_or_else(|e| e.into_inner()).limit
    }

    /// Slots in use now.
    pub fn in_use(&self) -> u32 {
        self.inner.in_use.load(Ordering::Acquire)
    }

    /// The most slots ever in use at once.
    pub fn peak(&self) -> u32 {
        self.inner.peak.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::AcqRel);
        if let Some(permit) = self.permit.take() {
            let mut l = self.inner.limit.lock().unwrap_or_else(|e| e.into_inner());
            if l.debt > 0 {
                l.debt -= 1;
                permit.forget();
                return;
            }
            drop(l);
            drop(permit);
        }
        self.inner.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_exceed_the_limit_and_shrink_through_debt() {
        let s = Slots::new(3);
        let a = s.try_acquire().unwrap();
        let b = s.try_acquire().unwrap();
        let c = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        s.set_limit(1);
        drop(a);
        drop(b);
        assert!(s.try_acquire().is_none(), "two returned slots paid the debt");
        drop(c);
        let d = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        s.set_limit(2);
        let e = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        assert_eq!((s.in_use(), s.peak(), s.limit()), (2, 3, 2));
        drop((d, e));
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn growing_while_in_debt_repays_first() {
        let s = Slots::new(4);
        let held: Vec<_> = (0..4).map(|_| s.try_acquire().unwrap()).collect();
        s.set_limit(1); // debt 3
        s.set_limit(3); // repays 2, debt 1
        drop(held);
        let got: Vec<_> = std::iter::from_fn(|| s.try_acquire()).collect();
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_the_waiter() {
        let s = Arc::new(Slots::new(1));
        let held = s.try_acquire().unwrap();
        let s2 = Arc::clone(&s);
        let waiter = tokio::spawn(async move {
            loop {
                if let Some(slot) = s2.try_acquire() {
                    return slot;
                }
                s2.freed().await;
            }
        });
        tokio::task::yield_now().await;
        drop(held);
        let slot = waiter.await.unwrap();
        assert_eq!(s.in_use(), 1);
        drop(slot);
    }
}
