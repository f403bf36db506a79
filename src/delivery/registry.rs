//! The backend registry: one [`Backend`] per transport and next hop,
//! created (with its gate and its dispatcher) on first use, and the admin
//! view of them ([`Handle`]: list, pause, resume, wake).
//!
//! The registry is where each backend's gate is chosen: the local [`Gate`],
//! or in fleet mode (`sluice_fleet_redis`) the [`FleetGate`] shared
//! through Redis, handed to the backend as `Arc<dyn BackendGate>`; nothing
//! else in delivery knows which. A backend that retired itself after a long
//! idle stays in the map until the claim loop's next sweep (or another
//! backend is created), and is never listed or used again.
//!
//! Never claims mail and never records results; the admin view reads and
//! steers gates and the stored records only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_queue::{BackendRecord, UnixMillis};

use super::context::{Context, holds_mail, lock};
use super::dispatch::Backend;
use super::gate::fleet::{self, Fleet, FleetGate, FleetSettings};
use super::gate::{BackendGate, FleetView, Gate, Snapshot, position_name};
use super::settings::BackendSettings;
use super::{BackendId, UnknownBackend};
use crate::clock;

/// Every backend delivery knows of now.
#[derive(Debug)]
pub struct Registry {
    ctx: Arc<Context>,
    backends: Mutex<HashMap<BackendId, Arc<Backend>>>,
    /// Fleet mode's Redis client, when `sluice_fleet_redis` is set.
    fleet: Option<Arc<Fleet>>,
}

impl Registry {
    /// The registry; in fleet mode, also this host's fleet client (its
    /// heartbeat runs until delivery stops).
    pub fn new(ctx: Arc<Context>) -> Registry {
        let fleet = FleetSettings::from_config(&ctx.settings.config()).map(|s| {
            tracing::info!("fleet: host {} in fleet {} through {}", s.host, s.name, s.urls.join(", "));
            let f = Fleet::new(s);
            f.start(ctx.token.clone());
            f
        });
        Registry { ctx, backends: Mutex::new(HashMap::new()), fleet }
    }

    /// The backend for an id, created (and its dispatcher started) on first
    /// use; its settings follow the configuration.
    pub fn backend(&self, id: &BackendId, settings: Arc<BackendSettings>) -> Arc<Backend> {
        let mut map = lock(&self.backends);
        if let Some(b) = map.get(id).filter(|b| !b.is_closed()) {
            b.gate().reconfigure(settings);
            return Arc::clone(b);
        }
        // Retired backends are forgotten here, when a new one is made.
        map.retain(|_, b| !b.is_closed());
        let name = id.to_string();
        let record = self.ctx.stored_record(&name);
        let now = clock::unix_millis();
        let gate: Arc<dyn BackendGate> = match &self.fleet {
            None => Arc::new(Gate::new(name, settings, record.as_ref(), now)),
            Some(fleet) => {
                let ctx = Arc::clone(&self.ctx);
                let n = name.clone();
                let apply: fleet::Apply = Arc::new(move |fb| {
                    let ctx = Arc::clone(&ctx);
                    let n = n.clone();
                    tokio::spawn(async move { ctx.apply_feedback(&n, fb).await });
                });
                FleetGate::start(name, settings, record.as_ref(), now, Arc::clone(fleet), apply)
            }
        };
        let b = Arc::new(Backend::new(id.clone(), gate, Arc::clone(&self.ctx)));
        self.ctx.count_backends(1);
        b.start();
        map.insert(id.clone(), Arc::clone(&b));
        b
    }

    /// Drops retired backends from the map (they hold their gate's memory
    /// until then): cheap when none retired since the last sweep.
    pub fn sweep(&self) {
        let mut map = lock(&self.backends);
        if map.len() > self.ctx.live_backends() {
            map.retain(|_, b| !b.is_closed());
        }
    }

    /// The running backend named `name`, if any.
    pub fn find(&self, name: &str) -> Option<Arc<Backend>> {
        lock(&self.backends).values().find(|b| b.name() == name && !b.is_closed()).cloned()
    }

    /// Forgets every backend (at shutdown: they point back at the context
    /// through their tasks, and the queue handle they hold must go).
    pub fn clear(&self) {
        lock(&self.backends).clear();
    }

    /// Backends in memory (retired ones not yet forgotten included).
    pub fn len(&self) -> usize {
        lock(&self.backends).len()
    }

    /// True when no backend is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every running backend.
    fn running(&self) -> Vec<Arc<Backend>> {
        lock(&self.backends).values().filter(|b| !b.is_closed()).cloned().collect()
    }
}

/// A backend as listed: its gate's snapshot plus the jobs waiting for it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub snapshot: Snapshot,
    /// Deliveries waiting in memory for the gate.
    pub queued: usize,
    /// Fleet mode: the backend across the fleet.
    pub fleet: Option<FleetView>,
}

impl BackendStatus {
    /// `closed`, `open`, `half-open`.
    pub fn breaker_name(&self) -> &'static str {
        position_name(self.snapshot.breaker)
    }
}

