//! What happens in the inbound server, as events for counters. Every
//! countable thing passes through [`emit`], the one place metrics hook in;
//! the Postfix-style log lines are written at the call sites, not here.

use crate::metric;

/// A countable happening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A session started.
    Connected,
    /// A connection was refused by a per-client count or rate limit.
    ConnectionRefused,
    /// A session ended.
    Disconnected,
    /// A command was answered with a 4xx or 5xx; `stage` is the command
    /// (`MAIL`, `RCPT`, `END-OF-MESSAGE`, ...).
    Rejected { stage: &'static str, code: u16 },
    /// A message was committed to the queue.
    Queued { bytes: u64, recipients: usize },
    /// A session timed out.
    Timeout,
    /// A client broke the protocol (early talker, unauthorized pipelining).
    ProtocolViolation,
    /// STARTTLS finished (`ok`) or failed.
    TlsHandshake { ok: bool },
}

/// Records an event in the metrics (names in [`crate::metric`]).
pub fn emit(event: Event) {
    tracing::trace!(target: "sluice::smtp::events", ?event);
    match event {
        Event::Connected => metrics::gauge!(metric::SESSIONS).increment(1.0),
        Event::Disconnected => metrics::gauge!(metric::SESSIONS).decrement(1.0),
        Event::ConnectionRefused => {
            metrics::counter!(metric::REJECTED, "stage" => "CONNECT", "code" => "421").increment(1)
        }
        Event::Rejected { stage, code } => {
            metrics::counter!(metric::REJECTED, "stage" => stage, "code" => code.to_string()).increment(1)
        }
        Event::Queued { .. } => metrics::counter!(metric::ACCEPTED).increment(1),
        Event::Timeout => {
            metrics::counter!(metric::REJECTED, "stage" => "TIMEOUT", "code" => "421").increment(1)
        }
        Event::ProtocolViolation => {
            metrics::counter!(metric::REJECTED, "stage" => "PROTOCOL", "code" => "violation").increment(1)
        }
        Event::TlsHandshake { ok } => {
            metrics::counter!(metric::TLS_HANDSHAKES, "result" => if ok { "ok" } else { "failed" })
                .increment(1)
        }
    }
}
