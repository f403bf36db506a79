//! Connections to one directory server, reused between lookups: at most
//! `sluice_table_connection_limit` at once (a lookup waits for a free one
//! within its timeout), idle ones closed after the table's idle time
//! (Postfix's `idle_interval`, 60 s).
//!
//! Owns only the bookkeeping. A connection goes back to the pool only
//! when its lookup ended cleanly ([`Slot::release`]); one whose lookup
//! failed or was cancelled is dropped (closed), so a broken connection is
//! never handed to the next lookup.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::clock;

/// The connections of one server.
#[derive(Debug)]
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<(C, Instant)>>,
    slots: Semaphore,
    idle_time: Duration,
}

/// The right to use one connection: an idle one to reuse, or room to open
/// a new one.
#[derive(Debug)]
pub(crate) struct Slot<'a, C> {
    pool: &'a Pool<C>,
    idle: Option<C>,
    _permit: SemaphorePermit<'a>,
}

impl<C> Pool<C> {
    pub fn new(size: usize, idle_time: Duration) -> Pool<C> {
        Pool { idle: Mutex::new(Vec::new()), slots: Semaphore::new(size.max(1)), idle_time }
    }

    /// Waits for a free slot (the caller bounds the wait with its
    /// timeout), with the most recently used idle connection in it, if any
    /// is younger than the idle time.
    pub async fn slot(&self) -> Slot<'_, C> {
        let permit = match self.slots.acquire().await {
            Ok(p) => p,
            // The semaphore is never closed.
            Err(_) => unreachable!("directory pool semaphore closed"),
        };
        let now = clock::instant();
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // Stale connections are dropped here, outside any lookup: the
            // server has most likely closed them already.
            idle.retain(|(_, at)| now.duration_since(*at) < self.idle_time);
            idle.pop().map(|(c, _)| c)
        };
        Slot { pool: self, idle, _permit: permit }
    }

    /// How many idle connections are kept.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<C> Slot<'_, C> {
    /// The idle connection to reuse, if there was one.
    pub fn take(&mut self) -> Option<C> {
        self.idle.take()
    }

    /// Gives a healthy connection back for the next lookup.
    pub fn release(self, conn: C) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push((conn, clock::instant()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn connections_are_reused_until_idle_too_long() {
        let pool: Pool<u32> = Pool::new(2, Duration::from_secs(60));
        let mut s = pool.slot().await;
        assert_eq!(s.take(), None);
        s.release(7);
        let mut s = pool.slot().await;
        assert_eq!(s.take(), Some(7));
        s.release(7);
        tokio::time::advance(Duration::from_secs(61)).await;
        let mut s = pool.slot().await;
        assert_eq!(s.take(), None, "an idle connection past the idle time is closed");
        drop(s);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_slot_closes_its_connection_and_frees_room() {
        let pool: Pool<u32> = Pool::new(1, Duration::from_secs(60));
        let s = pool.slot().await;
        s.release(1);
        let mut s = pool.slot().await;
        assert_eq!(s.take(), Some(1));
        drop(s);
        let waited = tokio::time::timeout(Duration::from_secs(1), pool.slot()).await;
        let mut s = waited.expect("the slot was freed");
        assert_eq!(s.take(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_wait_for_a_free_connection() {
        let pool: Pool<u32> = Pool::new(1, Duration::from_secs(60));
        let held = pool.slot().await;
        assert!(tokio::time::timeout(Duration::from_secs(1), pool.slot()).await.is_err());
        held.release(3);
        let mut s = pool.slot().await;
        assert_eq!(s.take(), Some(3));
    }
}
