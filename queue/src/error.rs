//! The queue's one error type.

use crate::QueueId;

/// Errors callers act on. `Storage` means the disk or RocksDB failed: the
/// operation did not happen (a session answers `451 4.3.0`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB or the file system failed.
    #[error("queue storage error: {0}")]
    Storage(String),
    /// The file system holding the queue is full (`ENOSPC`): the write did
    /// not happen (`452 4.3.1`). RocksDB then stops taking writes until
    /// space is freed, and resumes by itself.
    #[error("queue file system is full: {0}")]
    NoSpace(String),
    /// Writes are failing (the last one did, and no write or probe has
    /// succeeded since), so no new mail is taken (`452 4.3.1`) until one
    /// does; see [`crate::Queue::admit`].
    #[error("queue writes are failing: {0}")]
    Unwritable(String),
    /// The queue is above its high-water mark (`452 4.3.1`).
    #[error("queue is full: {messages} messages, {bytes} bytes")]
    Full { messages: u64, bytes: u64 },
    /// Free disk space is below `queue_minfree` (`452 4.3.1`).
    #[error("free disk space {free} bytes is below queue_minfree")]
    DiskLow { free: u64 },
    /// No such message (already delivered, deleted, or never existed).
    #[error("no such message: {0}")]
    NotFound(QueueId),
    /// A stored record could not be decoded; it has been quarantined.
    #[error("corrupt queue record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The queue was opened read-only.
    #[error("queue is open read-only")]
    ReadOnly,
    /// The queue is closed (shutdown).
    #[error("queue is closed")]
    Closed,
    /// The queue directory is locked by another process (a running daemon).
    #[error("queue directory {0} is in use by another process")]
    Locked(String),
}

impl Error {
    /// The same error for another caller (each caller of a failed group
    /// write gets its own).
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::NoSpace(m) => Error::NoSpace(m.clone()),
            Error::Unwritable(m) => Error::Unwritable(m.clone()),
            e => Error::Storage(e.to_string()),
        }
    }
}
