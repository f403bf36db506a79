//! The only caller of `Instant::now` and `SystemTime::now` (clippy.toml
//! forbids them elsewhere), so time-dependent logic takes `now` as an
//! argument and tests control it.
//!
//! `Instant`s come from tokio, so `#[tokio::test(start_paused = true)]`
//! moves them; wall-clock milliseconds (what the queue stores) come from the
//! system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use sluice_queue::UnixMillis;

/// Monotonic time for timeouts and latency (tokio's clock: pausable in tests).
#[allow(clippy::disallowed_methods)]
pub fn instant() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Wall-clock time in milliseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)]
pub fn unix_millis() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Wall-clock time as a `SystemTime` (for `Received:` and `Date:` headers).
#[allow(clippy::disallowed_methods)]
pub fn system_time() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds to a `Duration`, saturating at zero for times in the past.
pub fn until(now: UnixMillis, then: UnixMillis) -> Duration {
    Duration::from_millis(then.saturating_sub(now))
}
