//! The RocksDB handle: how the database is opened and tuned, and the typed
//! reads the rest of the crate uses. No other file builds RocksDB options or
//! iterators.
//!
//! Writes do not happen here: they are `writer.rs`'s (the one writer thread)
//! except during recovery, before that thread starts.
//!
//! ## Tuning for a delete-heavy queue
//!
//! A queue writes each key once and deletes it soon after, mostly from the
//! old end of every keyspace (IDs and due times grow with time). What that
//! costs in RocksDB is tombstones: a scan from the start of `schedule` or
//! `envelopes` would step over every entry deleted since the last
//! compaction. Three things keep that bounded:
//! - **floors** ([`Floor`]): for `schedule` and `envelopes` the queue keeps a
//!   lower bound below which it knows no live key exists, and scans start
//!   there, so tombstones below it are never visited;
//! - **dead-prefix compaction** (`writer.rs`): after every
//!   [`COMPACT_AFTER_DELETES`] deletions the range below the floors is
//!   compacted away. This stands in for RocksDB's
//!   `CompactOnDeletionCollector`, which rust-rocksdb 0.20.1 (pinned to link
//!   Debian's RocksDB 7.8) does not wrap;
//! - point deletes everywhere (a message's chunk count is in its record),
//!   never one range tombstone per message.
//!
//! Bodies go to blob files (values ≥ 4 KiB), so compaction of `bodies` moves
//! small index entries instead of rewriting message bytes; blob garbage
//! collection reclaims the space of removed messages.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompactionStyle, DBRecoveryMode,
    Direction, IteratorMode, LogLevel, Options as DbOptions, ReadOptions, WriteBatch, WriteOptions,
};

use crate::error::Error;
use crate::in_memory;
use crate::keys::Table;

/// Deletions after which the writer compacts the dead prefix of the hot
/// tables (see the module docs).
pub(crate) const COMPACT_AFTER_DELETES: u64 = 100_000;

/// Total memtable memory across all tables: the bound on what RocksDB holds
/// in memory before it flushes (bodies included, until they reach blob files).
const DB_WRITE_BUFFER: usize = 256 << 20;
/// Memtable size of the `bodies` table (see `cf_options`).
const BODY_WRITE_BUFFER: usize = 16 << 20;
/// WAL kept before the tables holding its oldest data are flushed: bounds
/// both disk use and the WAL replayed at open.
const MAX_TOTAL_WAL: u64 = 512 << 20;
/// Values at least this big go to blob files.
const MIN_BLOB_SIZE: u64 = 4 << 10;

fn db_options() -> DbOptions {
    let mut o = DbOptions::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // A torn tail after power loss is cut at the last whole record: the
    // queue is then exactly as of some earlier instant. Synced batches are
    // never in the cut part, which is what makes the group-commit argument
    // in writer.rs hold.
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    o.set_max_total_wal_size(MAX_TOTAL_WAL);
    o.set_db_write_buffer_size(DB_WRITE_BUFFER);
    o.set_max_background_jobs(4);
    // Spread SST and WAL writeback so a flush does not stall synced writes
    // with one huge fsync.
    o.set_bytes_per_sync(1 << 20);
    o.set_wal_bytes_per_sync(1 << 20);
    o.set_keep_log_file_num(4);
    // RocksDB's own log (`db/LOG`) gets fatal errors only, and no periodic
    // statistics: a line appended to it while the file system is full
    // leaves its writer in an error state, and the next line ends the
    // process (Debian's RocksDB has its assertions on; see `disk.rs`).
    // What goes wrong is sluice's to log anyway: every failed write
    // reaches it as an error.
    o.set_log_level(LogLevel::Fatal);
    o.set_stats_dump_period_sec(0);
    o
}

