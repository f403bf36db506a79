//! The adaptive limit against synthetic servers: a small discrete-event
//! simulation keeps as many deliveries in flight as the limit allows (an
//! endless backlog), gives each the latency a server shape says for the
//! concurrency it starts at, and feeds the samples back on a synthetic
//! clock (no sleeping). Goodput is compared with the best fixed limit on
//! the same shape, found by running the same simulation with adaptation
//! off at every level, as the overload bench does against real servers.
//! `SIM_TRACE=1` prints every change of the limit with the gradient behind
//! it.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(initial: u32, max: u32) -> Policy {
    Policy { initial, max, target: Duration::from_secs(5), probe_share: 0.05, adaptive: true }
}

/// A server: latency in seconds for `n` deliveries in flight at `t`
/// seconds into the run.
type Shape = dyn Fn(u32, f64) -> f64;

fn retrograde(n: u32, _t: f64) -> f64 {
    0.020 + 0.060 * f64::from(n - 1)
}

fn plateau(k: u32, base: f64) -> impl Fn(u32, f64) -> f64 {
    move |n, _| base * (f64::from(n) / f64::from(k)).max(1.0)
}

/// What a run did.
#[derive(Debug, Default)]
struct Trace {
    /// (time, limit) after every sample.
    limits: Vec<(f64, u32)>,
    /// Completion times.
    done: Vec<f64>,
    /// Most deliveries in flight at once after `settle`.
    peak: u32,
}

impl Trace {
    fn goodput(&self, from: f64, to: f64) -> f64 {
        self.done.iter().filter(|&&t| t >= from && t < to).count() as f64 / (to - from)
    }

    /// Time-weighted mean limit over `[from, to)`.
    fn mean_limit(&self, from: f64, to: f64) -> f64 {
        let mut sum = 0.0;
        for w in self.limits.windows(2) {
            let (a, b) = (w[0].0.max(from), w[1].0.min(to));
            if b > a {
                sum += f64::from(w[0].1) * (b - a);
            }
        }
        sum / (to - from)
    }

    /// Share of `[from, to)` the limit spent outside `range`.
    fn outside(&self, from: f64, to: f64, range: std::ops::RangeInclusive<u32>) -> f64 {
        let mut sum = 0.0;
        for w in self.limits.windows(2) {
            let (a, b) = (w[0].0.max(from), w[1].0.min(to));
            if b > a && !range.contains(&w[0].1) {
                sum += b - a;
            }
        }
        sum / (to - from)
    }

    fn max_limit(&self, from: f64, to: f64) -> u32 {
        self.limits.iter().filter(|(t, _)| *t >= from && *t < to).map(|&(_, l)| l).max().unwrap_or(0)
    }
}

/// Deterministic multiplicative noise (xorshift), `±spread`.
struct Noise(u64, f64);

