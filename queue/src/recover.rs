//! Opening a queue, and putting it right after a crash.
//!
//! What a crash can leave behind, and what open does about it:
//! - **staged drafts** (chunks written, commit never happened): their
//!   `drafts` marker is still there; the chunks and the marker are deleted.
//!   A committed message never has a marker (the commit deletes it in the
//!   same batch), so nothing committed is touched.
//! - **claimed messages** (`inflight` entries): their delivery may or may
//!   not have happened; they are made due again, spread evenly over
//!   `recovery_spread` from now. A duplicate delivery is possible, a lost
//!   message is not.
//! - **counters**: they are written in the same batches as what they count,
//!   so they are read as they are; only when the record is missing from a
//!   queue that holds messages, or undecodable, are they rebuilt from the
//!   envelopes.
//!
//! Open reads the drafts and in-flight tables and the envelopes of in-flight
//! messages; it never reads message bodies, and never scans the queue unless
//! the counters must be rebuilt. Writes here go straight to the database:
//! the writer thread starts after recovery.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::Options;
use crate::codec::{Counters, decode_counters, decode_due, decode_record, encode_counters, encode_record};
use crate::error::Error;
use crate::inner::quarantine_change;
use crate::keys::{self, COUNTERS_KEY, Table};
use crate::model::{QueueId, UnixMillis};
use crate::store::Store;
use crate::writer::{Bookkeeping, Change, Delta, Durability, write_group};

/// Changes written per batch during recovery: keeps each batch bounded.
const PAGE: usize = 1024;

/// An opened, recovered queue database.
pub(crate) struct Opened {
    pub store: Arc<Store>,
    pub books: Arc<Bookkeeping>,
    /// The largest queue ID the queue has stored: the ID generator's seed.
    pub last_id: QueueId,
}

/// Opens `dir` for writing and recovers it (see the module docs).
pub(crate) fn open(dir: &Path, opts: &Options, now: UnixMillis) -> Result<Opened, Error> {
    let store = Arc::new(Store::open(dir, false)?);
    let books = Arc::new(Bookkeeping::new(Counters::default()));
    load_counters(&store, &books)?;

    // Seed the ID generator before drafts are deleted: their IDs were
    // issued too (a draft's ID appeared in the `client=` log line).
    let mut last_id = books.counters().max_id;
    for t in [Table::Envelopes, Table::Drafts] {
        if let Some(id) = store.last_key(t)?.as_deref().and_then(keys::parse_id_key) {
            last_id = last_id.max(id.as_micros());
        }
    }

    let drafts = remove_drafts(&store, &books)?;
    let inflight = requeue_inflight(&store, &books, opts.recovery_spread, now)?;
    let c = books.counters();
    tracing::info!(
        "queue {}: opened with {} messages ({} bytes, {} held); {} in-flight messages due again within {:?}; \
         {} unfinished messages removed",
        dir.display(),
        c.messages,
        c.bytes,
        c.held,
        inflight,
        opts.recovery_spread,
        drafts,
    );
    Ok(Opened { store, books, last_id: QueueId::from_micros(last_id) })
}

/// Opens `dir` read-only: nothing is repaired or written; counters that
/// would need rebuilding are rebuilt in memory only.
pub(crate) fn open_read_only(dir: &Path) -> Result<Opened, Error> {
    let store = Arc::new(Store::open(dir, true)?);
    let books = Arc::new(Bookkeeping::new(Counters::default()));
    load_counters(&store, &books)?;
    let last_id = QueueId::from_micros(books.counters().max_id);
    Ok(Opened { store, books, last_id })
}

