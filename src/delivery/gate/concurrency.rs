//! Adaptive concurrency for one backend: how many deliveries may run at
//! once ([`AdaptiveLimit`]), found by measuring what the backend does with
//! more or fewer of them. The slots that enforce the number are
//! [`super::slots`].
//!
//! # What it looks for
//!
//! Goodput — messages delivered per second — is what the limit is for, and
//! by Little's law it is `n / L(n)` at `n` deliveries in flight taking
//! `L(n)` each. So what matters is how latency grows with concurrency: the
//! **latency gradient** between two levels `m < n`,
//!
//! ```text
//!     G = ln(L(n) / L(m)) / ln(n / m)
//! ```
//!
//! (the slope of latency over concurrency on log-log axes). `G = 0`: latency
//! is flat, every added delivery is added goodput. `G = 1`: latency grows as
//! fast as concurrency, the extra deliveries only wait inside the server.
//! `G > 1`: more concurrency *loses* goodput (a server whose shared database
//! thrashes: "two connections are twice as slow as one" is `G = 1`, four
//! times as slow is `G = 2`). Goodput goes as `n^(1 − G)`.
//!
//! # Why not a latency target or the Vegas ratio alone
//!
//! The first version was TCP Vegas's: the best latency seen is the no-load
//! latency, and the limit grew while latency stayed within 5 % of it and
//! shrank past 20 %. Against a server whose latency grows with every
//! connection (20 ms + 60 ms per extra one) it settled at 5–6 connections
//! and got 39 % of the goodput one connection gets: it started at 5 and
//! never saw the no-load latency, and its "best" was the latency at 5. Even
//! with the true no-load latency, a rule that compares only "now" with
//! "no load" must let a quiet backend grow (at one delivery there is no
//! queueing, by definition), so it oscillates between one and two, and at
//! two the retrograde server does half the work. Netflix's gradient2 limiter
//! (`limit × L₀/L + √limit`) has the same blind spot: its queue allowance
//! holds two connections where one is best. A fixed latency target knows
//! nothing of the server's shape at all. Telling "flat up to its capacity"
//! from "worse with every connection" takes the latency *at two levels,
//! measured close together in time*: the gradient above.
//!
//! # The steps (perturb and observe)
//!
//! The limit has a **home** level, where it stays. It is judged in
//! **rounds**: a round at a level ends once [`MIN_ROUND`] deliveries (or
//! as many as the level, if more) that *started* at that level have
//! reported, so every sample in it saw the level it is counted for (one
//! that ends with more in flight than the level starts it again, and a new
//! limit's first wave, which ramps up, does not count). A round
//! counts only when the level was in use (mean deliveries in flight at
//! least [`IN_USE`] of it); an idle backend gives no evidence either way.
//! Each round keeps the spread of its samples, so every gradient comes with
//! a standard error.
//!
//! After a round at home, a **try** may start: one round at a neighbouring
//! level, one step up or down (the step is 1, or an eighth of the level when
//! that is more, [`STEP_FRACTION`], so a large limit is not tuned in
//! steps too small to measure). Then the try is compared with the home round
//! just before it:
//! - up to `u`: if `G` is at most [`GROW_BELOW`] (by [`MOVE`] standard
//!   errors) the extra deliveries brought at least about half their share
//!   of goodput: `u` becomes home, and the next try up starts at once (a
//!   climb: the try's round is a fresh measure of the new home);
//! - down to `d`: if `G` is at least [`SHRINK_ABOVE`] (by [`MOVE`]
//!   standard errors) the deliveries above `d` brought (almost) nothing:
//!   `d` becomes home, and the next try down starts at once (a descent),
//!   twice as far as this one (at most to half the level), so a limit far
//!   above the server's best comes down in a few rounds; when `G` was
//!   above [`RETROGRADE`], fewer deliveries did more work, and the next
//!   try goes to half the level. A longer step that does not pay goes
//!   back to single steps, and steps double again only after a climb;
//! - otherwise back home. A result within [`SURE`] standard errors of the
//!   threshold is unsure and the same try is repeated after the next round
//!   at home ([`UNSURE_REPEATS`] times at most); a clear one waits its
//!   spacing (below). A try up that lost goodput outright (`G` above
//!   [`RETROGRADE`]) makes a try down to half the level due at once: on a
//!   retrograde server the way to more goodput is down.
//!
//! Between the thresholds it holds, and measurement noise does not move
//! it. A plateau server (flat up to its capacity C, queueing beyond) climbs
//! to C and stays, trying C+1 now and then; a retrograde one descends to 1
//! and stays, trying 2 now and then. A server that changes is followed:
//! when the home latency has moved by more than [`CHANGED`] since the home
//! round of the latest decision (a step, or a slow drift), a try is due
//! after one more round at home (down when it rose, up when it fell; the
//! round that saw the change may straddle it and is no reference). So a
//! server losing half its capacity is descended to within a few rounds,
//! one that gets it back is climbed at the next try up, and a server twice
//! as slow at every level (the gradient unchanged) keeps its limit instead
//! of losing half its goodput to a misread "queue".
//!
//! # The cost of looking
//!
//! Tries take at most `sluice_concurrency_probe_share` (5 %) of the time:
//! after a try that did not move home, the next try that way waits until
//! the try's own duration is that way's part of the share of the time
//! since: tries up, the only way to find capacity that came back, get
//! `1 − `[`DOWN_SHARE`] of it, tries down the rest. Their cost in goodput is
//! smaller still: a try up on a retrograde server does about half the work
//! for its round, one down on a plateau server loses one delivery in C.
//!
//! # Brakes
//!
//! Two older rules stay, for a server in real trouble, applied whatever the
//! rounds say: a smoothed latency above `sluice_latency_target` cuts the
//! limit to 70 %, and an overload answer (`421`, a `4xx` at
//! connect/`MAIL`/`DATA`, a timeout) halves it, each at most once per
//! smoothed round trip. After a cut the next try up waits a spacing, and
//! the next try goes down. With `sluice_adaptive_concurrency = no` none of
//! this runs and the limit is the destination concurrency limit, a fixed
//! reference (the bench sweeps fixed limits with it).
//!
//! Latencies under [`LATENCY_FLOOR`] are not told apart: a backend answering
//! in half a millisecond shows scheduling jitter as a 200 % "gradient".
//!
//! # Parameters
//!
//! Configuration (per transport, `<transport>_` prefix):
//! `initial_destination_concurrency` (where it starts, and restarts after
//! the breaker closes, unless the level held before was lower), `destination_concurrency_limit` and master.cf's
//! `maxproc` (the ceiling), `sluice_latency_target` (the brake, 2 s),
//! `sluice_concurrency_probe_share` (5 %), `sluice_adaptive_concurrency`
//! (`yes`). The constants below are the algorithm's own; each says why.
//!
//! Never reads the clock (callers pass `now`), never sleeps.