impl Noise {
    fn next(&mut self) -> f64 {
        if self.1 == 0.0 {
            return 1.0;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + self.1 * (2.0 * u - 1.0)
    }
}

/// Runs `limit` against `shape` for `secs` of synthetic time.
fn simulate(limit: AdaptiveLimit, shape: &Shape, secs: f64, noise: f64, settle: f64) -> Trace {
    simulate_seed(limit, shape, secs, noise, settle, 0x9e37_79b9_7f4a_7c15)
}

fn simulate_seed(
    limit: AdaptiveLimit,
    shape: &Shape,
    secs: f64,
    noise: f64,
    settle: f64,
    seed: u64,
) -> Trace {
    simulate_in_steps(limit, shape, secs, noise, settle, seed, None)
}

/// As [`simulate_seed`]; with `steer`, the limit hears of deliveries only
/// every `steer` seconds, all those finished since at once, as the fleet's
/// limit owner does (`owner_step` in `fleet/steer.rs`), and its changes
/// apply from then.
fn simulate_in_steps(
    mut limit: AdaptiveLimit,
    shape: &Shape,
    secs: f64,
    noise: f64,
    settle: f64,
    seed: u64,
    steer: Option<f64>,
) -> Trace {
    let t0 = crate::clock::instant();
    let at = |t: f64| t0 + Duration::from_secs_f64(t);
    // A little noise always: identical latencies keep deliveries in lock
    // step, which no real server does.
    let mut noise = Noise(seed, noise.max(0.02));
    // (end, start, latency) of the deliveries in flight.
    let mut flight: Vec<(f64, f64, f64)> = Vec::new();
    let mut trace = Trace::default();
    let mut t = 0.0;
    let (mut heard, mut next_step) = (Vec::new(), steer.unwrap_or(0.0));
    trace.limits.push((0.0, limit.current()));
    while t < secs {
        while (flight.len() as u32) < limit.current() {
            let n = flight.len() as u32 + 1;
            let l = shape(n, t) * noise.next();
            flight.push((t + l, t, l));
        }
        if t >= settle {
            trace.peak = trace.peak.max(flight.len() as u32);
        }
        let i = (0..flight.len()).min_by(|&a, &b| flight[a].0.total_cmp(&flight[b].0)).expect("in flight");
        if let Some(step) = steer
            && next_step <= flight[i].0
        {
            t = next_step;
            next_step += step;
            // As the fleet's limit owner does (`owner_step` in
            // `fleet/steer.rs`, which this module may not name: the fleet
            // depends on it).
            for s in heard.drain(..) {
                limit.on_sample(s, at(t));
            }
            limit.chain_now(at(t));
            trace.limits.push((t, limit.current()));
            continue;
        }
        let in_flight = flight.len() as u32;
        let (end, start, l) = flight.swap_remove(i);
        t = end;
        trace.done.push(t);
        let s = Sample { latency: Duration::from_secs_f64(l), in_flight, started: at(start) };
        if steer.is_some() {
            heard.push(s);
            continue;
        }
        let c = limit.on_sample(s, at(t));
        if std::env::var_os("SIM_TRACE").is_some() && c.is_some() {
            eprintln!(
                "{t:8.3} {:?} g={:?}",
                c,
                limit.gradient().map(|g| (
                    g.lower.level,
                    g.lower.latency,
                    g.upper.level,
                    g.upper.latency,
                    g.value,
                    g.error
                ))
            );
        }
        trace.limits.push((t, limit.current()));
    }
    trace
}

/// The best goodput any fixed limit in `1..=max` gets on `shape` over
/// `[from, to)`, and that limit.
fn best_fixed(shape: &Shape, max: u32, secs: f64, from: f64) -> (f64, u32) {
    (1..=max)
        .map(|k| {
            let fixed = AdaptiveLimit::new(Policy { adaptive: false, ..policy(k, k) });
            (simulate(fixed, shape, secs, 0.0, 0.0).goodput(from, secs), k)
        })
        .fold((0.0, 0), |best, x| if x.0 > best.0 { x } else { best })
}

#[test]
fn a_retrograde_server_is_taken_back_to_one_delivery_and_kept_there() {
    // 20 ms alone, 60 ms more per extra delivery: one at a time does twice
    // the work of two. Starting at 5, the limit must find 1 and stay.
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &retrograde, 60.0, 0.0, 5.0);
    let (best, k) = best_fixed(&retrograde, 8, 60.0, 5.0);
    assert_eq!(k, 1);
    let got = trace.goodput(5.0, 60.0);
    assert!(got >= 0.9 * best, "goodput {got:.1}/s against {best:.1}/s at a fixed 1");
    assert!(trace.mean_limit(5.0, 60.0) < 1.15, "mean limit {:.2}", trace.mean_limit(5.0, 60.0));
    // Trying 2 now and then costs a bounded share of the time.
    assert!(
        trace.outside(5.0, 60.0, 1..=1) < 0.08,
        "{:.3} of the time above 1",
        trace.outside(5.0, 60.0, 1..=1)
    );
    assert!(trace.max_limit(5.0, 60.0) <= 2);
}

