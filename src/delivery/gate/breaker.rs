//! The circuit breaker of one backend: closed → open after repeated
//! connection failures, timeouts or `421`s; open → half-open (one trial
//! delivery) when the backend looks able to take it; half-open → closed
//! when the trial succeeds, or open again when it fails.
//!
//! How an open breaker decides that the backend may be back:
//! - a **connect probe** (connect, greeting, `LHLO`/`EHLO`, `QUIT`) every
//!   `sluice_breaker_probe_interval` tells, for the price of one connection
//!   attempt per interval and no message; the first that is answered makes
//!   the trial due at once, so a recovered server is seen within about an
//!   interval. This is how every opening is watched: a crashed or
//!   restarted server resets its connections mid-transaction, then refuses
//!   new ones, and greets again when it is back;
//! - but a trial that was greeted and then failed ([`Failure::Broken`]:
//!   `421` or a timeout after the greeting, a dropped connection) shows
//!   that a greeting proves nothing about this server now, so from then on
//!   the trial waits out a cool-down that doubles with each failed trial up
//!   to a cap. A trial that could not even be greeted
//!   ([`Failure::Unreachable`]) goes back to connect probes.
//!
//! A pure state machine over wall-clock milliseconds given by the caller, so
//! its state can be stored in the queue ([`BackendRecord`]) and restored
//! after a restart, and tests drive it without sleeping. Owns only the
//! decision; the gate acts on it (postpones mail, logs, persists) and the
//! dispatcher runs the probes. Never reads the clock, never touches the
//! network.
//!
//! Why wall-clock and not monotonic time: the probe time must mean the same
//! after a restart, and it is stored next to the queue's own due times,
//! which are wall-clock.

use std::time::Duration;

use sluice_queue::{BackendRecord, BreakerPosition, UnixMillis};

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that open a closed breaker
    /// (`sluice_breaker_failure_threshold` times Postfix's
    /// `destination_concurrency_failed_cohort_limit`, whose default of 1
    /// leaves the threshold as it is).
    pub threshold: u32,
    /// First open period.
    pub cooldown: Duration,
    /// Cap on the open period as it doubles per failed probe.
    pub max_cooldown: Duration,
    /// Spacing of connect probes while the backend cannot be reached.
    pub probe_interval: Duration,
}

/// How a delivery failed, as far as watching for recovery goes (it
/// matters for a failed trial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Before the conversation: connect, greeting, `LHLO`/`EHLO`. A
    /// connect probe sees the recovery.
    Unreachable,
    /// Later: `421` or a timeout in the transaction, a lost connection.
    /// After a trial failed so, a greeting proves nothing.
    Broken,
}

/// What the breaker allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: deliver.
    Go,
    /// The cool-down is over: this one delivery is the half-open probe.
    Probe,
    /// A probe is in flight: wait for its verdict.
    ProbeInFlight,
    /// Open: nothing until this time (the next probe).
    Wait { until: UnixMillis },
}

/// A change of position, for logs and for persisting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open after `failures` in a row; first probe at `probe_at`.
    Opened { failures: u32, probe_at: UnixMillis },
    /// Open → half-open: the probe delivery starts.
    HalfOpened,
    /// Half-open → open: the probe failed (`failed_probes` so far).
    Reopened { failed_probes: u32, probe_at: UnixMillis },
    /// Half-open → closed: the probe succeeded.
    Closed,
}

/// While open: the trial is due at `probe_at` ([`NEVER`]: only after a
/// connect probe is answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { probe_at: UnixMillis },
    HalfOpen,
}

/// A trial time that only a connect probe brings forward.
const NEVER: UnixMillis = UnixMillis::MAX;

/// Connect probes of an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch {
    next: UnixMillis,
    running: bool,
}