fn cf_options(t: Table) -> DbOptions {
    let mut o = DbOptions::default();
    o.set_compaction_style(DBCompactionStyle::Level);
    o.set_level_compaction_dynamic_level_bytes(true);
    let mut block = BlockBasedOptions::default();
    match t {
        Table::Bodies => {
            // Every body passes through this memtable before its flush to a
            // blob file, so its size is what large messages cost in memory:
            // with 64 MiB (two of them while one flushes) four 25 MB
            // messages in flight raised the RSS by 142 MiB. Two of 16 MiB
            // bound it at 32 MiB whatever the messages' count or size; a
            // flush then writes 16 MiB, well under a second of the fastest
            // intake measured (about 120 MB/s), and small mail delivered
            // within that time still never reaches a blob file.
            o.set_write_buffer_size(BODY_WRITE_BUFFER);
            o.set_max_write_buffer_number(2);
            o.set_enable_blob_files(true);
            o.set_min_blob_size(MIN_BLOB_SIZE);
            o.set_blob_file_size(256 << 20);
            o.set_enable_blob_gc(true);
            // Relocate live blobs out of the oldest quarter of blob files
            // during compaction, so files of removed mail are dropped.
            o.set_blob_gc_age_cutoff(0.25);
            block.set_bloom_filter(10.0, false);
        }
        Table::Envelopes | Table::Inflight => {
            o.set_write_buffer_size(32 << 20);
            block.set_bloom_filter(10.0, false);
        }
        // Scanned in order, never looked up by a missing key: no filter.
        Table::Schedule => o.set_write_buffer_size(16 << 20),
        Table::Drafts | Table::Meta | Table::Quarantine => o.set_write_buffer_size(4 << 20),
    }
    o.set_block_based_table_factory(&block);
    o
}

/// Options for one read: memory only while an in-memory attempt runs on
/// this thread (`in_memory.rs`), which this read counts against.
fn read_options() -> Result<ReadOptions, Error> {
    let mut ro = ReadOptions::default();
    if in_memory::read_tier()? && !memory_only(&mut ro, ReadOptions::set_read_tier) {
        return Err(in_memory::miss());
    }
    Ok(ro)
}

/// Sets RocksDB's `kBlockCacheTier` (memtables and block cache; a read
/// that needs a file answers `Incomplete`). rust-rocksdb 0.20.1 takes a
/// `ReadTier` in `set_read_tier` but does not export the type, so the
/// setter is passed in for its parameter's type, and the value is made by
/// the type's own `Deserialize` (its `serde1` feature) from the variant's
/// name. `tests::a_memory_only_read_misses_what_is_only_on_disk` checks
/// that it takes effect.
///
/// False if that failed (a rocksdb release that renamed the variant): the
/// read then goes to the blocking pool, as every read did before.
fn memory_only<T: serde::de::DeserializeOwned>(ro: &mut ReadOptions, set: fn(&mut ReadOptions, T)) -> bool {
    use serde::de::IntoDeserializer;
    let tier: Result<T, serde::de::value::Error> = T::deserialize("BlockCache".into_deserializer());
    tier.map(|tier| set(ro, tier)).is_ok()
}

/// A failed read's error; tells an in-memory attempt it needs the disk.
fn read_error(e: rocksdb::Error) -> Error {
    in_memory::note_error(&e);
    storage(e)
}

/// Maps a RocksDB error. Only the queue's own API types leave this crate.
/// rust-rocksdb gives RocksDB's status as text only: a full file system is
/// its `NoSpace` subcode, written "No space left on device" (also when
/// RocksDB repeats the background error that stopped it).
pub(crate) fn storage(e: rocksdb::Error) -> Error {
    let text = e.into_string();
    if text.contains("No space left on device") || text.contains("NoSpace") {
        Error::NoSpace(text)
    } else {
        Error::Storage(text)
    }
}

/// The open database.
pub(crate) struct Store {
    db: DB,
    dir: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("read_only", &self.read_only).finish()
    }
}

