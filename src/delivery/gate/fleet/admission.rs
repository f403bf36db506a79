//! A fleet delivery's lease from start to end: admission (the local gate,
//! then the admission script, offering an idle connection's lease again),
//! the lease handed to the idle connection when the delivery keeps it,
//! and the finish script that gives it back or keeps it.
//!
//! Owns the flow of leases between deliveries, idle connections and
//! Redis. Never decides in Rust what the scripts decide (the fleet's count,
//! rate, breaker and pause).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_queue::UnixMillis;

use super::scripts::Verdict;
use super::{FleetGate, Lease, initial, lock, share};
use crate::clock;
use crate::delivery::gate::{Admission, BackendGate, PAUSE_RECHECK, Permit, Report};
use crate::delivery::settings::BackendSettings;

/// The most admissions one host's dispatcher asks the script for at once
/// (when as many deliveries wait, and as many idle connections' leases are
/// offered again, see `admissions_ahead`): their round trips overlap, so a
/// host far from Redis starts several deliveries per round trip instead of
/// one. Not a setting: the script decides each one on its own and exactly;
/// eight round trips in flight keep a backlog moving through a Redis in
/// another site (tens of milliseconds away) at eight deliveries per round
/// trip.
pub const ADMITS_AHEAD: usize = 8;