use std::time::Duration;

use tokio::time::Instant;

use self::measure::Round;
pub use self::measure::{Gradient, Point};
pub use self::reason::Reason;

mod measure;
mod reason;

/// Least deliveries in a round: at low levels one delivery is too noisy a
/// measure.
pub const MIN_ROUND: u32 = 8;
/// A round counts when the mean number of deliveries in flight reached this
/// share of its level (the backend had enough mail to use it).
pub const IN_USE: f64 = 0.75;
/// Step between home and a try, as a share of home (at least 1).
pub const STEP_FRACTION: f64 = 0.125;
/// A try up becomes home when the gradient is at most this.
pub const GROW_BELOW: f64 = 0.5;
/// A try down becomes home when the gradient is at least this.
pub const SHRINK_ABOVE: f64 = 0.75;
/// A try that did not move home counts as a loss only when its gradient
/// is beyond the threshold by this many standard errors (from the spread
/// of the two rounds' samples); otherwise it is unsure, and repeated after
/// the next round at home instead of a full spacing, at most
/// [`UNSURE_REPEATS`] times in a row.
pub const SURE: f64 = 2.0;
/// A try moves home only when its gradient is past the threshold by this
/// many standard errors: noise alone must not walk the limit around.
pub const MOVE: f64 = 1.0;
pub const UNSURE_REPEATS: u32 = 2;
/// The part of the probe budget tries down may use; tries up, the only way
/// to find capacity that came back, get the rest.
pub const DOWN_SHARE: f64 = 0.2;
/// A try up whose gradient is beyond this (more concurrency loses
/// goodput) makes a try down due at once.
pub const RETROGRADE: f64 = 1.0;
/// Home latency moving by more than this factor from the home round of the
/// latest decision makes a try due (after one more round).
pub const CHANGED: f64 = 1.3;
pub use self::measure::LATENCY_FLOOR;
/// Weight of a new sample in the smoothed latency (shown, and compared with
/// the target).
const SMOOTHING: f64 = 0.2;
/// Multiplicative decrease when latency passes the target.
const LATENCY_BACKOFF: f64 = 0.7;
/// Multiplicative decrease on an overload answer or a timeout.
const OVERLOAD_BACKOFF: f64 = 0.5;
/// Shortest spacing between two multiplicative decreases, so one burst of
/// failures (all the deliveries in flight timing out together) counts once.
const MIN_DECREASE_SPACING: Duration = Duration::from_millis(100);

