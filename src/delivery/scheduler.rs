//! The scheduler: takes due mail from the queue, hands it to backends, and
//! records what became of it.
//!
//! The loop claims due messages in bounded batches (never more than
//! `qmgr_message_active_limit` in memory), routes every recipient that is
//! not final through the configuration, groups them per backend (transport
//! and next hop) in deliveries of at most `<transport>_destination_recipient_limit`
//! recipients, and gives each group to its backend. When every group of a
//! message has a result, the message is recorded once: delivered and
//! bounced recipients are final, deferred ones retry after an exponential
//! backoff with jitter, postponed ones (open breaker, paused backend, a
//! backend with too much waiting already) wait without counting an attempt.
//! Recipients past `maximal_queue_lifetime` bounce. Bounces, delay warnings
//! and success notices are queued as new mail before the result is
//! recorded, so a crash can repeat a notice but never lose one.
//!
//! The loop sleeps until the next due time, a new message, a flush, or a
//! backend recovering (which makes its parked mail due). At start, the
//! deferred mail of backends stored as open or paused is parked on them
//! again (what was parked lived in the previous process's memory). Never
//! speaks SMTP and never opens connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_queue::{
    BackendRecord, Envelope, Outcome, Queue, QueueId, QueuedMessage, RcptState, Recorded, UnixMillis,
};
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::{self, Backoff};
use super::bounce::{self, Action, Kind, ReportRcpt};
use super::client::Verdict;
use super::dispatch::{Backend, Job, PushError, spread};
use super::gate::{Feedback, Snapshot, position_name};
use super::result_line::{Agent, LogStatus, ResultLine, active_line};
use super::settings::{BackendSettings, Settings};
use super::{BackendId, UnknownBackend};
use crate::clock;
use crate::config::{Config, Protocol, Route};
use crate::reply::Status;
use crate::resolver::Resolver;
use crate::shutdown::Stage;

/// The longest mail for a backend with a full in-memory queue is left on
/// disk before it is looked at again. It is also parked on the backend, which
/// calls it back as soon as its queue has room, so this is only the safety
/// net (and the pace for mail beyond what a gate parks).
const MAX_POSTPONE_FULL: Duration = Duration::from_secs(60);

/// The longest the loop sleeps without looking at the queue again (a
/// safety net; new mail and recoveries wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one recipient's turn came to.
#[derive(Debug, Clone)]
pub enum Done {
    /// The backend was asked (or could not be reached).
    Attempted {
        verdict: Verdict,
        dsn: Status,
        text: String,
        /// The backend's reply, for the DSN's `Diagnostic-Code`.
        diagnostic: Option<String>,
        /// `host[addr]` that answered, for `Remote-MTA`.
        remote: Option<String>,
        /// The backend took the DSN request itself (it offered DSN).
        dsn_passed: bool,
        /// Delivered by LMTP: a final delivery ("delivered", not "relayed").
        lmtp: bool,
        /// Deferred because of the backend's trouble (not the mailbox's):
        /// park the message for an early wake-up.
        backend_trouble: bool,
    },
    /// Not attempted: wait until then; not an attempt. `shown`: the reason
    /// is the administrator's business (an open breaker, a paused backend)
    /// and is recorded as the recipient's reason (`mailq`), not just logged.
    Postponed { until: UnixMillis, reason: String, park: bool, shown: bool },
    /// Nothing to record (the message vanished, or shutdown cut it off).
    Abandoned,
}

impl Done {
    /// The result under `soft_bounce` (when `soft`): a bounce becomes a
    /// deferral with a 4.Y.Z status, as Postfix's safety net has it.
    pub fn softened(mut self, soft: bool) -> Done {
        if soft
            && let Done::Attempted { verdict, dsn, .. } = &mut self
            && *verdict == Verdict::Bounced
        {
            *verdict = Verdict::Deferred;
            *dsn = dsn.softened();
        }
        self
    }
}

/// One recipient's result.
#[derive(Debug, Clone)]
pub struct RcptDone {
    pub index: usize,
    pub done: Done,
}

/// A claimed message while its deliveries run. Holds one slot of the
/// in-memory window until it is recorded.
#[derive(Debug)]
pub struct InFlight {
    msg: QueuedMessage,
    claimed_at: Instant,
    claimed_ms: UnixMillis,
    body: OnceCell<Arc<Vec<u8>>>,
    state: Mutex<Pending>,
    shared: Arc<Shared>,
    _window: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct Pending {
    /// Jobs not yet completed.
    remaining: usize,
    results: Vec<RcptDone>,
    /// Backends to park the message on if it stays queued.
    park_on: Vec<Arc<Backend>>,
}

impl InFlight {
    pub fn id(&self) -> QueueId {
        self.msg.id
    }