impl FleetGate {
    /// [`BackendGate::admit`] in fleet mode: the local gate first, then
    /// the admission script (see the module documentation).
    pub(super) async fn admit_fleet(&self, now: UnixMillis) -> Admission {
        self.follow();
        let local = self.local.admit(now);
        let Admission::Go(mut permit) = local else { return local };
        if !self.fleet.is_shared() {
            self.unleased.fetch_add(1, Ordering::AcqRel);
            return Admission::Go(permit);
        }
        let s = self.configured();
        let (interval, tolerance) = share::gcra(&s);
        // An idle connection's lease, offered again: the dispatcher hands
        // this delivery an idle connection with the permit.
        let reuse = lock(&self.idle).pop();
        if reuse.is_some() && self.take_shed_due() {
            // The fleet wants it back (the finish script said so): the
            // dispatcher closes its connection, then it goes back.
            lock(&self.shedding).extend(reuse);
            self.local.report(permit, Report::Abandoned, now, clock::instant());
            return Admission::WaitSlot;
        }
        // It carries the next delivery without asking Redis when the
        // count is all Redis would check against a limit that has not
        // moved: a fixed limit, or on the host that steers an adaptive
        // one, a limit it has not changed since the admission script last
        // let a delivery through on this lease; no fleet rate, no adoption
        // due, and no breaker open or pause seen (the watcher reads those
        // every heartbeat). Whether it must go back comes with the finish
        // script's answer. An adaptive limit is steered by trying a level
        // for one round of deliveries, and a level must hold from the
        // moment it is written (a try measured at the old level teaches
        // the limiter nothing): after a change every idle lease asks once,
        // and the admission script sheds those beyond the new level. Only
        // the host that steers hears a change as it writes it; the others
        // would hear it a delivery later, and the first version that let
        // them skip the admission too kept six hosts at 3 connections
        // where 1 was best (their old level spoiled the owner's tries
        // down), so they ask every time.
        let heard = lock(&self.heard).changes;
        let steers = self.steering.load(Ordering::Acquire);
        let steady =
            initial(&s) == 0 || (steers && reuse.as_ref().is_some_and(|l| l.checked() == Some(heard)));
        if reuse.is_some() && steady && interval == 0 && !*lock(&self.adopt_due) && !self.fleet_holds(now) {
            permit.lease = reuse;
            return Admission::Go(permit);
        }
        let member = reuse.as_ref().map_or_else(|| self.fleet.new_member(), |l| l.member().to_owned());
        let adopt: Vec<String> = if std::mem::take(&mut *lock(&self.adopt_due)) {
            (0..self.unleased.load(Ordering::Acquire)).map(|_| self.fleet.new_member()).collect()
        } else {
            Vec::new()
        };
        let lease_ms = self.fleet.settings().lease_time.as_millis() as u64;
        let mut inv = self.fleet.scripts.admit.key(&self.keys.leases);
        inv.key(&self.keys.breaker).key(&self.keys.pause).key(&self.keys.rate).key(&self.keys.limit);
        inv.key(&self.keys.wanted);
        inv.arg(&member).arg(lease_ms).arg(s.concurrency_limit).arg(interval).arg(tolerance);
        // An idle connection's lease has had its turn after one heartbeat
        // interval: it then goes to another host waiting for a slot, so a
        // host with a backlog does not keep the fleet's slots to itself.
        let turn_over = reuse.as_ref().is_some_and(|l| l.held_for() >= self.fleet.settings().heartbeat);
        inv.arg(initial(&s)).arg(turn_over as u8);
        for m in &adopt {
            inv.arg(m);
        }
        let verdict = self.fleet.call::<Verdict>("admit", &inv).await;
        if verdict.is_ok() && !adopt.is_empty() {
            let mut adopted = lock(&self.adopted);
            adopted.extend(adopt.into_iter().map(|m| Lease::held(&self.fleet, &self.keys.leases, m, false)));
        } else if !adopt.is_empty() {
            *lock(&self.adopt_due) = true;
        }
        let give_back = |permit: Permit| {
            self.local.report(permit, Report::Abandoned, now, clock::instant());
        };
        let reuse = match (reuse, &verdict) {
            (Some(lease), Ok(Verdict::Shed)) => {
                // The fleet wants it back: the dispatcher closes the idle
                // connection it stood for (it is no longer in
                // `idle_counted`), then `idle_left` gives it back.
                lock(&self.shedding).push(lease);
                None
            }
            (Some(lease), Ok(Verdict::Go | Verdict::Probe)) => Some(lease),
            (Some(lease), _) => {
                lock(&self.idle).push(lease);
                None
            }
            (None, _) => None,
        };
        match verdict {
            Ok(Verdict::Go) | Ok(Verdict::Probe) => {
                let probe = matches!(verdict, Ok(Verdict::Probe));
                if probe {
                    tracing::info!(
                        "backend {}: fleet circuit breaker half-open, this host sends the probe",
                        self.name
                    );
                }
                let lease = match reuse {
                    Some(lease) => lease.probing(probe),
                    None => Lease::held(&self.fleet, &self.keys.leases, member, probe),
                };
                // The changes heard before the call: one heard during it
                // makes the next delivery on this lease ask again.
                permit.lease = Some(lease.checked_at(heard));
                Admission::Go(permit)
            }
            Ok(Verdict::Slot | Verdict::Shed) => {
                give_back(permit);
                Admission::WaitSlot
            }
            Ok(Verdict::ProbeWait) => {
                give_back(permit);
                Admission::WaitProbe
            }
            Ok(Verdict::Rate(ms)) => {
                give_back(permit);
                Admission::WaitRate(Duration::from_millis(ms.max(1)))
            }
            Ok(Verdict::Paused(ms)) => {
                give_back(permit);
                let until = now + ms.unwrap_or(PAUSE_RECHECK.as_millis() as u64);
                let mut seen = lock(&self.seen);
                seen.status.paused = Some(ms);
                seen.at = now;
                Admission::Postpone { until, reason: "delivery paused by administrator".into() }
            }
            Ok(Verdict::Open(ms, error)) => {
                give_back(permit);
                let mut seen = lock(&self.seen);
                seen.status.open = true;
                seen.status.probe_in = Some(ms);
                seen.at = now;
                let reason = if error.is_empty() {
                    "delivery temporarily suspended".to_owned()
                } else {
                    format!("delivery temporarily suspended: {error}")
                };
                Admission::Postpone { until: now + ms, reason }
            }
            Err(_) => {
                // Redis is now marked unreachable: this delivery goes on
                // the local share, and so do the next ones.
                self.follow();
                self.unleased.fetch_add(1, Ordering::AcqRel);
                Admission::Go(permit)
            }
        }
    }