/// A change of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    pub reason: Reason,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Try {
    Up { from: u32 },
    Down { from: u32 },
}

/// How the limit is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// `initial_destination_concurrency`.
    pub initial: u32,
    /// `destination_concurrency_limit` (and master.cf's `maxproc`).
    pub max: u32,
    /// `sluice_latency_target`.
    pub target: Duration,
    /// `sluice_concurrency_probe_share`, as a fraction (0.05).
    pub probe_share: f64,
    /// `sluice_adaptive_concurrency`.
    pub adaptive: bool,
}

/// The adaptive limit.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    policy: Policy,
    limit: u32,
    reason: Reason,
    trying: Option<Try>,
    round: Option<Round>,
    /// The first wave at a new or reset limit, still to be heard of: run
    /// while the level was being reached, it only moves the round's start.
    warm: u32,
    /// The last round at home, compared with the next try.
    home: Option<Point>,
    /// The level of the latest round at home: what the server was found
    /// to take, kept through cuts and restarts (where the limit restarts
    /// after an outage when it is below the starting level).
    settled: Option<u32>,
    /// Earliest start of the next try up / down (`None`: at the end of
    /// the next round at home).
    next_up: Option<Instant>,
    next_down: Option<Instant>,
    /// The home round the latest decision was made on: a home latency far
    /// from it means the server changed.
    reference: Option<Point>,
    /// Which way the next try goes, where both are possible.
    prefer_down: bool,
    /// A try just moved home: the next one starts at [`Self::chain_now`].
    chain: bool,
    /// The next try down's step when a descent set it (`0`: one step):
    /// twice the step of the descent, or half the level after fewer
    /// deliveries were seen to do more work (a retrograde gradient).
    down_step: u32,
    /// Descents may double their step: no doubled step down has failed
    /// since the limit last started or climbed (near a plateau's knee a
    /// doubled step overshoots; after one that did, single steps).
    doubling: bool,
    /// Unsure tries repeated in a row.
    unsure: u32,
    smoothed: Option<f64>,
    last_decrease: Option<Instant>,
    /// The latest round per level, for display (a few, recent).
    curve: Vec<Point>,
    gradient: Option<Gradient>,
}

impl AdaptiveLimit {
    /// Starts at `initial` (clamped to `1..=max`); at `max` when not
    /// adaptive.
    pub fn new(policy: Policy) -> AdaptiveLimit {
        let policy = Policy { max: policy.max.max(1), ..policy };
        let (limit, reason) = if policy.adaptive {
            (policy.initial.clamp(1, policy.max), Reason::Start)
        } else {
            (policy.max, Reason::Fixed)
        };
        AdaptiveLimit {
            policy,
            limit,
            reason,
            trying: None,
            round: None,
            warm: limit,
            home: None,
            settled: None,
            next_up: None,
            next_down: None,
            reference: None,
            prefer_down: true,
            chain: false,
            down_step: 0,
            doubling: true,
            unsure: 0,
            smoothed: None,
            last_decrease: None,
            curve: Vec::new(),
            gradient: None,
        }
    }

    /// The limit now.
    pub fn current(&self) -> u32 {
        self.limit
    }

    /// The configured ceiling.
    pub fn max(&self) -> u32 {
        self.policy.max
    }

    /// Why the limit is what it is.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Smoothed latency.
    pub fn latency(&self) -> Option<Duration> {
        self.smoothed.map(Duration::from_secs_f64)
    }

    /// The latency at the lowest level measured lately: the closest there
    /// is to the server's no-load latency.
    pub fn baseline(&self) -> Option<Point> {
        self.curve.first().copied()
    }

    /// The last comparison of two levels.
    pub fn gradient(&self) -> Option<Gradient> {
        self.gradient
    }

    /// The latest round per level, lowest level first.
    pub fn curve(&self) -> &[Point] {
        &self.curve
    }

