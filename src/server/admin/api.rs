//! The admin API: requests the command line sends, the handler that
//! executes them against the queue (and, inside the daemon, the delivery
//! backends), and the answers.
//!
//! The same [`Handler`] runs in two places: inside the daemon behind the
//! admin socket, and in the command itself when the daemon is not running
//! (then it opens the queue directly, as `postsuper` works on a stopped
//! Postfix; backend commands need the daemon).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_queue::{Filter, Queue, QueueId, UnixMillis};

use super::view::{self, MessageView};
use crate::clock;
use crate::config::{Config, Route};
use crate::delivery::UnknownBackend;

/// Which messages a command applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ids {
    All,
    Some(Vec<String>),
}

/// A request to the admin API. One JSON object per line on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    QueueList,
    QueueShow {
        id: String,
    },
    QueueFlush {
        backend: Option<String>,
        domain: Option<String>,
    },
    Hold {
        ids: Ids,
    },
    Release {
        ids: Ids,
    },
    Delete {
        ids: Ids,
    },
    Requeue {
        ids: Ids,
    },
    Summary,
    BackendList,
    BackendPause {
        name: String,
        until: Option<UnixMillis>,
        /// This host only, in fleet mode (`--local`).
        #[serde(default)]
        local: bool,
    },
    BackendResume {
        name: String,
        #[serde(default)]
        local: bool,
    },
    /// Everything one screen of `sluice top` shows, with up to `points`
    /// seconds of history: one round trip per refresh.
    Top {
        points: u32,
    },
    Reload,
    Stop,
    Status,
}

/// One backend as `sluice backend list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    /// `closed`, `open`, `half-open`.
    pub breaker: String,
    /// Paused by the administrator until (Unix ms; `u64::MAX`: until resumed).
    pub paused_until: Option<UnixMillis>,
    /// Deliveries in progress.
    pub concurrency: u32,
    /// Current adaptive limit.
    pub limit: u32,
    /// Why the limit is what it is (empty when not running).
    #[serde(default)]
    pub reason: String,
    /// Configured ceiling (`*_destination_concurrency_limit` / maxproc).
    pub max_limit: u32,
    /// Configured rate limit in messages per second (0: none).
    pub rate: f64,
    /// Recent delivery latency in seconds (smoothed).
    pub latency: Option<f64>,
    /// Latency in seconds at the lowest concurrency measured lately: the
    /// closest there is to the backend's no-load latency.
    #[serde(default)]
    pub baseline_latency: Option<f64>,
    /// The concurrency `baseline_latency` was measured at.
    #[serde(default)]
    pub baseline_concurrency: Option<u32>,
    /// The latency gradient the limit was last steered by: how fast latency
    /// grows with concurrency (0 flat, 1 as fast as concurrency: no more
    /// goodput, above 1: less goodput with more deliveries).
    #[serde(default)]
    pub gradient: Option<f64>,
    /// The two concurrency levels that gradient was measured between.
    #[serde(default)]
    pub gradient_between: Option<(u32, u32)>,
    /// Mean latency in seconds per concurrency level, as measured lately.
    #[serde(default)]
    pub curve: Vec<(u32, f64)>,
    pub last_error: Option<String>,
    /// Next half-open probe (Unix ms) while the breaker is open.
    pub probe_at: Option<UnixMillis>,
    /// Fleet mode: the fleet's totals and each host's share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetShare>,
}

/// A backend across the fleet (fleet mode), as `sluice backend list`
/// shows it under the backend's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetShare {
    /// Redis answers; false: this host runs on its local share.
    pub shared: bool,
    /// The fleet's concurrency limit.
    pub limit: u32,
    /// Deliveries in progress across the fleet (leases).
    pub in_flight: u32,
    /// Each live host and its deliveries in progress.
    pub hosts: Vec<HostShare>,
}

/// One host's share of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostShare {
    pub host: String,
    pub in_flight: u32,
}