    /// Gives a lease back in Redis (or keeps it for its idle connection,
    /// when the fleet does not want it back) and feeds the fleet breaker,
    /// off the caller's path.
    /// `latency_us` is the sample for the fleet's limit (`-1`: none),
    /// `took_ms` the delivery's duration.
    pub(super) fn finish(
        &self,
        ending: Ending,
        outcome: &'static str,
        error: String,
        latency_us: i64,
        took_ms: u64,
    ) {
        if let (Ending::Keep(member, turn_over), "ok") = (&ending, outcome) {
            self.finish_kept(Kept { member: member.clone(), latency_us, took_ms, turn_over: *turn_over });
            return;
        }
        if let Ending::Release(lease) = &ending {
            // Not renewed from here on (a renewal adds a missing lease
            // again), before the finish call is even queued.
            self.fleet.forget(&self.keys.leases, lease.member());
        }
        let s = self.configured();
        let fleet = Arc::clone(&self.fleet);
        let keys = self.keys.clone();
        let name = self.name.clone();
        let threshold = s.failure_threshold.max(1).saturating_mul(s.failed_cohort_limit.max(1));
        let cooldown = s.cooldown.as_millis() as u64;
        let max_cooldown = s.max_cooldown.as_millis().max(s.cooldown.as_millis()) as u64;
        let released = Arc::clone(&self.released);
        let shed_due = Arc::clone(&self.shed_due);
        let initial = initial(&s);
        let ceiling = s.concurrency_limit;
        tokio::spawn(async move {
            if !fleet.is_shared() {
                // Not sent to a Redis known gone: the lease expires.
                return;
            }
            let mut inv = fleet.scripts.finish.key(&keys.leases);
            inv.key(&keys.breaker)
                .key(&keys.samples)
                .key(&keys.limit)
                .key(&keys.wanted)
                .arg(ending.member())
                .arg(outcome)
                .arg(threshold)
                .arg(cooldown)
                .arg(max_cooldown);
            inv.arg(error.chars().take(300).collect::<String>());
            inv.arg(latency_us).arg(took_ms).arg(initial);
            match ending {
                Ending::Keep(_, turn_over) => inv.arg(1).arg(ceiling).arg(turn_over as u8),
                Ending::Release(_) => inv.arg(0),
            };
            match fleet.call::<String>("finish", &inv).await.as_deref() {
                // The fleet wants an idle connection's lease back: the next
                // admission or kept connection on this host gives one.
                Ok("shed") => {
                    shed_due.fetch_add(1, Ordering::AcqRel);
                }
                Ok("opened") => tracing::warn!(
                    "backend {name}: fleet circuit breaker open after {threshold} consecutive failures across the fleet ({error}); probe in {:.1}s",
                    cooldown as f64 / 1000.0
                ),
                Ok("reopened") => {
                    tracing::warn!("backend {name}: fleet circuit breaker probe failed ({error}), open again")
                }
                Ok("closed") => {
                    tracing::info!("backend {name}: fleet circuit breaker closed, probe delivered")
                }
                _ => {}
            }
            if let Ending::Release(lease) = ending {
                drop(lease);
                released.notify_waiters();
            }
        });
    }

    /// [`BackendGate::keep_idle`]: the delivery's lease goes to its idle
    /// connection (not a probe's, and only while shared).
    /// When the fleet wants a lease back, this one goes back instead
    /// (after its connection is closed with `QUIT`).
    pub(super) fn keep_idle_lease(&self, permit: &mut Permit) -> bool {
        match permit.lease.take() {
            Some(lease) if !lease.is_probe() && self.fleet.is_shared() && !self.take_shed_due() => {
                // Its turn is over after one heartbeat interval: another
                // host waiting for a slot then gets it (the finish script).
                let turn_over = lease.held_for() >= self.fleet.settings().heartbeat;
                permit.kept = Some((lease.member().to_owned(), turn_over));
                lock(&self.idle).push(lease);
                true
            }
            lease => {
                permit.lease = lease;
                false
            }
        }
    }

    /// [`BackendGate::idle_counted`]: the leases idle connections hold,
    /// less those the fleet wants back.
    pub(super) fn idle_leases(&self) -> usize {
        lock(&self.idle).len().saturating_sub(self.shed_due.load(Ordering::Acquire) as usize)
    }

