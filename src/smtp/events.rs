//! What happens in the inbound server, as events for counters. Every
//! countable thing passes through [`emit`], the one place metrics hook in;
//! the Postfix-style log lines are written at the call sites, not here.

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

/// Records an event. Metrics attach here.
pub fn emit(event: Event) {
    tracing::trace!(target: "sluice::smtp::events", ?event);
}
