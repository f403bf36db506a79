//! In-flight bookkeeping: a claimed message while its deliveries run
//! ([`InFlight`]), what each recipient's turn came to ([`Done`]), and the
//! count of outstanding shares that tells when the last result is in.
//!
//! A message is split into jobs, one per backend and recipient chunk, plus
//! one share for the scheduler's own results (routes to `error:` or
//! `discard:`, lookup failures). Each share reports once; the report that
//! completes the message hands everything collected to the recording
//! (`record.rs`). The message holds one slot of the claim loop's in-memory
//! window until it is dropped after that recording.
//!
//! Never touches the queue beyond reading the body (chunk by chunk, for
//! each delivery: [`QueuedBody`]), and decides nothing: the dispatcher
//! says what happened, the recording what it means.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_queue::BodyReader;
use sluice_queue::{Envelope, Queue, QueueId, QueuedMessage, UnixMillis};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::client::{Chunks, Content, Verdict};
use super::context::lock;
use super::gate::BackendGate;
use super::result_line::{LogStatus, ResultLine};
use crate::clock;
use crate::reply::Status;

/// What one recipient's turn came to.
#[derive(Debug, Clone)]
pub enum Done {
    /// The backend was asked (or could not be reached).
    Attempted {
        verdict: Verdict,
        dsn: Status,
        text: String,
        /// The backend's reply, for the DSN's `Diagnostic-Code`.
        diagnostic: Option<String>,
        /// `host[addr]` that answered, for `Remote-MTA`.
        remote: Option<String>,
        /// The backend took the DSN request itself (it offered DSN).
        dsn_passed: bool,
        /// Delivered by LMTP: a final delivery ("delivered", not "relayed").
        lmtp: bool,
        /// Deferred because of the backend's trouble (not the mailbox's):
        /// park the message for an early wake-up.
        backend_trouble: bool,
    },
    /// Not attempted: wait until then; not an attempt. `shown`: the reason
    /// is the administrator's business (an open breaker, a paused backend)
    /// and is recorded as the recipient's reason (`mailq`), not just logged.
    Postponed { until: UnixMillis, reason: String, park: bool, shown: bool },
    /// Nothing to record (the message vanished, or shutdown cut it off).
    Abandoned,
}

impl Done {
    /// The result under `soft_bounce` (when `soft`): a bounce becomes a
    /// deferral with a 4.Y.Z status, as Postfix's safety net has it.
    pub fn softened(mut self, soft: bool) -> Done {
        if soft
            && let Done::Attempted { verdict, dsn, .. } = &mut self
            && *verdict == Verdict::Bounced
        {
            *verdict = Verdict::Deferred;
            *dsn = dsn.softened();
        }
        self
    }
}

/// One recipient's result.
#[derive(Debug, Clone)]
pub struct RcptDone {
    pub index: usize,
    pub done: Done,
}

impl RcptDone {
    /// The recipients `rcpts` (indexes) postponed alike: due again at
    /// `until` for `reason`, parked for an early wake-up when `park`, the
    /// deferral already logged when `shown`.
    pub fn postponed(
        rcpts: &[usize],
        until: UnixMillis,
        reason: &str,
        park: bool,
        shown: bool,
    ) -> Vec<RcptDone> {
        rcpts
            .iter()
            .map(|&index| RcptDone {
                index,
                done: Done::Postponed { until, reason: reason.to_owned(), park, shown },
            })
            .collect()
    }
}

/// Everything the shares of a message reported, handed over by the last
/// one to report.
#[derive(Debug)]
pub struct Finished {
    pub results: Vec<RcptDone>,
    /// The gates to park the message on if it stays queued.
    pub park_on: Vec<Arc<dyn BackendGate>>,
}

