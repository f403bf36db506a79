//! The scheduler: the claim loop that takes due mail from the queue and
//! hands it to backends.
//!
//! The loop claims due messages in bounded batches (never more than
//! `qmgr_message_active_limit` in memory: each claimed message holds a slot
//! of that window until its results are recorded), plans each one
//! (`plan.rs`: route, group per backend, cut by recipient limit) and gives
//! each delivery to its backend from the registry. A backend with too
//! much mail waiting already gets none: that mail is postponed (and parked
//! on the backend, which calls it back when it has room). The results come
//! back through the in-flight bookkeeping and are recorded by
//! `record.rs`.
//!
//! The loop sleeps until the next due time, a new message, a flush, or a
//! backend recovering (which makes its parked mail due). At start, the
//! deferred mail of backends stored as open or paused is parked on them
//! again (what was parked lived in the previous process's memory). Never
//! speaks SMTP and never opens connections.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_queue::{BackendRecord, Queue, QueuedMessage, UnixMillis};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::BackendId;
use super::context::{Context, holds_mail};
use super::dispatch::{Backend, Job, PushError, spread};
use super::gate::{BackendGate, PARK_LIMIT, position_name};
use super::inflight::{Done, InFlight, RcptDone};
use super::plan::{self, Immediate, plan};
use super::record;
use super::registry::{Handle, Registry};
use super::result_line::{LogStatus, active_line};
use super::settings::{LiveSettings, Settings, Tuning};
use crate::clock;
use crate::config::{Config, Route, TableError};
use crate::resolver::Resolver;
use crate::shutdown::Stage;

/// The longest mail for a backend with a full in-memory queue is left on
/// disk before it is looked at again. It is also parked on the backend, which
/// calls it back as soon as its queue has room, so this is only the safety
/// net (and the pace for mail beyond what a gate parks).
const MAX_POSTPONE_FULL: Duration = Duration::from_secs(60);

/// The longest the loop sleeps without looking at the queue again (a
/// safety net; new mail and recoveries wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Envelopes read per page while re-parking after a start.
const REPARK_PAGE: usize = 1000;

/// How far back "lately due" reaches beyond the previous claim: a session
/// stamps its message's due time just before its commit, so a message can
/// land a little below the time of a claim that ran meanwhile.
const RECENT_SLACK_MS: UnixMillis = 1_000;

/// Fairness between new mail and a backlog, as Postfix's qmgr takes turns
/// between its incoming and deferred queues: the queue hands out the
/// oldest due first, so after an outage a new message would wait behind
/// every message that was due before it (minutes, with a million). Each
/// batch therefore takes half its messages (every other single one) from
/// those that became due since the previous claim (new mail, and retries
/// whose time just came), the rest from the oldest due.
#[derive(Debug, Default)]
struct Turns {
    /// Due times from here on count as lately due.
    since: UnixMillis,
    /// Claims made, for taking turns one message at a time.
    claims: u64,
}

impl Turns {
    async fn claim(
        &mut self,
        queue: &Queue,
        now: UnixMillis,
        n: usize,
    ) -> sluice_queue::Result<Vec<QueuedMessage>> {
        self.claims += 1;
        let recent = if n >= 2 { n / 2 } else { (self.claims % 2) as usize * n };
        let claimed = if recent > 0 && self.since > 0 {
            queue.claim_recent(self.since.saturating_sub(RECENT_SLACK_MS), now, recent).await?
        } else {
            Vec::new()
        };
        // All that became due lately was taken: the next claim looks from
        // here. Otherwise from the last one taken (the rest are still due).
        // A turn that did not look leaves the mark alone.
        if recent > 0 || self.since == 0 {
            self.since = match claimed.last() {
                Some(m) if claimed.len() >= recent => m.due.max(1),
                _ => now,
            };
        }
        let rest = queue.claim_due(now, n - claimed.len()).await;
        both(claimed, rest)
    }
}

