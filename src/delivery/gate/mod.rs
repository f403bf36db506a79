//! The gate of one backend (transport + next hop): the one place that
//! decides whether a delivery may start now, and that learns from how each
//! delivery went.
//!
//! Three controls, asked in this order for every delivery:
//! 1. a concurrency [`Slot`](slots::Slot), as many as the adaptive limit
//!    ([`concurrency`]: steered by the latency gradient towards the
//!    server's best goodput, the reasoning and parameters are there);
//! 2. the circuit [`Breaker`](breaker::Breaker) (and an administrator's
//!    pause); while it is open, the dispatcher runs the cheap connect
//!    probes it asks for ([`Gate::connect_probe`]);
//! 3. the rate [`Limiter`](limiter::Limiter).
//!
//! The gate owns their state, the backend's last error, and a bounded list
//! of queue IDs "parked" on it: mail deferred because of this backend's
//! trouble, which is made due again the moment the backend is seen healthy
//! (a breaker closing, a clean delivery after failures, a resume) instead of
//! waiting out its backoff. It never sleeps, never touches the network or
//! the queue: it returns what the caller must do (wait, postpone, persist a
//! record, requeue parked mail) and logs its own state changes with the
//! backend's name.

mod backend_gate;
pub mod breaker;
pub mod concurrency;
pub mod fleet;
pub mod limiter;
mod log;
mod parked;
pub mod slots;
mod snapshot;

pub use self::backend_gate::BackendGate;
pub use self::log::position_name;
pub use self::snapshot::Snapshot;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_queue::{BackendRecord, BreakerPosition, QueueId, UnixMillis};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::breaker::{Admit, Breaker, Failure, Transition};
use self::concurrency::AdaptiveLimit;
use self::limiter::Limiter;
use self::parked::Parked;
use self::slots::{Slot, Slots};
use crate::delivery::settings::BackendSettings;

/// Queue IDs a gate remembers for an early wake-up. Mail beyond this waits
/// for its normal retry time; nothing is lost either way.
pub const PARK_LIMIT: usize = 10_000;

/// How long mail for a backend paused "until resumed" is postponed at a
/// time (it is also parked, so a resume wakes it at once).
pub const PAUSE_RECHECK: Duration = Duration::from_secs(300);

/// The answer to "may a delivery start now?".
#[derive(Debug)]
pub enum Admission {
    /// Start it, holding this permit until it is reported.
    Go(Permit),
    /// Every slot is in use: wait for [`Gate::changed`].
    WaitSlot,
    /// The half-open probe is running: wait for [`Gate::changed`].
    WaitProbe,
    /// The rate limit allows the next start after this long.
    WaitRate(Duration),
    /// The breaker is open or the backend paused: leave the mail in the
    /// queue until this time; it is not an attempt.
    Postpone { until: UnixMillis, reason: String },
}

/// Held by a running delivery: its concurrency slot, and whether it is the
/// breaker's probe. Hand it back with [`Gate::report`].
#[derive(Debug)]
pub struct Permit {
    /// Held for its `Drop`, which returns the slot.
    _slot: Slot,
    probe: bool,
    /// When the delivery was let through (its latency sample is only
    /// compared with the limit in force from then on).
    started: Instant,
    /// In fleet mode, the delivery's lease on a fleet slot (`None` for the
    /// local gate, and for deliveries started on a fleet host's local
    /// share while Redis is unreachable).
    lease: Option<fleet::Lease>,
    /// In fleet mode, the member of the lease this delivery handed to its
    /// idle connection ([`BackendGate::keep_idle`]): its result is still
    /// reported to the fleet, its slot stays taken.
    kept: Option<(String, bool)>,
}

impl Permit {
    /// True for the half-open probe delivery.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// How a delivery went, as far as the backend's health is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The backend completed the transaction (whatever it answered per
    /// recipient: a `452 4.2.2 mailbox full` is the mailbox's problem, not
    /// the server's). `latency` is the server's share of the transaction
    /// time, `None` when the transaction ended before the body (a sample
    /// that would not be comparable).
    Completed { latency: Option<Duration> },
    /// The backend answered but is struggling: a `4xx` other than `421` at
    /// `MAIL` or `DATA`, or per-recipient `4.3.x`/`4.4.x` system errors.
    /// Shrinks concurrency; does not count towards the breaker (a failed
    /// probe, though, reopens it).
    Overloaded { error: String },
    /// The backend dropped us mid-conversation: `421`, a timeout or a lost
    /// connection after the greeting. Shrinks concurrency and counts towards
    /// the breaker.
    Failed { error: String },
    /// The backend could not be reached: no address, connection refused or
    /// timed out, `421` or silence at the greeting, a failed `LHLO`/`EHLO`.
    /// As [`Report::Failed`], except for a trial: one that fails so leaves
    /// the open breaker watching with connect probes, where one greeted and
    /// then failed ([`Report::Failed`]) makes it wait out a cool-down.
    Unreachable { error: String },
    /// The delivery never got to the backend (shutdown, no body): no
    /// verdict either way.
    Abandoned,
}

