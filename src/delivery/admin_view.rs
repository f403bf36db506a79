//! What the admin side sees of delivery: [`Handle`] as admin's
//! [`Backends`] (`sluice backend list|pause|resume`, `sluice queue flush`).
//!
//! Owns only the translation from gate snapshots to admin's view; the
//! behaviour lives in the scheduler and the gates.

use std::sync::Arc;

use sluice_queue::UnixMillis;

use super::gate::position_name;
use super::scheduler::Handle;
use crate::admin::api::{BackendView, Backends};

impl Backends for Handle {
    fn list(&self) -> Vec<BackendView> {
        Handle::list(self)
            .into_iter()
            .map(|b| {
                let s = b.snapshot;
                BackendView {
                    breaker: position_name(s.breaker).to_owned(),
                    name: s.name,
                    paused_until: s.paused_until,
                    concurrency: s.in_flight,
                    limit: s.limit,
                    max_limit: s.max_limit,
                    rate: s.rate,
                    latency: s.latency.map(|d| d.as_secs_f64()),
                    min_latency: s.best_latency.map(|d| d.as_secs_f64()),
                    last_error: s.last_error,
                    probe_at: s.probe_at,
                }
            })
            .collect()
    }

    fn pause(&self, name: &str, until: Option<UnixMillis>) -> Result<(), String> {
        Handle::pause(self, name, until).map_err(|e| e.to_string())
    }

    fn resume(&self, name: &str) -> Result<(), String> {
        Handle::resume(self, name).map_err(|e| e.to_string())
    }

    fn wake(&self) {
        Handle::wake(self)
    }
}

impl Handle {
    /// This handle as admin's view of the backends.
    pub fn backends(&self) -> Arc<dyn Backends> {
        Arc::new(self.clone())
    }
}
