//! What a gate shows of itself ([`Snapshot`]): breaker, pause, limit and
//! why, latency, baseline, gradient and the measured latency curve, for
//! `sluice backend list`, its JSON and the metrics. Plain data; the gate
//! fills it.

use std::time::Duration;

use sluice_queue::{BackendRecord, BreakerPosition, UnixMillis};

/// A read-only view of a gate, for `sluice backend list` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub breaker: BreakerPosition,
    /// Paused until (Unix ms; `u64::MAX`: until resumed).
    pub paused_until: Option<UnixMillis>,
    /// Deliveries running now.
    pub in_flight: u32,
    /// The adaptive limit now.
    pub limit: u32,
    /// Why it is what it is.
    pub reason: &'static str,
    /// Its ceiling (`destination_concurrency_limit`, `maxproc`).
    pub max_limit: u32,
    /// Most deliveries ever running at once.
    pub peak: u32,
    /// Rate limit in deliveries per second (`0.0`: none).
    pub rate: f64,
    /// Smoothed delivery latency.
    pub latency: Option<Duration>,
    /// The latency at the lowest concurrency measured lately (the closest
    /// there is to the no-load latency), and that concurrency.
    pub baseline: Option<(u32, Duration)>,
    /// The last latency gradient the limit was steered by, and the two
    /// levels it was measured between (see [`concurrency`]).
    pub gradient: Option<(f64, u32, u32)>,
    /// The latest mean latency per concurrency level (the server's latency
    /// curve as measured lately), lowest level first.
    pub curve: Vec<(u32, Duration)>,
    pub last_error: Option<String>,
    /// Next half-open probe while open.
    pub probe_at: Option<UnixMillis>,
    /// Messages parked for an early wake-up.
    pub parked: usize,
}

impl Snapshot {
    /// What the queue remembers of a backend no mail has needed since the
    /// start (its breaker and pause).
    pub fn stored(name: &str, rec: &BackendRecord) -> Snapshot {
        Snapshot {
            name: name.to_owned(),
            breaker: rec.breaker,
            paused_until: rec.paused_until,
            in_flight: 0,
            limit: 0,
            reason: "",
            max_limit: 0,
            peak: 0,
            rate: 0.0,
            latency: None,
            baseline: None,
            gradient: None,
            curve: Vec::new(),
            last_error: rec.last_error.clone(),
            probe_at: rec.probe_at,
            parked: 0,
        }
    }
}