/// A claimed message while its deliveries run. Holds one slot of the
/// in-memory window until it is dropped.
#[derive(Debug)]
pub struct InFlight {
    msg: QueuedMessage,
    claimed_at: Instant,
    claimed_ms: UnixMillis,
    state: Mutex<Pending>,
    _window: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct Pending {
    /// Shares not yet reported.
    remaining: usize,
    results: Vec<RcptDone>,
    /// Gates to park the message on if it stays queued.
    park_on: Vec<Arc<dyn BackendGate>>,
}

impl InFlight {
    /// A message claimed at `claimed_ms`, holding `window`, whose results
    /// come in `shares` reports.
    pub fn new(
        msg: QueuedMessage,
        claimed_ms: UnixMillis,
        window: OwnedSemaphorePermit,
        shares: usize,
    ) -> InFlight {
        InFlight {
            msg,
            claimed_at: clock::instant(),
            claimed_ms,
            state: Mutex::new(Pending { remaining: shares, ..Pending::default() }),
            _window: window,
        }
    }

    pub fn id(&self) -> QueueId {
        self.msg.id
    }

    /// Recipient `index`'s result line (`to=<...>, relay=..., delay=...`),
    /// with the first part of `delays=` (arrival to claim) filled in; the
    /// caller sets the other three when it has them.
    pub fn result_line<'a>(
        &'a self,
        index: usize,
        relay: &'a str,
        dsn: Status,
        status: LogStatus,
        text: &'a str,
    ) -> ResultLine<'a> {
        let env = self.envelope();
        let r = &env.recipients[index];
        let now = clock::unix_millis();
        ResultLine {
            queue_id: self.id(),
            to: &r.address,
            orcpt: r.orcpt.as_deref(),
            original: r.original.as_deref(),
            relay,
            delay: Duration::from_millis(now.saturating_sub(env.arrival)),
            delays: [
                Duration::from_millis(self.claimed_ms.saturating_sub(env.arrival)),
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            ],
            dsn,
            status,
            text,
        }
    }

    pub fn envelope(&self) -> &Envelope {
        &self.msg.envelope
    }

    pub fn claimed_at(&self) -> Instant {
        self.claimed_at
    }

    pub fn claimed_ms(&self) -> UnixMillis {
        self.claimed_ms
    }

    /// The body as a delivery sends it: read from the queue chunk by chunk
    /// each time it is sent, never held whole (a message may be as large
    /// as `message_size_limit = 0` lets it be; every delivery to every
    /// backend costs one chunk of memory).
    pub fn content(&self, queue: &Queue) -> QueuedBody {
        QueuedBody { queue: queue.clone(), id: self.msg.id, size: self.msg.envelope.size }
    }

    /// One share reports its results (`gate`: the backend's, to park the
    /// message on when a result asks for it). The last share to report gets
    /// everything collected, to record.
    pub fn complete(&self, gate: Option<Arc<dyn BackendGate>>, done: Vec<RcptDone>) -> Option<Finished> {
        let mut st = lock(&self.state);
        let park = done.iter().any(|d| match &d.done {
            Done::Attempted { backend_trouble, .. } => *backend_trouble,
            Done::Postponed { park, .. } => *park,
            Done::Abandoned => false,
        });
        if park && let Some(g) = gate {
            st.park_on.push(g);
        }
        st.results.extend(done);
        st.remaining = st.remaining.saturating_sub(1);
        (st.remaining == 0).then(|| Finished {
            results: std::mem::take(&mut st.results),
            park_on: std::mem::take(&mut st.park_on),
        })
    }
}

/// A queued message's body as the client reads it ([`Content`]): opened
/// from the queue for each reading.
#[derive(Debug, Clone)]
pub struct QueuedBody {
    queue: Queue,
    id: QueueId,
    size: u64,
}

impl Content for QueuedBody {
    fn len(&self) -> u64 {
        self.size
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Chunks + '_>, sluice_queue::Error>> {
        Box::pin(async move {
            let reader = self.queue.body_reader(self.id).await?;
            Ok(Box::new(reader) as Box<dyn Chunks + '_>)
        })
    }
}

impl Chunks for BodyReader {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, sluice_queue::Error>> {
        Box::pin(BodyReader::next_chunk(self))
    }
}
