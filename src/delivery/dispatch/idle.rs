//! A backend's idle side: closing idle connections (stale ones, those
//! past the limit, all of them at the end) and retiring a backend that has
//! had nothing to do for long, so backends and their records do not grow
//! with the destinations senders choose. Part of the dispatcher
//! (`dispatch.rs`); never decides a delivery.

use std::sync::Arc;
use std::time::Duration;

use super::Backend;
use crate::clock;
use crate::delivery::client::Connection;
use crate::delivery::context::lock;

/// How long an idle connection stays open in fleet mode once no job
/// waits for it, holding its lease (up to twice as long, see
/// `close_quiet`): a message arriving meanwhile takes it (often without a
/// Redis round trip, see `gate::fleet`), instead of opening a connection
/// and asking the fleet for a slot, which at a few thousand messages a
/// second arriving over SMTP happened for most deliveries (the queue
/// empties between arrivals). One poll interval of a host waiting for a
/// fleet slot ([`crate::delivery::gate::fleet::POLL`]): a slot another
/// host needs is held a few of its polls at most. Not a setting, for the
/// same reason.
pub const FLEET_LINGER: Duration = crate::delivery::gate::fleet::POLL;

impl Backend {
    /// Retires a backend idle for `idle` (no job waiting since), if it
    /// may go: nothing in flight, not paused, no idle connection left, and
    /// idle past `backend_idle_expiry` (what its gate learned, even an open
    /// breaker, is then forgotten, in the queue too), or, while more than
    /// `max_backends` are in memory, past `crowded_idle_expiry` (its record
    /// is kept, so the breaker comes back with the next mail). Parked mail
    /// is dropped from memory either way: it waits on disk for its retry
    /// time, and nothing is lost. (A backend whose parked mail is still
    /// queued is not idle that long: its probes bring that mail back as
    /// jobs.) A retired backend is made again by the next mail for its
    /// next hop. True if retired.
    ///
    /// Destinations are chosen by senders (a bounce goes to the sender's
    /// domain), so this is what keeps their number in memory and in the
    /// queue from growing with them.
    pub(super) async fn retire(self: &Arc<Self>, idle: Duration) -> bool {
        let settings = self.ctx.settings.current();
        let snap = self.gate.snapshot();
        if snap.in_flight > 0 || snap.paused_until.is_some() {
            return false;
        }
        let expired = idle >= settings.backend_idle_expiry;
        let crowded =
            self.ctx.live_backends() > settings.max_backends && idle >= settings.crowded_idle_expiry;
        if !(expired || crowded) {
            return false;
        }
        self.close_idle(true).await;
        // Closed, it refuses jobs; the registry forgets it and makes a new
        // backend for the next mail to this next hop.
        if !lock(&self.pool).is_empty() || !self.close_if_empty() {
            return false;
        }
        self.ctx.count_backends(-1);
        if expired {
            self.ctx.forget(&self.name).await;
        }
        tracing::debug!("backend {}: idle, retired", self.name);
        true
    }

    /// True once the backend retired: it takes no more jobs.
    pub fn is_closed(&self) -> bool {
        lock(&self.jobs).closed
    }

    /// Marks the backend closed if it has no jobs (under the jobs lock, so
    /// a job pushed after it is refused and goes to a new backend).
    fn close_if_empty(&self) -> bool {
        let mut jobs = lock(&self.jobs);
        if jobs.queue.is_empty() {
            jobs.closed = true;
            true
        } else {
            false
        }
    }

    /// Closes idle connections: all of them (`all`), those beyond what the
    /// limit leaves next to the busy ones (after the limit fell), and stale
    /// ones (idle longer than the cache time, or older than the reuse time).
    ///
    /// The open connections the backend sees are the busy ones plus the
    /// idle ones plus those being closed. A stale connection is closed
    /// holding a spare slot for its `QUIT`, so that sum stays within the
    /// limit; without a spare slot it waits (it fits within the limit as it
    /// is). Connections beyond the limit are dropped at once. In fleet
    /// mode, idle connections beyond the leases the gate holds for them
    /// (the fleet wants one back) are closed with `QUIT` before the lease
    /// goes back: the backend has then counted the connection closed before
    /// another host may open one in its place.
    pub(super) async fn close_idle(&self, all: bool) {
        let settings = self.gate.settings();
        let (excess, unleased, stale): (Vec<Connection>, Vec<Connection>, Vec<Connection>) = {
            let mut pool = lock(&self.pool);
            if all {
                (pool.drain(..).collect(), Vec::new(), Vec::new())
            } else {
                let snap = self.gate.snapshot();
                let room = snap.limit.saturating_sub(snap.in_flight) as usize;
                // Oldest first in the pool; keep the most recently used.
                let over = pool.len().saturating_sub(room);
                let excess: Vec<Connection> = pool.drain(..over).collect();
                let counted = self.gate.idle_counted().unwrap_or(usize::MAX);
                let beyond = pool.len().saturating_sub(counted);
                let unleased: Vec<Connection> = pool.drain(..beyond).collect();
                let now = clock::instant();
                let (old, fresh): (Vec<Connection>, Vec<Connection>) = pool.drain(..).partition(|s| {
                    now.saturating_duration_since(s.idle_since()) >= settings.idle_time
                        || now.saturating_duration_since(s.opened()) >= settings.reuse_time
                });
                *pool = fresh;
                (excess, unleased, old)
            }
        };
        drop(excess);
        futures::future::join_all(unleased.into_iter().map(Connection::quit)).await;
        for s in stale {
            match self.gate.spare_slot() {
                Some(slot) => {
                    s.quit().await;
                    drop(slot);
                }
                None => lock(&self.pool).insert(0, s),
            }
        }
        // Under the pool's lock, as `keep` adds to both: what the gate holds
        // for idle connections now closed goes back.
        let pool = lock(&self.pool);
        self.gate.idle_left(pool.len());
    }

    /// In fleet mode, with no job waiting: the idle connections that have
    /// lingered [`FLEET_LINGER`] close now (with `QUIT`, as above), so
    /// their leases go back to the fleet rather than wait out the cache
    /// time while other hosts may need the slots. The local gate keeps its
    /// idle connections for the cache time, as Postfix's connection cache
    /// does. In fleet mode, returns when to look again: when the next
    /// lingering connection is due, else, while deliveries run, a linger
    /// from now (a connection kept meanwhile wakes nobody, so it lingers
    /// up to twice as long; a wake-up per delivery cost more than the
    /// linger saves); `None` when nothing lingers and nothing runs (a
    /// quiet backend is not woken twenty times a second).
    pub(super) async fn close_quiet(&self) -> Option<Duration> {
        // Only idle connections the gate counts hold leases (fleet mode).
        self.gate.idle_counted()?;
        if lock(&self.pool).is_empty() && self.gate.snapshot().in_flight == 0 {
            return None;
        }
        let now = clock::instant();
        let idle_for = |s: &Connection| now.saturating_duration_since(s.idle_since());
        let (done, next) = {
            let mut pool = lock(&self.pool);
            let (done, lingering): (Vec<Connection>, Vec<Connection>) =
                pool.drain(..).partition(|s| idle_for(s) >= FLEET_LINGER);
            let next = lingering.iter().map(|s| FLEET_LINGER - idle_for(s)).min().unwrap_or(FLEET_LINGER);
            *pool = lingering;
            (done, next)
        };
        if !done.is_empty() {
            futures::future::join_all(done.into_iter().map(Connection::quit)).await;
            let pool = lock(&self.pool);
            self.gate.idle_left(pool.len());
        }
        Some(next)
    }
}
