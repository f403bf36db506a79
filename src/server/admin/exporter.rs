//! The Prometheus exporter: the global recorder, and the HTTP endpoint
//! serving `/metrics` and `/health` on `sluice_metrics_listen`.
//!
//! Code elsewhere records through the `metrics` facade with the names of
//! [`crate::metric`] (`metrics::counter!(metric::ACCEPTED).increment(1)`);
//! nothing is recorded when no exporter is installed. Queue gauges are sampled from the queue's
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

use crate::metric;
use crate::shutdown::Stage;

/// The most bytes of a request head read from a scraper (hyper takes no
/// less than 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Installs the global Prometheus recorder once; later calls return the
/// same handle (tests start several servers in one process).
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(metric::LATENCY.into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(metric::FSYNC_BATCH.into()),
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
                metric::describe();
            }
            handle
        })
        .clone()
}

/// Sets the per-backend gauges from `sluice backend list`'s view (at
/// scrape time, like the queue's).
pub fn sample_backends(list: &[super::api::BackendView], now: sluice_queue::UnixMillis) {
    for b in list {
        metrics::gauge!(metric::CONCURRENCY, "backend" => b.name.clone()).set(f64::from(b.concurrency));
        metrics::gauge!(metric::CONCURRENCY_LIMIT, "backend" => b.name.clone()).set(f64::from(b.limit));
        let breaker = match b.breaker.as_str() {
            "closed" => 0.0,
            "half-open" => 1.0,
            _ => 2.0,
        };
        metrics::gauge!(metric::BREAKER_STATE, "backend" => b.name.clone()).set(breaker);
        if let Some(l) = b.latency {
            metrics::gauge!(metric::LATENCY_SMOOTHED, "backend" => b.name.clone()).set(l);
        }
        if let Some(l) = b.baseline_latency {
            metrics::gauge!(metric::LATENCY_BASELINE, "backend" => b.name.clone()).set(l);
        }
        // NaN until the gate has compared two levels: the series exists from
        // the first scrape (a dashboard panel shows a gap, not "no data").
        let gradient = b.gradient.unwrap_or(f64::NAN);
        metrics::gauge!(metric::LATENCY_GRADIENT, "backend" => b.name.clone()).set(gradient);
        let paused = if b.paused_until.is_some_and(|u| u > now) { 1.0 } else { 0.0 };
        metrics::gauge!(metric::BACKEND_PAUSED, "backend" => b.name.clone()).set(paused);
    }
}

/// What `/metrics` and `/health` need from the running daemon.
pub trait Probe: Send + Sync {
    /// Updates gauges that are sampled at scrape time (queue counters).
    fn sample(&self) -> futures::future::BoxFuture<'_, ()>;
    /// `Ok` when healthy, otherwise the reasons (storage failing, queue past
    /// its high-water mark, disk below queue_minfree).
    fn health(&self) -> Result<(), sluice_queue::Error>;
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
                async move { Ok::<_, Infallible>(route(&req, &handle, probe.as_ref()).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                // A scrape's request head is a few hundred bytes; hyper's
                // default buffer (about 400 KiB) is far more than a
                // scraper needs and any client may connect (see "Every
                // reader is bounded" in ARCHITECTURE.md). 431 past it.
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    upkeep.abort();
}

async fn route(
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
            probe.sample().await;
            reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        "/health" => match probe.health() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("unhealthy: {why}\n")),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics or /health\n".into()),
    }
}
