//! What one round of deliveries measured ([`Point`]), the latency gradient
//! between two rounds ([`Gradient`]) with its standard error, and the
//! running sums of the round in progress ([`Round`]). Plain arithmetic for
//! the policy in [`super`]; owns no decision.

use std::time::Duration;

use tokio::time::Instant;

/// Added to every latency before a gradient is taken: differences much
/// below it are jitter, not the server.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(5);
/// Two rounds whose mean concurrencies differ by less than this factor say
/// nothing about the gradient.
const MIN_SPREAD: f64 = 1.04;
/// Levels remembered for display, and how long.
const CURVE_LEVELS: usize = 32;
const CURVE_MEMORY: Duration = Duration::from_secs(60);

/// Keeps `p` in `curve` (lowest level first) as its level's latest point,
/// dropping old ones.
pub fn remember(curve: &mut Vec<Point>, p: Point) {
    curve.retain(|c| c.level != p.level && p.at.saturating_duration_since(c.at) < CURVE_MEMORY);
    let at = curve.partition_point(|c| c.level < p.level);
    curve.insert(at, p);
    if curve.len() > CURVE_LEVELS
        && let Some(oldest) = curve.iter().enumerate().min_by_key(|(_, c)| c.at).map(|(i, _)| i)
    {
        curve.remove(oldest);
    }
}

/// The result of one round: a point of the server's latency curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The limit during the round.
    pub level: u32,
    /// Mean deliveries in flight (the concurrency the server saw).
    pub in_flight: f64,
    /// Mean latency.
    pub latency: Duration,
    /// Standard error of `ln(latency + floor)` (the mean's relative
    /// spread, [`LATENCY_FLOOR`] added).
    pub error: f64,
    /// When the round ended.
    pub at: Instant,
}

/// The last comparison of two levels: what the limit is steered by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gradient {
    pub lower: Point,
    pub upper: Point,
    /// `ln(L(upper)/L(lower)) / ln(n(upper)/n(lower))`, latencies taken
    /// with [`LATENCY_FLOOR`] added.
    pub value: f64,
    /// Its standard error.
    pub error: f64,
}

impl Gradient {
    /// The gradient between two rounds, `None` when their concurrencies are
    /// too close to tell.
    pub fn between(lower: Point, upper: Point) -> Option<Gradient> {
        let spread = upper.in_flight / lower.in_flight.max(1e-9);
        if spread < MIN_SPREAD {
            return None;
        }
        let floor = LATENCY_FLOOR.as_secs_f64();
        let rise = (upper.latency.as_secs_f64() + floor) / (lower.latency.as_secs_f64() + floor);
        let error = lower.error.hypot(upper.error) / spread.ln();
        Some(Gradient { lower, upper, value: rise.ln() / spread.ln(), error })
    }
}

/// Samples of the round in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Round {
    /// Deliveries that started before this saw another level.
    pub start: Instant,
    latency_sum: f64,
    latency_squares: f64,
    in_flight_sum: u64,
    /// Samples so far.
    pub n: u32,
}

impl Round {
    pub fn new(start: Instant) -> Round {
        Round { start, latency_sum: 0.0, latency_squares: 0.0, in_flight_sum: 0, n: 0 }
    }

    /// One delivery's latency (seconds) and the deliveries in flight when
    /// it finished.
    pub fn add(&mut self, latency: f64, in_flight: u32) {
        self.latency_sum += latency;
        self.latency_squares += latency * latency;
        self.in_flight_sum += u64::from(in_flight);
        self.n += 1;
    }

    /// The round's result at `level`, ended at `now` (at least one sample).
    pub fn point(&self, level: u32, now: Instant) -> Point {
        let n = f64::from(self.n.max(1));
        let mean = self.latency_sum / n;
        let variance =
            if n > 1.0 { ((self.latency_squares - n * mean * mean) / (n - 1.0)).max(0.0) } else { 0.0 };
        Point {
            level,
            in_flight: self.in_flight_sum as f64 / n,
            latency: Duration::from_secs_f64(mean),
            error: variance.sqrt() / (mean + LATENCY_FLOOR.as_secs_f64()) / n.sqrt(),
            at: now,
        }
    }
}