#[test]
fn a_plateau_server_is_kept_busy_at_its_capacity() {
    // Flat 100 ms up to 10 at once, queueing beyond: the best is 10 (more
    // only adds latency), reached from below and from above.
    let shape = plateau(10, 0.100);
    let (best, _) = best_fixed(&shape, 20, 60.0, 10.0);
    for initial in [5, 20] {
        let trace = simulate(AdaptiveLimit::new(policy(initial, 20)), &shape, 60.0, 0.0, 10.0);
        let got = trace.goodput(10.0, 60.0);
        assert!(got >= 0.95 * best, "from {initial}: goodput {got:.1}/s against {best:.1}/s");
        assert!(
            trace.outside(10.0, 60.0, 10..=11) < 0.05,
            "from {initial}: {:.3} of the time outside 10..=11",
            trace.outside(10.0, 60.0, 10..=11)
        );
        assert!(trace.peak <= 11, "from {initial}: peak {}", trace.peak);
    }
}

#[test]
fn a_large_plateau_is_found_in_steps_big_enough_to_measure() {
    let shape = plateau(40, 0.050);
    let (best, _) = best_fixed(&shape, 80, 60.0, 15.0);
    let trace = simulate(AdaptiveLimit::new(policy(5, 80)), &shape, 60.0, 0.0, 15.0);
    let got = trace.goodput(15.0, 60.0);
    assert!(got >= 0.9 * best, "goodput {got:.1}/s against {best:.1}/s");
    assert!(trace.peak <= 48, "peak {} > 1.2 × 40", trace.peak);
}

#[test]
fn a_server_losing_half_its_capacity_is_followed_down_and_back_up_within_seconds() {
    // Capacity 10, then 5 from 20 s to 50 s (at 10 in flight every
    // delivery takes twice as long), then 10 again.
    let shape = |n: u32, t: f64| {
        let k = if (20.0..50.0).contains(&t) { 5.0 } else { 10.0 };
        0.100 * (f64::from(n) / k).max(1.0)
    };
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &shape, 80.0, 0.0, 5.0);
    assert!(trace.outside(23.0, 50.0, 4..=6) < 0.1, "{:.3}", trace.outside(23.0, 50.0, 4..=6));
    assert!(trace.outside(56.0, 80.0, 10..=11) < 0.1, "{:.3}", trace.outside(56.0, 80.0, 10..=11));
    let (best, _) = best_fixed(&shape, 20, 80.0, 5.0);
    let got = trace.goodput(5.0, 80.0);
    assert!(got >= 0.9 * best, "goodput {got:.1}/s against {best:.1}/s");
}

#[test]
fn a_server_twice_as_slow_at_every_level_keeps_its_limit() {
    // Same capacity, every delivery twice as long for 30 s (the gradient is
    // unchanged): halving the limit would halve the goodput for nothing.
    let shape = |n: u32, t: f64| {
        let base = if (20.0..50.0).contains(&t) { 0.200 } else { 0.100 };
        base * (f64::from(n) / 10.0).max(1.0)
    };
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &shape, 80.0, 0.0, 10.0);
    assert!(trace.outside(20.0, 50.0, 9..=11) < 0.1, "{:.3}", trace.outside(20.0, 50.0, 9..=11));
    let (best, _) = best_fixed(&shape, 20, 80.0, 10.0);
    let got = trace.goodput(10.0, 80.0);
    assert!(got >= 0.95 * best, "goodput {got:.1}/s against {best:.1}/s");
}

#[test]
fn noisy_latencies_do_not_lose_the_plateau_or_the_retrograde_shape() {
    let shape = plateau(10, 0.100);
    let (best, _) = best_fixed(&shape, 20, 120.0, 10.0);
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &shape, 120.0, 0.2, 10.0);
    let got = trace.goodput(10.0, 120.0);
    assert!(got >= 0.9 * best, "plateau: goodput {got:.1}/s against {best:.1}/s");
    assert!(trace.peak <= 13, "plateau: peak {}", trace.peak);

    let (best, _) = best_fixed(&retrograde, 8, 120.0, 10.0);
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &retrograde, 120.0, 0.2, 10.0);
    let got = trace.goodput(10.0, 120.0);
    assert!(got >= 0.85 * best, "retrograde: goodput {got:.1}/s against {best:.1}/s");
}

