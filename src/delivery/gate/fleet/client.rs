//! The fleet's one Redis client per process ([`Fleet`]): the connection
//! (a `redis` connection manager, built lazily, so an unreachable Redis at
//! start is degraded mode and not a failure), the call deadline, whether
//! the fleet is reachable now, the heartbeat that registers this host and
//! counts the live ones, and the renewal of the leases running deliveries
//! hold.
//!
//! With `sluice_fleet_sentinel_master` set, the URLs are Redis Sentinels'
//! and the master is the one they name ([`sentinel`]): asked when the first
//! call needs a connection, and again at each heartbeat while the fleet is
//! unreachable, so a failover is followed within a heartbeat or two of the
//! sentinels promoting a replica. A demoted master refuses the scripts'
//! writes (`READONLY`), which counts as unreachable like any other error.
//! One that still answers as master although the sentinels replaced it (it
//! was cut off from them, not from this host) is left at the next check,
//! made every [`SENTINEL_RECHECK`] heartbeats while the fleet is shared, so
//! hosts on both sides of such a split come back to one state.
//! The scripts reach a new master by the crate's `EVALSHA`, then `EVAL` on
//! `NOSCRIPT`.
//!
//! Reachability is one flag for the whole process: a call that errs or
//! misses `sluice_fleet_call_timeout` clears it (logged once), and only a
//! heartbeat that gets an answer sets it again. While it is clear, gates do
//! not call Redis at all, so no delivery waits on a dead Redis more than
//! once.
//!
//! Owns the connection and the host's registration. Never decides whether
//! a delivery may start (the scripts and the fleet gate do) and never
//! touches the queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, ScriptInvocation};
use tokio_util::sync::CancellationToken;

use self::sentinel::Sentinels;
use super::scripts::{Scripts, hosts_key};
use crate::config::Config;
use crate::metric;

mod sentinel;

/// Fleet mode's settings (`sluice_fleet_*`), read once at start: a reload
/// does not move a running host to another Redis or fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// `sluice_fleet_redis`: tried in order (the sentinels' with
    /// `sentinel_master`).
    pub urls: Vec<String>,
    /// `sluice_fleet_sentinel_master`: the URLs are Redis Sentinels, and
    /// the master of this name is the fleet's Redis.
    pub sentinel_master: Option<String>,
    /// `sluice_fleet_sentinel_user`.
    pub sentinel_user: Option<String>,
    /// Read from `sluice_fleet_sentinel_password_file`.
    pub sentinel_password: Option<String>,
    /// `sluice_fleet_name`: in every key.
    pub name: String,
    /// `sluice_fleet_host`: this host in leases and the registry.
    pub host: String,
    /// `sluice_fleet_user`.
    pub user: Option<String>,
    /// Read from `sluice_fleet_password_file`.
    pub password: Option<String>,
    /// `sluice_fleet_lease_time`.
    pub lease_time: Duration,
    /// `sluice_fleet_call_timeout`.
    pub call_timeout: Duration,
    /// `sluice_fleet_heartbeat_interval`.
    pub heartbeat: Duration,
}

impl FleetSettings {
    /// The settings when fleet mode is on (`sluice_fleet_redis` set).
    /// A password file that cannot be read is logged and no password is
    /// sent: Redis then refuses us and the host runs on its local share,
    /// which keeps mail moving while the operator fixes the file.
    pub fn from_config(config: &Config) -> Option<FleetSettings> {
        let urls = config.list("sluice_fleet_redis");
        if urls.is_empty() {
            return None;
        }
        let text = |name: &str| Some(config.string(name).trim().to_owned()).filter(|s| !s.is_empty());
        let secret = |name: &str| {
            text(name).and_then(|path| match std::fs::read_to_string(&path) {
                Ok(s) => s.lines().next().map(str::to_owned).filter(|s| !s.is_empty()),
                Err(e) => {
                    tracing::error!("fleet: {name}: cannot read {path}: {e}");
                    None
                }
            })
        };
        Some(FleetSettings {
            urls,
            sentinel_master: text("sluice_fleet_sentinel_master"),
            sentinel_user: text("sluice_fleet_sentinel_user"),
            sentinel_password: secret("sluice_fleet_sentinel_password_file"),
            name: text("sluice_fleet_name").unwrap_or_else(|| "sluice".into()),
            host: text("sluice_fleet_host").unwrap_or_else(|| "localhost".into()),
            user: text("sluice_fleet_user"),
            password: secret("sluice_fleet_password_file"),
            lease_time: config.time("sluice_fleet_lease_time").max(Duration::from_millis(300)),
            call_timeout: config.time("sluice_fleet_call_timeout").max(Duration::from_millis(10)),
            heartbeat: config.time("sluice_fleet_heartbeat_interval").max(Duration::from_millis(100)),
        })
    }
}

