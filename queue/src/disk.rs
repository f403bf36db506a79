//! Free space of the file system holding the queue, for `queue_minfree`.
//!
//! `statvfs` is cheap but not free, and `Queue::admit` runs on every `MAIL`;
//! a small thread refreshes the figure once a second instead. (The queue
//! reads no clock outside ID generation, so the cache is refreshed by a
//! sleeping thread rather than by comparing timestamps.)
//!
//! Also the floors below which the queue stops writing ([`WRITE_FLOOR`])
//! and stops taking new mail ([`ADMIT_FLOOR`]): RocksDB must never run out
//! of space itself. A WAL append that fails leaves its log writer in an
//! error state, and the next write to it ends the process (Debian's
//! RocksDB 7.8 is built with its assertions on: a test that filled the
//! disk under it saw `AssertFalseAndGetStatusForPrevError` abort), so the
//! queue refuses a write it cannot be sure has room, before RocksDB tries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How stale the free-space figure may be.
const REFRESH: Duration = Duration::from_secs(1);

/// No write happens while the queue's file system has less than this free
/// (beyond the write's own bytes): room for the WAL record, RocksDB's
/// manifest and log housekeeping, and a memtable flush started by an
/// earlier write. Checked with `statvfs` before every group write (a few
/// microseconds against a millisecond fsync), not from the cached figure:
/// another program may fill the disk within a second.
pub(crate) const WRITE_FLOOR: u64 = 32 << 20;

/// No new mail is taken while less than this is free, whatever
/// `queue_minfree` says: the room between it and [`WRITE_FLOOR`] lets the
/// mail already queued be delivered and removed.
pub(crate) const ADMIT_FLOOR: u64 = 2 * WRITE_FLOOR;

/// The cached free space and the thread keeping it current.
#[derive(Debug)]
pub(crate) struct DiskWatch {
    free: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Bytes available to unprivileged users on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Result<u64, nix::Error> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

impl DiskWatch {
    /// Measures now, then keeps measuring in the background.
    pub(crate) fn start(dir: &Path) -> DiskWatch {
        let first = free_bytes(dir).unwrap_or_else(|e| {
            // Unknown free space must not refuse mail: RocksDB itself
            // reports a full disk as a write error.
            tracing::warn!("cannot read free space of {}: {e}", dir.display());
            u64::MAX
        });
        let free = Arc::new(AtomicU64::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, dir): (_, _, PathBuf) = (Arc::clone(&free), Arc::clone(&stop), dir.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("sluice-queue-df".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    std::thread::park_timeout(REFRESH);
                    if s.load(Ordering::Acquire) {
                        break;
                    }
                    match free_bytes(&dir) {
                        Ok(v) => f.store(v, Ordering::Release),
                        Err(e) => tracing::debug!("cannot read free space of {}: {e}", dir.display()),
                    }
                }
            })
            .map_err(|e| tracing::warn!("cannot start the free-space thread: {e}"))
            .ok();
        DiskWatch { free, stop, thread }
    }

    /// Free bytes, at most a second old.
    pub(crate) fn free(&self) -> u64 {
        self.free.load(Ordering::Acquire)
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