/// What the two claims of a turn took. When the second failed, what the
/// first took is in flight already: it is handed out all the same, since
/// dropped it would stay in flight, delivered by nobody until a restart.
/// The error is logged; the next claim meets it again if it lasts.
fn both(
    mut claimed: Vec<QueuedMessage>,
    rest: sluice_queue::Result<Vec<QueuedMessage>>,
) -> sluice_queue::Result<Vec<QueuedMessage>> {
    match rest {
        Ok(rest) => {
            claimed.extend(rest);
            Ok(claimed)
        }
        Err(e) if claimed.is_empty() => Err(e),
        Err(e) => {
            tracing::error!("cannot read the queue schedule: {e}");
            Ok(claimed)
        }
    }
}

/// The claim loop's state: the shared context, the backends, and the
/// window of messages in memory.
#[derive(Debug)]
struct Scheduler {
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    window: Arc<Semaphore>,
}

/// Starts the scheduler loop under `stage`.
pub(crate) fn spawn(
    queue: Queue,
    config: Arc<ArcSwap<Config>>,
    resolver: Arc<dyn Resolver>,
    stage: Stage,
    stored: Vec<(String, BackendRecord)>,
    tuning: Tuning,
) -> Handle {
    let settings = LiveSettings::new(config, tuning);
    let active_limit = settings.current().active_limit;
    // Records that hold nothing back (a closed breaker, no pause: what
    // older versions stored too) are not kept.
    let (stored, quiet): (Vec<_>, Vec<_>) = stored.into_iter().partition(|(_, r)| holds_mail(r));
    let ctx = Arc::new(Context::new(queue, resolver, settings, stage.token().child_token(), stored));
    let registry = Arc::new(Registry::new(Arc::clone(&ctx)));
    let sched = Arc::new(Scheduler {
        ctx: Arc::clone(&ctx),
        registry: Arc::clone(&registry),
        window: Arc::new(Semaphore::new(active_limit)),
    });
    for (name, rec) in ctx.stored().iter() {
        if holds_mail(rec) {
            tracing::info!(
                "backend {name}: restored {}{}",
                position_name(rec.breaker),
                if rec.paused_until.is_some() { ", paused" } else { "" }
            );
        }
    }
    let guard = stage.guard();
    let s = Arc::clone(&sched);
    ctx.tracker.spawn(async move {
        for (name, _) in quiet {
            if let Err(e) = s.ctx.queue.delete_backend(&name).await {
                tracing::error!("backend {name}: cannot delete its stored state: {e}");
            }
        }
        s.repark().await
    });
    let s = Arc::clone(&sched);
    tokio::spawn(async move {
        s.run().await;
        // Stop: deliveries in progress get the grace period to finish and
        // record; whatever is still running after it stays in flight in the
        // queue and is due again at the next start.
        s.ctx.tracker.close();
        let grace = s.ctx.settings.current().shutdown_grace;
        if tokio::time::timeout(grace, s.ctx.tracker.wait()).await.is_err() {
            tracing::warn!("delivery: grace period over, leaving unfinished deliveries to the next start");
        }
        // Backends point back at the shared context: break the cycle so the
        // queue handle they hold is released.
        s.registry.clear();
        drop(guard);
    });
    Handle::new(registry, ctx)
}

