//! Test hooks that bypass the queue's checks (a raw envelope, a table's
//! size, a missing body chunk, failing commits), to exercise corruption handling and
//! recovery. Hidden from the documentation; never called by sluice.

use crate::Queue;
use crate::Result;
use crate::error::Error;
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::{Change, Delta, Durability};

impl Queue {
    /// Test hook: stores `raw` as the envelope record of `id` (scheduled at
    /// `due` when given) without any checking, to exercise corruption
    /// handling. Not for production use.
    #[doc(hidden)]
    pub async fn debug_put_raw_envelope(
        &self,
        id: QueueId,
        raw: &[u8],
        due: Option<UnixMillis>,
    ) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Synced);
        change.put(Table::Envelopes, keys::id_key(id).to_vec(), raw.to_vec());
        if let Some(due) = due {
            change.put(Table::Schedule, keys::schedule_key(due, id).to_vec(), Vec::new());
        }
        change.delta = Delta { messages: 1, max_id: id.as_micros(), ..Delta::default() };
        writer.submit(change).await
    }

    /// Test hook: the number of keys in a table (`bodies`, `envelopes`,
    /// `schedule`, `inflight`, `drafts`, `meta`, `quarantine`). Scans the
    /// whole table. Not for production use.
    #[doc(hidden)]
    pub async fn debug_table_len(&self, table: &str) -> Result<usize> {
        let Some(&t) = Table::ALL.iter().find(|t| t.name() == table) else {
            return Err(Error::Storage(format!("no table {table}")));
        };
        self.inner
            .read(move |inner| {
                let mut n = 0;
                inner.store.scan(t, &[], None, |_, _| {
                    n += 1;
                    Ok(true)
                })?;
                Ok(n)
            })
            .await
    }

    /// Test hook: deletes body chunk `n` of `id`, to exercise the detection
    /// of a damaged body. Not for production use.
    #[doc(hidden)]
    pub async fn debug_delete_chunk(&self, id: QueueId, n: u32) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Synced);
        change.delete(Table::Bodies, keys::chunk_key(id, n).to_vec());
        writer.submit(change).await
    }

    /// Test hook: every write fails with `why` (a stand-in for RocksDB
    /// refusing writes after a background error) until called with `None`.
    /// Not for production use.
    #[doc(hidden)]
    pub fn debug_fail_writes(&self, why: Option<&str>) {
        self.inner.books.inject_failure(why.map(str::to_owned));
    }

    /// Test hook: while `on`, committing a new message fails with a storage
    /// error (as a full or failing disk would make it fail), to exercise
    /// what callers do then. Not for production use.
    #[doc(hidden)]
    pub fn debug_fail_commits(&self, on: bool) {
        self.inner.fail_commits.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}
