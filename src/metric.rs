//! The names of every metric sluice exports, with their labels, units and
//! help texts: the one owner of the words a dashboard or an alert is
//! written against. Recording code anywhere (`smtp`, `delivery`, the
//! daemon's queue gauges) names its metric here; the exporter
//! (`server::admin::exporter`) describes them with [`describe`].
//!
//! Units follow Prometheus conventions (`_seconds`, `_bytes`, `_total` for
//! counters). Never records anything itself, and imports no module of this
//! crate (it sits on the ground floor, below everything that records).

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
/// `delay_warning_time` in seconds (0: no warnings), exported so an alert
/// on the oldest message's age follows the configuration.
pub const QUEUE_DELAY_WARNING: &str = "sluice_queue_delay_warning_seconds";
/// Records found corrupt and quarantined.
pub const QUEUE_QUARANTINED: &str = "sluice_queue_quarantined";
/// Queue changes carried by each synced write (group commit batch
/// size); recorded by the queue's writer thread, which names it (the
/// queue crate cannot import this one).
pub const FSYNC_BATCH: &str = sluice_queue::FSYNC_BATCH_METRIC;
/// Recipient results by `backend` and `result` (sent, deferred, bounced).
pub const DELIVERIES: &str = "sluice_delivery_recipients_total";
/// Recipients deferred, by `backend` and `reason`: `breaker` (held back
/// while the breaker is open), `paused` (held back by the administrator),
/// `backend` (the server was struggling or unreachable) or `recipient` (a
/// `4xx` for that recipient alone, such as a full mailbox).
pub const DEFERRALS: &str = "sluice_delivery_deferrals_total";
/// Delivery transaction latency by `backend`.
pub const LATENCY: &str = "sluice_delivery_latency_seconds";
/// Deliveries in progress, by `backend`.
pub const CONCURRENCY: &str = "sluice_backend_concurrency";
/// Current adaptive concurrency limit, by `backend`.
pub const CONCURRENCY_LIMIT: &str = "sluice_backend_concurrency_limit";
/// Breaker state by `backend`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "sluice_backend_breaker_state";
/// Smoothed delivery latency by `backend`.
pub const LATENCY_SMOOTHED: &str = "sluice_backend_latency_seconds";
/// Latency at the lowest concurrency measured lately, by `backend`.
pub const LATENCY_BASELINE: &str = "sluice_backend_latency_baseline_seconds";
/// The latency gradient the limit was last steered by, by `backend`; NaN
/// until the gate has measured one.
pub const LATENCY_GRADIENT: &str = "sluice_backend_latency_gradient";
/// 1 while a `backend` is paused by the administrator, else 0.
pub const BACKEND_PAUSED: &str = "sluice_backend_paused";
/// Breaker transitions by `backend` and `to`.
pub const BREAKER_TRANSITIONS: &str = "sluice_backend_breaker_transitions_total";
/// Deliveries postponed by the rate limiter, by `backend`.
pub const RATE_LIMITED: &str = "sluice_backend_rate_limit_waits_total";
/// Connect probes of open breakers, by `backend` and `result` (`answered`,
/// `failed`).
pub const CONNECT_PROBES: &str = "sluice_backend_connect_probes_total";
/// Fleet mode: 1 while the gates are shared through Redis, 0 while this
/// host uses its local share because Redis is unreachable.
/// Address verification probes (`reject_unverified_recipient`) by
/// `backend` and `result`: `deliverable`, `undeliverable`, `deferred`
/// (4xx or a broken conversation), `busy` (no probe made: no slot in
/// time, paused, breaker open).
pub const VERIFY_PROBES: &str = "sluice_verify_probes_total";
/// Address verification cache lookups by `result`: `hit` (answered from
/// the cache, `refresh` when a background probe was started too) and
/// `miss`.
pub const VERIFY_CACHE: &str = "sluice_verify_cache_lookups_total";
/// Recipients answered with the tempfail action because no verification
/// answer could be had in time (`reason`: `busy`, `timeout`, `route`).
pub const VERIFY_TEMPFAILS: &str = "sluice_verify_tempfails_total";
pub const FLEET_SHARED: &str = "sluice_fleet_shared";
/// Fleet mode: hosts seen alive at the last heartbeat.
pub const FLEET_HOSTS: &str = "sluice_fleet_hosts";
/// Fleet mode: Redis calls by `script` and `result` (ok, error, timeout).
pub const FLEET_CALLS: &str = "sluice_fleet_redis_calls_total";

/// Registers each metric's help text and unit with the installed
/// recorder (the exporter calls it once, when it installs one).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(ACCEPTED, "Messages accepted and queued");
    describe_counter!(REJECTED, "Negative SMTP replies by stage and code");
    describe_gauge!(SESSIONS, "SMTP sessions open now");
    describe_counter!(TLS_HANDSHAKES, "STARTTLS handshakes by result");
    describe_gauge!(QUEUE_MESSAGES, "Messages in the queue by state");
    describe_gauge!(QUEUE_RECIPIENTS, "Recipients waiting for delivery");
    describe_gauge!(QUEUE_BYTES, Unit::Bytes, "Bytes of queued message bodies");
    describe_gauge!(QUEUE_OLDEST, Unit::Seconds, "Age of the oldest queued message");
    describe_gauge!(QUEUE_DELAY_WARNING, Unit::Seconds, "delay_warning_time (0: never)");
    describe_gauge!(QUEUE_QUARANTINED, "Corrupt queue records moved aside");
    describe_histogram!(FSYNC_BATCH, "Queue changes made durable by each synced write (group commit)");
    describe_counter!(VERIFY_PROBES, "Address verification probes by backend and result");
    describe_counter!(VERIFY_CACHE, "Address verification cache lookups by result");
    describe_counter!(VERIFY_TEMPFAILS, "Recipients not verified in time, by reason");
    describe_counter!(DELIVERIES, "Recipient delivery results by backend and result");
    describe_counter!(DEFERRALS, "Recipients deferred by backend and reason");
    describe_histogram!(LATENCY, Unit::Seconds, "Delivery transaction latency by backend");
    describe_gauge!(CONCURRENCY, "Deliveries in progress by backend");
    describe_gauge!(CONCURRENCY_LIMIT, "Adaptive concurrency limit by backend");
    describe_gauge!(FLEET_SHARED, "1 while gates are shared through Redis, 0 on the local share");
    describe_gauge!(FLEET_HOSTS, "Fleet hosts alive at the last heartbeat");
    describe_counter!(FLEET_CALLS, "Fleet Redis calls by script and result");
    describe_gauge!(BREAKER_STATE, "Circuit breaker state by backend: 0 closed, 1 half-open, 2 open");
    describe_gauge!(LATENCY_SMOOTHED, Unit::Seconds, "Smoothed delivery latency by backend");
    describe_gauge!(
        LATENCY_BASELINE,
        Unit::Seconds,
        "Delivery latency at the lowest concurrency measured lately, by backend"
    );
    describe_gauge!(
        LATENCY_GRADIENT,
        "Latency gradient over concurrency the adaptive limit was last steered by (0 flat, 1 no more goodput)"
    );
    describe_gauge!(BACKEND_PAUSED, "1 while the backend is paused by the administrator");
    describe_counter!(BREAKER_TRANSITIONS, "Circuit breaker transitions by backend");
    describe_counter!(RATE_LIMITED, "Deliveries postponed by the rate limiter");
    describe_counter!(CONNECT_PROBES, "Connect probes of open circuit breakers by backend and result");
}