impl Store {
    /// Opens (creating when writable) the database in `dir`. RocksDB's own
    /// `LOCK` file stops a second process from opening it for writing; that
    /// failure becomes [`Error::Locked`]. A read-only open takes no lock.
    pub(crate) fn open(dir: &Path, read_only: bool) -> Result<Store, Error> {
        let cfs = Table::ALL.iter().map(|&t| ColumnFamilyDescriptor::new(t.name(), cf_options(t)));
        let opts = db_options();
        let db = if read_only {
            DB::open_cf_descriptors_read_only(&opts, dir, cfs, false)
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
            DB::open_cf_descriptors(&opts, dir, cfs)
        };
        let db = db.map_err(|e| {
            let msg = e.into_string();
            if msg.to_ascii_lowercase().contains("lock") {
                Error::Locked(dir.display().to_string())
            } else {
                Error::Storage(msg)
            }
        })?;
        Ok(Store { db, dir: dir.to_path_buf(), read_only })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// RocksDB's own figure for what `t` holds in memory: its memtables,
    /// the active one and those sealed but not yet flushed
    /// (`rocksdb.size-all-mem-tables`). Reads an in-memory counter.
    pub(crate) fn memtable_bytes(&self, t: Table) -> Result<u64, Error> {
        let v = self.db.property_int_value_cf(self.cf(t)?, "rocksdb.size-all-mem-tables").map_err(storage)?;
        Ok(v.unwrap_or(0))
    }

    pub(crate) fn cf(&self, t: Table) -> Result<&ColumnFamily, Error> {
        // Every table is created at open, so this only fails on a damaged
        // database.
        self.db
            .cf_handle(t.name())
            .ok_or_else(|| Error::Storage(format!("missing column family {}", t.name())))
    }

    /// One value.
    pub(crate) fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db.get_cf_opt(self.cf(t)?, key, &read_options()?).map_err(read_error)
    }

    /// Whether a key exists (without copying its value).
    pub(crate) fn contains(&self, t: Table, key: &[u8]) -> Result<bool, Error> {
        Ok(self.db.get_pinned_cf_opt(self.cf(t)?, key, &read_options()?).map_err(read_error)?.is_some())
    }

    /// Calls `f` for each key/value in `[lower, upper)` in key order until it
    /// returns `Ok(false)`. RocksDB is told the bounds, so it neither reads
    /// nor steps over tombstones outside them.
    pub(crate) fn scan(
        &self,
        t: Table,
        lower: &[u8],
        upper: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut ro = read_options()?;
        ro.set_iterate_lower_bound(lower.to_vec());
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(t)?, ro);
        it.seek(lower);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if !f(k, v)? {
                return Ok(());
            }
            // Each further key counts against an in-memory attempt's budget.
            in_memory::read_tier()?;
            it.next();
        }
        it.status().map_err(read_error)
    }

    /// The first key at or after `lower` (and before `upper`).
    pub(crate) fn first_key(
        &self,
        t: Table,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut first = None;
        self.scan(t, lower, upper, |k, _| {
            first = Some(k.to_vec());
            Ok(false)
        })?;
        Ok(first)
    }

    /// The last key of a table.
    pub(crate) fn last_key(&self, t: Table) -> Result<Option<Vec<u8>>, Error> {
        let mut it = self.db.iterator_cf_opt(self.cf(t)?, read_options()?, IteratorMode::End);
        match it.next() {
            Some(Ok((k, _))) => Ok(Some(k.to_vec())),
            Some(Err(e)) => Err(read_error(e)),
            None => Ok(None),
        }
    }

    /// Keys of a table in order from `lower` (used where values are not
    /// needed and might be big).
    pub(crate) fn keys_from(&self, t: Table, lower: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf_opt(
            self.cf(t)?,
            read_options()?,
            IteratorMode::From(lower, Direction::Forward),
        );
        for item in it.take(limit) {
            let (k, _) = item.map_err(read_error)?;
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// Writes a batch; `sync` waits for the WAL to reach the disk.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(storage)
    }

    /// Syncs the WAL (what `close` does for buffered writes).
    pub(crate) fn sync_wal(&self) -> Result<(), Error> {
        if self.read_only {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(storage)
    }

    /// Flushes every table's memtable to disk files, so the next open has
    /// no log to replay (a clean shutdown; after a crash the log is
    /// replayed, bounded by `MAX_TOTAL_WAL`).
    pub(crate) fn flush_all(&self) -> Result<(), Error> {
        if self.read_only {
            return Ok(());
        }
        for t in Table::ALL {
            self.db.flush_cf(self.cf(t)?).map_err(storage)?;
        }
        Ok(())
    }

    /// Compacts the start of a table up to `end` (all of it for `None`):
    /// the dead prefix of a keyspace, whose tombstones then disappear.
    pub(crate) fn compact(&self, t: Table, end: Option<&[u8]>) -> Result<(), Error> {
        self.db.compact_range_cf(self.cf(t)?, None::<&[u8]>, end);
        Ok(())
    }
}

/// A lower bound for scans of a time-ordered table: no live key is below
/// it. Writers lower it when they insert below it; a scan that found the
/// first live key (or consumed everything up to some key) raises it.
///
/// The race that matters: a scan reads its snapshot, an insert lands below
/// the point the scan is about to raise the floor to, the floor must not
/// pass it. So the writer lowers the floor *after* its batch is written, and
/// the one scan at a time that may raise tracks the smallest key lowered
/// since it began and never raises past it. An insert whose write finished
/// before the scan's snapshot is seen by the scan; one whose lowering comes
/// after the scan began is tracked; there is no third case.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    state: Mutex<FloorState>,
}

