//! Adaptive concurrency for one backend: how many deliveries may run at
//! once ([`AdaptiveLimit`], the policy). The slots that enforce it are
//! [`super::slots`].
//!
//! The policy is delay-based, in the manner of TCP Vegas: the backend's best
//! latency says what an unloaded delivery costs, and the ratio of the
//! (smoothed) latency to it says how far past its capacity the backend is
//! being pushed — a server that can work on C deliveries at once and is
//! given L > C makes each wait L/C times as long. While the ratio stays
//! below [`GROW_BELOW`] the limit grows by one per round trip (additive
//! increase; a step shows in the latency of deliveries started after it,
//! one round trip later, so stepping faster overshoots); above
//! [`SHRINK_ABOVE`] it shrinks the same way, so the limit settles between
//! 1.05 and 1.2 times the backend's capacity whatever that is. A smoothed
//! latency past the configured target, or an overload answer (`421`, a `4xx` at connect/`MAIL`/`DATA`,
//! a timeout), cuts it multiplicatively, at most once per round trip.
//! Latency comes first because an overloaded mailbox server slows down
//! before it fails.
//!
//! (A first version estimated the number of queued deliveries, Vegas's
//! `L·(1 − best/latency)`, against fixed thresholds of one or two; at small
//! capacities two extra deliveries are already 25 % too many, so the ratio,
//! which scales with the backend, replaced it.)
//!
//! The best latency must decay, or a backend whose baseline rose for good
//! would look congested forever. It must not decay merely with time,
//! though: under sustained overload every sample is inflated, a time-decayed
//! minimum creeps up to meet them, and the limit follows it past capacity.
//! So the best is re-measured instead, as BBR does: when no sample has come
//! close to it for [`PROBE_INTERVAL`], the limit is halved for a few round
//! trips and the lowest latency seen meanwhile becomes the new best (higher
//! or lower); then the limit is put back.
//!
//! Never reads the clock (callers pass `now`), never sleeps.

use std::time::Duration;

use tokio::time::Instant;

/// How long the best latency may go unconfirmed before it is re-measured.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// A sample within this factor of the best confirms it.
const CONFIRM: f64 = 1.1;
/// Shortest re-measuring period.
const MIN_PROBE: Duration = Duration::from_millis(200);
/// The limit grows while smoothed latency stays below this multiple of the
/// best ("near the best").
pub const GROW_BELOW: f64 = 1.05;
/// The limit shrinks while smoothed latency is above this multiple.
pub const SHRINK_ABOVE: f64 = 1.2;
/// Below this, a best latency counts as this much when excess latency is
/// weighed: for a backend answering in half a millisecond, a millisecond of
/// scheduling jitter is not 200 % of queueing. Its excess may reach 2 ms
/// (10 % of the floor) before growth stops.
const LATENCY_FLOOR: f64 = 0.020;
/// Weight of a new sample in the smoothed latency.
const SMOOTHING: f64 = 0.2;
/// Multiplicative decrease when latency passes the target.
const LATENCY_BACKOFF: f64 = 0.7;
/// Multiplicative decrease on an overload answer or a timeout.
const OVERLOAD_BACKOFF: f64 = 0.5;
/// Shortest spacing between two multiplicative decreases, so one burst of
/// failures (all the deliveries in flight timing out together) counts once.
const MIN_DECREASE_SPACING: Duration = Duration::from_millis(100);

/// Why the limit changed, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Latency stays near the best seen: more deliveries fit.
    LatencyNearBest,
    /// Deliveries are queueing inside the backend.
    Queueing,
    /// Smoothed latency passed `sluice_latency_target`.
    LatencyTarget,
    /// `421`, `4xx` at connect/MAIL/DATA, or a timeout.
    Overload,
    /// Restart after the breaker closed, or a configuration change.
    Reset,
    /// Halved for a moment to re-measure the best latency, or restored after.
    Probe,
}

impl Reason {
    /// Short text for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LatencyNearBest => "latency near best",
            Reason::Queueing => "queueing at backend",
            Reason::LatencyTarget => "latency above target",
            Reason::Overload => "overload reply or timeout",
            Reason::Reset => "reset",
            Reason::Probe => "re-measuring best latency",
        }
    }
}

