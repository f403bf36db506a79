//! One backend at run time: the jobs waiting for it, its [`Gate`], its
//! idle connections, and the dispatcher task that starts a delivery
//! whenever the gate lets one through.
//!
//! Owns the order of a delivery: gate permit → connection (a pooled one,
//! checked with `RSET`, or a new one through DNS) → transaction → feedback
//! to the gate (and what the gate asks: persist its record, wake parked
//! mail) → one log line per recipient → results to the scheduler. Also owns
//! the connection pool's bound: open connections (busy plus idle) never
//! exceed the gate's current limit, because a new connection is opened only
//! by a delivery holding a slot when no idle one exists, and a finished
//! connection is kept idle only while busy + idle stays within the limit.
//!
//! A backend sees delivery through its narrow [`Context`] (the queue, the
//! resolver, the live settings, requeueing and persisting its gate's
//! record) and its gate through the [`BackendGate`] trait: it never imports
//! the scheduler or the registry. Never reads the queue's schedule or
//! decides retries: that is the scheduler's and the recording's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sluice_queue::UnixMillis;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::{self, Connection, Health, OpenError, Transfer, TransferRcpt, Verdict};
use super::context::{Context, lock};
use super::gate::{BackendGate, Feedback, Permit, Report};
use super::inflight::{Done, InFlight, RcptDone};
use super::record;
use super::result_line::LogStatus;
use super::settings::BackendSettings;
use super::{BackendId, nexthop};
use crate::clock;
use crate::config::{NextHop, Protocol};
use crate::metric;
use crate::reply::Status;

/// How often an idle dispatcher closes expired idle connections.
const REAP_EVERY: Duration = Duration::from_millis(500);
/// Spread of postponed mail: up to this fraction of the wait is added at
/// random, at most [`MAX_SPREAD`], so mail released together does not
/// arrive together.
const SPREAD: f64 = 0.1;
const MAX_SPREAD: Duration = Duration::from_secs(5);
/// The least time mail held back by an open breaker stays on disk before it
/// is looked at again, in milliseconds. It is parked too, so this is only
/// the safety net for mail beyond what a gate parks, and for a restart
/// (which forgets what was parked); the probe and the breaker closing
/// bring the backlog back as soon as the backend is.
const BREAKER_HOLD_MS: UnixMillis = 60_000;

mod admitted;
mod idle;
mod probe;

use self::admitted::Wait;

pub use self::probe::{Busy, Probed};

/// Some recipients of one claimed message, for one backend.
#[derive(Debug)]
pub struct Job {
    pub msg: Arc<InFlight>,
    /// Indexes into the envelope's recipients.
    pub rcpts: Vec<usize>,
    /// When it was handed to the backend.
    pub queued_at: Instant,
}

/// Why [`Backend::push`] did not take a job.
#[derive(Debug)]
pub enum PushError {
    /// The backend's in-memory queue is full: postpone the job (the time
    /// says roughly when its turn would have come).
    Full(Job, Duration),
    /// The backend was retired; ask the scheduler for a fresh one.
    Closed(Job),
}

#[derive(Debug, Default)]
struct Jobs {
    queue: VecDeque<Job>,
    closed: bool,
}

/// One backend.
#[derive(Debug)]
pub struct Backend {
    id: BackendId,
    name: String,
    gate: Arc<dyn BackendGate>,
    jobs: Mutex<Jobs>,
    job_ready: Notify,
    pool: Mutex<Vec<Connection>>,
    ctx: Arc<Context>,
    running: AtomicBool,
}

/// `until` plus a little random spread.
pub fn spread(now: UnixMillis, until: UnixMillis) -> UnixMillis {
    let wait = until.saturating_sub(now) as f64;
    let max = (wait * SPREAD).min(MAX_SPREAD.as_millis() as f64);
    until + (rand::random::<f64>() * max) as u64
}

impl Backend {
    /// A backend with its gate (the registry chose and restored it). Its
    /// dispatcher is started by [`Backend::start`].
    pub fn new(id: BackendId, gate: Arc<dyn BackendGate>, ctx: Arc<Context>) -> Backend {
        let name = id.to_string();
        Backend {
            id,
            name,
            gate,
            jobs: Mutex::new(Jobs::default()),
            job_ready: Notify::new(),
            pool: Mutex::new(Vec::new()),
            ctx,
            running: AtomicBool::new(false),
        }
    }