    /// Recipient `index`'s result line (`to=<...>, relay=..., delay=...`),
    /// with the first part of `delays=` (arrival to claim) filled in; the
    /// caller sets the other three when it has them.
    pub fn result_line<'a>(
        &'a self,
        index: usize,
        relay: &'a str,
        dsn: Status,
        status: LogStatus,
        text: &'a str,
    ) -> ResultLine<'a> {
        let env = self.envelope();
        let r = &env.recipients[index];
        let now = clock::unix_millis();
        ResultLine {
            queue_id: self.id(),
            to: &r.address,
            orcpt: r.orcpt.as_deref(),
            relay,
            delay: Duration::from_millis(now.saturating_sub(env.arrival)),
            delays: [
                Duration::from_millis(self.claimed_ms.saturating_sub(env.arrival)),
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            ],
            dsn,
            status,
            text,
        }
    }

    pub fn envelope(&self) -> &Envelope {
        &self.msg.envelope
    }

    pub fn claimed_at(&self) -> Instant {
        self.claimed_at
    }

    pub fn claimed_ms(&self) -> UnixMillis {
        self.claimed_ms
    }

    /// The body, read from the queue once and shared by this message's
    /// deliveries; dropped with the message.
    pub async fn body(&self, queue: &Queue) -> Result<Arc<Vec<u8>>, sluice_queue::Error> {
        self.body.get_or_try_init(|| async { queue.body(self.msg.id).await.map(Arc::new) }).await.cloned()
    }

    /// A job (or the scheduler itself) reports results. The last one to do
    /// so records the message.
    pub fn complete(self: &Arc<Self>, backend: Option<Arc<Backend>>, done: Vec<RcptDone>) {
        let mut st = lock(&self.state);
        let park = done.iter().any(|d| match &d.done {
            Done::Attempted { backend_trouble, .. } => *backend_trouble,
            Done::Postponed { park, .. } => *park,
            Done::Abandoned => false,
        });
        if park && let Some(b) = backend {
            st.park_on.push(b);
        }
        st.results.extend(done);
        st.remaining = st.remaining.saturating_sub(1);
        if st.remaining == 0 {
            drop(st);
            let me = Arc::clone(self);
            self.shared.tracker.spawn(async move { me.finish().await });
        }
    }

    async fn finish(self: Arc<Self>) {
        let (results, park_on) = {
            let mut st = lock(&self.state);
            (std::mem::take(&mut st.results), std::mem::take(&mut st.park_on))
        };
        let settings = self.shared.settings();
        record(&self.shared, &self, results, park_on, &settings).await;
    }
}

/// The scheduler's shared state: the queue, the live configuration, the
/// backends, the window of messages in memory.
pub struct Shared {
    pub queue: Queue,
    config: Arc<ArcSwap<Config>>,
    pub resolver: Arc<dyn Resolver>,
    derived: Mutex<Derived>,
    backends: Mutex<HashMap<BackendId, Arc<Backend>>>,
    stored: Mutex<HashMap<String, BackendRecord>>,
    wake: Notify,
    window: Arc<Semaphore>,
    pub token: CancellationToken,
    pub tracker: TaskTracker,
    /// Messages recorded so far (for tests and the bench).
    recorded: AtomicU64,
    /// Limits set by the caller rather than the configuration.
    tuning: Tuning,
    /// When the claim loop will look at the queue next (wall clock), so a
    /// result recorded with an earlier due time can wake it.
    sleeping_until: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("backends", &lock(&self.backends).len()).finish()
    }
}

/// In-memory limits that have no configuration parameter (the window
/// itself is `qmgr_message_active_limit`); `None` keeps the default. Tests
/// and benches shrink them to reach the overflow paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Deliveries one backend may hold in memory (default a quarter of the
    /// active limit).
    pub backend_queue_limit: Option<usize>,
}

impl Tuning {
    fn apply(&self, mut s: Settings) -> Settings {
        if let Some(n) = self.backend_queue_limit {
            s.backend_queue_limit = n.max(1);
        }
        s
    }
}

/// Settings derived from one configuration.
#[derive(Debug)]
struct Derived {
    from: Arc<Config>,
    settings: Arc<Settings>,
    transports: HashMap<String, Arc<BackendSettings>>,
}

