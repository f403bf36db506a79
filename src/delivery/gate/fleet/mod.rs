//! Fleet mode: one backend's gate shared by every MX host of a fleet
//! through Redis (`sluice_fleet_redis`), the second implementation of
//! [`BackendGate`] beside the local [`Gate`].
//!
//! ## What the fleet shares, per backend
//! - **Concurrency**: the backend's limit (`destination_concurrency_limit`,
//!   `maxproc`) is the fleet's ceiling; below it, the adaptive limit is
//!   the fleet's too, steered by one host over every host's samples
//!   ([`steer`]). A slot is a lease in a sorted set
//!   (member → expiry), taken by the admission script, renewed every third
//!   of `sluice_fleet_lease_time` while the delivery runs ([`Fleet`]), and
//!   given back by the finish script. A host that dies (kill -9, a cut
//!   cable) stops renewing: its slots come back within the lease time.
//! - **Rate**: `sluice_rate_limit` (and `destination_rate_delay`) is the
//!   fleet's, a GCRA schedule in Redis (the algorithm `governor` uses
//!   locally), checked in the same admission script.
//! - **Breaker**: one state for the fleet. The finish script counts
//!   failures fleet-wide and opens it at the threshold; admission then
//!   postpones every host's mail. When the probe time comes, the first
//!   host to ask gets the probe as a lease (a host that dies with it loses
//!   it at expiry, and another host probes); its success closes the
//!   breaker and bumps the backend's epoch.
//! - **Pause**: `sluice backend pause/resume` set and clear it for the
//!   fleet; a resume bumps the epoch too. With `--local` they pause and
//!   resume this host only, apart from the fleet's: a host paused on its
//!   own stays paused through the fleet's resumes and wake-ups until
//!   `resume --local` (an operator draining one host must not see it
//!   restart because another host resumed the fleet), and a shorter
//!   fleet-wide pause does not end it early. The queue's backend record
//!   stores it as this host's own, so it comes back as such after a
//!   restart.
//!
//! So a delivery costs one round trip to start (admission; none on an
//! idle connection under a fixed limit, see below) and one to end
//! (finish, sent after the result is recorded locally, never waited for;
//! shared with others for a kept lease);
//! renewals are one call per backend per third of the lease time. While
//! every slot of the fleet is taken, a waiting dispatcher asks again when a
//! slot comes back on this host or after [`POLL`].
//!
//! Each host watches its backends' fleet state once per heartbeat interval
//! (one call): when the epoch moves (a breaker closed, a pause ended,
//! whichever host saw it), its parked mail for that backend is woken, so
//! every host's backlog flows within a second or two of a recovery.
//!
//! ## Inside: a local gate
//! A fleet gate holds a local [`Gate`] and asks it first: it keeps what is
//! this host's own (its slots and latency, parked mail, last error). Its
//! settings come from [`share`]: while Redis answers, its rate is off, its
//! breaker cannot open (the fleet decides) and its limit follows the
//! fleet's adaptive limit (so it does not ask Redis for slots the fleet
//! does not have); while Redis is unreachable
//! it runs alone on this host's share of every limit, logged once per
//! backend. Deliveries started on the share hold no lease; when Redis
//! answers again, the next admission adopts as many leases for them, given
//! back as they finish, so the fleet's count includes them and the backend
//! sees at most the fleet limit plus the shares in flight at the switch.
//!
//! ## Idle connections hold their lease
//! The backend counts an open connection whether it is busy or idle, so
//! the fleet does too: a delivery whose connection goes idle in the pool
//! hands it its lease ([`BackendGate::keep_idle`]); the finish script then
//! feeds the breaker and the samples but keeps the slot (with no job
//! waiting, a connection stays open a poll interval at most,
//! `dispatch::idle::FLEET_LINGER`, so an idle connection sits on a slot
//! another host needs no longer than that host takes to ask again). The
//! next delivery on this host takes that lease with the idle connection,
//! without asking Redis when the count is all Redis would check (a fixed
//! limit, no fleet rate, no breaker open or pause seen by the watcher, no
//! adoption due); otherwise the admission script lets the member through
//! without counting it twice. The successful ends of kept leases are sent
//! together, one call per 10 ms at most (`admission::KEPT_BATCH`). Either script answers `shed` when the fleet wants the lease
//! back: it holds more leases than its (fallen) limit allows, or the lease
//! has had its turn (one heartbeat interval) and another host waits for a
//! slot (hosts refused a slot are noted for a second), so a host with a
//! backlog does not keep the fleet's slots to itself. A lease wanted back
//! is given back only once the dispatcher has closed its connection with
//! `QUIT` ([`BackendGate::idle_counted`], [`BackendGate::idle_left`]):
//! the backend has then counted it closed before another host may open
//! one in its place. Without a lease (Redis unreachable, or the breaker's
//! probe) a connection is not kept.
//!
//! Owns the mapping between the gate contract and the fleet's scripts.
//! Never blocks on Redis longer than `sluice_fleet_call_timeout`, and never
//! loses, bounces or holds mail because Redis is gone: the worst it does is
//! run on the local share.