/// A change of the whole-number limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    pub reason: Reason,
}

/// A re-measurement of the best latency in progress.
#[derive(Debug, Clone, Copy)]
struct Probe {
    until: Instant,
    /// The limit to return to.
    saved: f64,
    /// The smoothed latency at that limit, restored with it (the samples of
    /// the quiet spell say nothing about the saved limit).
    smoothed: f64,
    lowest: f64,
}

/// The adaptive limit.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    limit: f64,
    max: u32,
    target: Duration,
    /// Best latency; seconds.
    min_rtt: Option<f64>,
    /// When a sample last came within [`CONFIRM`] of the best.
    confirmed_at: Option<Instant>,
    probe: Option<Probe>,
    /// Exponentially smoothed latency; seconds.
    smoothed: Option<f64>,
    last_decrease: Option<Instant>,
    /// Start of the current decision round. A step shows only in the
    /// latency of deliveries started after it, so each decision is made on
    /// those alone (deciding on older samples overshoots: the limit keeps
    /// climbing on latencies measured before the last climb).
    epoch: Option<Instant>,
    epoch_sum: f64,
    epoch_n: u32,
}

/// One delivery's latency sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The server's share of the transaction time.
    pub latency: Duration,
    /// Deliveries running when it finished (itself included).
    pub in_flight: u32,
    /// When the delivery started.
    pub started: Instant,
}

impl AdaptiveLimit {
    /// Starts at `initial` (clamped to `1..=max`).
    pub fn new(initial: u32, max: u32, target: Duration) -> AdaptiveLimit {
        let max = max.max(1);
        AdaptiveLimit {
            limit: f64::from(initial.clamp(1, max)),
            max,
            target,
            min_rtt: None,
            confirmed_at: None,
            probe: None,
            smoothed: None,
            last_decrease: None,
            epoch: None,
            epoch_sum: 0.0,
            epoch_n: 0,
        }
    }

    /// The limit now.
    pub fn current(&self) -> u32 {
        (self.limit.floor() as u32).clamp(1, self.max)
    }

    /// The configured ceiling.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Smoothed latency.
    pub fn latency(&self) -> Option<Duration> {
        self.smoothed.map(Duration::from_secs_f64)
    }

    /// Best latency (decayed).
    pub fn best_latency(&self) -> Option<Duration> {
        self.min_rtt.map(Duration::from_secs_f64)
    }

    /// New ceiling and target (configuration reload).
    pub fn reconfigure(&mut self, max: u32, target: Duration) -> Option<Change> {
        let from = self.current();
        self.max = max.max(1);
        self.target = target;
        self.limit = self.limit.min(f64::from(self.max));
        self.change(from, Reason::Reset)
    }

    /// Sets the limit (breaker closed: restart low and climb again).
    pub fn reset(&mut self, to: u32) -> Option<Change> {
        let from = self.current();
        self.limit = f64::from(to.clamp(1, self.max));
        self.change(from, Reason::Reset)
    }

    fn change(&self, from: u32, reason: Reason) -> Option<Change> {
        let to = self.current();
        (to != from).then_some(Change { from, to, reason })
    }

    fn may_decrease(&self, now: Instant) -> bool {
        let spacing = self
            .smoothed
            .map(Duration::from_secs_f64)
            .unwrap_or(MIN_DECREASE_SPACING)
            .max(MIN_DECREASE_SPACING);
        self.last_decrease.is_none_or(|t| now.saturating_duration_since(t) >= spacing)
    }

    fn cut(&mut self, factor: f64, now: Instant, reason: Reason) -> Option<Change> {
        if !self.may_decrease(now) {
            return None;
        }
        let from = self.current();
        self.limit = (self.limit * factor).max(1.0);
        self.new_epoch(now);
        if let Some(p) = &mut self.probe {
            p.saved = (p.saved * factor).max(1.0);
        }
        self.last_decrease = Some(now);
        self.change(from, reason)
    }

    /// Starts a new decision round at `now`.
    fn new_epoch(&mut self, now: Instant) {
        self.epoch = Some(now);
        self.epoch_sum = 0.0;
        self.epoch_n = 0;
    }