#[test]
fn the_shapes_are_found_whatever_the_noise_draws() {
    // One seed could pass by luck: eight draws of ±20 % noise each, and
    // the worst of them must still hold.
    let (retro_best, _) = best_fixed(&retrograde, 8, 60.0, 5.0);
    let (plateau_best, _) = best_fixed(&plateau(10, 0.100), 20, 60.0, 10.0);
    for i in 1..=8u64 {
        let seed = 0x1234_5678_9abc_def1u64.wrapping_mul(i) | 1;
        let trace = simulate_seed(AdaptiveLimit::new(policy(5, 20)), &retrograde, 60.0, 0.2, 5.0, seed);
        let got = trace.goodput(5.0, 60.0);
        assert!(got >= 0.85 * retro_best, "seed {i}: retrograde {got:.1}/s against {retro_best:.1}/s");
        let trace =
            simulate_seed(AdaptiveLimit::new(policy(5, 20)), &plateau(10, 0.100), 60.0, 0.2, 10.0, seed);
        let got = trace.goodput(10.0, 60.0);
        assert!(got >= 0.9 * plateau_best, "seed {i}: plateau {got:.1}/s against {plateau_best:.1}/s");
        assert!(trace.peak <= 14, "seed {i}: plateau peak {}", trace.peak);
    }
}

#[test]
fn a_fast_backend_climbs_to_the_ceiling() {
    // Half a millisecond whatever the load (a sink): nothing to learn from
    // jitter-sized differences, and nothing stops the climb.
    let shape = |n: u32, _t: f64| 0.0005 + 0.00002 * f64::from(n);
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &shape, 5.0, 0.3, 0.0);
    assert_eq!(trace.limits.last().map(|l| l.1), Some(20));
}

#[test]
fn does_not_grow_when_the_limit_is_not_used() {
    let t0 = crate::clock::instant();
    let mut l = AdaptiveLimit::new(policy(10, 50));
    for i in 0..500 {
        let now = t0 + ms(10 * i);
        l.on_sample(Sample { latency: ms(10), in_flight: 1, started: now - ms(10) }, now);
    }
    assert_eq!(l.current(), 10);
    assert_eq!(l.reason(), Reason::Start);
}

#[test]
fn fixed_concurrency_stays_at_the_ceiling() {
    let trace =
        simulate(AdaptiveLimit::new(Policy { adaptive: false, ..policy(2, 7) }), &retrograde, 10.0, 0.0, 0.0);
    assert!(trace.limits.iter().all(|&(_, l)| l == 7));
}

#[test]
fn latency_above_target_cuts_once_per_round_trip() {
    let t0 = crate::clock::instant();
    let mut l = AdaptiveLimit::new(Policy { target: ms(100), ..policy(20, 20) });
    let sample = |at: Instant| Sample { latency: ms(500), in_flight: 20, started: at - ms(500) };
    let c = l.on_sample(sample(t0), t0).unwrap();
    assert_eq!((c.from, c.to, c.reason), (20, 14, Reason::LatencyTarget));
    // Same burst: no second cut within one smoothed round trip.
    assert!(l.on_sample(sample(t0 + ms(10)), t0 + ms(10)).is_none());
    let c = l.on_sample(sample(t0 + ms(600)), t0 + ms(600)).unwrap();
    assert_eq!(c.to, 9);
}