    /// New policy (configuration reload): the learned curve stays.
    pub fn reconfigure(&mut self, policy: Policy) -> Option<Change> {
        let from = self.limit;
        let policy = Policy { max: policy.max.max(1), ..policy };
        let was_adaptive = self.policy.adaptive;
        self.policy = policy;
        if !policy.adaptive {
            self.limit = policy.max;
            self.reason = Reason::Fixed;
            self.trying = None;
        } else if !was_adaptive {
            return self.reset(policy.initial);
        } else {
            // A try past the new ceiling is called off.
            if let Some(Try::Up { from } | Try::Down { from }) = self.trying.take() {
                self.limit = from;
            }
            self.limit = self.limit.clamp(1, policy.max);
        }
        self.change(from, Reason::Reset)
    }

    /// Restarts after the breaker closed: at `initial`, or at the level it
    /// had settled at before the trouble ([`Self::settled`]: the cuts of the
    /// failures that opened the breaker do not count) when that is lower. A server back
    /// from an outage may be another one now, so what was measured is
    /// forgotten and the limit climbs from a modest start; but a server that
    /// took only one or two deliveries at a time before its outage is not
    /// sent the administrator's starting level first and made to show
    /// again that it is too much (on a retrograde server that costs seconds
    /// at a fraction of its goodput, every outage).
    pub fn restart(&mut self, initial: u32) -> Option<Change> {
        self.reset(self.settled.map_or(initial, |s| s.min(initial)))
    }

    /// The level the latest round at home measured (not a cut's or a
    /// restart's): what the server was last found to take.
    pub fn settled(&self) -> Option<u32> {
        self.settled
    }

    /// Restarts at `to`, nothing measured kept (a reload that turns the
    /// limit adaptive, the fleet's restart written in Redis).
    pub fn reset(&mut self, to: u32) -> Option<Change> {
        if !self.policy.adaptive {
            return None;
        }
        let from = self.limit;
        self.limit = to.clamp(1, self.policy.max);
        self.trying = None;
        self.round = None;
        self.warm = self.limit;
        self.home = None;
        self.reference = None;
        self.next_up = None;
        self.next_down = None;
        self.prefer_down = true;
        self.chain = false;
        self.down_step = 0;
        self.doubling = true;
        self.change(from, Reason::Reset)
    }

    fn change(&mut self, from: u32, reason: Reason) -> Option<Change> {
        self.reason = reason;
        (self.limit != from).then_some(Change { from, to: self.limit, reason })
    }

    /// The step between home `h` and a try.
    fn step(h: u32) -> u32 {
        ((f64::from(h) * STEP_FRACTION) as u32).max(1)
    }

    /// When a try that took `took` may be followed by another in its
    /// direction, whose part of the probe budget is `part`: `took` is then
    /// that part of the probe share of the time.
    fn spacing(&self, took: Duration, part: f64, now: Instant) -> Instant {
        let share = (self.policy.probe_share.clamp(0.001, 0.5) * part).max(1e-4);
        now + took.mul_f64(1.0 / share - 1.0)
    }

    /// One delivery's latency sample, reported at `now`.
    pub fn on_sample(&mut self, s: Sample, now: Instant) -> Option<Change> {
        let x = s.latency.as_secs_f64().max(1e-6);
        let smoothed = match self.smoothed {
            Some(v) => v + SMOOTHING * (x - v),
            None => x,
        };
        self.smoothed = Some(smoothed);
        if !self.policy.adaptive {
            return None;
        }
        if smoothed > self.policy.target.as_secs_f64() {
            return self.cut(LATENCY_BACKOFF, now, Reason::LatencyTarget);
        }
        if let Some(c) = self.chain_now(now) {
            return Some(c);
        }
        // A round no change started (a new or reset limit) starts when the
        // first wave ended (`warm`), not when heard of: the fleet's owner
        // hears a step late.
        let end = (s.started + s.latency).min(now);
        let round = self.round.get_or_insert_with(|| Round::new(end));
        if self.warm > 0 {
            self.warm -= 1;
            round.start = round.start.max(end);
            return None;
        }
        // One that ended with more in flight than the level (started before
        // the level fell, a fleet lease on its way back) ran beside those
        // started since, which saw more than the level: start again.
        if s.in_flight > self.limit && end > round.start {
            *round = Round::new(end);
            return None;
        }
        // A delivery started before the round (or with it, before the
        // change was applied) saw another level.
        if s.started <= round.start {
            return None;
        }
        round.add(x, s.in_flight);
        if round.n < self.limit.max(MIN_ROUND) {
            return None;
        }
        let point = round.point(self.limit, now);
        let took = now.saturating_duration_since(round.start);
        self.round = Some(Round::new(now));
        measure::remember(&mut self.curve, point);
        self.judge(point, took, now)
    }