/// One backend's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: Policy,
    state: State,
    /// Probes that failed since the breaker last closed; grows the cool-down.
    failed_probes: u32,
    opened_at: Option<UnixMillis>,
    /// Connect probes, while open (unless a greeted trial failed).
    watch: Option<Watch>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: Policy) -> Breaker {
        Breaker {
            policy,
            state: State::Closed { failures: 0 },
            failed_probes: 0,
            opened_at: None,
            watch: None,
        }
    }

    /// A breaker in the state a stored record describes. An open one is
    /// connect-probed at once (a probe costs one connection; the record does
    /// not say whether a greeting was still worth trusting); one that was
    /// half-open when sluice stopped lost its trial, which is due again now.
    pub fn restore(policy: Policy, record: &BackendRecord, now: UnixMillis) -> Breaker {
        let (state, watch) = match record.breaker {
            BreakerPosition::Closed => (State::Closed { failures: 0 }, None),
            BreakerPosition::Open => {
                (State::Open { probe_at: NEVER }, Some(Watch { next: now, running: false }))
            }
            BreakerPosition::HalfOpen => (State::Open { probe_at: now }, None),
        };
        Breaker { policy, state, failed_probes: record.failed_probes, opened_at: record.opened_at, watch }
    }

    /// Replaces the thresholds (configuration reload); the position stays.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The position as the queue stores it.
    pub fn position(&self) -> BreakerPosition {
        match self.state {
            State::Closed { .. } => BreakerPosition::Closed,
            State::Open { .. } => BreakerPosition::Open,
            State::HalfOpen => BreakerPosition::HalfOpen,
        }
    }

    /// While open, when something next happens: the next connect probe or
    /// the trial, whichever comes first.
    pub fn probe_at(&self) -> Option<UnixMillis> {
        match self.state {
            State::Open { probe_at } => Some(match self.watch {
                Some(w) => w.next.min(probe_at),
                None => probe_at,
            }),
            _ => None,
        }
    }

    /// When the next connect probe is due, while the breaker watches for
    /// the backend to answer again (none running).
    pub fn next_connect_probe(&self) -> Option<UnixMillis> {
        match (self.state, self.watch) {
            (State::Open { .. }, Some(w)) if !w.running => Some(w.next),
            _ => None,
        }
    }

    /// True when a connect probe should start at `now`.
    pub fn connect_probe_due(&self, now: UnixMillis) -> bool {
        self.next_connect_probe().is_some_and(|t| now >= t)
    }

    /// A connect probe starts at `now`: the next one is an interval later,
    /// and none starts while this one runs.
    pub fn connect_probe_started(&mut self, now: UnixMillis) {
        if let Some(w) = &mut self.watch {
            w.running = true;
            w.next = now.saturating_add(self.policy.probe_interval.as_millis() as u64);
        }
    }

    /// A connect probe ended; `answered`: the backend greeted and answered
    /// `LHLO`/`EHLO`. Returns true when that made the trial due now.
    pub fn connect_probe_done(&mut self, answered: bool, now: UnixMillis) -> bool {
        let Some(w) = &mut self.watch else { return false };
        w.running = false;
        if answered && matches!(self.state, State::Open { .. }) {
            self.watch = None;
            self.state = State::Open { probe_at: now };
            return true;
        }
        false
    }

    /// When the breaker last opened, while it is not closed.
    pub fn opened_at(&self) -> Option<UnixMillis> {
        self.opened_at
    }

    /// Consecutive failed probes.
    pub fn failed_probes(&self) -> u32 {
        self.failed_probes
    }

    /// Writes the breaker's fields into a stored record.
    pub fn store(&self, record: &mut BackendRecord) {
        record.breaker = self.position();
        record.failed_probes = self.failed_probes;
        record.opened_at = self.opened_at;
        record.probe_at = self.probe_at();
    }

    /// The open period after `failed_probes` failed probes: the cool-down,
    /// doubled per failed probe, capped.
    pub fn cooldown(&self, failed_probes: u32) -> Duration {
        let base = self.policy.cooldown;
        let doubled = base.checked_mul(1u32 << failed_probes.min(20)).unwrap_or(self.policy.max_cooldown);
        doubled.min(self.policy.max_cooldown.max(base))
    }

    /// What [`Breaker::admit`] would answer at `now`, without changing state.
    pub fn peek(&self, now: UnixMillis) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Go,
            State::HalfOpen => Admit::ProbeInFlight,
            State::Open { probe_at } if now >= probe_at => Admit::Probe,
            State::Open { probe_at } => Admit::Wait { until: self.probe_at().unwrap_or(probe_at) },
        }
    }

    /// Asks whether a delivery may start at `now`. The first call after the
    /// cool-down turns the breaker half-open and returns [`Admit::Probe`]
    /// (with [`Transition::HalfOpened`] for the caller to log and store);
    /// exactly one probe is handed out per cool-down.
    pub fn admit(&mut self, now: UnixMillis) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed { .. } => (Admit::Go, None),
            State::HalfOpen => (Admit::ProbeInFlight, None),
            State::Open { probe_at } if now >= probe_at => {
                self.state = State::HalfOpen;
                (Admit::Probe, Some(Transition::HalfOpened))
            }
            State::Open { probe_at } => (Admit::Wait { until: self.probe_at().unwrap_or(probe_at) }, None),
        }
    }

    /// A delivery got through to the backend (a verdict from it, whatever
    /// the per-recipient answers). `probe` is true for the probe delivery.
    /// Results of deliveries that started before the breaker opened are
    /// ignored while it is open: only the probe decides.
    pub fn on_success(&mut self, probe: bool) -> Option<Transition> {
        match self.state {
            State::Closed { .. } => {
                self.state = State::Closed { failures: 0 };
                None
            }
            State::HalfOpen if probe => {
                self.state = State::Closed { failures: 0 };
                self.failed_probes = 0;
                self.opened_at = None;
                self.watch = None;
                Some(Transition::Closed)
            }
            _ => None,
        }
    }

    /// A delivery failed at the backend level (connection refused or timed
    /// out, `421`, a timeout in the conversation, a lost connection).
    pub fn on_failure(&mut self, probe: bool, failure: Failure, now: UnixMillis) -> Option<Transition> {
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.policy.threshold.max(1) {
                    self.open(true, 0, now);
                    self.opened_at = Some(now);
                    Some(Transition::Opened { failures, probe_at: self.probe_at().unwrap_or(now) })
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            State::HalfOpen if probe => {
                self.failed_probes = self.failed_probes.saturating_add(1);
                self.open(failure == Failure::Unreachable, self.failed_probes, now);
                Some(Transition::Reopened {
                    failed_probes: self.failed_probes,
                    probe_at: self.probe_at().unwrap_or(now),
                })
            }
            _ => None,
        }
    }

    /// Opens: watched by connect probes from an interval on (`watch`), else
    /// a trial after the cool-down.
    fn open(&mut self, watch: bool, failed_probes: u32, now: UnixMillis) {
        if watch {
            let next = now.saturating_add(self.policy.probe_interval.as_millis() as u64);
            self.state = State::Open { probe_at: NEVER };
            self.watch = Some(Watch { next, running: false });
        } else {
            let probe_at = now.saturating_add(self.cooldown(failed_probes).as_millis() as u64);
            self.state = State::Open { probe_at };
            self.watch = None;
        }
    }

    /// The probe never reached a verdict (it was postponed or abandoned at
    /// shutdown): the breaker goes back to open with the probe due again now.
    pub fn probe_abandoned(&mut self, now: UnixMillis) {
        if self.state == State::HalfOpen {
            self.state = State::Open { probe_at: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Failure::{Broken, Unreachable};

    const POLICY: Policy = Policy {
        threshold: 3,
        cooldown: Duration::from_secs(10),
        max_cooldown: Duration::from_secs(60),
        probe_interval: Duration::from_secs(1),
    };

    /// An open breaker whose next connect probe is answered at `now`.
    fn answered(b: &mut Breaker, now: UnixMillis) {
        assert!(b.connect_probe_due(now), "a connect probe is due at {now}");
        b.connect_probe_started(now);
        assert!(b.connect_probe_done(true, now));
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_and_success_resets_the_count() {
        let mut b = Breaker::new(POLICY);
        assert_eq!(b.on_failure(false, Broken, 0), None);
        assert_eq!(b.on_failure(false, Unreachable, 0), None);
        assert_eq!(b.on_success(false), None);
        assert_eq!(b.on_failure(false, Broken, 0), None);
        assert_eq!(b.on_failure(false, Broken, 0), None);
        // The next event is the first connect probe, an interval later.
        assert_eq!(
            b.on_failure(false, Broken, 1_000),
            Some(Transition::Opened { failures: 3, probe_at: 2_000 })
        );
        assert_eq!(b.position(), BreakerPosition::Open);
        assert_eq!(b.admit(1_500), (Admit::Wait { until: 2_000 }, None));
    }

    #[test]
    fn every_opening_is_connect_probed_each_interval_and_an_answer_lets_one_trial_through() {
        for failure in [Unreachable, Broken] {
            let mut b = Breaker::new(POLICY);
            for _ in 0..3 {
                b.on_failure(false, failure, 500);
            }
            assert!(!b.connect_probe_due(1_499));
            // Past the cool-down too: no trial delivery while probes fail.
            let mut now = 1_500;
            let mut probes = 0;
            while now < 30_000 {
                assert!(matches!(b.admit(now).0, Admit::Wait { .. }), "no trial at {now}");
                if b.connect_probe_due(now) {
                    b.connect_probe_started(now);
                    probes += 1;
                    assert!(!b.connect_probe_due(now), "one probe at a time");
                    assert!(!b.connect_probe_done(false, now + 300));
                }
                now += 100;
            }
            assert_eq!(probes, 29, "one connection attempt per interval");
            answered(&mut b, 30_500);
            assert_eq!(b.admit(30_500), (Admit::Probe, Some(Transition::HalfOpened)));
            assert_eq!(b.admit(30_501).0, Admit::ProbeInFlight, "exactly one trial");
            assert_eq!(b.next_connect_probe(), None);
            // A straggler that started before the breaker opened does not decide.
            assert_eq!(b.on_success(false), None);
            assert_eq!(b.on_failure(false, Broken, 30_502), None);
            assert_eq!(b.on_success(true), Some(Transition::Closed));
            assert_eq!(b.admit(30_503).0, Admit::Go);
            assert_eq!(b.failed_probes(), 0);
        }
    }

    #[test]
    fn a_greeted_trial_that_fails_falls_back_to_a_doubling_cooldown() {
        let mut b = Breaker::new(POLICY);
        for _ in 0..3 {
            b.on_failure(false, Broken, 0);
        }
        answered(&mut b, 1_000);
        let mut now = 1_000;
        let mut periods = Vec::new();
        for _ in 0..5 {
            assert_eq!(b.admit(now).0, Admit::Probe);
            match b.on_failure(true, Broken, now) {
                Some(Transition::Reopened { probe_at, .. }) => {
                    assert_eq!(b.next_connect_probe(), None, "a greeting proves nothing now");
                    periods.push((probe_at - now) / 1000);
                    now = probe_at;
                }
                t => panic!("expected reopen, got {t:?}"),
            }
        }
        assert_eq!(periods, vec![20, 40, 60, 60, 60]);
        assert_eq!(b.failed_probes(), 5);
        // A trial that cannot even be greeted: connect probes again.
        assert_eq!(b.admit(now).0, Admit::Probe);
        assert_eq!(
            b.on_failure(true, Unreachable, now),
            Some(Transition::Reopened { failed_probes: 6, probe_at: now + 1_000 })
        );
        assert!(b.connect_probe_due(now + 1_000));
    }

    #[test]
    fn state_survives_a_store_and_restore() {
        let mut b = Breaker::new(POLICY);
        for _ in 0..3 {
            b.on_failure(false, Broken, 500);
        }
        let mut rec = BackendRecord::default();
        b.store(&mut rec);
        assert_eq!(rec.breaker, BreakerPosition::Open);
        assert_eq!(rec.probe_at, Some(1_500));
        assert_eq!(rec.opened_at, Some(500));
        // Restored open: connect-probed at once, no trial before an answer.
        let mut r = Breaker::restore(POLICY, &rec, 60_000);
        assert_eq!(r.admit(60_000).0, Admit::Wait { until: 60_000 });
        r.connect_probe_started(60_000);
        r.connect_probe_done(false, 60_100);
        assert_eq!(r.admit(60_100).0, Admit::Wait { until: 61_000 });
        answered(&mut r, 61_000);
        assert_eq!(r.admit(61_000).0, Admit::Probe);

        // Half-open at shutdown: the trial is due again at start.
        rec.breaker = BreakerPosition::HalfOpen;
        rec.failed_probes = 2;
        let mut r = Breaker::restore(POLICY, &rec, 7_000);
        assert_eq!(r.admit(7_000).0, Admit::Probe);
        assert_eq!(
            r.on_failure(true, Broken, 7_000),
            Some(Transition::Reopened { failed_probes: 3, probe_at: 67_000 })
        );
    }

    #[test]
    fn abandoned_probe_is_due_again() {
        let mut b = Breaker::new(POLICY);
        for _ in 0..3 {
            b.on_failure(false, Broken, 0);
        }
        answered(&mut b, 1_000);
        assert_eq!(b.admit(1_000).0, Admit::Probe);
        b.probe_abandoned(1_500);
        assert_eq!(b.admit(1_500).0, Admit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_elapses_on_the_paused_clock() {
        // The breaker takes wall-clock milliseconds; here tokio's paused
        // clock stands in for them and the test sleeps through a cool-down.
        let start = crate::clock::instant();
        let now = || start.elapsed().as_millis() as u64;
        let mut b = Breaker::new(POLICY);
        for _ in 0..3 {
            b.on_failure(false, Broken, now());
        }
        let Admit::Wait { until } = b.admit(now()).0 else { panic!("breaker should be open") };
        tokio::time::sleep(Duration::from_millis(until - now())).await;
        answered(&mut b, now());
        assert_eq!(b.admit(now()).0, Admit::Probe);
        b.on_failure(true, Broken, now());
        let Admit::Wait { until } = b.admit(now()).0 else { panic!("open again") };
        tokio::time::sleep(Duration::from_millis(until - now() - 1)).await;
        assert!(matches!(b.admit(now()).0, Admit::Wait { .. }), "still open 1 ms before the trial");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(b.admit(now()).0, Admit::Probe);
        assert_eq!(start.elapsed(), Duration::from_secs(21));
    }
}