mod admission;
mod client;
pub mod scripts;
mod share;
mod steer;

pub use self::client::{Fleet, FleetSettings, Lease};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_queue::{BackendRecord, BreakerPosition, QueueId, UnixMillis};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::admission::{ADMITS_AHEAD, Ending};
use self::scripts::{Keys, Status, lease_host};
use super::slots::Slot;
use super::{Admission, BackendGate, ConnectProbe, Feedback, FleetView, Gate, Permit, Report, Snapshot};
use crate::clock;
use crate::delivery::settings::BackendSettings;

/// How often a dispatcher waiting for a fleet slot asks again when nothing
/// on this host freed one (another host's delivery ending is not seen
/// here). When hosts with a backlog take turns on a low limit (a turn is
/// one heartbeat), half of this is the mean gap at each hand-over: 100 ms
/// lost 2 to 3 points of goodput with six hosts at a limit of 1 in
/// `overload fleet` (benches/README.md). Not a setting: it costs a waiting
/// host twenty admission calls a second per backend at most, and only
/// while the fleet's slots are all taken.
pub const POLL: Duration = Duration::from_millis(50);

/// Applies a gate's feedback outside a caller (the watcher's wake-ups).
pub type Apply = Arc<dyn Fn(Feedback) + Send + Sync>;

/// Whether the local gate is set for the shared fleet or for its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Share { hosts: u32 },
}

#[derive(Debug, Default)]
struct Fleetwide {
    /// The last status seen (by the watcher or an admission).
    status: Status,
    /// When `status` was read (wall clock).
    at: UnixMillis,
    /// The epoch the watcher last acted on.
    epoch: Option<u64>,
}

/// One backend's gate in fleet mode: see the module documentation.
pub struct FleetGate {
    name: String,
    local: Gate,
    fleet: Arc<Fleet>,
    keys: Keys,
    /// The configured settings (the fleet's totals).
    settings: Mutex<Arc<BackendSettings>>,
    mode: Mutex<Mode>,
    seen: Mutex<Fleetwide>,
    /// Deliveries running without a lease (started on the local share).
    unleased: AtomicU32,
    /// Leases adopted for them when Redis came back.
    adopted: Mutex<Vec<Lease>>,
    /// Redis came back: adopt leases at the next admission.
    adopt_due: Mutex<bool>,
    /// A lease went back in Redis (or the watcher saw the fleet's).
    released: Arc<Notify>,
    /// The fleet's adaptive limit as last read from Redis.
    shared_limit: Mutex<Option<u32>>,
    /// The fleet's limit as this host last heard it (steering, the
    /// watcher), and how often it changed.
    heard: Mutex<admission::Heard>,
    /// This host steers the fleet's adaptive limit (`steer.rs`).
    steering: std::sync::atomic::AtomicBool,
    /// This host's own pause (`pause --local`): until when (`u64::MAX`:
    /// until `resume --local`).
    held_here: Mutex<Option<UnixMillis>>,
    /// The leases of this host's idle connections, one each (see the
    /// module documentation).
    idle: Mutex<Vec<Lease>>,
    /// Leases the fleet wants back: given back once the dispatcher has
    /// closed an idle connection for each (`idle_left`), so the backend
    /// never sees more connections than the fleet counts.
    shedding: Mutex<Vec<Lease>>,
    /// How many idle connections' leases the finish script asked back
    /// (the fleet's limit fell, or another host waits after their turn).
    shed_due: Arc<AtomicU32>,
    /// Kept leases' successful ends waiting to be sent together.
    kept_batch: Arc<Mutex<Vec<admission::Kept>>>,
}