#[derive(Debug, Default)]
struct FloorState {
    key: Vec<u8>,
    /// The scan allowed to raise: its token and the least key lowered since
    /// it began.
    scan: Option<(u64, Option<Vec<u8>>)>,
    next_token: u64,
}

/// A scan in progress; only the one that got a token may raise the floor.
#[derive(Debug)]
pub(crate) struct FloorScan<'a> {
    floor: &'a Floor,
    token: Option<u64>,
    /// Where the scan starts.
    pub start: Vec<u8>,
}

impl Floor {
    fn lock(&self) -> std::sync::MutexGuard<'_, FloorState> {
        // A poisoned floor is still a valid lower bound (it only moves
        // under the lock): keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current floor.
    pub(crate) fn get(&self) -> Vec<u8> {
        self.lock().key.clone()
    }

    /// Called after a write that inserted `key`.
    pub(crate) fn lower(&self, key: &[u8]) {
        let mut s = self.lock();
        if key < s.key.as_slice() {
            s.key = key.to_vec();
        }
        if let Some((_, min)) = &mut s.scan {
            match min {
                Some(m) if m.as_slice() <= key => {}
                _ => *min = Some(key.to_vec()),
            }
        }
    }

    /// Starts a scan: where to begin, and the right to raise if no other
    /// scan holds it.
    pub(crate) fn begin(&self) -> FloorScan<'_> {
        let mut s = self.lock();
        let token = if s.scan.is_none() {
            s.next_token += 1;
            let t = s.next_token;
            s.scan = Some((t, None));
            Some(t)
        } else {
            None
        };
        FloorScan { floor: self, token, start: s.key.clone() }
    }
}

impl FloorScan<'_> {
    /// Ends the scan, having established that no live key below `to`
    /// existed in its snapshot.
    pub(crate) fn raise(mut self, to: &[u8]) {
        let Some(token) = self.token.take() else { return };
        let mut s = self.floor.lock();
        let Some((t, min)) = s.scan.take() else { return };
        if t != token {
            s.scan = Some((t, min));
            return;
        }
        let target = match &min {
            Some(m) if m.as_slice() < to => m.as_slice(),
            _ => to,
        };
        if target > s.key.as_slice() {
            s.key = target.to_vec();
        }
    }
}