/// The handle `start` returns: what the admin side may see and do.
#[derive(Debug, Clone)]
pub struct Handle {
    registry: Arc<Registry>,
    ctx: Arc<Context>,
}

impl Handle {
    pub(super) fn new(registry: Arc<Registry>, ctx: Arc<Context>) -> Handle {
        Handle { registry, ctx }
    }

    /// Every backend: running ones, and ones the queue remembers (an open
    /// breaker or a pause from before a restart) that no mail has needed yet.
    pub fn list(&self) -> Vec<BackendStatus> {
        let mut out: Vec<BackendStatus> = self
            .registry
            .running()
            .iter()
            .map(|b| BackendStatus {
                snapshot: b.gate().snapshot(),
                queued: b.queued(),
                fleet: b.gate().fleet(),
            })
            .collect();
        for (name, rec) in self.ctx.stored().iter() {
            if !out.iter().any(|s| &s.snapshot.name == name) {
                out.push(BackendStatus { snapshot: Snapshot::stored(name, rec), queued: 0, fleet: None });
            }
        }
        out.sort_by(|a, b| a.snapshot.name.cmp(&b.snapshot.name));
        out
    }

    /// Pauses a backend (`sluice backend pause NAME`) until `until` or until
    /// resumed. Its mail is postponed, not attempted. The pause is stored.
    /// `local`: this host only, in fleet mode.
    pub fn pause(&self, name: &str, until: Option<UnixMillis>, local: bool) -> Result<(), UnknownBackend> {
        if let Some(b) = self.registry.find(name) {
            let fb = if local { b.gate().pause_here(until) } else { b.gate().pause(until) };
            let ctx = Arc::clone(&self.ctx);
            let name = name.to_owned();
            tokio::spawn(async move { ctx.apply_feedback(&name, fb).await });
            return Ok(());
        }
        self.update_stored(name, |r| r.paused_until = Some(until.unwrap_or(u64::MAX)))
    }

    /// Ends a pause; the backend's parked mail is due now. `local`: this
    /// host's own pause only, in fleet mode.
    pub fn resume(&self, name: &str, local: bool) -> Result<(), UnknownBackend> {
        if let Some(b) = self.registry.find(name) {
            let fb = if local { b.gate().resume_here() } else { b.gate().resume() };
            let ctx = Arc::clone(&self.ctx);
            let name = name.to_owned();
            tokio::spawn(async move { ctx.apply_feedback(&name, fb).await });
            self.wake();
            return Ok(());
        }
        self.update_stored(name, |r| r.paused_until = None)
    }

    fn update_stored(&self, name: &str, f: impl FnOnce(&mut BackendRecord)) -> Result<(), UnknownBackend> {
        let rec = {
            let mut stored = self.ctx.stored();
            let Some(rec) = stored.get_mut(name) else {
                return Err(UnknownBackend { name: name.to_owned() });
            };
            f(rec);
            rec.clone()
        };
        let ctx = Arc::clone(&self.ctx);
        let name = name.to_owned();
        tokio::spawn(async move {
            if !holds_mail(&rec) {
                // Resumed, with a closed breaker: nothing left to remember.
                ctx.forget(&name).await;
            } else if let Err(e) = ctx.queue.put_backend(&name, &rec).await {
                tracing::error!("backend {name}: cannot store state: {e}");
            }
        });
        Ok(())
    }

    /// Tells delivery where this host's SMTP listeners are bound, so mail
    /// routed to them is recognised as looping back (the daemon calls it
    /// once its listeners are bound; tests with a listener of their own).
    pub fn listening_on(&self, bound: &[std::net::SocketAddr]) {
        self.ctx.set_listening(bound);
    }

    /// Looks at the queue now (after a flush, a release, a reload).
    pub fn wake(&self) {
        self.ctx.wake();
    }

    /// Fleet mode's state in a few words for `sluice status` (`None`:
    /// not in fleet mode).
    pub fn fleet(&self) -> Option<String> {
        let f = self.registry.fleet.as_ref()?;
        let s = f.settings();
        let through = match f.master() {
            Some(m) => format!("redis (master {m}, named by the sentinels)"),
            None => "redis".to_owned(),
        };
        Some(if f.is_shared() {
            format!(
                "{} as {}: shared through {through}, hosts alive: {}",
                s.name,
                s.host,
                f.hosts().join(" ")
            )
        } else {
            format!(
                "{} as {}: redis unreachable, on the local share of {} host(s)",
                s.name,
                s.host,
                f.live_hosts()
            )
        })
    }

    /// The registry and the context, for the services built over them
    /// (the recipient verifier).
    pub(super) fn parts(&self) -> (Arc<Registry>, Arc<Context>) {
        (Arc::clone(&self.registry), Arc::clone(&self.ctx))
    }

    /// Messages recorded since start.
    pub fn recorded(&self) -> u64 {
        self.ctx.recorded()
    }

    /// Backends in memory now (made and not retired).
    pub fn live_backends(&self) -> usize {
        self.ctx.live_backends()
    }
}
