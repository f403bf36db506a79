//! What the parts of delivery share, and all a backend or a recording of
//! results may touch: the queue handle, the resolver, the live settings,
//! the backend records the queue keeps (breaker position, pause), the
//! claim loop's wake-up, the task tracker every delivery runs under and
//! the shutdown token.
//!
//! A backend's dispatcher gets this narrow context, never the scheduler:
//! it can requeue mail, persist its gate's record and wake the claim loop,
//! but it cannot reach the claim loop's window, other backends or the
//! registry. Never holds a backend itself (the registry does) and never
//! decides anything.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_queue::{BackendRecord, BreakerPosition, Queue, QueueId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::gate::Feedback;
use super::nexthop::Myself;
use super::settings::LiveSettings;
use crate::clock;
use crate::config::{self, Config};
use crate::resolver::Resolver;

/// The shared part of delivery: see the module documentation.
pub struct Context {
    /// The queue every state change goes to.
    pub queue: Queue,
    /// Next-hop lookups (shared with the inbound server).
    pub resolver: Arc<dyn Resolver>,
    /// The settings of the configuration in force.
    pub settings: LiveSettings,
    /// Cancelled at shutdown: stop claiming, stop dispatching.
    pub token: CancellationToken,
    /// Every delivery and recording task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The backend records the queue keeps, by backend name.
    stored: Mutex<HashMap<String, BackendRecord>>,
    /// Wakes the claim loop (new due mail, a recovery, a flush).
    wake: Notify,
    /// When the claim loop will look at the queue next (wall clock), so a
    /// result recorded with an earlier due time can wake it.
    sleeping_until: AtomicU64,
    /// Messages recorded so far (for tests and the bench).
    recorded: AtomicU64,
    /// Backends in memory (made and not yet retired).
    live_backends: AtomicUsize,
    /// This host's listeners (wildcards expanded) and what it is under
    /// the configuration in force (its `proxy_interfaces` added).
    myself: Mutex<SelfImage>,
}

/// This host for the loop check, kept per configuration.
#[derive(Debug, Default)]
struct SelfImage {
    bound: Vec<SocketAddr>,
    machine: Vec<IpAddr>,
    made_for: Option<Arc<Config>>,
    myself: Arc<Myself>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("stored", &lock(&self.stored).len()).finish_non_exhaustive()
    }
}

