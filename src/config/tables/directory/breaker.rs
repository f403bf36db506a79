//! The breaker of one directory server (an LDAP, SQL or socketmap server
//! of a table): after `sluice_table_breaker_failure_threshold` failed
//! lookups in a row it opens, and lookups skip the server at once (the next
//! server of the table, or "lookup failed" when there is none) instead of
//! every SMTP session waiting out a timeout against a dead server. After a
//! cool-down (`sluice_table_breaker_cooldown`, doubling per failed probe up
//! to `sluice_table_breaker_max_cooldown`) one lookup is let through as a
//! probe; its success closes the breaker.
//!
//! Pure: time is passed in. A probe whose lookup never reports back (its
//! session went away) is given up after `probe_timeout`, so the breaker
//! cannot stay half-open for ever. Nothing is persisted: a directory
//! server's health is rediscovered within one cool-down after a restart.

use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerPolicy {
    pub threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// How long a probe may take before another is allowed.
    pub probe_timeout: Duration,
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: ask the server.
    Go,
    /// This lookup is the probe of an open breaker.
    Probe,
    /// Open (or a probe is out): do not ask this server.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Opened after `failures` in a row (or a failed probe); skipped for `cooldown`.
    Opened { cooldown: Duration },
    /// A probe succeeded: the server is asked again.
    Closed,
}

/// One server's breaker.
#[derive(Debug, Clone)]
pub(crate) struct DirectoryBreaker {
    policy: BreakerPolicy,
    state: State,
    failed_probes: u32,
}

impl DirectoryBreaker {
    pub fn new(policy: BreakerPolicy) -> DirectoryBreaker {
        DirectoryBreaker { policy, state: State::Closed { failures: 0 }, failed_probes: 0 }
    }

    /// Whether a lookup may ask the server at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Go,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { since: now };
                Admit::Probe
            }
            State::HalfOpen { since } if now >= since + self.policy.probe_timeout => {
                self.state = State::HalfOpen { since: now };
                Admit::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Admit::Skip,
        }
    }

    /// The server answered (found or not found).
    pub fn success(&mut self) -> Option<Change> {
        let was_open = !matches!(self.state, State::Closed { .. });
        self.state = State::Closed { failures: 0 };
        self.failed_probes = 0;
        was_open.then_some(Change::Closed)
    }

    /// The server failed (connection, protocol error, timeout) at `now`.
    pub fn failure(&mut self, now: Instant) -> Option<Change> {
        match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.policy.threshold.max(1) {
                    Some(self.open(now))
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            State::HalfOpen { .. } => {
                self.failed_probes += 1;
                Some(self.open(now))
            }
            // A lookup admitted before the breaker opened failed too.
            State::Open { .. } => None,
        }
    }

    fn open(&mut self, now: Instant) -> Change {
        let factor = 1u32.checked_shl(self.failed_probes.min(16)).unwrap_or(u32::MAX);
        let cooldown = self
            .policy
            .cooldown
            .saturating_mul(factor)
            .min(self.policy.max_cooldown.max(self.policy.cooldown));
        self.state = State::Open { until: now + cooldown };
        Change::Opened { cooldown }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> DirectoryBreaker {
        DirectoryBreaker::new(BreakerPolicy {
            threshold: 3,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(12),
            probe_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_the_threshold_and_skips_until_the_cooldown_ends() {
        let t0 = crate::clock::instant();
        let mut b = breaker();
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.failure(t0), Some(Change::Opened { cooldown: Duration::from_secs(5) }));
        assert_eq!(b.admit(t0 + Duration::from_secs(4)), Admit::Skip);
        assert_eq!(b.admit(t0 + Duration::from_secs(5)), Admit::Probe);
        assert_eq!(b.admit(t0 + Duration::from_secs(5)), Admit::Skip, "one probe at a time");
        assert_eq!(b.success(), Some(Change::Closed));
        assert_eq!(b.admit(t0 + Duration::from_secs(6)), Admit::Go);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = crate::clock::instant();
        let mut b = breaker();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.success(), None);
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.admit(t0), Admit::Go);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let t0 = crate::clock::instant();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert_eq!(b.failure(t1), Some(Change::Opened { cooldown: Duration::from_secs(10) }));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(t2), Admit::Probe);
        assert_eq!(b.failure(t2), Some(Change::Opened { cooldown: Duration::from_secs(12) }));
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let t0 = crate::clock::instant();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert_eq!(b.admit(t1 + Duration::from_secs(9)), Admit::Skip);
        assert_eq!(b.admit(t1 + Duration::from_secs(10)), Admit::Probe);
    }
}