/// How long a heartbeat waits for the sentinels to name the master.
const SENTINEL_LOOKUP: Duration = Duration::from_secs(3);

/// While the master answers, the sentinels are asked every this many
/// heartbeats whether it still is the master (10 s by default): rare
/// enough to cost nothing, short against a split that outlasts it.
const SENTINEL_RECHECK: u64 = 10;

/// Why a Redis call gave no answer we can use.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no usable Redis URL, or no master named by the sentinels")]
    NoConnection,
}

/// The process's link to the fleet: see the module documentation.
pub struct Fleet {
    settings: FleetSettings,
    pub(super) scripts: Scripts,
    /// Which URL, and its connection manager (`None`: the URL is unusable,
    /// or no master found yet).
    conn: Mutex<(usize, Option<ConnectionManager>)>,
    /// With Sentinel: who names the master, and the master's address the
    /// connection manager is for.
    sentinels: Option<Sentinels>,
    master: Mutex<String>,
    shared: AtomicBool,
    live_hosts: AtomicU32,
    hosts: Mutex<Vec<String>>,
    /// Leases of running deliveries, by leases key, renewed while held.
    held: Mutex<HashMap<String, HashSet<String>>>,
    /// Makes lease members unique across this process's life.
    nonce: AtomicU64,
    /// Redis calls made (for the bench's calls per delivery).
    calls: AtomicU64,
    /// Heartbeats so far (for [`SENTINEL_RECHECK`]).
    beats: AtomicU64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.settings.name)
            .field("host", &self.settings.host)
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    /// The client, not yet connected; [`Fleet::start`] runs its heartbeat.
    /// Counts itself shared until a call fails, so the first deliveries
    /// ask Redis rather than assume it gone.
    pub fn new(settings: FleetSettings) -> Arc<Fleet> {
        let sentinels = settings.sentinel_master.as_deref().and_then(|name| {
            Sentinels::new(&settings, name)
                .inspect_err(|e| tracing::error!("fleet: sluice_fleet_redis: cannot use the sentinels: {e}"))
                .ok()
        });
        if let Some(name) = &settings.sentinel_master {
            tracing::info!("fleet: the Redis URLs are sentinels; the fleet uses the master they name {name}");
        }
        let sentinel_mode = settings.sentinel_master.is_some();
        let fleet = Fleet {
            scripts: Scripts::default(),
            conn: Mutex::new((0, None)),
            sentinels,
            master: Mutex::new(String::new()),
            shared: AtomicBool::new(true),
            live_hosts: AtomicU32::new(1),
            hosts: Mutex::new(vec![settings.host.clone()]),
            held: Mutex::new(HashMap::new()),
            nonce: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            beats: AtomicU64::new(0),
            settings,
        };
        if !sentinel_mode {
            fleet.connect(0);
        }
        metrics::gauge!(metric::FLEET_SHARED).set(1.0);
        Arc::new(fleet)
    }

    /// Builds the connection manager for URL number `i` (lazily: nothing
    /// is sent until the first call).
    fn connect(&self, i: usize) {
        let i = i % self.settings.urls.len().max(1);
        let url = self.settings.urls.get(i).map(String::as_str).unwrap_or("");
        let manager = url
            .into_connection_info()
            .map(|info| {
                let mut redis = info.redis_settings().clone();
                if let Some(u) = &self.settings.user {
                    redis = redis.set_username(u);
                }
                if let Some(p) = &self.settings.password {
                    redis = redis.set_password(p);
                }
                info.set_redis_settings(redis)
            })
            .and_then(redis::Client::open)
            .and_then(|client| self.manager(client));
        let manager = match manager {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("fleet: sluice_fleet_redis: cannot use {url}: {e}");
                None
            }
        };
        *lock(&self.conn) = (i, manager);
    }

    /// A lazy connection manager on `client`, with the call deadline for
    /// connecting and for answers.
    fn manager(&self, client: redis::Client) -> redis::RedisResult<ConnectionManager> {
        let t = self.settings.call_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1);
        ConnectionManager::new_lazy_with_config(client, config)
    }

    /// With Sentinel: the master the sentinels named last (`None`: no
    /// Sentinel, or none named yet).
    pub fn master(&self) -> Option<String> {
        self.sentinels.as_ref()?;
        Some(lock(&self.master).clone()).filter(|m| !m.is_empty())
    }

    /// With Sentinel: asks the sentinels where the master is, and moves
    /// the connection there when it moved (a master that only restarted
    /// keeps its connection manager, which reconnects by itself). `None`
    /// when no master was found.
    async fn follow_master(&self) -> Option<ConnectionManager> {
        let sentinels = self.sentinels.as_ref()?;
        let (client, addr) = sentinels.master().await?;
        let mut master = lock(&self.master);
        if *master == addr
            && let Some(c) = lock(&self.conn).1.clone()
        {
            return Some(c);
        }
        match self.manager(client) {
            Ok(m) => {
                if !master.is_empty() {
                    tracing::warn!("fleet: master {} moved from {master} to {addr}", sentinels.name());
                }
                *master = addr;
                *lock(&self.conn) = (0, Some(m.clone()));
                Some(m)
            }
            Err(e) => {
                tracing::error!("fleet: sluice_fleet_sentinel_master: cannot use {addr}: {e}");
                None
            }
        }
    }

    /// The connection for a call: the current one, or with Sentinel and
    /// none yet, the master's the sentinels name.
    async fn connection(&self) -> Option<ConnectionManager> {
        let conn = lock(&self.conn).1.clone();
        match conn {
            Some(c) => Some(c),
            None if self.sentinels.is_some() => self.follow_master().await,
            None => None,
        }
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// True while Redis answers (the gates are shared).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// Hosts alive at the last heartbeat (at least 1: this one).
    pub fn live_hosts(&self) -> u32 {
        self.live_hosts.load(Ordering::Acquire).max(1)
    }

    /// The hosts alive at the last heartbeat.
    pub fn hosts(&self) -> Vec<String> {
        lock(&self.hosts).clone()
    }

    /// Redis calls made since start.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A new lease member, unique in the fleet: `HOST|pid.n`.
    pub fn new_member(&self) -> String {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        format!("{}|{}.{n}", self.settings.host, std::process::id())
    }

    /// Starts renewing `member` in `key` until [`Fleet::forget`].
    pub fn hold(&self, key: &str, member: &str) {
        lock(&self.held).entry(key.to_owned()).or_default().insert(member.to_owned());
    }

    /// Stops renewing `member`.
    pub fn forget(&self, key: &str, member: &str) {
        let mut held = lock(&self.held);
        if let Some(set) = held.get_mut(key) {
            set.remove(member);
            if set.is_empty() {
                held.remove(key);
            }
        }
    }

    /// Runs one script invocation within the call deadline. Any failure
    /// marks Redis unreachable (logged once) until a heartbeat answers.
    pub async fn call<T: FromRedisValue>(
        &self,
        what: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let t = self.settings.call_timeout;
        // One deadline for finding the master (Sentinel, first call) and
        // the call itself.
        let attempt = async {
            let mut conn = self.connection().await.ok_or(CallError::NoConnection)?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            inv.invoke_async::<T>(&mut conn).await.map_err(CallError::Redis)
        };
        let r = match tokio::time::timeout(t, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(t)),
        };
        let result = match &r {
            Ok(_) => "ok",
            Err(CallError::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        metrics::counter!(metric::FLEET_CALLS, "script" => what, "result" => result).increment(1);
        if let Err(e) = &r {
            self.down(e);
        }
        r
    }

    fn down(&self, e: &CallError) {
        if self.shared.swap(false, Ordering::AcqRel) {
            metrics::gauge!(metric::FLEET_SHARED).set(0.0);
            tracing::warn!(
                "fleet: redis unreachable ({e}); using local share of each backend's limits (1 of {} hosts)",
                self.live_hosts()
            );
        }
    }

    /// Starts the heartbeat and lease renewal, until `token` is cancelled.
    pub fn start(self: &Arc<Self>, token: CancellationToken) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let renew_every = me.settings.lease_time / 3;
            let mut last_renew = crate::clock::instant();
            loop {
                me.heartbeat().await;
                if crate::clock::instant().saturating_duration_since(last_renew) >= renew_every {
                    last_renew = crate::clock::instant();
                    me.renew().await;
                }
                let nap = me.settings.heartbeat.min(renew_every);
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = token.cancelled() => return,
                }
            }
        });
    }

    /// Registers this host; on an answer, the fleet is reachable again.
    async fn heartbeat(&self) {
        let ttl = self.settings.heartbeat.saturating_mul(3).as_millis() as u64;
        let key = hosts_key(&self.settings.name);
        let was_shared = self.is_shared();
        let beat = self.beats.fetch_add(1, Ordering::Relaxed) + 1;
        if self.sentinels.is_some() && (!was_shared || beat.is_multiple_of(SENTINEL_RECHECK)) {
            // The master stopped answering (or it is time to check it is
            // still the master): ask the sentinels where it is now (a
            // failover moves it); a lookup that fails while the master
            // answers changes nothing. Bounded apart from the call
            // deadline, since a lookup is several round trips to several
            // servers; the crate's own connect (1 s) and answer (0.5 s)
            // deadlines bound each step, and no delivery waits on this.
            let _ = tokio::time::timeout(SENTINEL_LOOKUP, self.follow_master()).await;
        }
        let r: Result<Vec<String>, _> =
            self.call("heartbeat", self.scripts.heartbeat.key(&key).arg(&self.settings.host).arg(ttl)).await;
        match r {
            Ok(hosts) => {
                self.live_hosts.store(hosts.len().max(1) as u32, Ordering::Release);
                metrics::gauge!(metric::FLEET_HOSTS).set(hosts.len() as f64);
                *lock(&self.hosts) = hosts;
                if !self.shared.swap(true, Ordering::AcqRel) {
                    metrics::gauge!(metric::FLEET_SHARED).set(1.0);
                    tracing::info!("fleet: redis answers again; shared gates resumed");
                }
            }
            Err(_) if !was_shared && self.sentinels.is_none() => {
                // Still unreachable: try the next URL (or a fresh connection
                // to the only one) at the next beat.
                let next = lock(&self.conn).0 + 1;
                self.connect(next);
            }
            Err(_) => {}
        }
    }

    /// Renews every held lease, one call per backend.
    async fn renew(&self) {
        if !self.is_shared() {
            return;
        }
        let held: Vec<(String, Vec<String>)> =
            lock(&self.held).iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect();
        let ms = self.settings.lease_time.as_millis() as u64;
        for (key, members) in held {
            let mut inv = self.scripts.renew.key(&key);
            inv.arg(ms);
            for m in &members {
                inv.arg(m);
            }
            if self.call::<i64>("renew", &inv).await.is_err() {
                return;
            }
        }
    }
}

