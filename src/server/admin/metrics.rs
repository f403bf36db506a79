//! Metrics: the names of every metric sluice exports (one place), the
//! Prometheus recorder, and the HTTP endpoint serving `/metrics` and
//! `/health` on `sluice_metrics_listen`.
//!
//! Code elsewhere records through the `metrics` facade with these names
//! (`metrics::counter!(names::ACCEPTED).increment(1)`); nothing is recorded
//! when no exporter is installed. Queue gauges are sampled from the queue's
//! counters at scrape time, so they are never stale and cost nothing between
//! scrapes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::shutdown::Stage;

/// Metric names. Units follow Prometheus conventions (`_seconds`, `_bytes`,
/// `_total` for counters).
pub mod names {
    /// Messages accepted (250 after DATA/BDAT).
    pub const ACCEPTED: &str = "sluice_smtpd_messages_accepted_total";
    /// Negative replies by SMTP `stage` (the command: `RCPT`, `MAIL`,
    /// `END-OF-MESSAGE`, or `CONNECT`/`TIMEOUT`/`PROTOCOL`) and reply `code`.
    pub const REJECTED: &str = "sluice_smtpd_rejects_total";
    /// STARTTLS handshakes by `result`.
    pub const TLS_HANDSHAKES: &str = "sluice_smtpd_tls_handshakes_total";
    /// SMTP sessions open now.
    pub const SESSIONS: &str = "sluice_smtpd_sessions";
    /// Messages in the queue, by `state` (all, held).
    pub const QUEUE_MESSAGES: &str = "sluice_queue_messages";
    /// Recipients not yet delivered or bounced.
    pub const QUEUE_RECIPIENTS: &str = "sluice_queue_recipients_pending";
    /// Bytes of message bodies in the queue.
    pub const QUEUE_BYTES: &str = "sluice_queue_bytes";
    /// Age of the oldest queued message.
    pub const QUEUE_OLDEST: &str = "sluice_queue_oldest_message_age_seconds";
    /// Records found corrupt and quarantined.
    pub const QUEUE_QUARANTINED: &str = "sluice_queue_quarantined";
    /// Queue changes carried by each synced write (group commit batch
    /// size); recorded by the queue's writer thread, which owns the name.
    pub const FSYNC_BATCH: &str = sluice_queue::FSYNC_BATCH_METRIC;
    /// Recipient results by `backend` and `result` (sent, deferred, bounced).
    pub const DELIVERIES: &str = "sluice_delivery_recipients_total";
    /// Delivery transaction latency by `backend`.
    pub const LATENCY: &str = "sluice_delivery_latency_seconds";
    /// Deliveries in progress, by `backend`.
    pub const CONCURRENCY: &str = "sluice_backend_concurrency";
    /// Current adaptive concurrency limit, by `backend`.
    pub const CONCURRENCY_LIMIT: &str = "sluice_backend_concurrency_limit";
    /// Breaker state by `backend`: 0 closed, 1 half-open, 2 open.
    pub const BREAKER_STATE: &str = "sluice_backend_breaker_state";
    /// Breaker transitions by `backend` and `to`.
    pub const BREAKER_TRANSITIONS: &str = "sluice_backend_breaker_transitions_total";
    /// Deliveries postponed by the rate limiter, by `backend`.
    pub const RATE_LIMITED: &str = "sluice_backend_rate_limit_waits_total";
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::ACCEPTED, "Messages accepted and queued");
    describe_counter!(names::REJECTED, "Negative SMTP replies by stage and code");
    describe_gauge!(names::SESSIONS, "SMTP sessions open now");
    describe_counter!(names::TLS_HANDSHAKES, "STARTTLS handshakes by result");
    describe_gauge!(names::QUEUE_MESSAGES, "Messages in the queue by state");
    describe_gauge!(names::QUEUE_RECIPIENTS, "Recipients waiting for delivery");
    describe_gauge!(names::QUEUE_BYTES, Unit::Bytes, "Bytes of queued message bodies");
    describe_gauge!(names::QUEUE_OLDEST, Unit::Seconds, "Age of the oldest queued message");
    describe_gauge!(names::QUEUE_QUARANTINED, "Corrupt queue records moved aside");
    describe_histogram!(names::FSYNC_BATCH, "Queue changes made durable by each synced write (group commit)");
    describe_counter!(names::DELIVERIES, "Recipient delivery results by backend and result");
    describe_histogram!(names::LATENCY, Unit::Seconds, "Delivery transaction latency by backend");
    describe_gauge!(names::CONCURRENCY, "Deliveries in progress by backend");
    describe_gauge!(names::CONCURRENCY_LIMIT, "Adaptive concurrency limit by backend");
    describe_gauge!(names::BREAKER_STATE, "Circuit breaker state by backend: 0 closed, 1 half-open, 2 open");
    describe_counter!(names::BREAKER_TRANSITIONS, "Circuit breaker transitions by backend");
    describe_counter!(names::RATE_LIMITED, "Deliveries postponed by the rate limiter");
}

/// Installs the global Prometheus recorder once; later calls return the
/// same handle (tests start several servers in one process).
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::LATENCY.into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::FSYNC_BATCH.into()),
                        // Up to the writer's largest group (1024 changes).
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// What `/metrics` and `/health` need from the running daemon.
pub trait Probe: Send + Sync {
    /// Updates gauges that are sampled at scrape time (queue counters).
    fn sample(&self);
    /// `Ok` when healthy, otherwise the reasons (storage failing, queue past
    /// its high-water mark, disk below queue_minfree).
    fn health(&self) -> Result<(), String>;
}

/// Serves `/metrics` and `/health` on `listener` until the stage ends.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, probe: Arc<dyn Probe>, stage: Stage) {
    let _guard = stage.guard();
    let upkeep = {
        let handle = handle.clone();
        let stage = stage.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stage.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                }
            }
        })
    };
    loop {
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = stage.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(target: "master", "metrics listener accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        let probe = probe.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                let probe = probe.clone();
                async move { Ok::<_, Infallible>(route(&req, &handle, probe.as_ref())) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    upkeep.abort();
}

fn route(
    req: &Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
    probe: &dyn Probe,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            probe.sample();
            reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        "/health" => match probe.health() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("unhealthy: {why}\n")),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics or /health\n".into()),
    }
}
