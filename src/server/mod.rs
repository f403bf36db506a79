//! Wiring: opens the queue, binds the listeners, starts the SMTP services,
//! the scheduler and the admin endpoints, and owns the order of shutdown.
//!
//! Shutdown order (STYLE.md rule 10): stop accepting (listeners, admin and
//! metrics endpoints) → let SMTP sessions finish for `sluice_shutdown_grace`,
//! then the rest answer `421 4.3.2` once their current command (or DATA
//! commit) is done → stop the scheduler; deliveries in flight record their
//! results → the queue writer flushes. Everything acknowledged with `250`
//! is on disk before the `250` is sent, so even a second SIGTERM (immediate
//! exit) loses nothing.
//!
//! The admin service (`admin/`: the API and its socket, metrics and
//! health, the log format) runs under the daemon: the daemon starts it and
//! answers its control requests (reload, stop, status) in its main loop.

pub mod admin;
pub mod fdlimit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use self::admin::api::{ControlRequest, Handler, Response};
use self::admin::{exporter, log as alog};
use crate::clock;
use crate::config::{Config, ConfigErrors, Loaded};
use crate::metric;
use crate::shutdown::Stage;
use crate::smtp;

/// Fleet mode's parameters, read when the daemon starts (a reload warns
/// when one changed).
const FLEET_PARAMS: &[&str] = &[
    "sluice_fleet_redis",
    "sluice_fleet_name",
    "sluice_fleet_host",
    "sluice_fleet_user",
    "sluice_fleet_password_file",
    "sluice_fleet_sentinel_master",
    "sluice_fleet_sentinel_user",
    "sluice_fleet_sentinel_password_file",
    "sluice_fleet_lease_time",
    "sluice_fleet_call_timeout",
    "sluice_fleet_heartbeat_interval",
];