impl BackendView {
    /// True when the backend holds its mail back: breaker not closed, or
    /// paused by the administrator.
    pub fn holds_mail(&self, now: UnixMillis) -> bool {
        self.breaker != "closed" || self.paused_until.is_some_and(|p| p > now)
    }

    /// Why mail waits for it, in a few words: the pause, the next probe and
    /// the last error.
    pub fn note(&self, now: UnixMillis) -> String {
        let last = self.last_error.clone().unwrap_or_default();
        match (self.paused_until, self.probe_at) {
            (Some(u64::MAX), _) => "paused until resumed".into(),
            (Some(p), _) if p > now => format!("paused for {}s", (p - now) / 1000),
            (_, Some(t)) if self.breaker == "open" => {
                format!("probe in {}s; {last}", t.saturating_sub(now) / 1000)
            }
            _ => last,
        }
    }
}

/// What admin needs from the delivery side (implemented by the scheduler's
/// handle in the daemon; absent in the direct fallback).
pub trait Backends: Send + Sync {
    fn list(&self) -> Vec<BackendView>;
    /// Pauses a backend until `until` (None: until resumed); `local`: this
    /// host only, in fleet mode.
    fn pause(&self, name: &str, until: Option<UnixMillis>, local: bool) -> Result<(), UnknownBackend>;
    fn resume(&self, name: &str, local: bool) -> Result<(), UnknownBackend>;
    /// Wakes the scheduler (after a flush or release).
    fn wake(&self);
}

/// The source of `sluice top` frames (the daemon's `top::Top`; declared
/// here so the API does not depend on it).
pub trait Frames: Send + Sync {
    /// One frame with up to `points` seconds of history, as JSON.
    fn frame_json(&self, points: usize) -> futures::future::BoxFuture<'_, Result<serde_json::Value, String>>;
}

/// Daemon control requests, answered by the daemon's main loop (which owns
/// reload and the order of shutdown).
#[derive(Debug)]
pub enum ControlRequest {
    Reload(tokio::sync::oneshot::Sender<Response>),
    Stop(tokio::sync::oneshot::Sender<Response>),
    Status(tokio::sync::oneshot::Sender<Response>),
}

/// An answer: `ok` with text or data, or an error message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Human-readable text (what the command prints).
    #[serde(default)]
    pub text: String,
    /// Structured data (`--json` outputs).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    fn text(text: impl Into<String>) -> Response {
        Response { ok: true, text: text.into(), data: serde_json::Value::Null }
    }

    /// The answer to `queue list`: mailq text plus the views as data.
    pub fn listing(msgs: &[MessageView]) -> Response {
        Response::data(view::mailq(msgs), serde_json::to_value(msgs).unwrap_or_default())
    }

    /// A successful request with text to print.
    pub fn text_ok(text: impl Into<String>) -> Response {
        Response::text(text)
    }

    /// The `sluice status` answer for status data.
    pub fn status(data: serde_json::Value) -> Response {
        Response::data(status_text(&data), data)
    }

    fn data(text: impl Into<String>, data: serde_json::Value) -> Response {
        Response { ok: true, text: text.into(), data }
    }

    /// A failed request with its reason.
    pub fn error(text: impl Into<String>) -> Response {
        Response { ok: false, text: text.into(), data: serde_json::Value::Null }
    }
}

/// Executes admin requests.
#[derive(Clone)]
pub struct Handler {
    pub queue: Queue,
    pub config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    pub backends: Option<Arc<dyn Backends>>,
    /// What `sluice top` shows (the daemon only).
    pub top: Option<Arc<dyn Frames>>,
    pub control: Option<tokio::sync::mpsc::Sender<ControlRequest>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("daemon", &self.control.is_some()).finish()
    }
}