    /// One delivery's latency sample, reported at `now`.
    pub fn on_sample(&mut self, s: Sample, now: Instant) -> Option<Change> {
        let Sample { latency: rtt, in_flight, started } = s;
        let sample = rtt.as_secs_f64().max(1e-6);
        if self.epoch.is_none_or(|e| started >= e) {
            self.epoch_sum += sample;
            self.epoch_n += 1;
        }
        let smoothed = match self.smoothed {
            Some(s) => s + SMOOTHING * (sample - s),
            None => sample,
        };
        self.smoothed = Some(smoothed);
        let from = self.current();

        if let Some(mut p) = self.probe {
            p.lowest = p.lowest.min(sample);
            if now < p.until {
                self.probe = Some(p);
                if smoothed > self.target.as_secs_f64() {
                    return self.cut(LATENCY_BACKOFF, now, Reason::LatencyTarget);
                }
                return None;
            }
            // Done: the lowest latency of the quiet spell is the new best.
            self.probe = None;
            self.min_rtt = Some(p.lowest);
            self.confirmed_at = Some(now);
            self.limit = p.saved;
            self.smoothed = Some(p.smoothed);
            self.new_epoch(now);
            return self.change(from, Reason::Probe);
        }

        let min = match self.min_rtt {
            Some(m) if m <= sample => m,
            _ => {
                self.min_rtt = Some(sample);
                sample
            }
        };
        if sample <= min * CONFIRM {
            self.confirmed_at = Some(now);
        }
        let stale = self.confirmed_at.is_none_or(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
        // At a limit of 1 there is nothing to halve: the samples are already
        // uncontended, and the spell just collects the lowest of them.
        if stale && in_flight.saturating_mul(2) >= self.current() {
            let length = Duration::from_secs_f64(3.0 * smoothed).max(MIN_PROBE);
            self.probe = Some(Probe { until: now + length, saved: self.limit, smoothed, lowest: sample });
            self.limit = (self.limit / 2.0).max(1.0);
            return self.change(from, Reason::Probe);
        }

        if smoothed > self.target.as_secs_f64() {
            return self.cut(LATENCY_BACKOFF, now, Reason::LatencyTarget);
        }
        // Decide once a limit's worth of deliveries started in this round
        // have reported: a round trip of evidence at the current limit.
        if self.epoch_n < self.current() {
            return None;
        }
        // How far past its capacity the backend is pushed: with L deliveries
        // on a server that works on C at once, latency is L/C times the best.
        let mean = self.epoch_sum / f64::from(self.epoch_n);
        let ratio = 1.0 + (mean - min).max(0.0) / min.max(LATENCY_FLOOR);
        self.new_epoch(now);
        if ratio < GROW_BELOW {
            // Grow only when the limit is actually in use; an idle backend
            // gives no evidence that more would fit.
            if in_flight.saturating_mul(2) >= self.current() && self.current() < self.max {
                self.limit = (self.limit.floor() + 1.0).min(f64::from(self.max));
                return self.change(from, Reason::LatencyNearBest);
            }
        } else if ratio > SHRINK_ABOVE && self.limit > 1.0 {
            self.limit = (self.limit.floor() - 1.0).max(1.0);
            return self.change(from, Reason::Queueing);
        }
        None
    }

    /// An overload answer or a timeout.
    pub fn on_overload(&mut self, now: Instant) -> Option<Change> {
        self.cut(OVERLOAD_BACKOFF, now, Reason::Overload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A delivery that took `rtt` and finished at `now`.
    fn sample(l: &mut AdaptiveLimit, rtt: Duration, in_flight: u32, now: Instant) -> Option<Change> {
        l.on_sample(Sample { latency: rtt, in_flight, started: now - rtt }, now)
    }

    #[test]
    fn grows_while_latency_stays_at_its_best() {
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(5, 20, ms(2000));
        let mut changes = 0;
        // One sample a millisecond, each taking 10 ms: one step per round
        // trip of 10 ms (plus the wait for half a limit of samples).
        for i in 0..400 {
            let n = l.current();
            if sample(&mut l, ms(10), n, t0 + ms(i)).is_some() {
                changes += 1;
            }
        }
        assert_eq!(l.current(), 20, "climbs to the ceiling");
        assert_eq!(changes, 15, "one step at a time");
        assert!(sample(&mut l, ms(10), 20, t0 + ms(500)).is_none(), "never above the ceiling");
    }

    #[test]
    fn does_not_grow_when_the_limit_is_not_used() {
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(10, 50, ms(2000));
        for i in 0..500 {
            sample(&mut l, ms(10), 1, t0 + ms(i));
        }
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn settles_just_above_the_capacity_of_a_backend_that_queues() {
        // A backend with capacity C: up to C deliveries take 20 ms each,
        // beyond that latency grows in proportion (the excess waits). The
        // limit should settle a little above C, never far beyond.
        const C: f64 = 20.0;
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(5, 100, ms(5000));
        let mut peak = 0;
        for i in 0..20_000u64 {
            let n = f64::from(l.current());
            let rtt = 0.020 * (n / C).max(1.0);
            let n = l.current();
            sample(&mut l, Duration::from_secs_f64(rtt), n, t0 + ms(i));
            if i > 2_000 {
                peak = peak.max(l.current());
            }
        }
        assert!(l.current() >= 20 && l.current() <= 23, "settled at {}", l.current());
        assert!(peak <= 24, "peak {peak} > 1.2 C");
    }

    #[test]
    fn a_stale_best_is_re_measured_at_half_the_limit() {
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(8, 8, ms(5000));
        sample(&mut l, ms(10), 8, t0);
        // Samples 30 % above the best: neither confirmation nor (at this
        // limit) enough queueing to shrink by much.
        let c = sample(&mut l, ms(13), 8, t0 + PROBE_INTERVAL).expect("probe starts");
        assert_eq!((c.reason, c.to), (Reason::Probe, c.from / 2));
        let c = sample(&mut l, ms(12), 4, t0 + PROBE_INTERVAL + Duration::from_secs(1)).expect("probe ends");
        assert_eq!(c.reason, Reason::Probe);
        assert_eq!(l.best_latency(), Some(ms(12)));
    }

    #[test]
    fn latency_above_target_cuts_once_per_round_trip() {
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(20, 20, ms(100));
        let c = sample(&mut l, ms(500), 20, t0).unwrap();
        assert_eq!((c.from, c.to, c.reason), (20, 14, Reason::LatencyTarget));
        // Same burst: no second cut within one smoothed round trip.
        assert!(sample(&mut l, ms(500), 20, t0 + ms(10)).is_none());
        let c = sample(&mut l, ms(500), 20, t0 + ms(600)).unwrap();
        assert_eq!(c.to, 9);
    }

    #[test]
    fn overload_halves_and_floors_at_one() {
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(16, 20, ms(2000));
        let mut at = t0;
        let mut seen = Vec::new();
        for _ in 0..6 {
            if let Some(c) = l.on_overload(at) {
                seen.push(c.to);
            }
            at += ms(200);
        }
        assert_eq!(seen, vec![8, 4, 2, 1]);
        assert_eq!(l.current(), 1);
    }

    #[test]
    fn a_lasting_change_of_baseline_is_learned_by_re_measuring() {
        // The backend gets slower for good (40 ms instead of 10 ms at any
        // concurrency). At first that looks like queueing and the limit
        // shrinks; after PROBE_INTERVAL the best is re-measured, the new
        // baseline is adopted and the limit climbs again.
        let t0 = crate::clock::instant();
        let mut l = AdaptiveLimit::new(10, 20, ms(5000));
        sample(&mut l, ms(10), 10, t0);
        let mut t = t0;
        let mut lowest = u32::MAX;
        for _ in 0..3000 {
            t += ms(10);
            let n = l.current();
            sample(&mut l, ms(40), n, t);
            lowest = lowest.min(l.current());
        }
        assert!(lowest < 10, "it did shrink at first");
        assert_eq!(l.best_latency(), Some(ms(40)));
        assert_eq!(l.current(), 20, "climbed back once the new baseline was learned");
    }
}