/// What the caller must do after a report or an administrator's command.
#[derive(Debug, Default)]
pub struct Feedback {
    /// Store this record in the queue (the breaker or the pause changed).
    pub persist: Option<BackendRecord>,
    /// Make these messages due now: the backend is healthy again.
    pub wake: Vec<QueueId>,
}

/// A backend's fleet-wide view for `sluice backend list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    /// Redis answers (false: this host runs on its local share).
    pub shared: bool,
    /// The fleet's concurrency limit.
    pub limit: u32,
    /// Leases held across the fleet at the last look.
    pub in_flight: u32,
    /// Each live host and the leases it holds.
    pub hosts: Vec<(String, u32)>,
}

/// A running connect probe: holds a slot, so the connection counts
/// against the limit like any other. Hand it back with
/// [`Gate::connect_probe_done`].
#[derive(Debug)]
pub struct ConnectProbe {
    _slot: Slot,
}

#[derive(Debug)]
struct State {
    settings: Arc<BackendSettings>,
    breaker: Breaker,
    limit: AdaptiveLimit,
    limiter: Limiter,
    paused_until: Option<UnixMillis>,
    /// The pause is this host's own (`--local` in fleet mode): stored so a
    /// restart brings it back as such.
    paused_here: bool,
    last_error: Option<String>,
    /// A backend-level failure happened since the last completed delivery.
    troubled: bool,
    parked: Parked,
    /// When a delivery last started or a parked message was last sent as a
    /// probe (wall clock), to space self-probes.
    last_activity: UnixMillis,
}

/// One backend's gate. Shared as `Arc<Gate>` by the dispatcher and the
/// deliveries it starts.
#[derive(Debug)]
pub struct Gate {
    name: String,
    state: Mutex<State>,
    slots: Slots,
    changed: Notify,
}

fn policy(s: &BackendSettings) -> breaker::Policy {
    breaker::Policy {
        threshold: s.failure_threshold.max(1).saturating_mul(s.failed_cohort_limit.max(1)),
        cooldown: s.cooldown,
        max_cooldown: s.max_cooldown,
        probe_interval: s.probe_interval,
    }
}

fn pace(s: &BackendSettings) -> concurrency::Policy {
    concurrency::Policy {
        initial: s.initial_concurrency,
        max: s.concurrency_limit,
        target: s.latency_target,
        probe_share: s.probe_share,
        adaptive: s.adaptive,
    }
}

impl Gate {
    /// A gate for the backend `name`, restoring its breaker and pause from
    /// a stored record if there is one.
    pub fn new(
        name: impl Into<String>,
        settings: Arc<BackendSettings>,
        record: Option<&BackendRecord>,
        now: UnixMillis,
    ) -> Gate {
        let name = name.into();
        let breaker = match record {
            Some(r) => Breaker::restore(policy(&settings), r, now),
            None => Breaker::new(policy(&settings)),
        };
        let limit = AdaptiveLimit::new(pace(&settings));
        if breaker.position() != BreakerPosition::Closed {
            tracing::info!(
                "backend {name}: circuit breaker restored {}, next probe in {}s",
                position_name(breaker.position()),
                breaker.probe_at().map(|p| p.saturating_sub(now) / 1000).unwrap_or(0)
            );
        }
        let slots = Slots::new(limit.current());
        let state = State {
            limiter: Limiter::new(settings.rate, settings.rate_delay),
            settings,
            breaker,
            limit,
            paused_until: record.and_then(|r| r.paused_until).filter(|&u| u > now),
            paused_here: record.is_some_and(|r| r.paused_here && r.paused_until.is_some_and(|u| u > now)),
            last_error: record.and_then(|r| r.last_error.clone()),
            troubled: false,
            parked: Parked::new(PARK_LIMIT),
            last_activity: now,
        };
        Gate { name, state: Mutex::new(state), slots, changed: Notify::new() }
    }