impl Shared {
    /// The settings of the configuration in force, re-derived after a reload.
    pub fn settings(&self) -> Arc<Settings> {
        let config = self.config.load_full();
        let mut d = lock(&self.derived);
        if !Arc::ptr_eq(&d.from, &config) {
            *d = Derived {
                settings: Arc::new(self.tuning.apply(Settings::from_config(&config))),
                from: config,
                transports: HashMap::new(),
            };
        }
        Arc::clone(&d.settings)
    }

    fn backend_settings(
        &self,
        config: &Arc<Config>,
        transport: &str,
        protocol: Protocol,
    ) -> Arc<BackendSettings> {
        let mut d = lock(&self.derived);
        if !Arc::ptr_eq(&d.from, config) {
            *d = Derived {
                settings: Arc::new(self.tuning.apply(Settings::from_config(config))),
                from: Arc::clone(config),
                transports: HashMap::new(),
            };
        }
        if let Some(s) = d.transports.get(transport) {
            return Arc::clone(s);
        }
        let s = Arc::new(BackendSettings::from_config(config, transport, protocol));
        d.transports.insert(transport.to_owned(), Arc::clone(&s));
        s
    }

    /// The stored record of a backend, if the queue kept one.
    pub fn stored_record(&self, name: &str) -> Option<BackendRecord> {
        lock(&self.stored).get(name).cloned()
    }

    /// The backend for an id, created (and its dispatcher started) on first
    /// use; its settings follow the configuration.
    fn backend(self: &Arc<Self>, id: &BackendId, settings: Arc<BackendSettings>) -> Arc<Backend> {
        let mut map = lock(&self.backends);
        if let Some(b) = map.get(id) {
            b.gate().reconfigure(settings);
            return Arc::clone(b);
        }
        let b = Arc::new(Backend::new(id.clone(), settings, Arc::clone(self), clock::unix_millis()));
        b.start();
        map.insert(id.clone(), Arc::clone(&b));
        b
    }

    /// Removes an idle backend from the map if no job slipped in.
    pub fn retire(&self, b: &Arc<Backend>) -> bool {
        let mut map = lock(&self.backends);
        if b.close_if_empty() {
            if map.get(b.id()).is_some_and(|x| Arc::ptr_eq(x, b)) {
                map.remove(b.id());
            }
            true
        } else {
            false
        }
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
    pub async fn apply_feedback(&self, name: &str, fb: Feedback) {
        if let Some(rec) = fb.persist {
            lock(&self.stored).insert(name.to_owned(), rec.clone());
            if let Err(e) = self.queue.put_backend(name, &rec).await {
                tracing::error!("backend {name}: cannot store breaker state: {e}");
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
}

/// The handle `start` returns: what the admin side may see and do.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A backend as listed: its gate's snapshot plus the jobs waiting for it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub snapshot: Snapshot,
    /// Deliveries waiting in memory for the gate.
    pub queued: usize,
}

impl BackendStatus {
    /// `closed`, `open`, `half-open`.
    pub fn breaker_name(&self) -> &'static str {
        position_name(self.snapshot.breaker)
    }
}

impl Handle {
    /// Every backend: running ones, and ones the queue remembers (an open
    /// breaker or a pause from before a restart) that no mail has needed yet.
    pub fn list(&self) -> Vec<BackendStatus> {
        let mut out: Vec<BackendStatus> = lock(&self.shared.backends)
            .values()
            .map(|b| BackendStatus { snapshot: b.gate().snapshot(), queued: b.queued() })
            .collect();
        for (name, rec) in lock(&self.shared.stored).iter() {
            if !out.iter().any(|s| &s.snapshot.name == name) {
                out.push(BackendStatus {
                    snapshot: Snapshot {
                        name: name.clone(),
                        breaker: rec.breaker,
                        paused_until: rec.paused_until,
                        in_flight: 0,
                        limit: 0,
                        max_limit: 0,
                        peak: 0,
                        rate: 0.0,
                        latency: None,
                        best_latency: None,
                        last_error: rec.last_error.clone(),
                        probe_at: rec.probe_at,
                        parked: 0,
                    },
                    queued: 0,
                });
            }
        }
        out.sort_by(|a, b| a.snapshot.name.cmp(&b.snapshot.name));
        out
    }

    fn find(&self, name: &str) -> Option<Arc<Backend>> {
        lock(&self.shared.backends).values().find(|b| b.name() == name).cloned()
    }

    /// Pauses a backend (`sluice backend pause NAME`) until `until` or until
    /// resumed. Its mail is postponed, not attempted. The pause is stored.
    pub fn pause(&self, name: &str, until: Option<UnixMillis>) -> Result<(), UnknownBackend> {
        if let Some(b) = self.find(name) {
            let fb = b.gate().pause(until);
            let shared = Arc::clone(&self.shared);
            let name = name.to_owned();
            tokio::spawn(async move { shared.apply_feedback(&name, fb).await });
            return Ok(());
        }
        self.update_stored(name, |r| r.paused_until = Some(until.unwrap_or(u64::MAX)))
    }

    /// Ends a pause; the backend's parked mail is due now.
    pub fn resume(&self, name: &str) -> Result<(), UnknownBackend> {
        if let Some(b) = self.find(name) {
            let fb = b.gate().resume();
            let shared = Arc::clone(&self.shared);
            let name = name.to_owned();
            tokio::spawn(async move { shared.apply_feedback(&name, fb).await });
            self.wake();
            return Ok(());
        }
        self.update_stored(name, |r| r.paused_until = None)
    }

    fn update_stored(&self, name: &str, f: impl FnOnce(&mut BackendRecord)) -> Result<(), UnknownBackend> {
        let rec = {
            let mut stored = lock(&self.shared.stored);
            let Some(rec) = stored.get_mut(name) else {
                return Err(UnknownBackend { name: name.to_owned() });
            };
            f(rec);
            rec.clone()
        };
        let shared = Arc::clone(&self.shared);
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(e) = shared.queue.put_backend(&name, &rec).await {
                tracing::error!("backend {name}: cannot store state: {e}");
            }
        });
        Ok(())
    }

