//! What the admin service sees of delivery: the scheduler's [`Handle`] as
//! the API's [`Backends`] (`sluice backend list|pause|resume`, `sluice
//! queue flush`).
//!
//! Owns only the translation from gate snapshots to the API's view; the
//! behaviour lives in the scheduler and the gates.

use std::sync::Arc;

use sluice_queue::UnixMillis;

use super::api::{BackendView, Backends, FleetShare, HostShare};
use crate::delivery::gate::position_name;
use crate::delivery::{Handle, UnknownBackend};

/// The running delivery as the admin API's view of the backends.
pub fn of(handle: &Handle) -> Arc<dyn Backends> {
    Arc::new(Delivery(handle.clone()))
}

/// The adapter: delivery knows nothing of the admin API.
#[derive(Debug)]
struct Delivery(Handle);

impl Backends for Delivery {
    fn list(&self) -> Vec<BackendView> {
        self.0
            .list()
            .into_iter()
            .map(|b| {
                let s = b.snapshot;
                BackendView {
                    breaker: position_name(s.breaker).to_owned(),
                    name: s.name,
                    paused_until: s.paused_until,
                    concurrency: s.in_flight,
                    limit: s.limit,
                    reason: s.reason.to_owned(),
                    max_limit: s.max_limit,
                    rate: s.rate,
                    latency: s.latency.map(|d| d.as_secs_f64()),
                    baseline_latency: s.baseline.map(|(_, d)| d.as_secs_f64()),
                    baseline_concurrency: s.baseline.map(|(n, _)| n),
                    gradient: s.gradient.map(|(g, _, _)| g),
                    gradient_between: s.gradient.map(|(_, lo, hi)| (lo, hi)),
                    curve: s.curve.iter().map(|&(n, d)| (n, d.as_secs_f64())).collect(),
                    last_error: s.last_error,
                    probe_at: s.probe_at,
                    fleet: b.fleet.map(|f| FleetShare {
                        shared: f.shared,
                        limit: f.limit,
                        in_flight: f.in_flight,
                        hosts: f
                            .hosts
                            .into_iter()
                            .map(|(host, in_flight)| HostShare { host, in_flight })
                            .collect(),
                    }),
                }
            })
            .collect()
    }

    fn pause(&self, name: &str, until: Option<UnixMillis>, local: bool) -> Result<(), UnknownBackend> {
        self.0.pause(name, until, local)
    }

    fn resume(&self, name: &str, local: bool) -> Result<(), UnknownBackend> {
        self.0.resume(name, local)
    }

    fn wake(&self) {
        self.0.wake()
    }
}