/// The backend name admin commands and logs use for a route:
/// `transport:nexthop` as a transport map would write it.
pub fn backend_name(route: &Route) -> Option<String> {
    match route {
        Route::Deliver { transport, nexthop, .. } => Some(format!("{transport}:{nexthop}")),
        Route::Error { .. } | Route::Discard { .. } => None,
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<QueueId>, String> {
    ids.iter().map(|s| s.parse::<QueueId>().map_err(|e| e.to_string())).collect()
}

impl Handler {
    /// Executes one request.
    pub async fn handle(&self, req: Request) -> Response {
        match self.execute(req).await {
            Ok(r) => r,
            Err(e) => Response::error(e),
        }
    }

    async fn messages(&self) -> Result<Vec<MessageView>, String> {
        let list = self.queue.list(Filter::default()).await.map_err(|e| e.to_string())?;
        Ok(list.iter().map(|(id, env, due)| MessageView::new(*id, env, *due)).collect())
    }

    async fn select(&self, ids: &Ids) -> Result<Option<Vec<QueueId>>, String> {
        match ids {
            Ids::All => Ok(None),
            Ids::Some(list) => parse_ids(list).map(Some),
        }
    }

    async fn all_ids(&self) -> Result<Vec<QueueId>, String> {
        let list = self.queue.list(Filter::default()).await.map_err(|e| e.to_string())?;
        Ok(list.into_iter().map(|(id, _, _)| id).collect())
    }

    /// Runs one request. The error side is the text the command prints
    /// (`sluice: fatal: ...`): every failure ends there and nothing
    /// branches on it, so it is a message rather than a type.
    async fn execute(&self, req: Request) -> Result<Response, String> {
        let now = clock::unix_millis();
        let e = |e: sluice_queue::Error| e.to_string();
        match req {
            Request::QueueList => Ok(Response::listing(&self.messages().await?)),
            Request::QueueShow { id } => {
                let qid: QueueId = id.parse().map_err(|e: sluice_queue::BadQueueId| e.to_string())?;
                let Some((env, due)) = self.queue.envelope(qid).await.map_err(e)? else {
                    return Err(format!("{id}: no such message in the queue"));
                };
                let body = self.queue.body(qid).await.map_err(e)?;
                let m = MessageView::new(qid, &env, due);
                Ok(Response::data(
                    view::show(&m, &header_block(&body), now),
                    serde_json::to_value(&m).unwrap_or_default(),
                ))
            }
            Request::QueueFlush { backend, domain } => {
                let n = self.flush(backend.as_deref(), domain.as_deref(), now).await?;
                let mut text = format!("sluice: {n} message(s) scheduled for immediate delivery");
                if let Some(b) = &self.backends {
                    b.wake();
                    // A flush neither closes a breaker nor ends a pause: name
                    // the backends whose mail keeps waiting anyway, so the
                    // admin is not left wondering why nothing moved.
                    for v in b.list() {
                        if backend.as_deref().is_some_and(|name| name != v.name) {
                            continue;
                        }
                        let why = if v.paused_until.is_some_and(|u| u > now) {
                            "paused by the administrator; its mail waits for `sluice backend resume`"
                                .to_owned()
                        } else if v.breaker != "closed" {
                            let probe = v
                                .probe_at
                                .map(|p| {
                                    format!(" (next probe in {}s)", p.saturating_sub(now).div_ceil(1000))
                                })
                                .unwrap_or_default();
                            format!("circuit breaker {}; its mail waits for the probe{probe}", v.breaker)
                        } else {
                            continue;
                        };
                        text.push_str(&format!("\nsluice: backend {}: {why}", v.name));
                    }
                }
                Ok(Response::text(text))
            }
            Request::Hold { ids } => {
                let ids = match self.select(&ids).await? {
                    Some(v) => v,
                    None => self.all_ids().await?,
                };
                let n = self.queue.hold(&ids).await.map_err(e)?;
                Ok(Response::text(format!("sluice: Placed on hold: {n} message{}", plural(n))))
            }
            Request::Release { ids } => {
                let ids = match self.select(&ids).await? {
                    Some(v) => v,
                    None => self.all_ids().await?,
                };
                let n = self.queue.release(&ids, now).await.map_err(e)?;
                if let Some(b) = &self.backends {
                    b.wake();
                }
                Ok(Response::text(format!("sluice: Released from hold: {n} message{}", plural(n))))
            }
            Request::Delete { ids } => {
                let ids = match self.select(&ids).await? {
                    Some(v) => v,
                    None => self.all_ids().await?,
                };
                // The queue logs `ID: removed` for each message it removed.
                let n = self.queue.delete(&ids).await.map_err(e)?;
                Ok(Response::text(format!("sluice: Deleted: {n} message{}", plural(n))))
            }
            Request::Requeue { ids } => {
                let sel = self.select(&ids).await?;
                let n = self.queue.requeue(sel.as_deref(), now).await.map_err(e)?;
                if let Some(b) = &self.backends {
                    b.wake();
                }
                Ok(Response::text(format!("sluice: Requeued: {n} message{}", plural(n))))
            }
            Request::Summary => Ok(Response::text(self.summary(now).await?)),
            Request::BackendList => {
                let Some(b) = &self.backends else {
                    return Ok(Response::data(self.stored_backends(now).await?, serde_json::Value::Null));
                };
                let list = b.list();
                let data = serde_json::to_value(&list).map_err(|e| e.to_string())?;
                Ok(Response::data(backend_table(&list, now), data))
            }
            Request::BackendPause { name, until, local } => {
                let b = self.backends.as_ref().ok_or("backend pause needs the running daemon")?;
                b.pause(&name, until, local).map_err(|e| e.to_string())?;
                let here = if local { " on this host" } else { "" };
                Ok(Response::text(format!("sluice: backend {name} paused{here}")))
            }
            Request::BackendResume { name, local } => {
                let b = self.backends.as_ref().ok_or("backend resume needs the running daemon")?;
                b.resume(&name, local).map_err(|e| e.to_string())?;
                let here = if local { " on this host" } else { "" };
                Ok(Response::text(format!("sluice: backend {name} resumed{here}")))
            }
            Request::Top { points } => {
                let top = self.top.as_ref().ok_or("sluice top needs the running daemon")?;
                Ok(Response::data(String::new(), top.frame_json(points as usize).await?))
            }
            Request::Reload | Request::Stop | Request::Status => {
                let c = self.control.as_ref().ok_or("sluice is not running")?;
                Ok(control(c, |reply| match req {
                    Request::Reload => ControlRequest::Reload(reply),
                    Request::Stop => ControlRequest::Stop(reply),
                    _ => ControlRequest::Status(reply),
                })
                .await)
            }
        }
    }

    /// Makes deferred mail due now, all of it or that for one backend or
    /// domain. Returns how many messages were rescheduled.
    async fn flush(
        &self,
        backend: Option<&str>,
        domain: Option<&str>,
        now: UnixMillis,
    ) -> Result<usize, String> {
        if backend.is_none() && domain.is_none() {
            return self.queue.requeue(None, now).await.map_err(|e| e.to_string());
        }
        let filter =
            Filter { held: Some(false), rcpt_domain: domain.map(str::to_owned), ..Filter::default() };
        let list = self.queue.list(filter).await.map_err(|e| e.to_string())?;
        let config = (self.config)();
        let mut ids = Vec::new();
        for (id, env, _) in list {
            let mut matches = backend.is_none();
            for r in env.recipients.iter().filter(|r| !r.state.is_final()) {
                if matches {
                    break;
                }
                let route = config.route_async(&r.address).await;
                matches = route.ok().and_then(|route| backend_name(&route)).as_deref() == backend;
            }
            if matches {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.queue.requeue(Some(&ids), now).await.map_err(|e| e.to_string())
    }

    async fn summary(&self, now: UnixMillis) -> Result<String, String> {
        let list = self.queue.list(Filter::default()).await.map_err(|e| e.to_string())?;
        let config = (self.config)();
        let mut by_backend = Vec::new();
        let mut by_domain = Vec::new();
        for (_, env, _) in &list {
            let age = now.saturating_sub(env.arrival) / 1000;
            for r in env.recipients.iter().filter(|r| !r.state.is_final()) {
                let domain =
                    r.address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
                let backend = match config.route_async(&r.address).await {
                    Ok(route) => backend_name(&route).unwrap_or_else(|| "(error/discard)".into()),
                    Err(_) => "(lookup failed)".into(),
                };
                by_backend.push((backend, age));
                by_domain.push((domain, age));
            }
        }
        Ok(format!("{}\n{}", view::shape("backend", &by_backend), view::shape("domain", &by_domain)))
    }

    /// Backend records stored in the queue (breaker, pause) when the daemon
    /// is down.
    async fn stored_backends(&self, now: UnixMillis) -> Result<String, String> {
        let list = self.queue.backends().await.map_err(|e| e.to_string())?;
        let views: Vec<BackendView> = list
            .into_iter()
            .map(|(name, r)| BackendView {
                name,
                breaker: breaker_word(r.breaker).into(),
                paused_until: r.paused_until,
                concurrency: 0,
                limit: 0,
                reason: String::new(),
                max_limit: 0,
                rate: 0.0,
                latency: None,
                baseline_latency: None,
                baseline_concurrency: None,
                gradient: None,
                gradient_between: None,
                curve: Vec::new(),
                last_error: r.last_error,
                probe_at: r.probe_at,
                fleet: None,
            })
            .collect();
        Ok(format!("(sluice is not running: stored state only)\n{}", backend_table(&views, now)))
    }
}

/// `closed` / `open` / `half-open`.
pub fn breaker_word(p: sluice_queue::BreakerPosition) -> &'static str {
    match p {
        sluice_queue::BreakerPosition::Closed => "closed",
        sluice_queue::BreakerPosition::Open => "open",
        sluice_queue::BreakerPosition::HalfOpen => "half-open",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The header section of a message (up to the first empty line).
fn header_block(body: &[u8]) -> String {
    let end = body.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).replace("\r\n", "\n")
}

/// The `sluice backend list` table.
pub fn backend_table(list: &[BackendView], now: UnixMillis) -> String {
    use std::fmt::Write as _;
    if list.is_empty() {
        return "No backends have been used yet\n".into();
    }
    let w = list.iter().map(|b| b.name.len()).max().unwrap_or(7).max(7);
    let mut out = format!(
        "{:<w$}  {:<9}  {:>11}  {:>7}  {:>9}  {:>11}  {:>8}  {}\n",
        "BACKEND", "BREAKER", "CONCURRENCY", "RATE/s", "LATENCY", "BASELINE", "GRADIENT", "LAST ERROR / NOTE"
    );
    for b in list {
        let rate = if b.rate > 0.0 { format!("{:.1}", b.rate) } else { "-".into() };
        let baseline = match (b.baseline_latency, b.baseline_concurrency) {
            (Some(l), Some(n)) => format!("{} @{n}", ms(Some(l))),
            _ => "-".into(),
        };
        let gradient = b.gradient.map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into());
        let note = b.note(now);
        let _ = writeln!(
            out,
            "{:<w$}  {:<9}  {:>11}  {:>7}  {:>9}  {:>11}  {:>8}  {}",
            b.name,
            b.breaker,
            format!("{}/{}", b.concurrency, b.limit),
            rate,
            ms(b.latency),
            baseline,
            gradient,
            note
        );
        // Why the limit is where it is, under the backend it explains.
        if !b.reason.is_empty() && !b.holds_mail(now) {
            let between = match b.gradient_between {
                Some((lo, hi)) => format!(" (gradient measured between {lo} and {hi})"),
                None => String::new(),
            };
            let _ = writeln!(out, "  limit {}: {}{between}", b.limit, b.reason);
        }
        if let Some(f) = &b.fleet {
            let line = if f.shared {
                let hosts: Vec<String> =
                    f.hosts.iter().map(|h| format!("{} {}", h.host, h.in_flight)).collect();
                format!(
                    "  fleet: {}/{} across {} host(s): {}",
                    f.in_flight,
                    f.limit,
                    f.hosts.len(),
                    hosts.join(", ")
                )
            } else {
                format!("  fleet: redis unreachable; this host on its local share of {}", f.limit)
            };
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Seconds as whole milliseconds, `-` when unknown.
fn ms(v: Option<f64>) -> String {
    v.map(|s| format!("{:.0}ms", s * 1000.0)).unwrap_or_else(|| "-".into())
}

fn status_text(st: &serde_json::Value) -> String {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::from("sluice is running\n");
    if let Some(obj) = st.as_object() {
        for (k, v) in obj {
            match v {
                // A list: one item per indented line under its name.
                Value::Array(items) if items.is_empty() => out.push_str(&format!("{k}: none\n")),
                Value::Array(items) => {
                    out.push_str(&format!("{k}:\n"));
                    items.iter().for_each(|i| out.push_str(&format!("  {}\n", text(i))));
                }
                v => out.push_str(&format!("{k}: {}\n", text(v))),
            }
        }
    }
    out
}

/// Sends a control request to the daemon's main loop and waits for its
/// answer.
pub async fn control(
    tx: &tokio::sync::mpsc::Sender<ControlRequest>,
    make: impl FnOnce(tokio::sync::oneshot::Sender<Response>) -> ControlRequest,
) -> Response {
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.send(make(reply)).await.is_err() {
        return Response::error("the daemon is shutting down");
    }
    rx.await.unwrap_or_else(|_| Response::error("the daemon is shutting down"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let reqs = vec![
            Request::QueueList,
            Request::Hold { ids: Ids::All },
            Request::Delete { ids: Ids::Some(vec!["4Hx0000000".into()]) },
            Request::BackendPause { name: "lmtp:[127.0.0.1]:24".into(), until: Some(5), local: false },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
    }

    #[test]
    fn header_block_stops_at_the_empty_line() {
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"), "A: 1\nB: 2\n");
        assert_eq!(header_block(b"A: 1\r\n"), "A: 1\n");
    }

    #[test]
    fn backend_table_explains_a_paused_or_open_backend() {
        let mut b = BackendView {
            name: "lmtp:[127.0.0.1]:24".into(),
            breaker: "open".into(),
            paused_until: None,
            concurrency: 0,
            limit: 1,
            reason: "more concurrency gave no more goodput".into(),
            max_limit: 20,
            rate: 0.0,
            latency: Some(0.25),
            baseline_latency: Some(0.02),
            baseline_concurrency: Some(1),
            gradient: Some(1.58),
            gradient_between: Some((1, 2)),
            curve: vec![(1, 0.02), (2, 0.08)],
            last_error: Some("421 4.3.2 busy".into()),
            probe_at: Some(31_000),
            fleet: None,
        };
        let t = backend_table(std::slice::from_ref(&b), 1_000);
        assert!(t.contains("probe in 30s; 421 4.3.2 busy"), "{t}");
        assert!(t.contains("250ms") && t.contains("20ms @1") && t.contains("1.58"), "{t}");
        assert!(!t.contains("limit 1:"), "no pace note while the breaker holds mail: {t}");
        b.breaker = "closed".into();
        let t = backend_table(std::slice::from_ref(&b), 1_000);
        assert!(
            t.contains("limit 1: more concurrency gave no more goodput (gradient measured between 1 and 2)"),
            "{t}"
        );
        b.paused_until = Some(u64::MAX);
        assert!(backend_table(&[b], 1_000).contains("paused until resumed"));
    }
}