/// Why the daemon could not start, or could not stop cleanly. Each names
/// the parameter or master.cf service to look at; the cause is its
/// [`source`](std::error::Error::source) (the log line shows the chain).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("master.cf service {service}: cannot listen on {addr}")]
    Listen { service: String, addr: SocketAddr, source: std::io::Error },
    #[error("sluice_admin_socket: cannot listen on {}", path.display())]
    AdminSocket { path: PathBuf, source: std::io::Error },
    #[error("sluice_metrics_listen: \"{spec}\" is not an address:port")]
    MetricsAddress { spec: String, source: std::net::AddrParseError },
    #[error("sluice_metrics_listen: cannot listen on {addr}")]
    MetricsListen { addr: SocketAddr, source: std::io::Error },
    #[error("queue_directory: cannot create {}", dir.display())]
    QueueDirectory { dir: PathBuf, source: std::io::Error },
    #[error("queue_directory: cannot open the queue in {}", dir.display())]
    Queue { dir: PathBuf, source: sluice_queue::Error },
    #[error("cannot set up the DNS resolver")]
    Resolver(#[from] crate::resolver::SetupError),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::Error),
    #[error("master.cf service {name} vanished")]
    ServiceVanished { name: String },
    #[error("master.cf service {name}")]
    Settings { name: String, source: smtp::SettingsError },
    #[error("cannot handle signals")]
    Signals(#[source] std::io::Error),
    #[error("flushing the queue")]
    Flush(#[source] sluice_queue::Error),
}

/// Why a reload was refused (the running configuration stays). The
/// texts are the ones the administrator sees from `sluice reload`.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files have errors: every one, with file, line and parameter.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A listener's settings cannot be built from the new configuration.
    #[error("master.cf service {name}: {error}")]
    Settings { name: String, error: smtp::SettingsError },
}

/// An error and its causes on one line (`outer: inner: innermost`), as a
/// fatal error is logged.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// Where the queue's database lives inside `queue_directory`.
pub fn queue_db_dir(config: &Config) -> PathBuf {
    Path::new(config.string("queue_directory")).join("db")
}

/// The admin socket path (`sluice_admin_socket`).
pub fn admin_socket(config: &Config) -> PathBuf {
    PathBuf::from(config.string("sluice_admin_socket"))
}

/// Everything the daemon binds before it starts serving; tests bind port 0.
#[derive(Debug)]
pub struct Bound {
    /// One listener per address of each master.cf smtpd service, with the
    /// service name.
    pub smtp: Vec<(String, TcpListener)>,
    pub admin: (PathBuf, UnixListener),
    pub metrics: Option<TcpListener>,
}

/// Binds every listener the configuration names. Fails with the address
/// and service when one cannot be bound (port in use, no permission).
pub async fn bind(config: &Config) -> Result<Bound, Error> {
    let mut smtp_listeners = Vec::new();
    for svc in config.smtpd_services() {
        for addr in &svc.addrs {
            let l = smtp::bind(*addr, 1024).map_err(|source| Error::Listen {
                service: svc.name.clone(),
                addr: *addr,
                source,
            })?;
            smtp_listeners.push((svc.name.clone(), l));
        }
    }
    if smtp_listeners.is_empty() {
        warn!(target: "master", "master.cf has no smtpd service: not accepting mail");
    }
    let path = admin_socket(config);
    let admin_l = admin::socket::bind(&path)
        .await
        .map_err(|source| Error::AdminSocket { path: path.clone(), source })?;
    let metrics = match config.string("sluice_metrics_listen").trim() {
        "" => None,
        spec => {
            let addr: SocketAddr =
                spec.parse().map_err(|source| Error::MetricsAddress { spec: spec.to_owned(), source })?;
            Some(TcpListener::bind(addr).await.map_err(|source| Error::MetricsListen { addr, source })?)
        }
    };
    Ok(Bound { smtp: smtp_listeners, admin: (path, admin_l), metrics })
}

/// Opens (creating) the queue under `queue_directory`.
pub fn open_queue(config: &Config) -> Result<sluice_queue::Queue, Error> {
    let dir = queue_db_dir(config);
    std::fs::create_dir_all(&dir).map_err(|source| Error::QueueDirectory { dir: dir.clone(), source })?;
    sluice_queue::Queue::open(&dir, &sluice_queue::Options::default(), clock::unix_millis())
        .map_err(|source| Error::Queue { dir, source })
}

/// The daemon's life: starts every service, serves until SIGTERM, SIGINT
/// or `sluice stop` (reloading on SIGHUP or `sluice reload`), then stops
/// in the documented order.
pub async fn daemon(
    config_dir: PathBuf,
    loaded: Loaded,
    logfile: Option<alog::LogFile>,
) -> Result<ExitCode, Error> {
    let config = loaded.config;
    // Signals are taken before the ports open: a SIGHUP or SIGTERM that
    // arrives while the daemon starts (a reload right after a start) waits
    // for the loop below instead of killing the process by default action.
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
    // Before anything opens files: RocksDB keeps its tables open.
    fdlimit::check(&config);
    let queue = open_queue(&config)?;
    let bound = match bind(&config).await {
        Ok(b) => b,
        Err(e) => {
            error!(target: "master", "fatal: {}", chain(&e));
            queue.close().await.ok();
            return Err(e);
        }
    };
    let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(8);
    let running = match Running::start(config.clone(), queue.clone(), bound, Some(control_tx)).await {
        Ok(r) => r,
        Err(e) => {
            error!(target: "master", "fatal: {}", chain(&e));
            queue.close().await.ok();
            return Err(e);
        }
    };
    info!(target: "master", "daemon started -- version {}, configuration {}", env!("CARGO_PKG_VERSION"), config_dir.display());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    loop {
        tokio::select! {
            _ = term.recv() => { info!(target: "master", "terminating on signal 15"); break; }
            _ = int.recv() => { info!(target: "master", "terminating on signal 2"); break; }
            _ = hup.recv() => {
                if let Some(f) = &logfile && let Err(e) = f.reopen() {
                    warn!(target: "master", "cannot reopen log file: {e}");
                }
                let _ = running.reload(&config_dir).await;
            }
            Some(req) = control_rx.recv() => match req {
                ControlRequest::Reload(reply) => {
                    let r = running.reload(&config_dir).await;
                    let _ = reply.send(match r {
                        Ok(()) => Response::text_ok("sluice: configuration reloaded"),
                        Err(e) => Response::error(format!("reload refused, old configuration kept:\n{e}")),
                    });
                }
                ControlRequest::Status(reply) => { let _ = reply.send(running.status().await); }
                ControlRequest::Stop(reply) => {
                    let _ = reply.send(Response::text_ok("sluice: stopping"));
                    info!(target: "master", "terminating on request");
                    break;
                }
            },
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    // A second SIGTERM/SIGINT during the graceful stop exits at once: every
    // acknowledged message is already durable.
    let shutdown = running.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut shutdown => r?,
        _ = term.recv() => { warn!(target: "master", "second signal: exiting at once"); std::process::exit(1); }
        _ = int.recv() => { warn!(target: "master", "second signal: exiting at once"); std::process::exit(1); }
    }
    info!(target: "master", "daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// A running daemon: the parts started by [`Running::start`].
pub struct Running {
    config: Arc<ArcSwap<Config>>,
    queue: sluice_queue::Queue,
    /// Accept loops of SMTP, admin and metrics.
    accept: Stage,
    /// SMTP sessions.
    sessions: Stage,
    /// The scheduler and its deliveries.
    delivery: Stage,
    inbound: Vec<(String, Arc<smtp::Inbound>)>,
    delivery_handle: crate::delivery::Handle,
    started: u64,
    smtp_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("smtp", &self.smtp_addrs).finish()
    }
}

impl Running {
    /// Starts every service on already-bound listeners.
    pub async fn start(
        config: Arc<Config>,
        queue: sluice_queue::Queue,
        bound: Bound,
        control: Option<mpsc::Sender<ControlRequest>>,
    ) -> Result<Running, Error> {
        let live = Arc::new(ArcSwap::new(config.clone()));
        let accept = Stage::new();
        let sessions = Stage::new();
        let delivery = Stage::new();

        // One resolver for the whole daemon: delivery's MX and address
        // lookups, the SMTP server's client names and sender
        // authentication share its name servers and cache.
        let name_servers =
            crate::config::parse_name_servers(config.string("sluice_dns_servers")).unwrap_or_default();
        let system = crate::resolver::SystemResolver::with_servers(&name_servers).map_err(Error::Resolver)?;
        let authenticator = crate::auth::Authenticator::new(&system);
        let resolver: Arc<dyn crate::resolver::Resolver> = Arc::new(system);
        let delivery_handle = crate::delivery::start_with_resolver(
            queue.clone(),
            live.clone(),
            Arc::clone(&resolver),
            delivery.clone(),
        )
        .await?;
        // Mail routed to one of these is mail that loops back.
        let bound_addrs: Vec<SocketAddr> =
            bound.smtp.iter().filter_map(|(_, l)| l.local_addr().ok()).collect();
        delivery_handle.listening_on(&bound_addrs);
        // reject_unverified_recipient asks delivery, which knows the routes
        // and the backends' gates; every listener shares one verifier.
        let verifier = crate::delivery::verify::AddressVerifier::start(&delivery_handle);

        let mut inbound: Vec<(String, Arc<smtp::Inbound>)> = Vec::new();
        // One set of milter breakers for every listener.
        let milters = Arc::new(crate::milter::Registry::default());
        let mut smtp_addrs = Vec::new();
        for (name, listener) in bound.smtp {
            let svc = config
                .smtpd_services()
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::ServiceVanished { name: name.clone() })?;
            let ib = match inbound.iter().find(|(n, _)| *n == name) {
                Some((_, ib)) => ib.clone(),
                None => {
                    let settings = smtp::Settings::from_service(svc)
                        .map_err(|source| Error::Settings { name: name.clone(), source })?;
                    let ib = smtp::Inbound::with_services(
                        queue.clone(),
                        settings,
                        Arc::clone(&resolver),
                        Arc::clone(&milters),
                        Some(authenticator.clone()),
                    );
                    ib.set_verifier(Arc::clone(&verifier));
                    inbound.push((name.clone(), ib.clone()));
                    ib
                }
            };
            if let Ok(a) = listener.local_addr() {
                smtp_addrs.push(a);
                info!(target: "master", "service {name} listening on {a}");
            }
            tokio::spawn(smtp::serve_staged(listener, ib, accept.clone(), sessions.clone()));
        }

        // The recorder is installed whether or not /metrics is served:
        // `sluice top` reads its counters.
        let _ = exporter::install();
        let backends = admin::backends::of(&delivery_handle);
        let live_for_route = live.clone();
        let route = Arc::new(move |rcpt: &str| match live_for_route.load().route(rcpt) {
            Ok(r) => admin::api::backend_name(&r).unwrap_or_else(|| "(error/discard)".into()),
            Err(_) => "(lookup failed)".into(),
        });
        let top = admin::top::Top::new(queue.clone(), backends.clone(), route);
        tokio::spawn(top.clone().run(accept.clone()));
        let live_for_admin = live.clone();
        let handler = Handler {
            queue: queue.clone(),
            config: Arc::new(move || live_for_admin.load_full()),
            backends: Some(backends),
            top: Some(top),
            control,
        };
        let (path, admin_l) = bound.admin;
        tokio::spawn(admin::socket::serve(admin_l, path, handler, accept.clone()));

        if let Some(l) = bound.metrics {
            let handle = exporter::install();
            let probe = Arc::new(Probe {
                queue: queue.clone(),
                config: live.clone(),
                backends: admin::backends::of(&delivery_handle),
            });
            if let Ok(a) = l.local_addr() {
                info!(target: "master", "metrics and health on http://{a}/metrics");
            }
            tokio::spawn(exporter::serve(l, handle, probe, accept.clone()));
        }

        Ok(Running {
            config: live,
            queue,
            accept,
            sessions,
            delivery,
            inbound,
            delivery_handle,
            started: clock::unix_millis(),
            smtp_addrs,
        })
    }

    /// Loads the configuration again; on errors keeps the current one and
    /// returns them. New settings apply to new SMTP connections and to the
    /// next delivery decisions; nothing in progress is interrupted.
    pub async fn reload(&self, dir: &Path) -> Result<(), ReloadError> {
        let result = self.try_reload(dir);
        match &result {
            Ok(()) => {
                info!(target: "master", "reload -- version {}, configuration {}", env!("CARGO_PKG_VERSION"), dir.display())
            }
            Err(e) => {
                error!(target: "master", "reload refused, keeping the running configuration: {}", e.to_string().replace('\n', "; "))
            }
        }
        result
    }

    fn try_reload(&self, dir: &Path) -> Result<(), ReloadError> {
        let loaded = Config::load(dir)?;
        let new = loaded.config;
        // Build every listener's settings first: a reload applies entirely
        // or not at all.
        let mut updates = Vec::new();
        for (name, ib) in &self.inbound {
            match new.smtpd_services().iter().find(|s| &s.name == name) {
                Some(svc) => {
                    let s = smtp::Settings::from_service(svc)
                        .map_err(|error| ReloadError::Settings { name: name.clone(), error })?;
                    updates.push((ib.clone(), s));
                }
                None => {
                    warn!(target: "master", "service {name} was removed from master.cf: it keeps running until restart")
                }
            }
        }
        for svc in new.smtpd_services() {
            if !self.inbound.iter().any(|(n, _)| *n == svc.name) {
                warn!(target: "master", "new master.cf service {} starts at the next restart", svc.name);
            }
        }
        for w in &loaded.warnings {
            warn!(target: "master", "{w}");
        }
        // Fleet mode's client (its Redis connection, host name, lease and
        // heartbeat timing) is built once at start: rebuilding it under
        // running deliveries would orphan their leases. Said, not ignored.
        let old = self.config.load();
        let fleet_changed: Vec<&str> =
            FLEET_PARAMS.iter().copied().filter(|p| old.string(p) != new.string(p)).collect();
        if !fleet_changed.is_empty() {
            warn!(
                target: "master",
                "{} changed: fleet mode keeps its running settings until restart",
                fleet_changed.join(", ")
            );
        }
        for (ib, s) in updates {
            ib.reload(s);
        }
        self.config.store(new);
        self.delivery_handle.wake();
        Ok(())
    }

    /// The status `sluice status` prints.
    pub async fn status(&self) -> Response {
        let st = self.queue.stats().await;
        let mem = self.queue.memory();
        let now = clock::unix_millis();
        let backends = admin::backends::of(&self.delivery_handle).list();
        let open = backends.iter().filter(|b| b.breaker != "closed").count();
        // A paused backend holds its mail as surely as an open breaker.
        let paused = backends.iter().filter(|b| b.paused_until.is_some_and(|u| u > now)).count();
        // Which ones, and why: what an administrator looks at first.
        let holding: Vec<String> = backends
            .iter()
            .filter(|b| b.holds_mail(now))
            .map(|b| format!("{} {}: {}", b.name, b.breaker, b.note(now)))
            .collect();
        let data = serde_json::json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": now.saturating_sub(self.started) / 1000,
            "smtp_listeners": self.smtp_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "queue_messages": st.messages,
            "queue_bytes": st.bytes,
            "queue_held": st.held,
            "queue_memtable_bytes": mem.memtables,
            "queue_body_memtable_bytes": mem.body_memtables,
            "recipients_pending": st.recipients_pending,
            "oldest_message_age_seconds": st.oldest_arrival.map(|a| now.saturating_sub(a) / 1000),
            "backends": backends.len(),
            "backends_not_closed": open,
            "backends_paused": paused,
            "backends_holding_mail": holding,
        });
        let mut data = data;
        if let (Some(fleet), Some(obj)) = (self.delivery_handle.fleet(), data.as_object_mut()) {
            obj.insert("fleet".into(), fleet.into());
        }
        Response::status(data)
    }

    /// Graceful stop in the documented order.
    pub async fn shutdown(self) -> Result<(), Error> {
        let grace = self.config.load().time("sluice_shutdown_grace");
        self.accept.stop().await;
        if tokio::time::timeout(grace, self.sessions.wait_idle()).await.is_err() {
            info!(target: "master", "grace period over: closing remaining SMTP sessions with 421");
        }
        self.sessions.stop().await;
        self.delivery.stop().await;
        if let Err(e) = self.queue.close().await {
            return Err(Error::Flush(e));
        }
        Ok(())
    }

    /// The SMTP addresses being served (tests bind port 0).
    pub fn smtp_addrs(&self) -> &[SocketAddr] {
        &self.smtp_addrs
    }
}