    /// Starts the try a move home chained ([`Self::moved`]): at the next
    /// sample, or sooner for one that hears in steps (the fleet's owner).
    pub fn chain_now(&mut self, now: Instant) -> Option<Change> {
        if !std::mem::take(&mut self.chain) || self.trying.is_some() {
            return None;
        }
        self.start_try(now)
    }

    /// A round ended with `p` (it took `took`).
    fn judge(&mut self, p: Point, took: Duration, now: Instant) -> Option<Change> {
        let from = self.limit;
        let in_use = p.in_flight >= IN_USE * f64::from(p.level);
        match self.trying.take() {
            None => {
                if !in_use {
                    return None;
                }
                self.at_home(p, now)
            }
            Some(Try::Up { from: h }) => {
                let verdict = self.home.filter(|_| in_use).and_then(|home| Gradient::between(home, p));
                self.gradient = verdict.or(self.gradient);
                match verdict {
                    Some(g) if g.value + MOVE * g.error <= GROW_BELOW => {
                        Some(self.moved(p, h, false, Reason::Climb))
                    }
                    other => {
                        self.limit = h;
                        let unsure = other.is_some_and(|g| g.value - SURE * g.error <= GROW_BELOW);
                        self.after_failed_try(unsure, took, now, false);
                        // More concurrency losing goodput outright: less may
                        // gain it. (At a plateau's knee the gradient up is
                        // about 1, and this stays quiet.)
                        if other.is_some_and(|g| g.value > RETROGRADE) {
                            self.next_down = None;
                            self.prefer_down = true;
                            if other.is_some_and(|g| g.value - SURE * g.error > RETROGRADE) {
                                self.down_step = h - h / 2;
                            }
                        }
                        self.change(from, if other.is_some() { Reason::NoGain } else { Reason::NotUsed })
                    }
                }
            }
            Some(Try::Down { from: h }) => {
                let verdict = self.home.and_then(|home| Gradient::between(p, home));
                self.gradient = verdict.or(self.gradient);
                match verdict {
                    Some(g) if in_use && g.value - MOVE * g.error >= SHRINK_ABOVE => {
                        // A descent that paid: the next step down is twice
                        // this one, so a limit far above the server's best
                        // gets there in a few rounds, not one per level.
                        // Surely retrograde (a plateau above its knee reads
                        // about 1): goodput goes as n^(1 - G) and keeps
                        // growing the lower the level, so half is tried
                        // next. Either is judged by its own round; a step
                        // that does not pay goes back to single steps at
                        // once. Never more than half the level at once.
                        let d = p.level;
                        self.down_step = if g.value - SURE * g.error > RETROGRADE {
                            d - d / 2
                        } else if self.doubling {
                            (2 * (h - d)).min(d - d / 2)
                        } else {
                            0
                        };
                        // The level above was just measured worse: no try
                        // up before its spacing (at 1, the chain would
                        // otherwise try 2 again at once).
                        self.next_up = Some(self.spacing(took, 1.0 - DOWN_SHARE, now));
                        Some(self.moved(p, h, true, Reason::Descend))
                    }
                    other => {
                        self.limit = h;
                        let unsure =
                            in_use && other.is_some_and(|g| g.value + SURE * g.error >= SHRINK_ABOVE);
                        self.after_failed_try(unsure, took, now, true);
                        if p.level + Self::step(h).min(h - 1) < h {
                            // A halving or doubled step that did not pay:
                            // single steps down from here, at once.
                            self.next_down = None;
                            self.prefer_down = true;
                            self.doubling = false;
                        }
                        let reason = if other.is_some() && in_use { Reason::Needed } else { Reason::NotUsed };
                        self.change(from, reason)
                    }
                }
            }
        }
    }

