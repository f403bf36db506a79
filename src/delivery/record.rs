//! Result recording: what a message's results come to, and writing it.
//!
//! When the last share of a message reports ([`complete`]), its results
//! are judged ([`judge`], pure: delivered and bounced recipients are final,
//! deferred ones retry after an exponential backoff with jitter, postponed
//! ones wait without counting an attempt, and anything past
//! `maximal_queue_lifetime` bounces), then recorded ([`record`]): the
//! notices (bounces, delay warnings, success notices) are queued as new
//! mail first, then the message's new state is written in one queue
//! update, so a crash can repeat a notice but never lose one. A message
//! that stays queued is parked on the gates that asked for it, and the
//! claim loop is woken when it is due before its sleep ends.
//!
//! The per-recipient log lines are written where each result is known
//! (the dispatcher, the scheduler's own routes); this module logs only
//! what the recording itself decides (expiry, notices).

use std::sync::Arc;

use sluice_queue::{DsnRet, Envelope, Outcome, Queue, QueueId, RcptState, Recorded, UnixMillis};

use super::backoff::{self, Backoff};
use super::bounce::{self, Action, Kind, ReportRcpt};
use super::client::Verdict;
use super::client::wire::header_section;
use super::context::Context;
use super::gate::BackendGate;
use super::inflight::{Done, Finished, InFlight, RcptDone};
use super::settings::Settings;
use crate::clock;

/// One share of `msg` reports its results (`gate`: the backend's, to park
/// the message on). The last report spawns the recording under the
/// context's tracker.
pub fn complete(
    ctx: &Arc<Context>,
    msg: &Arc<InFlight>,
    gate: Option<Arc<dyn BackendGate>>,
    done: Vec<RcptDone>,
) {
    if let Some(finished) = msg.complete(gate, done) {
        let (c, m) = (Arc::clone(ctx), Arc::clone(msg));
        ctx.tracker.spawn(async move {
            let settings = c.settings.current();
            record(&c, &m, finished, &settings).await;
        });
    }
}

/// What a message's results come to, before anything is written.
#[derive(Debug, Default)]
pub struct Judged {
    /// The queue update, per recipient index.
    pub outcomes: Vec<(usize, Outcome)>,
    /// Recipients for each kind of notice (only those whose NOTIFY asks).
    pub failed: Vec<ReportRcpt>,
    /// The envelope indexes of `failed`, in the same order: if their
    /// notice cannot be queued they stay deferred instead of bounced.
    pub failed_index: Vec<usize>,
    pub succeeded: Vec<ReportRcpt>,
    pub delayed: Vec<ReportRcpt>,
    /// The message's next due time: the earliest of the deferred
    /// recipients' backoffs and the postponed ones' times.
    pub next: Option<UnixMillis>,
    /// Some recipient bounced because the message is past its lifetime.
    pub expired_any: bool,
    /// Some result says the message vanished or was cut off.
    pub abandoned: bool,
}

