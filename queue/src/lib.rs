//! sluice's durable mail queue: the only code that touches RocksDB.
//!
//! What it promises (see DESIGN.md, "Contracts that never bend"):
//! - a message exists once, and only once, [`Draft::commit`] has returned:
//!   its body, envelope and schedule entry are then on disk in one synced
//!   `WriteBatch`;
//! - every later state change of a message (claim, result, hold, release,
//!   delete, requeue) is one `WriteBatch`;
//! - after a crash, what was in flight is due again (a duplicate delivery is
//!   possible, a lost message is not);
//! - opening a queue never reads message bodies;
//! - one corrupt record is reported and quarantined, never a panic and never
//!   the loss of the others.
//!
//! The API speaks mail and never returns RocksDB types. Writes that must be
//! durable go to one writer thread that merges concurrent callers' batches
//! into one synced write (group commit); reads run on tokio's blocking pool,
//! or on the caller's worker when RocksDB holds what they read in memory
//! (`in_memory.rs`).
//!
//! Log lines about a message name the Postfix program that would have
//! written them as their tracing target (`qmgr` for `removed` and
//! `requeued`, `postsuper` for hold, release and delete), so the daemon's
//! log reads as Postfix's to Postfix log tools.
//!
//! The parts, from the bottom up: `model.rs` (what the queue stores, in
//! mail's words), `keys.rs` and `codec.rs` (the byte layouts), `store.rs`
//! (RocksDB), `writer.rs` (the one group-commit writer thread), `disk.rs`
//! (free space), `ids.rs` (queue IDs and lock stripes), `in_memory.rs`
//! (reads served from memory on the caller's worker), `recover.rs`
//! (opening after a crash), `inner.rs` (what every handle shares and the
//! primitives of every operation); then the operations by concern:
//! `handle.rs` ([`Queue`]: open, close, counters, reads), `body.rs`
//! (reading a body chunk by chunk), `draft.rs`
//! (receiving a message), `claim.rs` (the scheduler's claim and record),
//! `admin.rs` (hold, release, delete, requeue, list), `backend_records.rs`
//! (gate state), `verify_cache.rs` (address verification answers) and
//! `debug.rs` (test hooks).
#![forbid(unsafe_code)]

mod admin;
mod backend_records;
mod body;
mod claim;
mod codec;
mod debug;
mod disk;
mod draft;
mod error;
mod handle;
mod ids;
mod in_memory;
mod inner;
mod keys;
mod model;
mod recover;
mod store;
mod verify_cache;
mod writer;

pub use body::{BodyReader, PREFETCH_LIMIT};
pub use draft::Draft;
pub use error::Error;
pub use handle::Queue;
pub use ids::IdGen;
pub use in_memory::ReadStats;
pub use model::*;
pub use verify_cache::VerifySweep;
pub use writer::{FSYNC_BATCH_METRIC, WriterStats};

use std::time::Duration;

/// Result alias for queue operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the queue is opened. `Default` is what a production MX wants.
#[derive(Debug, Clone)]
pub struct Options {
    /// In-flight messages found at open are spread evenly over this window
    /// from "now" so a restart does not fire them all at once.
    pub recovery_spread: Duration,
    /// Bodies are stored in chunks of at most this many bytes, so a session
    /// never buffers more than one chunk however large the message.
    pub body_chunk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { recovery_spread: Duration::from_secs(5), body_chunk: 256 * 1024 }
    }
}

/// Backpressure limits for [`Queue::admit`]; zero means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptLimits {
    /// `sluice_queue_high_water` message count.
    pub max_messages: u64,
    /// `sluice_queue_high_water` bytes.
    pub max_bytes: u64,
    /// `queue_minfree` in bytes.
    pub min_free: u64,
}

/// What happened to a message after [`Queue::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Every recipient is final: envelope and body are gone.
    Removed,
    /// Some recipients are still pending or deferred; due again at this time.
    Scheduled(UnixMillis),
}