    /// Spawns the dispatcher (once).
    pub fn start(self: &Arc<Self>) {
        if !self.running.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            self.ctx.tracker.spawn(async move { me.dispatch().await });
        }
    }

    pub fn id(&self) -> &BackendId {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn gate(&self) -> &dyn BackendGate {
        self.gate.as_ref()
    }

    /// The gate as the in-flight bookkeeping keeps it (to park mail on).
    pub fn gate_handle(&self) -> Arc<dyn BackendGate> {
        Arc::clone(&self.gate)
    }

    /// Jobs waiting in memory.
    pub fn queued(&self) -> usize {
        lock(&self.jobs).queue.len()
    }

    /// Hands a job to this backend.
    pub fn push(&self, job: Job, limit: usize) -> Result<(), PushError> {
        let mut jobs = lock(&self.jobs);
        if jobs.closed {
            return Err(PushError::Closed(job));
        }
        if jobs.queue.len() >= limit {
            let wait = self.gate.time_for(jobs.queue.len());
            return Err(PushError::Full(job, wait));
        }
        jobs.queue.push_back(job);
        drop(jobs);
        self.job_ready.notify_one();
        Ok(())
    }

    /// Applies a gate's feedback: store its record, make parked mail due.
    pub async fn apply(&self, fb: Feedback) {
        self.ctx.apply_feedback(&self.name, fb).await;
    }

    /// The dispatcher: starts deliveries as the gate allows, postpones the
    /// waiting jobs when the breaker is open or the backend paused, keeps
    /// the idle pool within bounds, and retires the backend when it has been
    /// idle for long.
    async fn dispatch(self: Arc<Self>) {
        let token = self.ctx.token.clone();
        let mut idle_since = clock::instant();
        let mut asking = FuturesUnordered::new();
        loop {
            if token.is_cancelled() {
                self.drain_on_shutdown();
                // Permits already asked for go back unused.
                while let Some(admission) = asking.next().await {
                    self.admitted(admission).await;
                }
                self.close_idle(true).await;
                return;
            }
            if asking.is_empty() && lock(&self.jobs).queue.is_empty() {
                let lingering = self.close_quiet().await;
                self.close_idle(false).await;
                self.connect_probe();
                if let Some(id) = self.gate.probe_candidate(clock::unix_millis()) {
                    tracing::info!(
                        "backend {}: no mail waiting, retrying deferred {id} to test the backend",
                        self.name
                    );
                    self.ctx.requeue(id).await;
                }
                if self.retire(clock::instant().saturating_duration_since(idle_since)).await {
                    return;
                }
                // Awake for the open breaker's next connect probe.
                // And, in fleet mode, for the idle connections' linger.
                let nap = match self.gate.next_connect_probe() {
                    Some(at) => REAP_EVERY.min(clock::until(clock::unix_millis(), at)),
                    None => REAP_EVERY,
                };
                let nap = lingering.map_or(nap, |l| nap.min(l));
                tokio::select! {
                    _ = self.job_ready.notified() => {}
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
                continue;
            }
            idle_since = clock::instant();
            // Ask for as many admissions at once as the gate allows (one
            // per waiting job): the fleet gate's each wait on a round trip
            // to Redis, and asked one after the other they would start at
            // most one delivery per round trip.
            let queued = lock(&self.jobs).queue.len();
            let ahead = self.gate.admissions_ahead().max(1).min(queued);
            while asking.len() < ahead {
                asking.push(self.gate.admit(clock::unix_millis()));
            }
            let Some(admission) = asking.next().await else { continue };
            let Some(wait) = self.admitted(admission).await else { continue };
            // No admission is left standing while this one waits: those
            // already asked for start their deliveries (or give their
            // permits back), then the dispatcher waits as told.
            while let Some(other) = asking.next().await {
                self.admitted(other).await;
            }
            match wait {
                Wait::Slot => {
                    // The fleet may have taken back an idle connection's
                    // lease (its limit fell): that connection closes now.
                    self.close_idle(false).await;
                    tokio::select! {
                        _ = self.gate.changed() => {}
                        _ = token.cancelled() => {}
                        // The pool may need trimming after the limit fell.
                        _ = tokio::time::sleep(REAP_EVERY) => self.close_idle(false).await,
                    }
                }
                Wait::Rate(wait) => {
                    metrics::counter!(metric::RATE_LIMITED, "backend" => self.name.clone()).increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = token.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Runs the open breaker's connect probe when it is due: connect, greet,
    /// `LHLO`/`EHLO`, `QUIT`, no message. When the backend answers, the
    /// gate hands out a parked message as the trial delivery.
    fn connect_probe(self: &Arc<Self>) {
        let Some(probe) = self.gate.connect_probe(clock::unix_millis()) else { return };
        let me = Arc::clone(self);
        self.ctx.tracker.spawn(async move {
            let settings = me.gate.settings();
            let answer = tokio::select! {
                r = me.connection(&settings, None) => match r {
                    Ok((c, _)) => {
                        c.quit().await;
                        Ok(())
                    }
                    Err(f) => Err(f.text),
                },
                _ = me.ctx.token.cancelled() => Err("shutdown".into()),
            };
            if let Some(id) = me.gate.connect_probe_done(probe, answer, clock::unix_millis()) {
                me.ctx.requeue(id).await;
            }
        });
    }

    /// Calls parked mail back while the in-memory queue is below half its
    /// limit, so a backlog flows from disk at the pace the backend takes it.
    async fn refill(&self, queued: usize) {
        let limit = self.ctx.settings.current().backend_queue_limit;
        if queued >= limit / 2 {
            return;
        }
        let ids = self.gate.take_parked(limit / 2 - queued, clock::unix_millis());
        self.ctx.requeue_many(&ids).await;
    }

    /// At shutdown, jobs that never started are due again at once (they are
    /// recorded as postponed to now, so a restart takes them first).
    fn drain_on_shutdown(self: &Arc<Self>) {
        let now = clock::unix_millis();
        let jobs: Vec<Job> = lock(&self.jobs).queue.drain(..).collect();
        for job in jobs {
            let done = RcptDone::postponed(&job.rcpts, now, "shutdown", false, false);
            record::complete(&self.ctx, &job.msg, Some(Arc::clone(&self.gate)), done);
        }
    }

    /// A pooled session still alive, or a new one.
    async fn connection(
        &self,
        settings: &BackendSettings,
        pooled: Option<Connection>,
    ) -> Result<(Connection, bool), Failure> {
        if let Some(mut s) = pooled {
            let now = clock::instant();
            let fresh = now.saturating_duration_since(s.idle_since()) < settings.idle_time
                && now.saturating_duration_since(s.opened()) < settings.reuse_time;
            // As it is when quiet (Connection::quiet); with RSET when only
            // its last transaction was left open; never when the server
            // spoke unasked (Connection::spoke): an RSET then reads a reply
            // that is not its own and puts every later one out of step.
            if fresh && !s.spoke() && (s.clean() || s.reset().await) {
                return Ok((s, true));
            }
            // Dead or stale: close it (a dead peer needs no QUIT) before
            // opening another, still within this delivery's slot.
            drop(s);
        }
        // Where the next hop may lead is decided here, before anything
        // connects: never to this host, and, for a recipient's domain, never
        // into the networks the administrator keeps it out of.
        let config = self.ctx.settings.config();
        let myself = self.ctx.myself(&config);
        let tc = config.transport_config(&self.id.transport);
        let forbidden = |ip: std::net::IpAddr| {
            tc.matches_client("sluice_mx_forbidden_networks", ip)
                && !tc.matches_client("sluice_mx_forbidden_networks_exceptions", ip)
        };
        let reach =
            nexthop::Reach { myself: &myself, forbidden: self.id.by_domain.then_some(&forbidden as _) };
        let targets =
            nexthop::targets(self.ctx.resolver.as_ref(), &self.id.nexthop, settings.address_limit, &reach)
                .await
                .map_err(|e| Failure {
                    text: e.to_string(),
                    dsn: e.status(),
                    permanent: e.status().0 == 5,
                    ours: !e.is_backend_trouble(),
                })?;
        let hop = nexthop::hop_name(&self.id.nexthop);
        let myhostname = self.ctx.settings.current().myhostname.clone();
        // Postfix's EHLO check: SMTP to port 25 or to a recipient's domain
        // (configured next hops on other ports are often filters or servers
        // on this very machine, under its name).
        let port25 = matches!(self.id.nexthop, NextHop::Host { port: 25, .. } | NextHop::Mx { port: 25, .. });
        let loop_name = (self.id.protocol == Protocol::Smtp && (self.id.by_domain || port25))
            .then_some(myhostname.as_str());
        let setup = client::Setup {
            protocol: self.id.protocol,
            helo_name: &settings.helo_name,
            timeouts: &settings.timeouts,
            tls: &settings.tls,
            loop_name,
            nexthop: &hop,
        };
        let s = client::open_with(&targets, &setup)
            .await
            .map_err(|OpenError { text, dsn, ours }| Failure { text, dsn, permanent: dsn.0 == 5, ours })?;
        Ok((s, false))
    }

    /// Keeps a session for the next message if the bound allows and the
    /// gate agrees (in fleet mode the delivery's lease goes with it); the
    /// caller still holds its slot.
    async fn keep(&self, s: Connection, permit: &mut Permit) {
        let snap = self.gate.snapshot();
        let refused = {
            let mut pool = lock(&self.pool);
            if pool.len() + (snap.in_flight as usize) <= snap.limit as usize && self.gate.keep_idle(permit) {
                pool.push(s);
                None
            } else {
                Some(s)
            }
        };
        if let Some(s) = refused {
            s.quit().await;
        }
    }

    /// The results for a message whose body could not be read (the backend
    /// was asked nothing, or the transaction was broken off before its
    /// end): nothing to record when it was deleted meanwhile or moved to
    /// the quarantine (it is no longer queued), else postponed a minute
    /// (storage trouble).
    fn unreadable(msg: &InFlight, rcpts: &[usize], e: &sluice_queue::Error) -> Vec<RcptDone> {
        match e {
            sluice_queue::Error::NotFound(_) | sluice_queue::Error::Corrupt { .. } => {
                rcpts.iter().map(|&index| RcptDone { index, done: Done::Abandoned }).collect()
            }
            e => {
                tracing::error!("{}: cannot read message body: {e}", msg.id());
                let until = clock::unix_millis() + 60_000;
                RcptDone::postponed(rcpts, until, "queue file read error", false, true)
            }
        }
    }

    /// One delivery, start to finish.
    async fn deliver(self: Arc<Self>, job: Job, mut permit: Permit, pooled: Option<Connection>) {
        let dispatched = clock::instant();
        let settings = self.gate.settings();
        let soft_bounce = self.ctx.settings.current().soft_bounce;
        let msg = Arc::clone(&job.msg);
        // Read from the queue as it is sent, never whole (see inflight.rs).
        let body = msg.content(&self.ctx.queue);

        let (mut session, reused) = match self.connection(&settings, pooled).await {
            Ok(x) => x,
            Err(f) => {
                // Connection-time failures (refused, silence or 421 at the
                // greeting, a failed LHLO/EHLO or STARTTLS, a reply past its
                // bounds) are the backend being unreachable; a loop back to
                // this host is our own finding and no verdict on it.
                let report =
                    if f.ours { Report::Abandoned } else { Report::Unreachable { error: f.text.clone() } };
                let fb = self.gate.report(permit, report, clock::unix_millis(), clock::instant());
                self.apply(fb).await;
                let verdict = if f.permanent { Verdict::Bounced } else { Verdict::Deferred };
                let setup = clock::instant().saturating_duration_since(dispatched);
                let times = Times { queued: job.queued_at, dispatched, setup, xfer: Duration::ZERO };
                let done = job
                    .rcpts
                    .iter()
                    .map(|&index| {
                        let d = Done::Attempted {
                            verdict,
                            dsn: f.dsn,
                            text: f.text.clone(),
                            diagnostic: None,
                            remote: None,
                            dsn_passed: false,
                            lmtp: self.id.protocol == Protocol::Lmtp,
                            backend_trouble: !f.ours,
                        }
                        .softened(soft_bounce);
                        self.log(&msg, index, "none", &times, &d);
                        RcptDone { index, done: d }
                    })
                    .collect();
                record::complete(&self.ctx, &msg, Some(Arc::clone(&self.gate)), done);
                return;
            }
        };
        let connected = clock::instant();
        let setup = if reused { Duration::ZERO } else { connected.saturating_duration_since(dispatched) };

        let env = msg.envelope();
        let rcpts: Vec<TransferRcpt<'_>> = job
            .rcpts
            .iter()
            .map(|&i| {
                let r = &env.recipients[i];
                TransferRcpt { address: &r.address, notify: r.notify, orcpt: r.orcpt.as_deref() }
            })
            .collect();
        let tx = Transfer {
            sender: &env.sender,
            rcpts,
            body: &body,
            body_type: env.body_type,
            smtputf8: env.smtputf8,
            ret: env.ret,
            envid: env.envid.as_deref(),
        };
        let mut out = session.deliver(&tx).await;
        let finished = clock::instant();
        let relay = session.target().to_string();
        let remote = session.target().host();
        let dsn_passed = session.caps().dsn;
        let backend_trouble = matches!(out.health, Health::Overloaded(_) | Health::Failed(_));
        if out.reusable {
            self.keep(session, &mut permit).await;
        } else {
            // Broken or closing (421, timeout, lost): no QUIT conversation,
            // close it now, while the slot is still held, so the backend is
            // never left with a connection the gate no longer counts.
            drop(session);
        }
        let report = match out.health {
            Health::Completed { latency } => {
                if let Some(l) = latency {
                    metrics::histogram!(metric::LATENCY, "backend" => self.name.clone())
                        .record(l.as_secs_f64());
                }
                Report::Completed { latency }
            }
            Health::Untested => Report::Completed { latency: None },
            Health::Aborted => Report::Abandoned,
            Health::Overloaded(error) => Report::Overloaded { error },
            Health::Failed(error) => Report::Failed { error },
        };
        let fb = self.gate.report(permit, report, clock::unix_millis(), finished);
        self.apply(fb).await;
        if let Some(e) = out.content_error.take() {
            let done = Self::unreadable(&msg, &job.rcpts, &e);
            record::complete(&self.ctx, &msg, Some(Arc::clone(&self.gate)), done);
            return;
        }

        let times = Times {
            queued: job.queued_at,
            dispatched,
            setup,
            xfer: finished.saturating_duration_since(connected),
        };
        let done = job
            .rcpts
            .iter()
            .zip(out.rcpts)
            .map(|(&index, r)| {
                let d = Done::Attempted {
                    verdict: r.verdict,
                    dsn: r.dsn,
                    text: r.text,
                    diagnostic: r.diagnostic,
                    remote: Some(remote.clone()),
                    dsn_passed,
                    lmtp: self.id.protocol == Protocol::Lmtp,
                    backend_trouble: backend_trouble && r.verdict == Verdict::Deferred,
                }
                .softened(soft_bounce);
                self.log(&msg, index, &relay, &times, &d);
                RcptDone { index, done: d }
            })
            .collect();
        record::complete(&self.ctx, &msg, Some(Arc::clone(&self.gate)), done);
    }

    fn log(&self, msg: &InFlight, index: usize, relay: &str, t: &Times, d: &Done) {
        let Done::Attempted { verdict, dsn, text, .. } = d else { return };
        let status = LogStatus::from(*verdict);
        let mut line = msg.result_line(index, relay, *dsn, status, text);
        let in_qmgr = t.dispatched.saturating_duration_since(msg.claimed_at().min(t.queued));
        line.delays[1..].copy_from_slice(&[in_qmgr, t.setup, t.xfer]);
        line.emit(self.id.protocol.into());
        metrics::counter!(metric::DELIVERIES, "backend" => self.name.clone(), "result" => status.as_str())
            .increment(1);
        if let Done::Attempted { verdict: Verdict::Deferred, backend_trouble, .. } = d {
            let why = if *backend_trouble { "backend" } else { "recipient" };
            metrics::counter!(metric::DEFERRALS, "backend" => self.name.clone(), "reason" => why)
                .increment(1);
        }
    }
}

/// The timings of one delivery, for `delays=`.
struct Times {
    queued: Instant,
    dispatched: Instant,
    setup: Duration,
    xfer: Duration,
}

/// A failure before any transaction.
struct Failure {
    text: String,
    dsn: Status,
    permanent: bool,
    /// This host's own decision (a loop, a forbidden address, its TLS
    /// configuration), not the backend's trouble: the breaker is not told.
    ours: bool,
}