impl std::fmt::Debug for FleetGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetGate")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FleetGate {
    /// The fleet gate of backend `name`, and its watcher (which ends with
    /// the gate). `apply` makes the watcher's wake-ups effective.
    pub fn start(
        name: String,
        settings: Arc<BackendSettings>,
        record: Option<&BackendRecord>,
        now: UnixMillis,
        fleet: Arc<Fleet>,
        apply: Apply,
    ) -> Arc<FleetGate> {
        let local = Gate::new(name.clone(), Arc::new(share::shared(&settings, None)), record, now);
        // This host's own pause, stored as such, outlives the restart.
        let held_here = local.own_pause();
        let gate = Arc::new(FleetGate {
            keys: Keys::new(&fleet.settings().name, &name),
            name,
            local,
            fleet,
            settings: Mutex::new(settings),
            mode: Mutex::new(Mode::Shared),
            seen: Mutex::new(Fleetwide::default()),
            unleased: AtomicU32::new(0),
            adopted: Mutex::new(Vec::new()),
            adopt_due: Mutex::new(false),
            released: Arc::new(Notify::new()),
            shared_limit: Mutex::new(None),
            heard: Mutex::new(admission::Heard::default()),
            steering: std::sync::atomic::AtomicBool::new(false),
            held_here: Mutex::new(held_here),
            idle: Mutex::new(Vec::new()),
            shedding: Mutex::new(Vec::new()),
            shed_due: Arc::new(AtomicU32::new(0)),
            kept_batch: Arc::new(Mutex::new(Vec::new())),
        });
        tokio::spawn(watch(Arc::downgrade(&gate), apply));
        tokio::spawn(steer::steer(Arc::downgrade(&gate), gate.fleet.new_member()));
        gate
    }

    fn configured(&self) -> Arc<BackendSettings> {
        Arc::clone(&lock(&self.settings))
    }

    /// Whether this host's own pause (`--local`) holds at `now`.
    fn held_here(&self, now: UnixMillis) -> bool {
        lock(&self.held_here).is_some_and(|u| u > now)
    }

    /// Where the local gate's pause ends for a fleet-wide pause until
    /// `until` (`None`: until resumed): the later of it and this host's
    /// own pause in force at `now`.
    fn local_end(&self, until: Option<UnixMillis>, now: UnixMillis) -> Option<UnixMillis> {
        let fleet = until.unwrap_or(u64::MAX);
        match *lock(&self.held_here) {
            Some(here) if here > now && here > fleet => Some(here).filter(|&h| h != u64::MAX),
            _ => until,
        }
    }

    /// Records the fleet's adaptive limit as read from Redis and holds the
    /// local gate at it while shared (`share::shared`), so this host's
    /// dispatchers stop asking Redis for slots the fleet does not have.
    fn set_shared_limit(&self, limit: Option<u32>) {
        let old = std::mem::replace(&mut *lock(&self.shared_limit), limit);
        // The mode is held across the change so a concurrent switch to the
        // local share (`follow`) is not overwritten.
        let mode = lock(&self.mode);
        let s = self.configured();
        lock(&self.heard).hear(admission::in_force(&s, limit));
        if old != limit && *mode == Mode::Shared && s.adaptive {
            self.local.reconfigure(Arc::new(share::shared(&s, limit)));
        }
    }

    /// Sets the local gate for the fleet's state now: shared, or this
    /// host's share. Logs the switch.
    fn follow(&self) {
        let want = if self.fleet.is_shared() {
            Mode::Shared
        } else {
            Mode::Share { hosts: self.fleet.live_hosts() }
        };
        let mut mode = lock(&self.mode);
        if *mode == want {
            return;
        }
        let s = self.configured();
        match want {
            Mode::Shared => {
                tracing::info!(
                    "backend {}: fleet: redis answers again; fleet limit {} shared again",
                    self.name,
                    s.concurrency_limit
                );
                self.local.reconfigure(Arc::new(share::shared(&s, *lock(&self.shared_limit))));
                *lock(&self.adopt_due) = true;
            }
            Mode::Share { hosts } => {
                tracing::warn!(
                    "backend {}: fleet: redis unreachable; using local share {} of {} ({} hosts)",
                    self.name,
                    share::share(s.concurrency_limit, hosts),
                    s.concurrency_limit,
                    hosts
                );
                self.local.reconfigure(Arc::new(share::local_share(&s, hosts)));
            }
        }
        *mode = want;
    }

    /// The fleet-wide part of the state, once per heartbeat interval.
    async fn refresh(&self) -> Option<Status> {
        if !self.fleet.is_shared() {
            return None;
        }
        let mut inv = self.fleet.scripts.status.key(&self.keys.leases);
        inv.key(&self.keys.breaker).key(&self.keys.pause).key(&self.keys.limit);
        let st: Status = self.fleet.call("status", &inv).await.ok()?;
        self.set_shared_limit(st.limit);
        let mut seen = lock(&self.seen);
        seen.status = st.clone();
        seen.at = clock::unix_millis();
        Some(st)
    }
}