    /// A try to `p` from home `h` moved home there; the next try in the
    /// same direction starts at the next sample (the try's round is a fresh
    /// measure of the new home).
    fn moved(&mut self, p: Point, h: u32, down: bool, reason: Reason) -> Change {
        self.home = Some(p);
        self.settled = Some(p.level);
        self.reference = Some(p);
        if down {
            self.next_down = None;
        } else {
            self.next_up = None;
        }
        self.prefer_down = down;
        self.doubling |= !down;
        self.chain = true;
        self.unsure = 0;
        self.reason = reason;
        // The slots are already at the new level; the change is news for
        // the log.
        Change { from: h, to: p.level, reason }
    }

    /// A try (`down` or up) that took `took` did not move home: the next try
    /// that way waits its share of the probe budget, and the next try goes
    /// the other way, unless the result was `unsure`: then the same try is
    /// repeated after the next round at home (a few times at most).
    fn after_failed_try(&mut self, unsure: bool, took: Duration, now: Instant, down: bool) {
        if unsure && self.unsure < UNSURE_REPEATS {
            self.unsure += 1;
            self.prefer_down = down;
            return;
        }
        self.unsure = 0;
        self.prefer_down = !down;
        if down {
            self.next_down = Some(self.spacing(took, DOWN_SHARE, now));
        } else {
            self.next_up = Some(self.spacing(took, 1.0 - DOWN_SHARE, now));
        }
    }

    /// A round at home ended with `p`: note how the server moved, and maybe
    /// start a try.
    fn at_home(&mut self, p: Point, now: Instant) -> Option<Change> {
        self.home = Some(p);
        self.settled = Some(p.level);
        match self.reference.filter(|r| r.level == p.level) {
            Some(r) => {
                let (was, is) = (r.latency.as_secs_f64(), p.latency.as_secs_f64());
                let floor = LATENCY_FLOOR.as_secs_f64();
                let slower = is + floor > (was + floor) * CHANGED;
                let faster = (is + floor) * CHANGED < was + floor;
                if slower || faster {
                    // The server changed since the last comparison: fewer
                    // may do as well (slower), more may fit (faster). This
                    // round may straddle the change, so the try waits for
                    // one more round at home to compare with.
                    self.reference = None;
                    if slower {
                        self.next_down = None;
                    } else {
                        self.next_up = None;
                    }
                    self.prefer_down = slower;
                    return None;
                }
            }
            None => self.reference = Some(p),
        }
        self.start_try(now)
    }

    /// Starts a try from home if one is due, in the preferred direction
    /// where both are.
    fn start_try(&mut self, now: Instant) -> Option<Change> {
        let h = self.limit;
        let due = |t: Option<Instant>| t.is_none_or(|t| now >= t);
        let down = h > 1 && due(self.next_down);
        let up = h < self.policy.max && due(self.next_up);
        let change = if down && (self.prefer_down || !up) {
            self.trying = Some(Try::Down { from: h });
            let step = match std::mem::take(&mut self.down_step) {
                0 => Self::step(h),
                n => n,
            };
            self.limit = h - step.min(h - 1);
            self.change(h, Reason::TryDown)
        } else if up {
            self.trying = Some(Try::Up { from: h });
            self.down_step = 0;
            self.limit = (h + Self::step(h)).min(self.policy.max);
            self.change(h, Reason::TryUp)
        } else {
            return None;
        };
        self.round = Some(Round::new(now));
        change
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
        if !self.policy.adaptive || !self.may_decrease(now) {
            return None;
        }
        let from = self.limit;
        // A cut during a try is a cut of home.
        let base = match self.trying.take() {
            Some(Try::Up { from } | Try::Down { from }) => from,
            None => self.limit,
        };
        self.limit = ((f64::from(base) * factor) as u32).max(1);
        self.last_decrease = Some(now);
        self.round = Some(Round::new(now));
        self.home = None;
        self.reference = None;
        self.chain = false;
        self.down_step = 0;
        // No try up for a probe-budget spacing of a round trip or two: the
        // server just said it had too much.
        let rtt = self.smoothed.map(Duration::from_secs_f64).unwrap_or(MIN_DECREASE_SPACING);
        self.next_up = Some(self.spacing(rtt * 2, 1.0 - DOWN_SHARE, now));
        self.prefer_down = true;
        self.change(from, reason)
    }

    /// An overload answer or a timeout.
    pub fn on_overload(&mut self, now: Instant) -> Option<Change> {
        self.cut(OVERLOAD_BACKOFF, now, Reason::Overload)
    }
}

#[cfg(test)]
mod tests;
