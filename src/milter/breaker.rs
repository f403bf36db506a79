//! A circuit breaker per milter, so a milter that is down, hanging or
//! broken costs sessions nothing after the first failures: while it is
//! open, sessions do not connect and `milter_default_action` applies at
//! once.
//!
//! Pure policy with time passed in (STYLE.md rule 4): no I/O, no clock,
//! no logging; the caller logs the transitions it is told about. Closed →
//! open after `threshold` failures in a row (a refused or timed-out
//! connect, a reply that did not come in time, a protocol error); open →
//! one probe after the cool-down; the probe's success closes it, its
//! failure opens it again for twice as long, up to [`MAX_FACTOR`] times the
//! configured cool-down.

use std::time::Duration;

use tokio::time::Instant;

/// The longest cool-down, as a multiple of the configured one.
pub const MAX_FACTOR: u32 = 8;

/// Whether a session may use the milter now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: connect as usual.
    Use,
    /// The cool-down is over: this session tries it, the others skip it
    /// until the try's outcome is known.
    Probe,
    /// Open: do not connect; the default action applies.
    Skip,
}

/// A change the caller logs (once per change, not per session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It has just opened, for this long, after this many failures.
    Opened { failures: u32, cooldown: Duration },
    /// A probe failed: open again for this long.
    Reopened { cooldown: Duration },
    /// A probe (or any use) succeeded after it was open.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// One session is trying it since `since`. If no outcome is reported
    /// within a cool-down (that session went away), another may try.
    Probing {
        since: Instant,
        cooldown: Duration,
    },
}

/// The breaker of one milter.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row
    /// (at least 1) and stays open `cooldown` at first.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown, state: State::Closed { failures: 0 } }
    }

    /// Takes the settings of a new configuration, keeping the state.
    pub fn reconfigure(&mut self, threshold: u32, cooldown: Duration) {
        self.threshold = threshold.max(1);
        self.cooldown = cooldown;
    }

    /// May a session use the milter at `now`?
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Closed { .. } => Permit::Use,
            State::Open { until, cooldown } if now >= until => {
                self.state = State::Probing { since: now, cooldown };
                Permit::Probe
            }
            State::Open { .. } => Permit::Skip,
            State::Probing { since, cooldown } if now >= since + cooldown => {
                self.state = State::Probing { since: now, cooldown };
                Permit::Probe
            }
            State::Probing { .. } => Permit::Skip,
        }
    }

    /// The milter answered.
    pub fn success(&mut self) -> Option<Transition> {
        let was_open = !matches!(self.state, State::Closed { .. });
        self.state = State::Closed { failures: 0 };
        was_open.then_some(Transition::Closed)
    }

    /// The milter failed at `now`.
    pub fn failure(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    self.state = State::Open { until: now + self.cooldown, cooldown: self.cooldown };
                    Some(Transition::Opened { failures, cooldown: self.cooldown })
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            State::Probing { cooldown, .. } | State::Open { cooldown, .. } => {
                let longer = (cooldown * 2).min(self.cooldown * MAX_FACTOR).max(self.cooldown);
                let reopened = matches!(self.state, State::Probing { .. });
                self.state = State::Open { until: now + longer, cooldown: longer };
                reopened.then_some(Transition::Reopened { cooldown: longer })
            }
        }
    }

    /// True while sessions skip the milter.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_threshold_failures_in_a_row() {
        let t0 = crate::clock::instant();
        let mut b = Breaker::new(3, 10 * S);
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.success(), None);
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.permit(t0), Permit::Use);
        assert_eq!(b.failure(t0), Some(Transition::Opened { failures: 3, cooldown: 10 * S }));
        assert_eq!(b.permit(t0 + 9 * S), Permit::Skip);
    }

    #[test]
    fn one_probe_after_the_cooldown_then_close_or_back_off() {
        let t0 = crate::clock::instant();
        let mut b = Breaker::new(1, 10 * S);
        b.failure(t0);
        let t1 = t0 + 10 * S;
        assert_eq!(b.permit(t1), Permit::Probe);
        assert_eq!(b.permit(t1), Permit::Skip, "only one session probes");
        assert_eq!(b.failure(t1), Some(Transition::Reopened { cooldown: 20 * S }));
        assert_eq!(b.permit(t1 + 19 * S), Permit::Skip);
        let t2 = t1 + 20 * S;
        assert_eq!(b.permit(t2), Permit::Probe);
        assert_eq!(b.success(), Some(Transition::Closed));
        assert_eq!(b.permit(t2), Permit::Use);
        assert!(!b.is_open());
    }

    #[test]
    fn backoff_is_capped_and_an_abandoned_probe_is_retried() {
        let mut t = crate::clock::instant();
        let mut b = Breaker::new(1, 10 * S);
        b.failure(t);
        for _ in 0..10 {
            t += 1000 * S;
            assert_eq!(b.permit(t), Permit::Probe);
            b.failure(t);
        }
        assert_eq!(b.permit(t + 79 * S), Permit::Skip);
        assert_eq!(b.permit(t + 80 * S), Permit::Probe);
        // The probing session vanished without a verdict.
        assert_eq!(b.permit(t + 81 * S), Permit::Skip);
        assert_eq!(b.permit(t + 160 * S), Permit::Probe);
    }
}
