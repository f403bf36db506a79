//! What the dispatcher does with an admission: start a delivery with the
//! permit (and an idle connection, when there is one), give an unused
//! permit back, hold back the waiting mail of a paused backend or one
//! whose breaker is open, or tell the dispatcher to wait. Part of the
//! dispatcher (`dispatch.rs`).

use std::sync::Arc;
use std::time::Duration;

use sluice_queue::UnixMillis;

use super::{BREAKER_HOLD_MS, Backend, Job, spread};
use crate::clock;
use crate::delivery::context::lock;
use crate::delivery::gate::{Admission, Report};
use crate::delivery::inflight::RcptDone;
use crate::delivery::record;
use crate::delivery::result_line::LogStatus;
use crate::metric;
use crate::reply::Status;

/// What the dispatcher waits for before it asks again.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// A slot (or the fleet's probe) to come free.
    Slot,
    /// The rate limit's next start.
    Rate(Duration),
}

impl Backend {
    /// Acts on one admission; what to wait for, if anything, before the
    /// next.
    pub(super) async fn admitted(self: &Arc<Self>, admission: Admission) -> Option<Wait> {
        let now = clock::unix_millis();
        match admission {
            Admission::Go(mut permit) => {
                let (job, left) = {
                    let mut jobs = lock(&self.jobs);
                    let job = jobs.queue.pop_front();
                    (job, jobs.queue.len())
                };
                self.refill(left).await;
                let Some(job) = job else {
                    // Nothing after all: the permit goes back unused (in
                    // fleet mode its lease stays with the idle connection
                    // it would have used).
                    if !lock(&self.pool).is_empty() {
                        self.gate.keep_idle(&mut permit);
                    }
                    let fb = self.gate.report(permit, Report::Abandoned, now, clock::instant());
                    self.apply(fb).await;
                    return None;
                };
                // The idle connection goes with the slot, in the same step:
                // a slot in use and an idle connection are never both
                // counted for one delivery, nor neither.
                let pooled = lock(&self.pool).pop();
                let me = Arc::clone(self);
                self.ctx.tracker.spawn(async move { me.deliver(job, permit, pooled).await });
                None
            }
            Admission::WaitSlot | Admission::WaitProbe => Some(Wait::Slot),
            Admission::WaitRate(wait) => Some(Wait::Rate(wait)),
            Admission::Postpone { until, reason } => {
                self.hold_back(until, reason, now).await;
                None
            }
        }
    }

    /// Holds back every waiting job until `until` (a pause, or an open
    /// breaker), with one log line per recipient.
    async fn hold_back(&self, until: UnixMillis, reason: String, now: UnixMillis) {
        // Held-back mail is parked, whether for a pause or an
        // open breaker: the resume, or the breaker closing
        // after a good probe, calls it back at once. An open
        // breaker's mail also stays on disk for at least
        // `BREAKER_HOLD_MS` (the probe time is often sooner):
        // otherwise every message of an outage's backlog would
        // be claimed, logged and written back at every probe.
        let park = true;
        let paused = self.gate.is_paused(now);
        let until = if paused { until } else { until.max(now + BREAKER_HOLD_MS) };
        let jobs: Vec<Job> = lock(&self.jobs).queue.drain(..).collect();
        // The status of the failure that opened the breaker when
        // its text has one, as Postfix logs mail for a dead
        // destination; otherwise 4.4.1 (no answer from host),
        // and 4.3.2 for a pause (as Postfix's deferred
        // transports). Never 4.4.7: that says the message
        // expired, which monitoring reads as lost mail.
        let dsn = reason.split_whitespace().find_map(Status::parse).unwrap_or(if paused {
            Status(4, 3, 2)
        } else {
            Status(4, 4, 1)
        });
        for job in jobs {
            // Postfix logs mail it holds back from a suspended
            // destination as deferred, with the reason; so does
            // sluice (no attempt is counted).
            let waited = job.queued_at.elapsed();
            for &index in &job.rcpts {
                let mut line = job.msg.result_line(index, "none", dsn, LogStatus::Deferred, &reason);
                line.delays[1] = waited;
                line.emit(self.id.protocol.into());
            }
            let why = if paused { "paused" } else { "breaker" };
            metrics::counter!(metric::DEFERRALS, "backend" => self.name.clone(), "reason" => why)
                .increment(job.rcpts.len() as u64);
            let until = spread(now, until);
            let done = RcptDone::postponed(&job.rcpts, until, &reason, park, true);
            record::complete(&self.ctx, &job.msg, Some(Arc::clone(&self.gate)), done);
        }
        self.close_idle(true).await;
    }
}