/// Judges `results` for the message `env` at `now`: pure, with the
/// backoff's jitter drawn from `jitter` (uniform in 0..1) once per
/// deferred recipient. `expired`: the message is past its lifetime.
pub fn judge(
    env: &Envelope,
    results: Vec<RcptDone>,
    policy: &Backoff,
    expired: bool,
    now: UnixMillis,
    jitter: &mut dyn FnMut() -> f64,
) -> Judged {
    let mut j = Judged::default();
    for RcptDone { index, done } in results {
        let Some(rcpt) = env.recipients.get(index) else { continue };
        let entry = |action, status, remote_mta, diagnostic, text: &str| ReportRcpt {
            address: rcpt.address.clone(),
            orcpt: rcpt.orcpt.clone(),
            action,
            status,
            remote_mta,
            diagnostic,
            text: text.to_owned(),
        };
        // What a recipient that gets no verdict now is waiting on: its last
        // deferral if it had one, else why it was not tried.
        let waiting_on = |reason: String| match &rcpt.state {
            RcptState::Deferred { reply } => reply.clone(),
            _ => reason,
        };
        match done {
            Done::Abandoned => j.abandoned = true,
            Done::Attempted { verdict: Verdict::Sent, dsn, text, remote, dsn_passed, lmtp, .. } => {
                // A server that took NOTIFY itself reports success itself.
                if bounce::wanted(Kind::Success, &rcpt.notify) && !dsn_passed {
                    let action = if remote.is_none() || lmtp { Action::Delivered } else { Action::Relayed };
                    j.succeeded.push(entry(action, dsn, remote, None, &text));
                }
                j.outcomes.push((index, Outcome::Delivered { reply: text }));
            }
            Done::Attempted { verdict: Verdict::Bounced, dsn, text, diagnostic, remote, .. } => {
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    j.failed.push(entry(Action::Failed, dsn, remote, diagnostic, &text));
                    j.failed_index.push(index);
                }
                j.outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            // A deferral past the message's lifetime is its last: it bounces
            // with the reason it was deferred (Postfix keeps the 4.x.x status).
            Done::Attempted { verdict: Verdict::Deferred, dsn, text, diagnostic, remote, .. } if expired => {
                j.expired_any = true;
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    j.failed.push(entry(Action::Failed, dsn, remote, diagnostic, &text));
                    j.failed_index.push(index);
                }
                j.outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            Done::Attempted { verdict: Verdict::Deferred, dsn, text, diagnostic, remote, .. } => {
                let due = policy.next_due(now, rcpt.attempts.saturating_add(1), jitter());
                j.next = Some(j.next.map_or(due, |t| t.min(due)));
                if bounce::wanted(Kind::Delay, &rcpt.notify) {
                    j.delayed.push(entry(Action::Delayed, dsn, remote, diagnostic, &text));
                }
                j.outcomes.push((index, Outcome::Deferred { reply: text }));
            }
            // Never tried this time (breaker open, paused, backend busy):
            // no attempt is counted, but the lifetime still runs out.
            Done::Postponed { reason, .. } if expired => {
                j.expired_any = true;
                let text = waiting_on(reason);
                if bounce::wanted(Kind::Failure, &rcpt.notify) {
                    j.failed.push(entry(Action::Failed, bounce::status_in(&text), None, None, &text));
                    j.failed_index.push(index);
                }
                j.outcomes.push((index, Outcome::Bounced { reply: text }));
            }
            Done::Postponed { until, reason, shown, .. } => {
                j.next = Some(j.next.map_or(until, |t| t.min(until)));
                if bounce::wanted(Kind::Delay, &rcpt.notify) {
                    let text = waiting_on(reason.clone());
                    j.delayed.push(entry(Action::Delayed, bounce::status_in(&text), None, None, &text));
                }
                j.outcomes.push((
                    index,
                    if shown { Outcome::Waiting { reply: reason } } else { Outcome::Postponed },
                ));
            }
        }
    }
    j
}

/// Turns a message's results into queue outcomes, notices and a next due
/// time, and records them.
pub async fn record(ctx: &Context, msg: &InFlight, finished: Finished, s: &Settings) {
    let id = msg.id();
    let env = msg.envelope();
    let now = clock::unix_millis();
    let lifetime = backoff::lifetime(env, s.maximal_queue_lifetime, s.bounce_queue_lifetime);
    // Under soft_bounce nothing expires: it stays queued for a human.
    let expired = !s.soft_bounce && backoff::expired(env.arrival, lifetime, now);
    let policy = Backoff { min: s.minimal_backoff, max: s.maximal_backoff };
    let Judged { mut outcomes, failed, failed_index, succeeded, delayed, mut next, expired_any, abandoned } =
        judge(env, finished.results, &policy, expired, now, &mut || rand::random::<f64>());

    let open = next.is_some();
    if outcomes.is_empty() {
        if !abandoned {
            // No open recipient was found (they were final already): let the
            // queue settle the message (it removes one with no open recipient).
            if let Err(e) = ctx.queue.record(id, &[], now + policy.min.as_millis() as u64, now).await {
                tracing::error!("{id}: cannot record: {e}");
            }
        }
        // Abandoned (the message vanished): nothing to record.
        return;
    }

    // Notices first: queued before the result, so a crash in between
    // repeats a notice rather than losing it.
    if bounce::reportable(env) {
        if !failed.is_empty()
            && let Err(why) = queue_report(ctx, msg, Kind::Failure, failed, None, s, now).await
        {
            // The sender must hear of a failure: without its notice the
            // recipients are not bounced (and the message not removed) but
            // deferred, and bounce again at their next attempt, as Postfix
            // defers a recipient when its bounce service fails.
            tracing::warn!(
                "{id}: {} recipient(s) stay deferred until their non-delivery notification can be queued",
                failed_index.len()
            );
            let retry = now + policy.min.as_millis() as u64;
            for (index, outcome) in outcomes.iter_mut() {
                if let Outcome::Bounced { reply } = outcome
                    && failed_index.contains(index)
                {
                    *outcome = Outcome::Deferred { reply: format!("{reply} (bounce not sent: {why})") };
                    next = Some(next.map_or(retry, |t| t.min(retry)));
                }
            }
        }
        if !succeeded.is_empty() {
            // A lost success notice loses no mail; delivering again to
            // retry it would duplicate the message. Logged only.
            let _ = queue_report(ctx, msg, Kind::Success, succeeded, None, s, now).await;
        }
        let warn_due =
            s.delay_warning.is_some_and(|w| now.saturating_sub(env.arrival) >= w.as_millis() as u64);
        if open && warn_due && !env.delay_warned && !delayed.is_empty() {
            let until = env.arrival.saturating_add(lifetime.as_millis() as u64);
            // Marked sent only once queued: otherwise it is tried again at
            // the next deferral.
            if queue_report(ctx, msg, Kind::Delay, delayed, Some(until), s, now).await.is_ok()
                && let Err(e) = ctx.queue.update_envelope(id, |e| e.delay_warned = true).await
            {
                tracing::error!("{id}: cannot mark delay warning sent: {e}");
            }
        }
    } else if !failed.is_empty() && env.is_notification {
        tracing::info!("{id}: undeliverable notification discarded (not answered with another)");
    }
    if expired_any {
        tracing::info!("{id}: from=<{}>, status=expired, returned to sender", env.sender);
    }

    let next_due = next.unwrap_or(now);
    match ctx.queue.record(id, &outcomes, next_due, now).await {
        // The queue logs "removed" itself.
        Ok(Recorded::Removed) => {}
        Ok(Recorded::Scheduled(due)) => {
            for gate in finished.park_on {
                gate.park(id);
            }
            ctx.wake_if_before(due);
        }
        Err(sluice_queue::Error::NotFound(_)) => {}
        Err(e) => tracing::error!("{id}: cannot record delivery results (due again at restart): {e}"),
    }
    ctx.count_recorded();
}