/// Loads the counters record into `shared`, rebuilding it when missing from
/// a non-empty queue or undecodable.
fn load_counters(store: &Store, books: &Bookkeeping) -> Result<(), Error> {
    let why = match store.get(Table::Meta, COUNTERS_KEY)? {
        Some(raw) => match decode_counters(&raw) {
            Ok(c) => {
                *books.counters.lock().unwrap_or_else(|p| p.into_inner()) = c;
                return Ok(());
            }
            Err(e) => {
                tracing::error!(
                    "queue counters record is corrupt ({e}): quarantined, rebuilding from envelopes"
                );
                if !store.is_read_only() {
                    let change = quarantine_change(Table::Meta, COUNTERS_KEY, &raw, &e.to_string());
                    write_group(store, books, [&change])?;
                }
                "corrupt"
            }
        },
        None => {
            if store.first_key(Table::Envelopes, &[], None)?.is_none() {
                return Ok(()); // a new (or empty) queue: all zero
            }
            "missing"
        }
    };
    tracing::warn!("queue counters record {why}: rebuilding from envelopes (bodies are not read)");
    let mut totals = Delta::default();
    let mut corrupt = Vec::new();
    store.scan(Table::Envelopes, &[], None, |k, v| {
        match decode_record(v) {
            Ok(r) => {
                totals.add(Delta::footprint(&r.envelope));
                if let Some(id) = keys::parse_id_key(k) {
                    totals.max_id = totals.max_id.max(id.as_micros());
                }
            }
            Err(e) => corrupt.push((k.to_vec(), v.to_vec(), e.to_string())),
        }
        Ok(true)
    })?;
    if store.is_read_only() {
        let mut c = books.counters();
        totals.quarantined += corrupt.len() as i64;
        totals.apply(&mut c);
        *books.counters.lock().unwrap_or_else(|p| p.into_inner()) = c;
        return Ok(());
    }
    // Written as a delta from the (zero, or quarantine-only) counters now in
    // `shared`; `write_group` then puts the rebuilt record in the batch.
    let mut change = Change::new(Durability::Synced);
    change.delta = totals;
    for (k, raw, reason) in &corrupt {
        tracing::error!("{}: {reason}", describe(k));
        change.extend(quarantine_change(Table::Envelopes, k, raw, reason));
    }
    // An empty queue whose record was lost rebuilds to zero, a zero delta,
    // which `write_group` would not write: put the record explicitly (the
    // batch's own counters put, when there is one, comes later and wins).
    change.put(Table::Meta, COUNTERS_KEY.to_vec(), encode_counters(&books.counters()));
    write_group(store, books, [&change])?;
    Ok(())
}

fn describe(key: &[u8]) -> String {
    keys::parse_id_key(key).map_or_else(|| format!("{key:?}"), |id| id.to_string())
}

/// Deletes every staged draft (chunks and marker). Returns how many.
fn remove_drafts(store: &Store, books: &Bookkeeping) -> Result<usize, Error> {
    let mut total = 0;
    loop {
        let ids = store.keys_from(Table::Drafts, &[], PAGE)?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut change = Change::new(Durability::Synced);
        for k in &ids {
            if let Some(id) = keys::parse_id_key(k) {
                // The chunk count of a draft is not recorded anywhere, and
                // drafts are rare: one range delete each.
                let (from, to) = keys::chunk_range(id);
                change.delete_range(Table::Bodies, from, to);
                tracing::info!("{id}: removed unfinished message left by a crash");
            }
            change.delete(Table::Drafts, k.clone());
        }
        write_group(store, books, [&change])?;
        total += ids.len();
    }
}

/// Makes every in-flight message due again, spread evenly over `spread`
/// from `now`. Returns how many.
fn requeue_inflight(
    store: &Store,
    books: &Bookkeeping,
    spread: Duration,
    now: UnixMillis,
) -> Result<usize, Error> {
    let mut ids = Vec::new();
    store.scan(Table::Inflight, &[], None, |k, v| {
        // The claimed-at due time is only reported: the message is made due
        // again whatever it was.
        match decode_due(v) {
            Ok(due) => tracing::debug!("{}: was in flight (claimed when due at {due})", describe(k)),
            Err(e) => tracing::warn!("{}: unreadable in-flight entry ({e}), made due again", describe(k)),
        }
        ids.push(k.to_vec());
        Ok(true)
    })?;
    let n = ids.len() as u128;
    let spread_ms = spread.as_millis();
    for (page_no, page) in ids.chunks(PAGE).enumerate() {
        let mut change = Change::new(Durability::Synced);
        for (i, k) in page.iter().enumerate() {
            change.delete(Table::Inflight, k.clone());
            let Some(id) = keys::parse_id_key(k) else { continue };
            let Some(raw) = store.get(Table::Envelopes, k)? else {
                // A stray entry (its message is gone): deleting it is all.
                continue;
            };
            let mut rec = match decode_record(&raw) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("{id}: corrupt envelope quarantined: {e}");
                    change.extend(quarantine_change(Table::Envelopes, k, &raw, &e.to_string()));
                    // It was counted as a message; it no longer is one.
                    change.delta.messages -= 1;
                    continue;
                }
            };
            let nth = (page_no * PAGE + i) as u128;
            let offset = spread_ms.checked_mul(nth).map_or(0, |v| v / n.max(1));
            rec.due = now.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX));
            if !rec.envelope.held {
                change.put(Table::Schedule, keys::schedule_key(rec.due, id).to_vec(), Vec::new());
            }
            change.put(Table::Envelopes, k.clone(), encode_record(&rec));
        }
        write_group(store, books, [&change])?;
    }
    Ok(ids.len())
}
