//! Delivery: mail leaves the queue for the mailbox servers named by
//! `transport_maps`, through one gate per backend.
//!
//! - [`scheduler`] claims due messages from the queue in bounded batches
//!   and hands them out as [`plan`] says (route each recipient, group per
//!   backend, cut by recipient limit).
//! - [`registry`] holds the backends (creating each with its gate, behind
//!   the [`gate::BackendGate`] trait) and the admin view of them
//!   ([`Handle`]).
//! - [`dispatch`] is one backend: its waiting jobs, its [`gate`] (rate
//!   limiter, adaptive concurrency, circuit breaker) and its idle
//!   connections; it starts deliveries through the [`client`]. It sees the
//!   rest of delivery only through the narrow [`context`].
//! - [`inflight`] keeps a claimed message's results until the last is in;
//!   [`record`] judges them (retry with backoff, bounce, expire) and writes
//!   them with their notices.
//! - [`verify`] answers the SMTP server's recipient verification
//!   (`reject_unverified_recipient`): the queue's cache, or a probe through
//!   the recipient's backend and its gate.
//! - [`bounce`] builds delivery status notifications; [`nexthop`] resolves
//!   next hops; [`result_line`] formats the Postfix-style result lines; [`backoff`] and
//!   [`settings`] are the plain policy and configuration.
//!
//! Never touches inbound sessions. The public entry point is [`start_with_resolver`]; it
//! returns a [`Handle`] for the admin side (backend snapshots, pause,
//! resume, wake).

pub mod backoff;
pub mod bounce;
pub mod client;
pub mod context;
pub mod dispatch;
pub mod gate;
pub mod inflight;
pub mod nexthop;
pub mod plan;
pub mod record;
pub mod registry;
pub mod result_line;
pub mod scheduler;
pub mod settings;
pub mod verify;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_queue::Queue;

use crate::config::{Config, NextHop, Protocol};
use crate::resolver::Resolver;
use crate::shutdown::Stage;

pub use self::gate::Snapshot;
pub use self::registry::{BackendStatus, Handle};
pub use self::settings::Tuning;

/// A backend: one transport's next hop. Each has its own gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendId {
    pub transport: String,
    pub protocol: Protocol,
    pub nexthop: NextHop,
    /// The next hop is the recipient's domain (see
    /// [`Route::Deliver`](crate::config::Route::Deliver)): its addresses
    /// are checked against `sluice_mx_forbidden_networks`. Not part of the
    /// name: a configured next hop and a domain that happen to be the same
    /// destination share their record.
    pub by_domain: bool,
}

impl std::hash::Hash for BackendId {
    // The protocol follows from the transport; hashing the rest is enough.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.transport.hash(h);
        self.nexthop.hash(h);
        self.by_domain.hash(h);
    }
}

impl fmt::Display for BackendId {
    /// The name logs and `sluice backend` commands use, written the way a
    /// transport map result would be: `lmtp:[mbx1]:24`, `smtp:example.org:25`,
    /// `lmtp:unix:/run/dovecot/lmtp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.nexthop)
    }
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading stored backend records failed.
    #[error("reading backend state from the queue")]
    Queue(#[from] sluice_queue::Error),
}

/// No backend by that name is known (neither running nor stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no such backend: {name}")]
pub struct UnknownBackend {
    pub name: String,
}

/// Starts delivery with `resolver` for next hops (the daemon passes the
/// one it shares with the inbound server; tests a
/// [`crate::resolver::StaticResolver`]). `config` is the live configuration (a
/// reload swaps it; the next decisions use the new one). Runs until
/// `stage` is cancelled: then it stops claiming, lets deliveries in
/// progress finish within the grace period, records their results, and
/// drops its guard.
pub async fn start_with_resolver(
    queue: Queue,
    config: Arc<ArcSwap<Config>>,
    resolver: Arc<dyn Resolver>,
    stage: Stage,
) -> Result<Handle, Error> {
    start_tuned(queue, config, resolver, stage, Tuning::default()).await
}

/// [`start_with_resolver`] with in-memory limits set by the caller (tests
/// and benches reach the overflow paths with small ones).
pub async fn start_tuned(
    queue: Queue,
    config: Arc<ArcSwap<Config>>,
    resolver: Arc<dyn Resolver>,
    stage: Stage,
    tuning: Tuning,
) -> Result<Handle, Error> {
    let stored = queue.backends().await?;
    Ok(scheduler::spawn(queue, config, resolver, stage, stored, tuning))
}