    /// Looks at the queue now (after a flush, a release, a reload).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Messages recorded since start.
    pub fn recorded(&self) -> u64 {
        self.shared.recorded.load(Ordering::Relaxed)
    }
}

/// Starts the scheduler loop under `stage`.
pub(crate) fn spawn(
    queue: Queue,
    config: Arc<ArcSwap<Config>>,
    resolver: Arc<dyn Resolver>,
    stage: Stage,
    stored: Vec<(String, BackendRecord)>,
    tuning: Tuning,
) -> Handle {
    let cfg = config.load_full();
    let settings = Arc::new(tuning.apply(Settings::from_config(&cfg)));
    let shared = Arc::new(Shared {
        queue,
        config,
        resolver,
        window: Arc::new(Semaphore::new(settings.active_limit)),
        derived: Mutex::new(Derived { from: cfg, settings, transports: HashMap::new() }),
        backends: Mutex::new(HashMap::new()),
        stored: Mutex::new(stored.into_iter().collect()),
        wake: Notify::new(),
        token: stage.token().child_token(),
        tracker: TaskTracker::new(),
        recorded: AtomicU64::new(0),
        tuning,
        sleeping_until: AtomicU64::new(u64::MAX),
    });
    for (name, rec) in lock(&shared.stored).iter() {
        if rec.breaker != sluice_queue::BreakerPosition::Closed || rec.paused_until.is_some() {
            tracing::info!(
                "backend {name}: restored {}{}",
                position_name(rec.breaker),
                if rec.paused_until.is_some() { ", paused" } else { "" }
            );
        }
    }
    let guard = stage.guard();
    let s = Arc::clone(&shared);
    shared.tracker.spawn(async move { repark(&s).await });
    let s = Arc::clone(&shared);
    tokio::spawn(async move {
        run(&s).await;
        // Stop: deliveries in progress get the grace period to finish and
        // record; whatever is still running after it stays in flight in the
        // queue and is due again at the next start.
        s.tracker.close();
        let grace = s.settings().shutdown_grace;
        if tokio::time::timeout(grace, s.tracker.wait()).await.is_err() {
            tracing::warn!("delivery: grace period over, leaving unfinished deliveries to the next start");
        }
        // Backends point back at the shared state: break the cycle so the
        // queue handle they hold is released.
        lock(&s.backends).clear();
        drop(guard);
    });
    Handle { shared }
}

/// Envelopes read per page while re-parking after a start.
const REPARK_PAGE: usize = 1000;