/// Watches a backend's fleet state while its gate lives: wakes the parked
/// mail when the epoch moves, keeps the view `backend list` shows fresh,
/// and wakes a dispatcher waiting for a slot when leases come back.
async fn watch(gate: Weak<FleetGate>, apply: Apply) {
    loop {
        let nap = {
            let Some(g) = gate.upgrade() else { return };
            if let Some(st) = g.refresh().await {
                let last = lock(&g.seen).epoch.replace(st.epoch);
                if last.is_some_and(|e| e != st.epoch) && !g.held_here(clock::unix_millis()) {
                    // A breaker closed or a pause ended somewhere in the
                    // fleet: this host's parked mail is due now.
                    let fb = g.local.resume();
                    if !fb.wake.is_empty() {
                        tracing::info!(
                            "backend {}: fleet: backend available again, waking {} parked message(s)",
                            g.name,
                            fb.wake.len()
                        );
                    }
                    apply(fb);
                }
                g.released.notify_waiters();
            }
            g.fleet.settings().heartbeat
        };
        tokio::time::sleep(nap).await;
    }
}

impl BackendGate for FleetGate {
    fn settings(&self) -> Arc<BackendSettings> {
        self.configured()
    }

    fn reconfigure(&self, settings: Arc<BackendSettings>) {
        let mode = *lock(&self.mode);
        let local = match mode {
            Mode::Shared => share::shared(&settings, *lock(&self.shared_limit)),
            Mode::Share { hosts } => share::local_share(&settings, hosts),
        };
        *lock(&self.settings) = settings;
        self.local.reconfigure(Arc::new(local));
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = self.local.changed() => {}
                _ = self.released.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        })
    }

    fn admit(&self, now: UnixMillis) -> BoxFuture<'_, Admission> {
        Box::pin(self.admit_fleet(now))
    }

    fn admissions_ahead(&self) -> usize {
        // The idle connections' leases are offered again together (they
        // take no new slot), plus the new slots this host has free beyond
        // them (its local gate is held at the fleet's limit; the idle
        // connections' leases count in the fleet but not there), at least
        // one. Asking for new slots past that found the fleet full more
        // often than not on a busy host (1.8 round trips per delivery
        // instead of 1.1 in `overload fleet-cost`, for no more throughput).
        let idle = self.idle_leases();
        let free = self.local.free_slots() as usize;
        (idle + free.saturating_sub(idle).max(1)).min(ADMITS_AHEAD)
    }

    fn keep_idle(&self, permit: &mut Permit) -> bool {
        self.keep_idle_lease(permit)
    }

    fn idle_counted(&self) -> Option<usize> {
        Some(self.idle_leases())
    }

    fn idle_left(&self, n: usize) {
        self.idle_leases_left(n)
    }

    fn spare_slot(&self) -> Option<Slot> {
        self.local.spare_slot()
    }

    fn report(&self, mut permit: Permit, report: Report, now: UnixMillis, mono: Instant) -> Feedback {
        let lease = permit.lease.take();
        let took_ms = mono.saturating_duration_since(permit.started).as_millis() as u64;
        let latency_us = match &report {
            Report::Completed { latency: Some(l) } => l.as_micros().min(i64::MAX as u128) as i64,
            _ => -1,
        };
        let (outcome, error) = match &report {
            Report::Completed { .. } => ("ok", String::new()),
            Report::Overloaded { error } => ("overload", error.clone()),
            Report::Abandoned => ("abandon", String::new()),
            Report::Failed { error } | Report::Unreachable { error } => ("fail", error.clone()),
        };
        let kept = permit.kept.take();
        let fb = self.local.report(permit, report, now, mono);
        match (lease, kept) {
            (Some(lease), _) => self.finish(Ending::Release(lease), outcome, error, latency_us, took_ms),
            (None, Some((member, turn_over))) => {
                self.finish(Ending::Keep(member, turn_over), outcome, error, latency_us, took_ms)
            }
            (None, None) => {
                let _ = self.unleased.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                if let Some(adopted) = lock(&self.adopted).pop() {
                    self.finish(Ending::Release(adopted), "abandon", String::new(), -1, 0);
                }
            }
        }
        fb
    }

    fn park(&self, id: QueueId) -> bool {
        self.local.park(id)
    }

    fn probe_candidate(&self, now: UnixMillis) -> Option<QueueId> {
        // While the fleet breaker is open, nothing is tried before its
        // probe time. Then every host whose own deliveries failed offers a
        // parked message (the local gate's "troubled and quiet" rule): the
        // admission gives the probe lease to one, the others wait for it,
        // and its success wakes everybody's parked mail.
        {
            let seen = lock(&self.seen);
            if seen.status.open && seen.status.probe_in.is_some_and(|ms| seen.at + ms > now) {
                return None;
            }
        }
        self.local.probe_candidate(now)
    }

    // Connect probes watch the local breaker, which opens only on the
    // local share (Redis unreachable); the fleet breaker is probed with a
    // trial delivery under the fleet's probe lease (`probe_candidate`).
    fn connect_probe(&self, now: UnixMillis) -> Option<ConnectProbe> {
        self.local.connect_probe(now)
    }

    fn next_connect_probe(&self) -> Option<UnixMillis> {
        self.local.next_connect_probe()
    }

    fn connect_probe_done(
        &self,
        probe: ConnectProbe,
        answer: Result<(), String>,
        now: UnixMillis,
    ) -> Option<QueueId> {
        self.local.connect_probe_done(probe, answer, now)
    }

    fn take_parked(&self, n: usize, now: UnixMillis) -> Vec<QueueId> {
        if lock(&self.seen).status.open || self.is_paused(now) {
            return Vec::new();
        }
        self.local.take_parked(n, now)
    }

    fn pause(&self, until: Option<UnixMillis>) -> Feedback {
        // This host's own pause (`--local`) outlives the fleet's: a shorter
        // fleet-wide pause must not cut it short here (and it is still
        // stored as this host's own when it ends later).
        let now = clock::unix_millis();
        let here = lock(&self.held_here).is_some_and(|h| h > now && h >= until.unwrap_or(u64::MAX));
        let fb = self.local.pause_as(self.local_end(until, now), here);
        let ms: i64 = match until {
            Some(u) => u.saturating_sub(clock::unix_millis()).max(1) as i64,
            None => 0,
        };
        self.send_pause(ms);
        fb
    }

    fn resume(&self) -> Feedback {
        // This host's own pause outlives the fleet's: its mail stays.
        let fb = if self.held_here(clock::unix_millis()) { Feedback::default() } else { self.local.resume() };
        lock(&self.seen).status.paused = None;
        self.send_pause(-1);
        fb
    }

    fn pause_here(&self, until: Option<UnixMillis>) -> Feedback {
        *lock(&self.held_here) = Some(until.unwrap_or(u64::MAX));
        tracing::info!("backend {}: fleet: paused on this host only", self.name);
        self.local.pause_as(until, true)
    }

    fn resume_here(&self) -> Feedback {
        *lock(&self.held_here) = None;
        tracing::info!("backend {}: fleet: resumed on this host", self.name);
        // A fleet-wide pause still in force holds the mail at admission.
        self.local.resume()
    }

    fn is_paused(&self, now: UnixMillis) -> bool {
        if self.local.is_paused(now) {
            return true;
        }
        let seen = lock(&self.seen);
        match seen.status.paused {
            Some(None) => true,
            Some(Some(ms)) => seen.at + ms > now,
            None => false,
        }
    }

    fn time_for(&self, n: usize) -> Duration {
        self.local.time_for(n)
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = self.local.snapshot();
        let s = self.configured();
        let seen = lock(&self.seen);
        if self.fleet.is_shared() {
            snap.max_limit = s.concurrency_limit;
            snap.rate = s.rate.map(|r| r.per_second()).unwrap_or(0.0);
            if s.adaptive {
                snap.limit = lock(&self.shared_limit).unwrap_or(initial(&s)).min(s.concurrency_limit);
                snap.reason = "fleet";
            }
            if seen.status.open {
                snap.breaker = BreakerPosition::Open;
                snap.probe_at = seen.status.probe_in.map(|ms| seen.at + ms);
            }
            match seen.status.paused {
                Some(None) => snap.paused_until = Some(u64::MAX),
                Some(Some(ms)) => snap.paused_until = Some(seen.at + ms),
                None => {}
            }
        }
        snap
    }

    fn fleet(&self) -> Option<FleetView> {
        let seen = lock(&self.seen);
        let mut per_host: Vec<(String, u32)> = Vec::new();
        for m in &seen.status.leases {
            let host = lease_host(m);
            match per_host.iter_mut().find(|(h, _)| h == host) {
                Some((_, n)) => *n += 1,
                None => per_host.push((host.to_owned(), 1)),
            }
        }
        for h in self.fleet.hosts() {
            if !per_host.iter().any(|(x, _)| *x == h) {
                per_host.push((h, 0));
            }
        }
        per_host.sort();
        Some(FleetView {
            shared: self.fleet.is_shared(),
            limit: self.configured().concurrency_limit,
            in_flight: seen.status.leases.len() as u32,
            hosts: per_host,
        })
    }
}

/// The initial concurrency the scripts get: where the fleet's adaptive
/// limit starts (and restarts when the breaker closes); `0` when the limit
/// is fixed.
fn initial(s: &BackendSettings) -> u32 {
    if s.adaptive { s.initial_concurrency.clamp(1, s.concurrency_limit.max(1)) } else { 0 }
}

impl FleetGate {
    fn send_pause(&self, ms: i64) {
        let fleet = Arc::clone(&self.fleet);
        let keys = self.keys.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut inv = fleet.scripts.pause.key(&keys.pause);
            inv.key(&keys.breaker).arg(ms);
            if let Err(e) = fleet.call::<i64>("pause", &inv).await {
                tracing::warn!("backend {name}: fleet: pause/resume not shared with the fleet: {e}");
            }
        });
    }
}