/// Locks a mutex, going on past a panic that poisoned it: what it guards
/// is plain data.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// The context of one delivery run, with the backend records the queue
    /// had at start.
    pub fn new(
        queue: Queue,
        resolver: Arc<dyn Resolver>,
        settings: LiveSettings,
        token: CancellationToken,
        stored: Vec<(String, BackendRecord)>,
    ) -> Context {
        Context {
            queue,
            resolver,
            settings,
            token,
            tracker: TaskTracker::new(),
            stored: Mutex::new(stored.into_iter().collect()),
            wake: Notify::new(),
            sleeping_until: AtomicU64::new(u64::MAX),
            recorded: AtomicU64::new(0),
            live_backends: AtomicUsize::new(0),
            myself: Mutex::new(SelfImage::default()),
        }
    }

    /// The stored record of a backend, if the queue kept one.
    /// (Records are kept only while they hold mail back: see
    /// [`Context::apply_feedback`].)
    pub fn stored_record(&self, name: &str) -> Option<BackendRecord> {
        lock(&self.stored).get(name).cloned()
    }

    /// Every stored backend record (for the admin view and re-parking).
    pub fn stored(&self) -> MutexGuard<'_, HashMap<String, BackendRecord>> {
        lock(&self.stored)
    }

    /// Makes messages due now (a backend with room calls its parked mail
    /// back).
    pub async fn requeue_many(&self, ids: &[QueueId]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.queue.requeue(Some(ids), clock::unix_millis()).await {
            tracing::error!("cannot requeue {} message(s): {e}", ids.len());
        }
        self.wake.notify_one();
    }

    /// Makes one message due now (a self-probe of a quiet backend).
    pub async fn requeue(&self, id: QueueId) {
        if let Err(e) = self.queue.requeue(Some(&[id]), clock::unix_millis()).await {
            tracing::error!("{id}: cannot requeue: {e}");
        }
        self.wake.notify_one();
    }

    /// Persists a gate's record and makes its parked mail due.
    ///
    /// Only records that hold mail back (an open breaker, a pause) are
    /// kept: a closed breaker is where every new gate starts, so its record
    /// is deleted rather than written. And at most
    /// [`Settings::max_backends`](super::settings::Settings::max_backends)
    /// are kept: past that a new open breaker works in memory but is not
    /// remembered across a restart (a pause always is: it is the
    /// administrator's).
    pub async fn apply_feedback(&self, name: &str, fb: Feedback) {
        if let Some(rec) = fb.persist {
            if !holds_mail(&rec) {
                self.forget(name).await;
            } else {
                let max = self.settings.current().max_backends;
                let keep = {
                    let mut stored = lock(&self.stored);
                    let keep = stored.contains_key(name) || stored.len() < max || rec.paused_until.is_some();
                    if keep {
                        stored.insert(name.to_owned(), rec.clone());
                    }
                    keep
                };
                if !keep {
                    tracing::warn!(
                        "backend {name}: {max} backend records kept already; this one is not stored"
                    );
                } else if let Err(e) = self.queue.put_backend(name, &rec).await {
                    tracing::error!("backend {name}: cannot store breaker state: {e}");
                }
            }
        }
        if !fb.wake.is_empty() {
            let n = fb.wake.len();
            match self.queue.requeue(Some(&fb.wake), clock::unix_millis()).await {
                Ok(k) => tracing::info!("backend {name}: recovered, {k} of {n} deferred message(s) due now"),
                Err(e) => tracing::error!("backend {name}: cannot requeue deferred mail: {e}"),
            }
            self.wake.notify_one();
        }
    }

    /// Tells delivery where this host listens for mail (the SMTP
    /// listeners' bound addresses): mail routed there loops back.
    pub fn set_listening(&self, bound: &[SocketAddr]) {
        let mut m = lock(&self.myself);
        m.bound = bound.to_vec();
        m.machine = if bound.iter().any(|a| a.ip().is_unspecified()) {
            config::machine_addresses()
        } else {
            Vec::new()
        };
        m.made_for = None;
    }

    /// This host as delivery must recognise it under `config`.
    pub fn myself(&self, config: &Arc<Config>) -> Arc<Myself> {
        let mut m = lock(&self.myself);
        if !m.made_for.as_ref().is_some_and(|c| Arc::ptr_eq(c, config)) {
            m.myself = Arc::new(Myself::new(&m.bound, &m.machine, &config.proxy_interfaces()));
            m.made_for = Some(Arc::clone(config));
        }
        Arc::clone(&m.myself)
    }

    /// Forgets a backend's stored record (in memory and in the queue), if
    /// it has one.
    pub async fn forget(&self, name: &str) {
        if lock(&self.stored).remove(name).is_none() {
            return;
        }
        if let Err(e) = self.queue.delete_backend(name).await {
            tracing::error!("backend {name}: cannot delete its stored state: {e}");
        }
    }

    /// Counts a backend made (`+1`) or retired (`-1`); the number now.
    pub fn count_backends(&self, delta: isize) -> usize {
        if delta >= 0 {
            self.live_backends.fetch_add(delta as usize, Ordering::AcqRel) + delta as usize
        } else {
            let d = delta.unsigned_abs();
            self.live_backends.fetch_sub(d, Ordering::AcqRel).saturating_sub(d)
        }
    }

    /// Backends in memory now.
    pub fn live_backends(&self) -> usize {
        self.live_backends.load(Ordering::Acquire)
    }

    /// Wakes the claim loop: look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when the claim loop is woken.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// The claim loop is awake: any result recorded from now on may be due
    /// before its next sleep ends.
    pub fn mark_awake(&self) {
        self.sleeping_until.store(u64::MAX, Ordering::Release);
    }

    /// Wakes the claim loop if mail due at `due` would otherwise wait for
    /// the end of its sleep.
    pub fn wake_if_before(&self, due: sluice_queue::UnixMillis) {
        if due < self.sleeping_until.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Counts one recorded message.
    pub fn count_recorded(&self) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

/// True when a stored record says the backend holds its mail back (an
/// open breaker or a pause): its deferred mail is parked on it again at
/// start, and only such records are worth storing.
pub fn holds_mail(rec: &BackendRecord) -> bool {
    rec.breaker != BreakerPosition::Closed || rec.paused_until.is_some()
}