/// After a start, parks again the deferred mail of backends the queue
/// remembers as not delivering (an open breaker, a pause): what they had
/// parked in memory died with the previous process, and without it the
/// breaker's probe has no message to send and its closing (or the resume)
/// nothing to wake, so the backlog would wait out its backoff however soon
/// the mailbox server came back. Pages through the deferred messages
/// (bounded memory), and stops once every such gate is full.
async fn repark(shared: &Arc<Shared>) {
    let names: Vec<String> = lock(&shared.stored)
        .iter()
        .filter(|(_, r)| r.breaker != sluice_queue::BreakerPosition::Closed || r.paused_until.is_some())
        .map(|(n, _)| n.clone())
        .collect();
    if names.is_empty() {
        return;
    }
    let mut after = None;
    let mut parked = 0usize;
    loop {
        if shared.token.is_cancelled() {
            return;
        }
        let filter = sluice_queue::Filter {
            held: Some(false),
            deferred_only: true,
            after,
            limit: Some(REPARK_PAGE),
            ..sluice_queue::Filter::default()
        };
        let page = match shared.queue.list(filter).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot read the queue to restore parked mail: {e}");
                return;
            }
        };
        let Some((last, _, _)) = page.last() else { break };
        after = Some(*last);
        let config = shared.config.load_full();
        let mut full = true;
        for (id, env, _) in &page {
            for r in env.recipients.iter().filter(|r| !r.state.is_final()) {
                let Ok(Route::Deliver { transport, protocol, nexthop }) = config.route(&r.address) else {
                    continue;
                };
                let bid = BackendId { transport, protocol, nexthop };
                if names.contains(&bid.to_string()) {
                    let bs = shared.backend_settings(&config, &bid.transport, protocol);
                    let b = shared.backend(&bid, bs);
                    if b.gate().park(*id) {
                        parked += 1;
                    }
                    break;
                }
            }
        }
        for name in &names {
            let b = lock(&shared.backends).values().find(|b| b.name() == name).cloned();
            full &= b.is_some_and(|b| b.gate().snapshot().parked >= super::gate::PARK_LIMIT);
        }
        if full || page.len() < REPARK_PAGE {
            break;
        }
    }
    if parked > 0 {
        tracing::info!("{parked} deferred message(s) parked again on backends restored open or paused");
    }
}

/// The claim loop.
async fn run(shared: &Arc<Shared>) {
    let token = shared.token.clone();
    loop {
        if token.is_cancelled() {
            return;
        }
        // Room in the window first: never more messages in memory than the
        // active limit.
        let first = tokio::select! {
            p = Arc::clone(&shared.window).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = token.cancelled() => return,
        };
        let settings = shared.settings();
        let mut permits = vec![first];
        while permits.len() < settings.claim_batch {
            match Arc::clone(&shared.window).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // Listen for new mail before looking, so a message committed between
        // the look and the sleep still wakes us.
        let changed = shared.queue.changed();
        tokio::pin!(changed);
        let fired = futures::poll!(&mut changed).is_ready();
        // Awake: any result recorded from now on may be due before the
        // next sleep ends, so it wakes us (see `record`).
        shared.sleeping_until.store(u64::MAX, Ordering::Release);
        let now = clock::unix_millis();
        let claimed = match shared.queue.claim_due(now, permits.len()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot read the queue schedule: {e}");
                drop(permits);
                if !fired {
                    sleep_or_wake(shared, Some(now + 5_000), changed).await;
                }
                continue;
            }
        };
        if claimed.is_empty() {
            drop(permits);
            let next = shared.queue.next_due().await.unwrap_or(None);
            if !fired {
                sleep_or_wake(shared, next, changed).await;
            }
            continue;
        }
        let config = shared.config.load_full();
        for msg in claimed {
            let Some(permit) = permits.pop() else { break };
            plan(shared, &config, &settings, msg, permit, now);
        }
    }
}

/// Sleeps until `next` (capped), a queue change, a wake-up, or shutdown.
async fn sleep_or_wake(
    shared: &Shared,
    next: Option<UnixMillis>,
    changed: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) {
    let now = clock::unix_millis();
    let wait = next.map(|t| clock::until(now, t)).unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
    if wait.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = changed => {}
        _ = shared.wake.notified() => {}
        _ = shared.token.cancelled() => {}
    }
}

