//! The gate as the rest of delivery holds it: one trait, [`BackendGate`],
//! whatever implements it. The registry creates each backend's gate and
//! hands it out as `Arc<dyn BackendGate>`; the dispatcher, the recording of
//! results and the admin view use only this trait, so none of them knows
//! which gate it holds.
//!
//! Two implementations: the local [`Gate`] (this process's limiter,
//! adaptive concurrency and breaker), and the fleet gate
//! ([`super::fleet::FleetGate`]: the same controls shared by every MX host
//! through Redis), which the registry picks when `sluice_fleet_redis` is
//! set. `admit` is async because the fleet gate asks Redis; `report` is
//! not (the fleet gate sends its result to Redis without waiting).
//!
//! Owns the contract only; every method's meaning is documented on the
//! local gate's method of the same name.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_queue::{QueueId, UnixMillis};
use tokio::time::Instant;

use super::slots::Slot;
use super::{Admission, ConnectProbe, Feedback, FleetView, Gate, Permit, Report, Snapshot};
use crate::delivery::settings::BackendSettings;

/// One backend's gate, as the dispatcher, the registry and the recording
/// of results use it.
pub trait BackendGate: Send + Sync + std::fmt::Debug {
    /// The settings in force.
    fn settings(&self) -> Arc<BackendSettings>;
    /// Applies new settings (a reload) without losing what was learned.
    fn reconfigure(&self, settings: Arc<BackendSettings>);
    /// Resolves when a waiting delivery may be able to start: ask again.
    fn changed(&self) -> BoxFuture<'_, ()>;
    /// May a delivery start at `now`? Async: the fleet gate asks Redis
    /// (within its call deadline).
    fn admit(&self, now: UnixMillis) -> BoxFuture<'_, Admission>;
    /// How many admissions the dispatcher may ask for at once (one per
    /// waiting job at most). One where an admission is decided at once;
    /// the fleet gate's wait on a round trip to Redis, and overlapping them
    /// is what lets one host start more than one delivery per round trip.
    fn admissions_ahead(&self) -> usize {
        1
    }
    /// A finished delivery's connection is about to go idle in the pool
    /// (called with the pool locked, before [`Self::report`]): true when it
    /// may. The fleet gate moves the delivery's lease to it, so the fleet
    /// counts it as the backend does, and says no for a delivery that holds
    /// no lease (the dispatcher closes it soon when no job waits, see
    /// `dispatch::idle::FLEET_LINGER`).
    fn keep_idle(&self, _permit: &mut Permit) -> bool {
        true
    }
    /// How many idle connections the gate counts (`None`: it keeps no
    /// count of its own; the limit alone bounds the pool).
    fn idle_counted(&self) -> Option<usize> {
        None
    }
    /// The pool now holds `n` idle connections (called with the pool
    /// locked): what the gate holds for more than `n` goes back.
    fn idle_left(&self, _n: usize) {}
    /// A slot not used by a delivery (to close an idle connection within
    /// the limit), if one is free.
    fn spare_slot(&self) -> Option<Slot>;
    /// How a delivery went; what the caller must do about it.
    fn report(&self, permit: Permit, report: Report, now: UnixMillis, mono: Instant) -> Feedback;
    /// Remembers a message for an early wake-up; false when full.
    fn park(&self, id: QueueId) -> bool;
    /// A parked message to send as the probe of a quiet, troubled backend.
    fn probe_candidate(&self, now: UnixMillis) -> Option<QueueId>;
    /// The open breaker's connect probe, when one is due and a slot free.
    fn connect_probe(&self, now: UnixMillis) -> Option<ConnectProbe>;
    /// When the next connect probe is due.
    fn next_connect_probe(&self) -> Option<UnixMillis>;
    /// How a connect probe went; a parked message to send as the trial
    /// when the backend answered.
    fn connect_probe_done(
        &self,
        probe: ConnectProbe,
        answer: Result<(), String>,
        now: UnixMillis,
    ) -> Option<QueueId>;
    /// Up to `n` parked messages, taken off the list.
    fn take_parked(&self, n: usize, now: UnixMillis) -> Vec<QueueId>;
    /// The administrator's pause, until `until` or a resume.
    fn pause(&self, until: Option<UnixMillis>) -> Feedback;
    /// Ends a pause.
    fn resume(&self) -> Feedback;
    /// The administrator's pause on this host only (`--local`): in fleet
    /// mode the other hosts go on; otherwise the same as [`Self::pause`].
    fn pause_here(&self, until: Option<UnixMillis>) -> Feedback {
        self.pause(until)
    }
    /// Ends a pause on this host only (`--local`).
    fn resume_here(&self) -> Feedback {
        self.resume()
    }
    /// True while paused at `now`.
    fn is_paused(&self, now: UnixMillis) -> bool;
    /// About how long `n` more deliveries take to get through.
    fn time_for(&self, n: usize) -> Duration;
    /// A consistent read-only view.
    fn snapshot(&self) -> Snapshot;
    /// The fleet-wide view (fleet mode only).
    fn fleet(&self) -> Option<FleetView> {
        None
    }
}

impl BackendGate for Gate {
    fn settings(&self) -> Arc<BackendSettings> {
        Gate::settings(self)
    }

    fn reconfigure(&self, settings: Arc<BackendSettings>) {
        Gate::reconfigure(self, settings)
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(Gate::changed(self))
    }

    fn admit(&self, now: UnixMillis) -> BoxFuture<'_, Admission> {
        Box::pin(std::future::ready(Gate::admit(self, now)))
    }

    fn spare_slot(&self) -> Option<Slot> {
        Gate::spare_slot(self)
    }

    fn report(&self, permit: Permit, report: Report, now: UnixMillis, mono: Instant) -> Feedback {
        Gate::report(self, permit, report, now, mono)
    }

    fn park(&self, id: QueueId) -> bool {
        Gate::park(self, id)
    }

    fn probe_candidate(&self, now: UnixMillis) -> Option<QueueId> {
        Gate::probe_candidate(self, now)
    }

    fn connect_probe(&self, now: UnixMillis) -> Option<ConnectProbe> {
        Gate::connect_probe(self, now)
    }

    fn next_connect_probe(&self) -> Option<UnixMillis> {
        Gate::next_connect_probe(self)
    }

    fn connect_probe_done(
        &self,
        probe: ConnectProbe,
        answer: Result<(), String>,
        now: UnixMillis,
    ) -> Option<QueueId> {
        Gate::connect_probe_done(self, probe, answer, now)
    }

    fn take_parked(&self, n: usize, now: UnixMillis) -> Vec<QueueId> {
        Gate::take_parked(self, n, now)
    }

    fn pause(&self, until: Option<UnixMillis>) -> Feedback {
        Gate::pause(self, until)
    }

    fn resume(&self) -> Feedback {
        Gate::resume(self)
    }

    fn is_paused(&self, now: UnixMillis) -> bool {
        Gate::is_paused(self, now)
    }

    fn time_for(&self, n: usize) -> Duration {
        Gate::time_for(self, n)
    }

    fn snapshot(&self) -> Snapshot {
        Gate::snapshot(self)
    }
}