/// A delivery's lease on one of the fleet's slots. Renewed while it lives;
/// dropping it stops the renewal (the fleet gate gives it back in Redis
/// first; one lost with its host expires within the lease time).
pub struct Lease {
    fleet: Arc<Fleet>,
    key: String,
    member: String,
    probe: bool,
    /// When Redis granted it.
    since: tokio::time::Instant,
    /// How many changes of the fleet's limit this host had heard of when
    /// the admission script last let a delivery through on it (`None`:
    /// never asked about).
    checked: Option<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("member", &self.member).field("probe", &self.probe).finish()
    }
}

impl Lease {
    /// Records a lease Redis granted, and starts renewing it.
    pub fn held(fleet: &Arc<Fleet>, key: &str, member: String, probe: bool) -> Lease {
        fleet.hold(key, &member);
        Lease {
            fleet: Arc::clone(fleet),
            key: key.to_owned(),
            member,
            probe,
            since: crate::clock::instant(),
            checked: None,
        }
    }

    /// Notes that the admission script let a delivery through on it when
    /// this host had heard of `changes` changes of the fleet's limit.
    pub fn checked_at(mut self, changes: u64) -> Lease {
        self.checked = Some(changes);
        self
    }

    /// See [`Self::checked_at`].
    pub fn checked(&self) -> Option<u64> {
        self.checked
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// True for the fleet breaker's half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// How long it has been held.
    pub fn held_for(&self) -> Duration {
        crate::clock::instant().saturating_duration_since(self.since)
    }

    /// The same lease, held again for a delivery that is (or is not) the
    /// half-open probe.
    pub fn probing(mut self, probe: bool) -> Lease {
        self.probe = probe;
        self
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.fleet.forget(&self.key, &self.member);
    }
}