/// Routes a claimed message's open recipients and hands them out.
fn plan(
    shared: &Arc<Shared>,
    config: &Arc<Config>,
    settings: &Settings,
    msg: QueuedMessage,
    permit: OwnedSemaphorePermit,
    now: UnixMillis,
) {
    // Postfix's qmgr logs a message's sender, size and recipient count as
    // the message enters its active queue; log tools (pflogsumm) take the
    // message size and sender from this line. Once per message: a retry of
    // a message some recipient was already tried for is not logged again.
    if msg.envelope.recipients.iter().all(|r| r.attempts == 0 && !r.state.is_final()) {
        tracing::info!(target: "qmgr", "{}", active_line(msg.id, &msg.envelope));
    }
    let mut immediate = Vec::new();
    let mut groups: Vec<(BackendId, Arc<BackendSettings>, Vec<usize>)> = Vec::new();
    for (i, r) in msg.envelope.recipients.iter().enumerate() {
        if r.state.is_final() {
            continue;
        }
        match config.route(&r.address) {
            Ok(Route::Deliver { transport, protocol, nexthop }) => {
                let id = BackendId { transport, protocol, nexthop };
                match groups.iter_mut().find(|(g, _, _)| *g == id) {
                    Some((_, _, v)) => v.push(i),
                    None => {
                        let bs = shared.backend_settings(config, &id.transport, protocol);
                        groups.push((id, bs, vec![i]));
                    }
                }
            }
            Ok(Route::Error { text }) => {
                let (dsn, text) = split_status(&text, Status(5, 0, 0));
                immediate.push((i, Agent::Error, Verdict::Bounced, dsn, text));
            }
            Ok(Route::Discard { text }) => immediate.push((
                i,
                Agent::Discard,
                Verdict::Sent,
                Status(2, 0, 0),
                if text.is_empty() { "discarded".into() } else { text },
            )),
            Err(e) => immediate.push((
                i,
                Agent::Qmgr,
                Verdict::Deferred,
                Status(4, 3, 0),
                format!("transport map lookup failure: {e}"),
            )),
        }
    }
    // Split each group by the transport's recipient limit.
    let mut jobs: Vec<(BackendId, Arc<BackendSettings>, Vec<usize>)> = Vec::new();
    for (id, bs, rcpts) in groups {
        for chunk in rcpts.chunks(bs.recipient_limit.max(1)) {
            jobs.push((id.clone(), Arc::clone(&bs), chunk.to_vec()));
        }
    }
    let inflight = Arc::new(InFlight {
        msg,
        claimed_at: clock::instant(),
        claimed_ms: now,
        body: OnceCell::new(),
        state: Mutex::new(Pending { remaining: jobs.len() + 1, ..Pending::default() }),
        shared: Arc::clone(shared),
        _window: permit,
    });
    for (id, bs, rcpts) in jobs {
        let mut job = Some(Job { msg: Arc::clone(&inflight), rcpts, queued_at: clock::instant() });
        // A retired backend refuses jobs; its replacement takes them.
        for _ in 0..3 {
            let Some(j) = job.take() else { break };
            let b = shared.backend(&id, Arc::clone(&bs));
            match b.push(j, settings.backend_queue_limit) {
                Ok(()) => {}
                Err(PushError::Closed(j)) => job = Some(j),
                Err(PushError::Full(j, wait)) => {
                    // Left on disk about until its turn, and parked so the
                    // backend calls it back when its queue has room (a
                    // backlog of a million does not cycle through the
                    // window every few seconds).
                    let wait = wait.clamp(Duration::from_secs(1), MAX_POSTPONE_FULL);
                    let until = spread(now, now + wait.as_millis() as u64);
                    postpone(j, Some(b), until, "too much mail waiting for the backend", true);
                }
            }
        }
        if let Some(j) = job {
            postpone(j, None, now + 1000, "backend restarting", false);
        }
    }
    // The scheduler's own results (error/discard routes) complete the last share.
    let done = immediate
        .into_iter()
        .map(|(index, agent, verdict, dsn, text)| {
            let d = Done::Attempted {
                verdict,
                dsn,
                text,
                diagnostic: None,
                remote: None,
                dsn_passed: false,
                lmtp: false,
                backend_trouble: false,
            }
            .softened(settings.soft_bounce);
            log_line(&inflight, index, "none", &d, agent);
            RcptDone { index, done: d }
        })
        .collect();
    inflight.complete(None, done);
}

/// Completes a job as postponed (not attempted) until `until`, parked on
/// its backend when `park`.
fn postpone(job: Job, backend: Option<Arc<Backend>>, until: UnixMillis, reason: &str, park: bool) {
    let done = job
        .rcpts
        .iter()
        .map(|&index| RcptDone {
            index,
            done: Done::Postponed { until, reason: reason.to_owned(), park, shown: false },
        })
        .collect();
    job.msg.complete(backend, done);
}