impl Scheduler {
    /// After a start, parks again the deferred mail of backends the queue
    /// remembers as not delivering (an open breaker, a pause): what they had
    /// parked in memory died with the previous process, and without it the
    /// breaker's probe has no message to send and its closing (or the
    /// resume) nothing to wake, so the backlog would wait out its backoff
    /// however soon the mailbox server came back. Pages through the
    /// deferred messages (bounded memory), and stops once every such gate
    /// is full.
    async fn repark(&self) {
        let names: Vec<String> =
            self.ctx.stored().iter().filter(|(_, r)| holds_mail(r)).map(|(n, _)| n.clone()).collect();
        if names.is_empty() {
            return;
        }
        let mut after = None;
        let mut parked = 0usize;
        loop {
            if self.ctx.token.is_cancelled() {
                return;
            }
            let filter = sluice_queue::Filter {
                held: Some(false),
                deferred_only: true,
                after,
                limit: Some(REPARK_PAGE),
                ..sluice_queue::Filter::default()
            };
            let page = match self.ctx.queue.list(filter).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("cannot read the queue to restore parked mail: {e}");
                    return;
                }
            };
            let Some((last, _, _)) = page.last() else { break };
            after = Some(*last);
            let config = self.ctx.settings.config();
            let mut full = true;
            for (id, env, _) in &page {
                for r in env.recipients.iter().filter(|r| !r.state.is_final()) {
                    let Ok(Route::Deliver { transport, protocol, nexthop, by_domain }) =
                        config.route_async(&r.address).await
                    else {
                        continue;
                    };
                    let bid = BackendId { transport, protocol, nexthop, by_domain };
                    if names.contains(&bid.to_string()) {
                        let bs = self.ctx.settings.backend(&config, &bid.transport, protocol);
                        let b = self.registry.backend(&bid, bs);
                        if b.gate().park(*id) {
                            parked += 1;
                        }
                        break;
                    }
                }
            }
            for name in &names {
                let b = self.registry.find(name);
                full &= b.is_some_and(|b| b.gate().snapshot().parked >= PARK_LIMIT);
            }
            if full || page.len() < REPARK_PAGE {
                break;
            }
        }
        if parked > 0 {
            tracing::info!("{parked} deferred message(s) parked again on backends restored open or paused");
        }
        // A record no queued mail routes to holds nothing back: an open
        // breaker is forgotten (a pause is the administrator's and stays).
        // The scan above ended either at the queue's end or with every such
        // backend running, so a name not running has no mail.
        for name in &names {
            let paused = self.ctx.stored_record(name).is_some_and(|r| r.paused_until.is_some());
            if !paused && self.registry.find(name).is_none() {
                tracing::info!("backend {name}: no mail waits for it, its stored state is forgotten");
                self.ctx.forget(name).await;
            }
        }
    }

    /// The claim loop.
    async fn run(&self) {
        let token = self.ctx.token.clone();
        let mut turns = Turns::default();
        loop {
            if token.is_cancelled() {
                return;
            }
            // Backends that retired since the last round leave memory.
            self.registry.sweep();
            // Room in the window first: never more messages in memory than
            // the active limit.
            let first = tokio::select! {
                p = Arc::clone(&self.window).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = token.cancelled() => return,
            };
            let settings = self.ctx.settings.current();
            let mut permits = vec![first];
            while permits.len() < settings.claim_batch {
                match Arc::clone(&self.window).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Listen for new mail before looking, so a message committed
            // between the look and the sleep still wakes us.
            let changed = self.ctx.queue.changed();
            tokio::pin!(changed);
            let fired = futures::poll!(&mut changed).is_ready();
            // Awake: any result recorded from now on may be due before the
            // next sleep ends, so it wakes us (see `record`).
            self.ctx.mark_awake();
            let now = clock::unix_millis();
            let claimed = match turns.claim(&self.ctx.queue, now, permits.len()).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("cannot read the queue schedule: {e}");
                    drop(permits);
                    if !fired {
                        self.sleep_or_wake(Some(now + 5_000), changed).await;
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                let next = self.ctx.queue.next_due().await.unwrap_or(None);
                if !fired {
                    self.sleep_or_wake(next, changed).await;
                }
                continue;
            }
            let config = self.ctx.settings.config();
            // Routes first, for the whole batch at once: with directory
            // tables in transport_maps or relay_domains the lookups run
            // side by side, each bounded by its table's timeout (a dead
            // directory fails at once behind its breaker).
            let routes =
                futures::future::join_all(claimed.iter().map(|m| plan::routes(&config, &m.envelope))).await;
            for (msg, routes) in claimed.into_iter().zip(routes) {
                let Some(permit) = permits.pop() else { break };
                self.hand_out(&config, &settings, msg, &routes, permit, now);
            }
        }
    }

    /// Sleeps until `next` (capped), a queue change, a wake-up, or shutdown.
    async fn sleep_or_wake(
        &self,
        next: Option<UnixMillis>,
        changed: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) {
        let now = clock::unix_millis();
        let wait = next.map(|t| clock::until(now, t)).unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed => {}
            _ = self.ctx.woken() => {}
            _ = self.ctx.token.cancelled() => {}
        }
    }

    /// Plans a claimed message and hands its deliveries out.
    fn hand_out(
        &self,
        config: &Arc<Config>,
        settings: &Settings,
        msg: QueuedMessage,
        routes: &[Option<Result<Route, TableError>>],
        permit: OwnedSemaphorePermit,
        now: UnixMillis,
    ) {
        // Postfix's qmgr logs a message's sender, size and recipient count as
        // the message enters its active queue; log tools (pflogsumm) take the
        // message size and sender from this line. Once per message: a retry of
        // a message some recipient was already tried for is not logged again.
        if msg.envelope.recipients.iter().all(|r| r.attempts == 0 && !r.state.is_final()) {
            tracing::info!(target: "qmgr", "{}", active_line(msg.id, &msg.envelope));
        }
        let live = &self.ctx.settings;
        let planned =
            plan(config, &msg.envelope, routes, &mut |id| live.backend(config, &id.transport, id.protocol));
        // One share per delivery, and one for the scheduler's own results.
        let inflight = Arc::new(InFlight::new(msg, now, permit, planned.jobs.len() + 1));
        for (id, bs, rcpts) in planned.jobs {
            let mut job = Some(Job { msg: Arc::clone(&inflight), rcpts, queued_at: clock::instant() });
            // A retired backend refuses jobs; its replacement takes them.
            for _ in 0..3 {
                let Some(j) = job.take() else { break };
                let b = self.registry.backend(&id, Arc::clone(&bs));
                match b.push(j, settings.backend_queue_limit) {
                    Ok(()) => {}
                    Err(PushError::Closed(j)) => job = Some(j),
                    Err(PushError::Full(j, wait)) => {
                        // Left on disk about until its turn, and parked so the
                        // backend calls it back when its queue has room (a
                        // backlog of a million does not cycle through the
                        // window every few seconds).
                        let wait = wait.clamp(Duration::from_secs(1), MAX_POSTPONE_FULL);
                        let until = spread(now, now + wait.as_millis() as u64);
                        self.postpone(j, Some(&b), until, "too much mail waiting for the backend", true);
                    }
                }
            }
            if let Some(j) = job {
                self.postpone(j, None, now + 1000, "backend restarting", false);
            }
        }
        // The scheduler's own results (error/discard routes) complete the
        // last share.
        let done = planned
            .immediate
            .into_iter()
            .map(|Immediate { index, agent, verdict, dsn, text }| {
                let d = Done::Attempted {
                    verdict,
                    dsn,
                    text,
                    diagnostic: None,
                    remote: None,
                    dsn_passed: false,
                    lmtp: false,
                    backend_trouble: false,
                }
                .softened(settings.soft_bounce);
                if let Done::Attempted { verdict, dsn, text, .. } = &d {
                    inflight.result_line(index, "none", *dsn, LogStatus::from(*verdict), text).emit(agent);
                }
                RcptDone { index, done: d }
            })
            .collect();
        record::complete(&self.ctx, &inflight, None, done);
    }

    /// Completes a job as postponed (not attempted) until `until`, parked on
    /// its backend when `park`.
    fn postpone(
        &self,
        job: Job,
        backend: Option<&Arc<Backend>>,
        until: UnixMillis,
        reason: &str,
        park: bool,
    ) {
        let done = RcptDone::postponed(&job.rcpts, until, reason, park, false);
        let gate: Option<Arc<dyn BackendGate>> = backend.map(|b| b.gate_handle());
        record::complete(&self.ctx, &job.msg, gate, done);
    }
}

#[cfg(test)]
mod tests {
    use sluice_queue::{Envelope, Error, QueueId};

    use super::*;

    fn claimed(n: u64) -> QueuedMessage {
        QueuedMessage { id: QueueId::from_micros(n), envelope: Envelope::default(), due: n }
    }

    #[test]
    fn a_failed_second_claim_keeps_what_the_first_took() {
        let ids = |r: sluice_queue::Result<Vec<QueuedMessage>>| {
            r.map(|v| v.iter().map(|m| m.due).collect::<Vec<_>>())
        };
        let failed = || Err(Error::Storage("disk gone".into()));
        assert_eq!(ids(both(vec![claimed(1)], Ok(vec![claimed(2)]))).unwrap(), [1, 2]);
        // In flight already: handed out, not dropped.
        assert_eq!(ids(both(vec![claimed(1), claimed(3)], failed())).unwrap(), [1, 3]);
        assert!(both(Vec::new(), failed()).is_err(), "nothing taken: the error is the answer");
    }
}