#[test]
fn overload_halves_and_floors_at_one() {
    let t0 = crate::clock::instant();
    let mut l = AdaptiveLimit::new(policy(16, 20));
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
fn the_gradient_says_how_latency_grows_with_concurrency() {
    let t0 = crate::clock::instant();
    let p = |n: f64, l: u64| Point { level: n as u32, in_flight: n, latency: ms(l), error: 0.0, at: t0 };
    let floor = LATENCY_FLOOR.as_millis() as u64;
    // Flat: 0. Proportional: 1. Four times as slow for twice as many: 2.
    let g = |a, b| Gradient::between(a, b).map(|g| (g.value * 100.0).round() / 100.0);
    assert_eq!(g(p(4.0, 100), p(8.0, 100)), Some(0.0));
    assert_eq!(g(p(4.0, 100 - floor), p(8.0, 200 - floor)), Some(1.0));
    assert_eq!(g(p(1.0, 20 - floor), p(2.0, 80 - floor)), Some(2.0));
    assert_eq!(g(p(10.0, 100), p(10.2, 300)), None, "too close to tell");
}

#[test]
fn a_retrograde_server_is_descended_in_halves_once_its_gradient_shows() {
    // From 5 on the retrograde server, one step at a time takes four
    // rounds to reach 1; once a step down has shown that fewer deliveries
    // do more work, the next try goes to half the level.
    let trace = simulate(AdaptiveLimit::new(policy(5, 20)), &retrograde, 10.0, 0.0, 0.0);
    let levels: Vec<u32> = trace.limits.iter().map(|&(_, l)| l).collect();
    let mut seen = levels.clone();
    seen.dedup();
    assert!(!seen.contains(&3), "went through 3 on the way to 1: {seen:?}");
    let at_one = trace.limits.iter().find(|&&(_, l)| l == 1).map(|&(t, _)| t).expect("reached 1");
    // (The first wave, which ramps up from one delivery, is not measured.)
    assert!(at_one < 2.2, "1 reached at {at_one:.2} s: {seen:?}");
    let (best, _) = best_fixed(&retrograde, 8, 10.0, 0.0);
    let got = trace.goodput(0.0, 10.0);
    assert!(got >= 0.85 * best, "goodput over the first 10 s {got:.1}/s against {best:.1}/s");
}

#[test]
fn a_limit_far_above_the_servers_capacity_comes_down_in_doubling_steps() {
    // A plateau of 4 approached from 20 (a high starting level, or a
    // server that lost most of its capacity): one step a round takes
    // thirteen rounds (3.8 s here) to get near 4; each descent that pays
    // doubles the next step (20, 18, 14, 7), and the doubled step that
    // overshoots the knee (7 to 3) goes back to single steps.
    let shape = plateau(4, 0.050);
    let trace = simulate(AdaptiveLimit::new(policy(20, 40)), &shape, 10.0, 0.0, 0.0);
    let mut seen: Vec<u32> = trace.limits.iter().map(|&(_, l)| l).collect();
    seen.dedup();
    let near = trace.limits.iter().find(|&&(_, l)| l <= 5).map(|&(t, _)| t).expect("came down");
    assert!(near < 2.5, "5 or less reached at {near:.2} s: {seen:?}");
    assert!(!seen.contains(&13), "single steps through 13: {seen:?}");
    let below = seen.iter().filter(|&&l| l < 4).count();
    assert!(below <= 3, "{below} tries below the knee: {seen:?}");
    let (best, _) = best_fixed(&shape, 20, 10.0, 0.0);
    let got = trace.goodput(0.0, 10.0);
    assert!(got >= 0.95 * best, "goodput over the first 10 s {got:.1}/s against {best:.1}/s");
}

#[test]
fn a_limit_that_hears_of_deliveries_in_steps_descends_nearly_as_fast() {
    // The fleet's limit owner takes every host's samples once a step
    // (100 ms), as `owner_step` in `fleet/steer.rs` does: hearing late
    // costs it at most a step or two on the way to 1 on the retrograde
    // server, against a limit that hears of every delivery as it ends. (A
    // guard of the whole: each rule that makes it so has its own test, the
    // chained try in `fleet/steer.rs`; in this simulation's ramped first
    // wave no single one of them decides it.)
    let first_at_one =
        |t: &Trace| t.limits.iter().find(|&&(_, l)| l == 1).map(|&(t, _)| t).expect("reached 1");
    let each = simulate(AdaptiveLimit::new(policy(5, 20)), &retrograde, 5.0, 0.0, 0.0);
    let steps = simulate_in_steps(
        AdaptiveLimit::new(policy(5, 20)),
        &retrograde,
        5.0,
        0.0,
        0.0,
        0x9e37_79b9_7f4a_7c15,
        Some(0.1),
    );
    let (a, b) = (first_at_one(&each), first_at_one(&steps));
    assert!(b < a + 0.25, "1 reached at {b:.2} s in steps, at {a:.2} s hearing of each delivery");
    let (x, y) = (each.goodput(0.0, 3.0), steps.goodput(0.0, 3.0));
    assert!(y >= 0.93 * x, "goodput over the first 3 s {y:.1}/s in steps, {x:.1}/s hearing of each");
}

#[test]
fn a_first_round_starts_when_the_first_wave_ended_not_when_it_was_heard_of() {
    // A fleet's limit owner hears of a delivery up to a step after it
    // ended. The first wave ran while the level was being reached (on the
    // shaped server, a delivery's latency is set by the connections open
    // at its dot) and does not count; those the hosts started after it
    // ended saw the level, and count, though heard of later.
    let t0 = crate::clock::instant();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let sample = |start: f64, latency: u64| Sample { latency: ms(latency), in_flight: 5, started: at(start) };
    let mut l = AdaptiveLimit::new(policy(5, 20));
    // The first wave: one fast (it ran before the others had connected),
    // the last ended at 0.26 s; heard of at 0.36 s.
    assert_eq!(l.on_sample(sample(0.0, 100), at(0.36)), None);
    for _ in 0..4 {
        assert_eq!(l.on_sample(sample(0.0, 260), at(0.36)), None);
    }
    // Started at 0.2 s, between the first wave's ends: not counted.
    for _ in 0..8 {
        assert_eq!(l.on_sample(sample(0.2, 200), at(0.40)), None);
    }
    // Eight started at 0.27 s end the round: the first try starts.
    let changes: Vec<Change> = (0..8).filter_map(|_| l.on_sample(sample(0.27, 260), at(0.56))).collect();
    assert_eq!(changes, [Change { from: 5, to: 4, reason: Reason::TryDown }]);
}

#[test]
fn deliveries_beside_one_beyond_the_level_do_not_measure_the_level() {
    // A try from 5 down to 4: a delivery started at 5 ends after the try's
    // first deliveries started, so they ran five at a time. They measure
    // 5, not 4: the round starts again when it ended.
    let t0 = crate::clock::instant();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let sample = |start: f64, latency: u64, in_flight: u32| Sample {
        latency: ms(latency),
        in_flight,
        started: at(start),
    };
    let mut l = AdaptiveLimit::new(policy(5, 20));
    let mut changes: Vec<Change> = Vec::new();
    let mut feed = |l: &mut AdaptiveLimit, s: Sample, n: usize, now: f64| {
        changes.extend((0..n).filter_map(|_| l.on_sample(s, at(now))));
    };
    feed(&mut l, sample(0.0, 260, 5), 5, 0.26);
    feed(&mut l, sample(0.27, 260, 5), 8, 0.53);
    // The try started at 0.53 s; the last delivery at 5 ends at 0.75 s.
    feed(&mut l, sample(0.40, 350, 5), 1, 0.75);
    feed(&mut l, sample(0.60, 260, 4), 8, 0.86);
    feed(&mut l, sample(0.76, 200, 4), 8, 0.96);
    assert_eq!(
        changes,
        [
            Change { from: 5, to: 4, reason: Reason::TryDown },
            Change { from: 5, to: 4, reason: Reason::Descend }
        ]
    );
}
