//! The rate limits of one backend: `<transport>_sluice_rate_limit` (a GCRA
//! quota from `governor`, with its burst) and Postfix's
//! `<transport>_destination_rate_delay` (at most one delivery start per
//! delay, no burst).
//!
//! Owns only "may a delivery start now, or when": it never sleeps, and it is
//! asked only by a dispatcher that already holds a concurrency slot, so a
//! token taken is a token used. Generic over governor's clock: production
//! uses [`TokioClock`] (tokio's pausable clock, like the rest of
//! `delivery`), tests use governor's `FakeRelativeClock`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::delivery::settings::Rate;

/// governor's clock over `sluice::clock::instant()`, so rate limits follow
/// tokio's clock (and `start_paused` tests) like every other timer here.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        crate::clock::instant().into_std()
    }
}

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A backend's rate limits.
pub struct Limiter<C: Clock = TokioClock> {
    clock: C,
    rate: Option<(Rate, Gcra<C>)>,
    delay: Option<(Duration, Gcra<C>)>,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rate", &self.rate.as_ref().map(|r| r.0))
            .field("delay", &self.delay.as_ref().map(|d| d.0))
            .finish()
    }
}

impl Limiter<TokioClock> {
    /// Limits on tokio's clock.
    pub fn new(rate: Option<Rate>, delay: Duration) -> Limiter<TokioClock> {
        Limiter::with_clock(rate, delay, TokioClock)
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// Limits on the given clock.
    pub fn with_clock(rate: Option<Rate>, delay: Duration, clock: C) -> Limiter<C> {
        let rate = rate.and_then(|r| {
            let period = r.per / r.count.get();
            let quota = Quota::with_period(period)?.allow_burst(r.burst);
            Some((r, RateLimiter::direct_with_clock(quota, clock.clone())))
        });
        let delay = (!delay.is_zero()).then(|| {
            let quota = Quota::with_period(delay)
                .map(|q| q.allow_burst(NonZeroU32::MIN))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
            (delay, RateLimiter::direct_with_clock(quota, clock.clone()))
        });
        Limiter { clock, rate, delay }
    }

    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.delay.is_none()
    }

    /// The configured rate in deliveries per second (`0.0`: unlimited), the
    /// stricter of the two limits.
    pub fn per_second(&self) -> f64 {
        let a = self.rate.as_ref().map(|(r, _)| r.per_second());
        let b = self.delay.as_ref().map(|(d, _)| 1.0 / d.as_secs_f64());
        match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => 0.0,
        }
    }

    /// Takes a token from each limit if all allow a delivery now; otherwise
    /// takes none and returns how long until they might.
    ///
    /// The rate-delay limiter is asked first and the quota second; if the
    /// quota refuses after the delay allowed, the delay's token is spent —
    /// harmless, as it only pushes the next start back by the same wait the
    /// quota already imposes.
    pub fn check(&self) -> Result<(), Duration> {
        if let Some((_, l)) = &self.delay
            && let Err(not_until) = l.check()
        {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        if let Some((_, l)) = &self.rate
            && let Err(not_until) = l.check()
        {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        Ok(())
    }

    /// Estimated time for `n` more deliveries to get through (for postponing
    /// mail that will not fit in memory); zero when unlimited.
    pub fn time_for(&self, n: usize) -> Duration {
        let per = self.per_second();
        if per <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(n as f64 / per) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(text: &str, burst: u32) -> Option<Rate> {
        Rate::parse(text, burst).unwrap()
    }

    #[test]
    fn quota_allows_the_burst_then_one_per_period() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(rate("10/s", 3), Duration::ZERO, clock.clone());
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert_eq!(l.check(), Err(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(60));
        assert_eq!(l.check(), Err(Duration::from_millis(40)));
        clock.advance(Duration::from_millis(40));
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
        assert!((l.per_second() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn per_minute_rates_space_deliveries_evenly() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(rate("30/m", 1), Duration::ZERO, clock.clone());
        assert!(l.check().is_ok());
        assert_eq!(l.check(), Err(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert!(l.check().is_ok());
    }

    #[test]
    fn destination_rate_delay_spaces_starts_without_burst() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(None, Duration::from_secs(5), clock.clone());
        assert!(l.check().is_ok());
        assert_eq!(l.check(), Err(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(60));
        // A long idle spell does not save up starts.
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
        assert_eq!(l.time_for(12), Duration::from_secs(60));
    }

    #[test]
    fn the_stricter_limit_wins() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(rate("100/s", 50), Duration::from_secs(1), clock.clone());
        assert!(l.check().is_ok());
        assert_eq!(l.check(), Err(Duration::from_secs(1)));
        assert!((l.per_second() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn no_limits_always_allow() {
        let l = Limiter::with_clock(None, Duration::ZERO, FakeRelativeClock::default());
        assert!(l.is_unlimited());
        for _ in 0..10_000 {
            assert!(l.check().is_ok());
        }
        assert_eq!(l.time_for(1000), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let l = Limiter::new(rate("2/s", 1), Duration::ZERO);
        assert!(l.check().is_ok());
        let wait = l.check().unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::sleep(wait).await;
        assert!(l.check().is_ok());
    }
}