/// Samples queue and backend gauges and answers `/health`.
struct Probe {
    queue: sluice_queue::Queue,
    config: Arc<ArcSwap<Config>>,
    backends: Arc<dyn admin::api::Backends>,
}

impl Probe {
    /// Samples the queue's counters into their gauges.
    async fn sample_queue(&self) {
        let st = self.queue.stats().await;
        metrics::gauge!(metric::QUEUE_MESSAGES, "state" => "all").set(st.messages as f64);
        metrics::gauge!(metric::QUEUE_MESSAGES, "state" => "held").set(st.held as f64);
        metrics::gauge!(metric::QUEUE_RECIPIENTS).set(st.recipients_pending as f64);
        metrics::gauge!(metric::QUEUE_BYTES).set(st.bytes as f64);
        metrics::gauge!(metric::QUEUE_QUARANTINED).set(st.quarantined as f64);
        let age =
            st.oldest_arrival.map(|a| clock::unix_millis().saturating_sub(a) as f64 / 1000.0).unwrap_or(0.0);
        metrics::gauge!(metric::QUEUE_OLDEST).set(age);
        let warn = self.config.load().time("delay_warning_time");
        metrics::gauge!(metric::QUEUE_DELAY_WARNING).set(warn.as_secs_f64());
    }
}

impl exporter::Probe for Probe {
    fn sample(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {
            self.sample_queue().await;
            exporter::sample_backends(&self.backends.list(), clock::unix_millis());
        })
    }

    fn health(&self) -> Result<(), sluice_queue::Error> {
        let c = self.config.load();
        let limits = crate::smtp::accept_limits(&c);
        self.queue.admit(&limits)
    }
}