/// `5.1.1 text` → (5.1.1, text); otherwise the default status.
fn split_status(text: &str, default: Status) -> (Status, String) {
    match text.split_once(' ') {
        Some((head, rest)) if Status::parse(head).is_some() => {
            (Status::parse(head).unwrap_or(default), rest.to_owned())
        }
        _ => (default, text.to_owned()),
    }
}

fn log_line(msg: &InFlight, index: usize, relay: &str, d: &Done, agent: Agent) {
    let Done::Attempted { verdict, dsn, text, .. } = d else { return };
    msg.result_line(index, relay, *dsn, LogStatus::from(*verdict), text).emit(agent);
}

/// Turns a message's results into queue outcomes, notices and a next due
/// time, and records them.
async fn record(
    shared: &Arc<Shared>,
    msg: &Arc<InFlight>,
    results: Vec<RcptDone>,
    park_on: Vec<Arc<Backend>>,
    s: &Settings,
) {
    let id = msg.id();
    let env = msg.envelope();
    let now = clock::unix_millis();
    let lifetime = backoff::lifetime(env, s.maximal_queue_lifetime, s.bounce_queue_lifetime);
    // Under soft_bounce nothing expires: it stays queued for a human.
    let expired = !s.soft_bounce && backoff::expired(env.arrival, lifetime, now);
    let policy = Backoff { min: s.minimal_backoff, max: s.maximal_backoff };

    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    // Recipients for each kind of notice (only those whose NOTIFY asks).
    let mut failed: Vec<ReportRcpt> = Vec::new();
    let mut succeeded: Vec<ReportRcpt> = Vec::new();
    let mut delayed: Vec<ReportRcpt> = Vec::new();
    // The message's next due time: the earliest of the deferred
    // recipients' backoffs and the postponed ones' times.
    let mut next: Option<UnixMillis> = None;
    let mut expired_any = false;
    let mut abandoned = false;

    for RcptDone { index, done } in results {
        let Some(rcpt) = env.recipients.get(index) else { continue };
        let entry = |action, status, remote_mta, diagnostic, text: &str| ReportRcpt {
            address: rcpt.address.clone(),
            orcpt: rcpt.orcpt.clone(),
            action,
            status,
            remote_mta,
            diagnostic,
            text: text.to_owned(),
        };
        // What a recipient that gets no verdict now is waiting on: its last
        // deferral if it had one, else why it was not tried.
        let waiting_on = |reason: String| match &rcpt.state {
            RcptState::Deferred { reply } => reply.clone(),
            _ => reason,
        };
        match done {
            Done::Abandoned => abandoned = true,
            Done::Attempted { verdict: Verdict::Sent, dsn, text, remote, dsn_passed, lmtp, .. } => {
                // A server that took NOTIFY itself reports success itself.
                if bounce::wanted(Kind::Success, &rcpt.notify) && !dsn_passed {
                    let action = if remote.is_none() || lmtp { Action::Delivered } else { Action::Relayed };
                    succeeded.push(entry(action, dsn, remote, None, &text));
                }
                outcomes.push((index, Outcome::Delivered { reply: text }));
            }
            Done::Attempted { verdict: Verdict::Bounced, dsn, text, diagnostic, remote, .. } => {
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    failed.push(entry(Action::Failed, dsn, remote, diagnostic, &text));
                }
                outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            // A deferral past the message's lifetime is its last: it bounces
            // with the reason it was deferred (Postfix keeps the 4.x.x status).
            Done::Attempted { verdict: Verdict::Deferred, dsn, text, diagnostic, remote, .. } if expired => {
                expired_any = true;
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    failed.push(entry(Action::Failed, dsn, remote, diagnostic, &text));
                }
                outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            Done::Attempted { verdict: Verdict::Deferred, dsn, text, diagnostic, remote, .. } => {
                let due = policy.next_due(now, rcpt.attempts.saturating_add(1), rand::random::<f64>());
                next = Some(next.map_or(due, |t| t.min(due)));
                if bounce::wanted(Kind::Delay, &rcpt.notify) {
                    delayed.push(entry(Action::Delayed, dsn, remote, diagnostic, &text));
                }
                outcomes.push((index, Outcome::Deferred { reply: text }));
            }
            // Never tried this time (breaker open, paused, backend busy):
            // no attempt is counted, but the lifetime still runs out.
            Done::Postponed { reason, .. } if expired => {
                expired_any = true;
                let text = waiting_on(reason);
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    failed.push(entry(Action::Failed, bounce::status_in(&text), None, None, &text));
                }
                outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            Done::Postponed { until, reason, shown, .. } => {
                next = Some(next.map_or(until, |t| t.min(until)));
                if bounce::wanted(Kind::Delay, &rcpt.notify) {
                    let text = waiting_on(reason.clone());
                    delayed.push(entry(Action::Delayed, bounce::status_in(&text), None, None, &text));
                }
                outcomes.push((
                    index,
                    if shown { Outcome::Waiting { reply: reason } } else { Outcome::Postponed },
                ));
            }
        }
    }
    let open = next.is_some();
    if outcomes.is_empty() {
        if !abandoned {
            // No open recipient was found (they were final already): let the
            // queue settle the message (it removes one with no open recipient).
            if let Err(e) = shared.queue.record(id, &[], now + policy.min.as_millis() as u64, now).await {
                tracing::error!("{id}: cannot record: {e}");
            }
        }
        // Abandoned (the message vanished): nothing to record.
        return;
    }

    // Notices first: queued before the result, so a crash in between
    // repeats a notice rather than losing it.
    if bounce::reportable(env) {
        if !failed.is_empty() {
            queue_report(shared, msg, Kind::Failure, failed, None, s, now).await;
        }
        if !succeeded.is_empty() {
            queue_report(shared, msg, Kind::Success, succeeded, None, s, now).await;
        }
        let warn_due =
            s.delay_warning.is_some_and(|w| now.saturating_sub(env.arrival) >= w.as_millis() as u64);
        if open && warn_due && !env.delay_warned && !delayed.is_empty() {
            let until = env.arrival.saturating_add(lifetime.as_millis() as u64);
            queue_report(shared, msg, Kind::Delay, delayed, Some(until), s, now).await;
            if let Err(e) = shared.queue.update_envelope(id, |e| e.delay_warned = true).await {
                tracing::error!("{id}: cannot mark delay warning sent: {e}");
            }
        }
    } else if !failed.is_empty() && env.is_notification {
        tracing::info!("{id}: undeliverable notification discarded (not answered with another)");
    }
    if expired_any {
        tracing::info!("{id}: from=<{}>, status=expired, returned to sender", env.sender);
    }

    let next_due = next.unwrap_or(now);
    match shared.queue.record(id, &outcomes, next_due, now).await {
        // The queue logs "removed" itself.
        Ok(Recorded::Removed) => {}
        Ok(Recorded::Scheduled(due)) => {
            for b in park_on {
                b.park(id);
            }
            if due < shared.sleeping_until.load(Ordering::Acquire) {
                shared.wake.notify_one();
            }
        }
        Err(sluice_queue::Error::NotFound(_)) => {}
        Err(e) => tracing::error!("{id}: cannot record delivery results (due again at restart): {e}"),
    }
    shared.recorded.fetch_add(1, Ordering::Relaxed);
}

