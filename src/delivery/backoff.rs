//! Retry timing: exponential backoff with jitter, queue lifetime, delay
//! warnings. Pure functions over plain data and a `now` given by the caller
//! (STYLE.md rule 4); randomness comes in as a number in `[0, 1)` so tests
//! pin it.
//!
//! Owns when a deferred recipient is tried again and when it gives up.
//! Never reads the clock, the queue or the configuration.

use std::time::Duration;

use sluice_queue::{Envelope, RcptState, UnixMillis};

/// The bounds a retry delay lives in (`minimal_backoff_time`,
/// `maximal_backoff_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// How far jitter may move a delay either way, as a fraction of it.
const JITTER: f64 = 0.2;

impl Backoff {
    /// The delay before the next attempt after `attempts` attempts that reached
    /// a verdict: `min`, doubling per attempt, never above `max`, then spread
    /// by up to ±20 % (`u` uniform in `[0, 1)`) but kept within `[min, max]`,
    /// so recipients deferred together by one outage do not all come back in
    /// the same second.
    pub fn delay(&self, attempts: u32, u: f64) -> Duration {
        let min = self.min.as_secs_f64();
        let max = self.max.as_secs_f64().max(min);
        let doublings = attempts.saturating_sub(1).min(62) as i32;
        let base = (min * 2f64.powi(doublings)).clamp(min, max);
        let lower = (base * (1.0 - JITTER)).max(min);
        let upper = (base * (1.0 + JITTER)).min(max);
        let u = if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 };
        Duration::from_secs_f64(lower + (upper - lower) * u)
    }

    /// The due time after a deferral at `now`.
    pub fn next_due(&self, now: UnixMillis, attempts: u32, u: f64) -> UnixMillis {
        now.saturating_add(self.delay(attempts, u).as_millis() as u64)
    }
}

/// True when a message that arrived at `arrival` has been queued longer than
/// `lifetime` at `now`: its deferred recipients bounce instead of waiting
/// again.
pub fn expired(arrival: UnixMillis, lifetime: Duration, now: UnixMillis) -> bool {
    now.saturating_sub(arrival) >= lifetime.as_millis() as u64
}

/// The lifetime that applies to a message: sluice's own notifications use
/// `bounce_queue_lifetime`, everything else `maximal_queue_lifetime`.
pub fn lifetime(envelope: &Envelope, maximal: Duration, bounce: Duration) -> Duration {
    if envelope.is_notification || envelope.sender.is_empty() { bounce.min(maximal) } else { maximal }
}

/// True when a delay notice is due for this message: warnings are on, it
/// has been queued for `warn_after`, it has not been warned about, it has a
/// sender to tell (not the null sender, not one of our own notifications),
/// and some recipient is still deferred.
pub fn delay_warning_due(envelope: &Envelope, warn_after: Option<Duration>, now: UnixMillis) -> bool {
    let Some(warn) = warn_after else { return false };
    !envelope.delay_warned
        && !envelope.is_notification
        && !envelope.sender.is_empty()
        && now.saturating_sub(envelope.arrival) >= warn.as_millis() as u64
        && envelope.recipients.iter().any(|r| matches!(r.state, RcptState::Deferred { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff { min: Duration::from_secs(300), max: Duration::from_secs(4000) };

    #[test]
    fn delay_doubles_from_minimal_up_to_maximal() {
        // u = 0.5 is the midpoint of the jitter band.
        let mid = |n| B.delay(n, 0.5).as_secs_f64();
        assert!((mid(1) - 330.0).abs() < 1e-6, "{}", mid(1)); // band [300, 360]
        assert!((mid(2) - 600.0).abs() < 1e-6);
        assert!((mid(3) - 1200.0).abs() < 1e-6);
        assert!((mid(4) - 2400.0).abs() < 1e-6);
        // 4800 capped to 4000, band [3200, 4000].
        assert!((mid(5) - 3600.0).abs() < 1e-6);
        assert!((mid(60) - 3600.0).abs() < 1e-6);
        assert_eq!(B.delay(0, 0.0), Duration::from_secs(300));
    }

    #[test]
    fn jitter_never_leaves_the_configured_bounds() {
        for n in 0..20 {
            for u in [0.0, 0.1, 0.5, 0.9, 0.999_999, 1.0, f64::NAN] {
                let d = B.delay(n, u);
                assert!(d >= B.min && d <= B.max, "attempt {n}, u {u}: {d:?}");
            }
        }
        // Jitter spreads: the two ends of the band differ.
        assert!(B.delay(3, 0.0) < B.delay(3, 0.99));
    }

    #[test]
    fn maximal_below_minimal_is_treated_as_minimal() {
        let b = Backoff { min: Duration::from_secs(60), max: Duration::from_secs(10) };
        assert_eq!(b.delay(5, 0.7), Duration::from_secs(60));
    }

    #[test]
    fn expiry_is_measured_from_arrival() {
        let day = Duration::from_secs(86400);
        assert!(!expired(1_000, day, 1_000 + 86_399_999));
        assert!(expired(1_000, day, 1_000 + 86_400_000));
        assert!(!expired(5_000, day, 1_000), "clock going backwards does not expire");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_follow_backoff_as_time_passes() {
        // Drive the pure policy with tokio's paused clock standing in for the
        // wall clock: each deferral schedules the next attempt, time jumps to
        // it, and the gaps double until the cap.
        let start = crate::clock::instant();
        let mut gaps = Vec::new();
        for attempt in 1..=6 {
            let now = start.elapsed().as_millis() as u64;
            let due = B.next_due(now, attempt, 0.5);
            tokio::time::sleep(Duration::from_millis(due - now)).await;
            gaps.push((due - now) / 1000);
        }
        assert_eq!(gaps, vec![330, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(start.elapsed().as_secs(), 330 + 600 + 1200 + 2400 + 3600 + 3600);
    }
}
