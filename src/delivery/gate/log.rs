//! What a gate says in the log: a change of its concurrency limit (the
//! news at `info`, the tries around the level held at `debug`), and each
//! move of its breaker (with the metric counting them). Part of the gate
//! (`mod.rs`); decides nothing.

use std::time::Duration;

use sluice_queue::{BreakerPosition, UnixMillis};

use super::breaker::Transition;
use super::concurrency::{AdaptiveLimit, Change};
use super::{Gate, State};

impl Gate {
    pub(super) fn apply(&self, st: &State, change: Option<Change>) {
        if let Some(c) = change {
            self.slots.set_limit(c.to);
            // A new home level, a cut or a reset is news; the tries around
            // the level held are not worth a line each.
            let gradient = evidence(&st.limit);
            if c.reason.is_news() {
                tracing::info!(
                    "backend {}: concurrency {} -> {} ({}){gradient}",
                    self.name,
                    c.from,
                    c.to,
                    c.reason.as_str()
                );
            } else {
                tracing::debug!(
                    "backend {}: concurrency {} -> {} ({}){gradient}",
                    self.name,
                    c.from,
                    c.to,
                    c.reason.as_str()
                );
            }
        }
    }

    pub(super) fn log_transition(&self, st: &State, t: Transition, now: UnixMillis) {
        let error = st.last_error.as_deref().unwrap_or("no error recorded");
        let to = match t {
            Transition::Opened { .. } | Transition::Reopened { .. } => "open",
            Transition::HalfOpened => "half-open",
            Transition::Closed => "closed",
        };
        metrics::counter!(crate::metric::BREAKER_TRANSITIONS, "backend" => self.name.clone(), "to" => to)
            .increment(1);
        match t {
            Transition::Opened { failures, probe_at } => tracing::warn!(
                "backend {}: circuit breaker open after {failures} consecutive failures ({error}); probe in {}s",
                self.name,
                secs(probe_at.saturating_sub(now))
            ),
            Transition::HalfOpened => {
                tracing::info!("backend {}: circuit breaker half-open, sending one probe delivery", self.name)
            }
            Transition::Reopened { failed_probes, probe_at } => tracing::warn!(
                "backend {}: circuit breaker probe failed ({error}), open again after {failed_probes} failed probe(s); next probe in {}s",
                self.name,
                secs(probe_at.saturating_sub(now))
            ),
            Transition::Closed => tracing::info!(
                "backend {}: circuit breaker closed, probe delivered; concurrency restarts at {}",
                self.name,
                st.limit.current()
            ),
        }
    }
}

/// What a limit's change rests on, for its log line: the last two levels
/// compared and the gradient between them, or the smoothed latency.
pub(super) fn evidence(limit: &AdaptiveLimit) -> String {
    match limit.gradient() {
        Some(g) => format!(
            ", latency {} at {} and {} at {} (gradient {:.2})",
            fmt_latency(Some(g.lower.latency)),
            g.lower.level,
            fmt_latency(Some(g.upper.latency)),
            g.upper.level,
            g.value
        ),
        None => format!(", latency {}", fmt_latency(limit.latency())),
    }
}

/// `closed`, `open`, `half-open`: the words logs and `backend list` use.
pub fn position_name(p: BreakerPosition) -> &'static str {
    match p {
        BreakerPosition::Closed => "closed",
        BreakerPosition::Open => "open",
        BreakerPosition::HalfOpen => "half-open",
    }
}

pub(super) fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

fn fmt_latency(d: Option<Duration>) -> String {
    d.map(|d| format!("{}ms", d.as_millis())).unwrap_or_else(|| "unknown".into())
}