/// Queues a notice about `msg`; the error (logged here) says why not.
async fn queue_report(
    ctx: &Context,
    msg: &InFlight,
    kind: Kind,
    rcpts: Vec<ReportRcpt>,
    retry_until: Option<UnixMillis>,
    s: &Settings,
    now: UnixMillis,
) -> Result<(), String> {
    let id = msg.id();
    let what = match kind {
        Kind::Failure => "sender non-delivery notification",
        Kind::Delay => "sender delay notification",
        Kind::Success => "sender delivery status notification",
    };
    let env = msg.envelope();
    let whole = kind == Kind::Failure && env.ret == DsnRet::Full && env.size <= s.bounce_size_limit as u64;
    // A notice never goes out without the copy it promises: when the
    // original cannot be read, the notice waits (the caller decides).
    let original = match returned_part(&ctx.queue, id, whole).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(target: "bounce", "{id}: cannot queue {what}: cannot read the original: {e}");
            return Err(format!("cannot read the message: {e}"));
        }
    };
    let report = bounce::Report {
        kind,
        queue_id: id,
        envelope: env,
        rcpts,
        reporting_mta: &s.myhostname,
        now,
        original: &original,
        original_size: env.size,
        retry_until,
        size_limit: s.bounce_size_limit,
    };
    let body = report.build();
    let envelope = report.envelope(&body);
    match ctx.queue.enqueue(envelope, &body, now).await {
        Ok(new) => {
            tracing::info!(target: "bounce", "{id}: {what}: {new}");
            Ok(())
        }
        Err(e) => {
            tracing::error!(target: "bounce", "{id}: cannot queue {what}: {e}");
            Err(e.to_string())
        }
    }
}

/// The most of an original's header section a notice returns: a header
/// section longer than this (an attacker's, or a broken one) is cut at the
/// last line end before it.
pub const RETURNED_HEADERS_MAX: usize = 256 * 1024;

/// What a notice returns of the original, read chunk by chunk: all of it
/// (`whole`: the caller checked it is within `bounce_size_limit`), or its
/// header section, at most [`RETURNED_HEADERS_MAX`] bytes; never the rest
/// of a message that may be of any size.
pub async fn returned_part(queue: &Queue, id: QueueId, whole: bool) -> Result<Vec<u8>, sluice_queue::Error> {
    let mut reader = queue.body_reader(id).await?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        out.extend_from_slice(&chunk);
        if !whole && (header_section(&out).len() < out.len() || out.len() >= RETURNED_HEADERS_MAX) {
            break;
        }
    }
    if !whole {
        let headers = header_section(&out).len();
        let mut keep = headers.min(RETURNED_HEADERS_MAX);
        if keep < headers || headers == out.len() {
            // Cut within the headers (too long, or no end seen): end at a
            // line end so no header is returned half.
            keep = out[..keep].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        }
        out.truncate(keep);
    }
    Ok(out)
}