async fn queue_report(
    shared: &Shared,
    msg: &InFlight,
    kind: Kind,
    rcpts: Vec<ReportRcpt>,
    retry_until: Option<UnixMillis>,
    s: &Settings,
    now: UnixMillis,
) {
    let id = msg.id();
    let original = match msg.body(&shared.queue).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("{id}: cannot read the message for its notice: {e}");
            Arc::new(Vec::new())
        }
    };
    let report = bounce::Report {
        kind,
        queue_id: id,
        envelope: msg.envelope(),
        rcpts,
        reporting_mta: &s.myhostname,
        now,
        original: &original,
        retry_until,
        size_limit: s.bounce_size_limit,
    };
    let body = report.build();
    let envelope = report.envelope(&body);
    let what = match kind {
        Kind::Failure => "sender non-delivery notification",
        Kind::Delay => "sender delay notification",
        Kind::Success => "sender delivery status notification",
    };
    match shared.queue.enqueue(envelope, &body, now).await {
        Ok(new) => tracing::info!(target: "bounce", "{id}: {what}: {new}"),
        Err(e) => tracing::error!(target: "bounce", "{id}: cannot queue {what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_route_text_may_carry_its_status() {
        assert_eq!(
            split_status("5.1.1 no such user", Status(5, 0, 0)),
            (Status(5, 1, 1), "no such user".into())
        );
        assert_eq!(
            split_status("mailbox retired", Status(5, 0, 0)),
            (Status(5, 0, 0), "mailbox retired".into())
        );
    }
}