    /// The backend's name (`transport:[host]:port`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<BackendSettings> {
        Arc::clone(&self.state().settings)
    }

    /// Applies new settings (configuration reload) without losing the
    /// breaker's position or the learned latency.
    pub fn reconfigure(&self, settings: Arc<BackendSettings>) {
        let mut st = self.state();
        if *st.settings == *settings {
            return;
        }
        st.breaker.set_policy(policy(&settings));
        if st.settings.rate != settings.rate || st.settings.rate_delay != settings.rate_delay {
            st.limiter = Limiter::new(settings.rate, settings.rate_delay);
        }
        let change = st.limit.reconfigure(pace(&settings));
        st.settings = settings;
        self.apply(&st, change);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Resolves when something that may let a waiting delivery start has
    /// happened: a slot came back, the limit grew, the probe finished, the
    /// backend was resumed. A wake-up, not a promise: ask again.
    pub async fn changed(&self) {
        tokio::select! {
            _ = self.changed.notified() => {}
            _ = self.slots.freed() => {}
        }
    }

    /// Asks whether a delivery may start now (`now`: wall clock, for the
    /// breaker and pauses).
    pub fn admit(&self, now: UnixMillis) -> Admission {
        let mut st = self.state();
        if let Some(until) = st.paused_until {
            if until > now {
                let until = if until == u64::MAX { now + PAUSE_RECHECK.as_millis() as u64 } else { until };
                return Admission::Postpone { until, reason: "delivery paused by administrator".into() };
            }
            st.paused_until = None;
            st.paused_here = false;
        }
        // The breaker is asked before a slot is taken, so a closed door
        // never takes and returns a slot (which would wake the waiters for
        // nothing, over and over).
        match st.breaker.peek(now) {
            Admit::Go | Admit::Probe => {}
            Admit::ProbeInFlight => return Admission::WaitProbe,
            Admit::Wait { until } => {
                let reason = match &st.last_error {
                    Some(e) => format!("delivery temporarily suspended: {e}"),
                    None => "delivery temporarily suspended".into(),
                };
                return Admission::Postpone { until, reason };
            }
        }
        let Some(slot) = self.slots.try_acquire() else { return Admission::WaitSlot };
        let (admit, transition) = st.breaker.admit(now);
        let probe = admit == Admit::Probe;
        if let Err(wait) = st.limiter.check() {
            if probe {
                st.breaker.probe_abandoned(now);
            }
            return Admission::WaitRate(wait);
        }
        if let Some(t) = transition {
            self.log_transition(&st, t, now);
        }
        st.last_activity = now;
        Admission::Go(Permit {
            _slot: slot,
            probe,
            started: crate::clock::instant(),
            lease: None,
            kept: None,
        })
    }

    /// A free concurrency slot for housekeeping (closing an idle connection
    /// politely), without asking the breaker or the rate limit; `None` when
    /// every slot is in use.
    pub fn spare_slot(&self) -> Option<Slot> {
        self.slots.try_acquire()
    }

    /// Feeds back how a delivery went and returns the permit's slot.
    pub fn report(&self, permit: Permit, report: Report, now: UnixMillis, mono: Instant) -> Feedback {
        let mut st = self.state();
        let mut fb = Feedback::default();
        let in_flight = self.slots.in_use();
        let mut transition = None;
        let mut change = None;
        match report {
            Report::Completed { latency } => {
                if let Some(latency) = latency {
                    let sample = concurrency::Sample { latency, in_flight, started: permit.started };
                    change = st.limit.on_sample(sample, mono);
                }
                transition = st.breaker.on_success(permit.probe);
                if transition == Some(Transition::Closed) {
                    let initial = st.settings.initial_concurrency;
                    change = st.limit.restart(initial).or(change);
                }
                if st.troubled || transition == Some(Transition::Closed) {
                    st.troubled = false;
                    fb.wake = Self::unpark(&mut st);
                }
            }
            Report::Overloaded { error } => {
                change = st.limit.on_overload(mono);
                if permit.probe {
                    transition = st.breaker.on_failure(true, Failure::Broken, now);
                }
                st.troubled = true;
                st.last_error = Some(error);
            }
            Report::Failed { error } => {
                change = st.limit.on_overload(mono);
                transition = st.breaker.on_failure(permit.probe, Failure::Broken, now);
                st.troubled = true;
                st.last_error = Some(error);
            }
            Report::Unreachable { error } => {
                change = st.limit.on_overload(mono);
                transition = st.breaker.on_failure(permit.probe, Failure::Unreachable, now);
                st.troubled = true;
                st.last_error = Some(error);
            }
            Report::Abandoned => {
                if permit.probe {
                    st.breaker.probe_abandoned(now);
                }
            }
        }
        self.apply(&st, change);
        if let Some(t) = transition {
            self.log_transition(&st, t, now);
            fb.persist = Some(Self::record_of(&st));
        }
        drop(st);
        drop(permit);
        self.changed.notify_waiters();
        fb
    }

    /// Remembers a message deferred or postponed because of this backend,
    /// so it is woken when the backend recovers. Bounded by [`PARK_LIMIT`].
    /// Returns whether it was parked now (false: already parked, or full).
    pub fn park(&self, id: QueueId) -> bool {
        self.state().parked.park(id)
    }

    /// A parked message to send as a probe when no mail is coming for this
    /// backend: the breaker's probe time has come, or the backend has been
    /// troubled and quiet for a cool-down. Without it, a backend whose only
    /// mail was deferred (parked) would wait out the backoff even after it
    /// recovered, because nothing would try it. At most one per cool-down.
    pub fn probe_candidate(&self, now: UnixMillis) -> Option<QueueId> {
        let mut st = self.state();
        if st.parked.is_empty() || st.paused_until.is_some_and(|u| u > now) {
            return None;
        }
        let quiet = now.saturating_sub(st.last_activity) >= st.settings.cooldown.as_millis() as u64;
        let due = match st.breaker.peek(now) {
            Admit::Probe => quiet,
            Admit::Go => st.troubled && quiet,
            Admit::ProbeInFlight | Admit::Wait { .. } => false,
        };
        if !due {
            return None;
        }
        st.last_activity = now;
        st.parked.pop_oldest()
    }

    /// A connect probe to run now, if the open breaker asks for one and a
    /// slot is free (the probe's connection counts like a delivery's).
    /// While it runs no other starts; the dispatcher connects, greets, says
    /// `LHLO`/`EHLO` and `QUIT`, and reports with
    /// [`Gate::connect_probe_done`].
    pub fn connect_probe(&self, now: UnixMillis) -> Option<ConnectProbe> {
        let mut st = self.state();
        if !st.breaker.connect_probe_due(now) || st.paused_until.is_some_and(|u| u > now) {
            return None;
        }
        let slot = self.slots.try_acquire()?;
        st.breaker.connect_probe_started(now);
        Some(ConnectProbe { _slot: slot })
    }

    /// When the next connect probe is due (the dispatcher sleeps no longer).
    pub fn next_connect_probe(&self) -> Option<UnixMillis> {
        self.state().breaker.next_connect_probe()
    }

    /// How a connect probe went (`Err`: why the backend did not answer).
    /// When it answered, the breaker lets one trial delivery through, and
    /// this returns a parked message to send as that trial (the backend's
    /// mail is parked while the breaker is open, so nothing else would).
    pub fn connect_probe_done(
        &self,
        probe: ConnectProbe,
        answer: Result<(), String>,
        now: UnixMillis,
    ) -> Option<QueueId> {
        let mut st = self.state();
        let answered = answer.is_ok();
        let due = st.breaker.connect_probe_done(answered, now);
        metrics::counter!(
            crate::metric::CONNECT_PROBES,
            "backend" => self.name.clone(),
            "result" => if answered { "answered" } else { "failed" }
        )
        .increment(1);
        let trial = match answer {
            Err(e) => {
                tracing::debug!("backend {}: connect probe failed: {e}", self.name);
                st.last_error = Some(e);
                None
            }
            Ok(()) if due => {
                let trial = st.parked.pop_oldest();
                tracing::info!(
                    "backend {}: connect probe answered; {}",
                    self.name,
                    match trial {
                        Some(id) => format!("sending deferred {id} as the trial delivery"),
                        None => "the next delivery is the trial".into(),
                    }
                );
                trial
            }
            Ok(()) => None,
        };
        drop(st);
        drop(probe);
        self.changed.notify_waiters();
        trial
    }

    /// Up to `n` parked messages to call back because the backend's
    /// in-memory queue has room; none while the breaker is not closed, the
    /// backend is paused, or its last delivery failed (their mail waits for
    /// the probe, the resume, or the next success). Room left by failing
    /// deliveries is no reason to retry: the message just deferred for the
    /// failure would come straight back, attempt after attempt, until the
    /// breaker opened. Takes turns between new mail and the backlog
    /// (`parked.rs`).
    pub fn take_parked(&self, n: usize, now: UnixMillis) -> Vec<QueueId> {
        let mut st = self.state();
        if st.breaker.position() != BreakerPosition::Closed
            || st.paused_until.is_some_and(|u| u > now)
            || st.troubled
        {
            return Vec::new();
        }
        st.parked.take(n)
    }

    fn unpark(st: &mut State) -> Vec<QueueId> {
        st.parked.drain()
    }

    /// Pauses deliveries until `until` (`None`: until resumed). Mail due
    /// meanwhile is postponed, not attempted.
    pub fn pause(&self, until: Option<UnixMillis>) -> Feedback {
        self.pause_as(until, false)
    }

    /// [`Self::pause`], stored as this host's own pause when `here`
    /// (`--local` in fleet mode; see [`Self::own_pause`]).
    pub fn pause_as(&self, until: Option<UnixMillis>, here: bool) -> Feedback {
        let mut st = self.state();
        st.paused_until = Some(until.unwrap_or(u64::MAX));
        st.paused_here = here;
        tracing::info!(
            "backend {}: delivery paused{}",
            self.name,
            match until {
                Some(u) => format!(" until {u}"),
                None => " until resumed".into(),
            }
        );
        Feedback { persist: Some(Self::record_of(&st)), wake: Vec::new() }
    }

    /// Ends a pause; mail parked on the pause is due now.
    pub fn resume(&self) -> Feedback {
        let mut st = self.state();
        let was = st.paused_until.take();
        st.paused_here = false;
        if was.is_some() {
            tracing::info!("backend {}: delivery resumed", self.name);
        }
        let wake = Self::unpark(&mut st);
        let persist = Some(Self::record_of(&st));
        drop(st);
        self.changed.notify_waiters();
        Feedback { persist, wake }
    }

    /// Until when this host's own pause holds (`u64::MAX`: until resumed),
    /// as stored by [`Self::pause_as`] (and brought back after a restart).
    pub fn own_pause(&self) -> Option<UnixMillis> {
        let st = self.state();
        st.paused_until.filter(|_| st.paused_here)
    }

    /// Slots not taken by a delivery, within the current limit.
    pub fn free_slots(&self) -> u32 {
        self.slots.limit().saturating_sub(self.slots.in_use())
    }

    /// True while paused at `now`.
    pub fn is_paused(&self, now: UnixMillis) -> bool {
        self.state().paused_until.is_some_and(|u| u > now)
    }

    /// Estimated time for `n` more deliveries to get through this gate (to
    /// postpone mail that does not fit in memory to about when its turn
    /// comes): the slower of the rate limit and the concurrency × latency.
    pub fn time_for(&self, n: usize) -> Duration {
        let st = self.state();
        let by_rate = st.limiter.time_for(n);
        let latency = st.limit.latency().unwrap_or(Duration::from_millis(100));
        let by_slots = latency.mul_f64(n as f64 / f64::from(st.limit.current()));
        by_rate.max(by_slots)
    }

    /// What the queue stores for this backend.
    pub fn record(&self) -> BackendRecord {
        Self::record_of(&self.state())
    }

    fn record_of(st: &State) -> BackendRecord {
        let mut r = BackendRecord {
            paused_until: st.paused_until,
            paused_here: st.paused_here && st.paused_until.is_some(),
            last_error: st.last_error.clone(),
            ..BackendRecord::default()
        };
        st.breaker.store(&mut r);
        r
    }

    /// A consistent read-only view.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state();
        Snapshot {
            name: self.name.clone(),
            breaker: st.breaker.position(),
            paused_until: st.paused_until,
            in_flight: self.slots.in_use(),
            limit: st.limit.current(),
            reason: st.limit.reason().as_str(),
            max_limit: st.limit.max(),
            peak: self.slots.peak(),
            rate: st.limiter.per_second(),
            latency: st.limit.latency(),
            baseline: st.limit.baseline().map(|p| (p.level, p.latency)),
            gradient: st.limit.gradient().map(|g| (g.value, g.lower.level, g.upper.level)),
            curve: st.limit.curve().iter().map(|p| (p.level, p.latency)).collect(),
            last_error: st.last_error.clone(),
            probe_at: st.breaker.probe_at(),
            parked: st.parked.len(),
        }
    }
}

#[cfg(test)]
mod tests;