impl Drop for FloorScan<'_> {
    fn drop(&mut self) {
        // An abandoned scan (error, early return) gives up its right.
        if let Some(token) = self.token {
            let mut s = self.floor.lock();
            if matches!(s.scan, Some((t, _)) if t == token) {
                s.scan = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory-only tier takes effect: what is in a memtable is read on
    /// the worker, what is only in a file (a table's SST, or a body's blob)
    /// sends the read to the blocking pool.
    #[test]
    fn a_memory_only_read_misses_what_is_only_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false).expect("open");
        let put = |t: Table, k: &[u8], v: &[u8]| {
            let mut b = WriteBatch::default();
            b.put_cf(store.cf(t).expect("cf"), k, v);
            store.write(b, false).expect("write");
        };
        let near = |t: Table, k: &[u8]| in_memory::attempt(|| store.get(t, k));
        let body = vec![b'x'; 8 << 10];
        put(Table::Envelopes, b"e1", b"envelope");
        put(Table::Bodies, b"b1", &body);
        assert_eq!(
            near(Table::Envelopes, b"e1").expect("in memory").expect("read"),
            Some(b"envelope".to_vec())
        );
        assert_eq!(near(Table::Bodies, b"b1").expect("in memory").expect("read"), Some(body.clone()));

        store.flush_all().expect("flush");
        assert!(near(Table::Envelopes, b"e1").is_none(), "only in an SST now");
        assert!(near(Table::Bodies, b"b1").is_none(), "only in a blob file now");
        assert!(in_memory::attempt(|| store.contains(Table::Envelopes, b"e1")).is_none());
        let scan = in_memory::attempt(|| store.first_key(Table::Envelopes, b"", None));
        assert!(scan.is_none(), "a scan over a file misses too");
        // A normal read reads the files, and leaves the SST's block cached.
        assert_eq!(store.get(Table::Bodies, b"b1").expect("read"), Some(body));
        assert_eq!(store.get(Table::Envelopes, b"e1").expect("read"), Some(b"envelope".to_vec()));
        assert_eq!(near(Table::Envelopes, b"e1").expect("cached").expect("read"), Some(b"envelope".to_vec()));
        // A key that is nowhere is known missing without a file read only
        // when the filters say so; either answer is right, never an error.
        if let Some(r) = near(Table::Envelopes, b"zz") {
            assert_eq!(r.expect("read"), None);
        }
    }

    /// A scan in memory never answers with a memtable's key while an
    /// earlier key sits in a file it could not read: the claim takes the
    /// earliest due entries, and `next_due` the earliest time.
    #[test]
    fn a_memory_only_scan_never_skips_an_earlier_key_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false).expect("open");
        let put = |k: &[u8]| {
            let mut b = WriteBatch::default();
            b.put_cf(store.cf(Table::Schedule).expect("cf"), k, b"");
            store.write(b, false).expect("write");
        };
        put(b"a-old");
        store.flush_all().expect("flush");
        put(b"b-new");
        let first = || in_memory::attempt(|| store.first_key(Table::Schedule, b"", None));
        assert!(first().is_none(), "the file's block is not cached: a miss, not the memtable's later key");
        let mut keys = Vec::new();
        let all = in_memory::attempt(|| {
            store.scan(Table::Schedule, b"", None, |k, _| {
                keys.push(k.to_vec());
                Ok(true)
            })
        });
        assert!(all.is_none(), "a whole scan misses too");
        // A normal read caches the file's block; then both sources answer
        // in memory, in key order.
        assert_eq!(store.first_key(Table::Schedule, b"", None).expect("read"), Some(b"a-old".to_vec()));
        assert_eq!(first().expect("cached").expect("read"), Some(b"a-old".to_vec()));
        keys.clear();
        in_memory::attempt(|| {
            store.scan(Table::Schedule, b"", None, |k, _| {
                keys.push(k.to_vec());
                Ok(true)
            })
        })
        .expect("cached")
        .expect("read");
        assert_eq!(keys, [b"a-old".to_vec(), b"b-new".to_vec()], "every key, in order");
    }

    #[test]
    fn floor_never_passes_a_key_inserted_during_a_scan() {
        let f = Floor::default();
        let scan = f.begin();
        assert_eq!(scan.start, b"");
        f.lower(b"k10"); // inserted after the scan's snapshot
        scan.raise(b"k50");
        assert_eq!(f.get(), b"k10");
        let scan = f.begin();
        scan.raise(b"k50");
        assert_eq!(f.get(), b"k50");
        f.lower(b"k20");
        assert_eq!(f.get(), b"k20");
    }

    #[test]
    fn only_one_scan_raises_and_abandoned_scans_release_it() {
        let f = Floor::default();
        let a = f.begin();
        let b = f.begin();
        b.raise(b"zz");
        assert_eq!(f.get(), b"");
        drop(a);
        f.begin().raise(b"m");
        assert_eq!(f.get(), b"m");
        f.begin().raise(b"a");
        assert_eq!(f.get(), b"m", "a floor never moves down by a raise");
    }
}