    /// Takes one of the leases the fleet wants back, if any is due.
    fn take_shed_due(&self) -> bool {
        self.shed_due.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// Whether the fleet holds deliveries back as last seen (breaker open,
    /// paused): then admission asks Redis.
    fn fleet_holds(&self, now: UnixMillis) -> bool {
        let open = lock(&self.seen).status.open;
        open || BackendGate::is_paused(self, now)
    }

    /// [`BackendGate::idle_left`]: gives back the leases the fleet wanted
    /// back and those beyond the `n` idle connections left.
    pub(super) fn idle_leases_left(&self, n: usize) {
        let mut extra: Vec<Lease> = std::mem::take(&mut *lock(&self.shedding));
        {
            let mut idle = lock(&self.idle);
            let keep = n.min(idle.len());
            let closed = idle.len() - keep;
            extra.extend(idle.drain(keep..));
            // Closed idle connections count for the leases the fleet
            // wanted back.
            for _ in 0..closed {
                if !self.take_shed_due() {
                    break;
                }
            }
        }
        for lease in extra {
            self.finish(Ending::Release(lease), "abandon", String::new(), -1, 0);
        }
    }
}

/// How a delivery's lease ends: given back, or kept by its idle
/// connection (the member of the lease now in the idle list, and whether
/// it has had its turn).
pub(super) enum Ending {
    Release(Lease),
    Keep(String, bool),
}

impl Ending {
    fn member(&self) -> &str {
        match self {
            Ending::Release(lease) => lease.member(),
            Ending::Keep(member, _) => member,
        }
    }
}

/// A successful delivery whose lease stays with its idle connection,
/// waiting to be reported with others ([`FleetGate::finish_kept`]).
#[derive(Debug)]
pub(super) struct Kept {
    member: String,
    latency_us: i64,
    took_ms: u64,
    turn_over: bool,
}

/// How long the successful ends of kept leases wait to be sent together:
/// a busy host makes a hundred calls a second for them at most, instead
/// of one per delivery. Not a setting: it delays only the limit owner's
/// samples (it steers every 100 ms), the reset of the breaker's failure
/// count, and a lease the fleet wants back by as much.
pub const KEPT_BATCH: Duration = Duration::from_millis(10);

impl FleetGate {
    /// Queues a kept lease's successful end; the first one queued sends
    /// the batch [`KEPT_BATCH`] later in one call ([`super::scripts`]'s
    /// kept finish), whose answer says which leases to give back.
    fn finish_kept(&self, kept: Kept) {
        let first = {
            let mut batch = lock(&self.kept_batch);
            batch.push(kept);
            batch.len() == 1
        };
        if !first {
            return;
        }
        let s = self.configured();
        let (ceiling, initial) = (s.concurrency_limit, initial(&s));
        let fleet = Arc::clone(&self.fleet);
        let keys = self.keys.clone();
        let batch = Arc::clone(&self.kept_batch);
        let shed_due = Arc::clone(&self.shed_due);
        tokio::spawn(async move {
            tokio::time::sleep(KEPT_BATCH).await;
            let kept = std::mem::take(&mut *lock(&batch));
            if kept.is_empty() || !fleet.is_shared() {
                return;
            }
            let mut inv = fleet.scripts.finish_kept.key(&keys.leases);
            inv.key(&keys.breaker).key(&keys.samples).key(&keys.limit).key(&keys.wanted);
            inv.arg(ceiling).arg(initial);
            for k in &kept {
                inv.arg(&k.member).arg(k.latency_us).arg(k.took_ms).arg(k.turn_over as u8);
            }
            if let Ok(shed) = fleet.call::<Vec<String>>("finish", &inv).await {
                // The next admissions or kept connections on this host give
                // that many back.
                shed_due.fetch_add(shed.len() as u32, Ordering::AcqRel);
            }
        });
    }
}

/// The fleet's limit as this host last heard it (steering, the watcher),
/// and how many times it changed: on the host that steers, a lease checked
/// by the admission script at the current count may carry the next
/// delivery without asking again.
#[derive(Debug, Default)]
pub(super) struct Heard {
    limit: Option<u32>,
    pub(super) changes: u64,
}

impl Heard {
    pub(super) fn hear(&mut self, limit: u32) {
        if self.limit != Some(limit) {
            self.limit = Some(limit);
            self.changes += 1;
        }
    }
}

/// The fleet's limit in force for a shared adaptive limit `shared` (what
/// the scripts' `fleet_limit` computes): the ceiling when the limit is
/// fixed, else the shared one (the initial concurrency while none is
/// written) within `1..=` the ceiling.
pub(super) fn in_force(s: &BackendSettings, shared: Option<u32>) -> u32 {
    let i = initial(s);
    if i == 0 {
        return s.concurrency_limit;
    }
    shared.unwrap_or(i).clamp(1, s.concurrency_limit.max(1))
}
