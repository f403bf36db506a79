//! The gates' records: each backend's breaker position and pause, stored
//! so they survive a restart, read back at start (a corrupt record is
//! quarantined and left out), and deleted when there is nothing left to
//! remember (delivery decides when: see `src/delivery/context.rs`).

use crate::Queue;
use crate::Result;
use crate::codec::{decode_backend, encode_backend};
use crate::inner::quarantine_change;
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::{Change, Durability};

impl Queue {
    /// Stores a backend's breaker/pause record (one synced batch).
    pub async fn put_backend(&self, name: &str, record: &BackendRecord) -> Result<()> {
        let writer = self.inner.writer()?;
        let _g = self.inner.backends.lock().await;
        let mut change = Change::new(Durability::Synced);
        change.put(Table::Meta, keys::backend_key(name), encode_backend(record));
        writer.submit(change).await
    }

    /// Forgets a backend's record (one synced batch): its breaker closed
    /// and it is not paused, or it has been idle long enough that what it
    /// learned no longer matters. Forgetting a record that is not there is
    /// fine.
    pub async fn delete_backend(&self, name: &str) -> Result<()> {
        let writer = self.inner.writer()?;
        let _g = self.inner.backends.lock().await;
        let mut change = Change::new(Durability::Synced);
        change.delete(Table::Meta, keys::backend_key(name));
        writer.submit(change).await
    }

    /// All stored backend records. A corrupt one is quarantined and left out.
    pub async fn backends(&self) -> Result<Vec<(String, BackendRecord)>> {
        let _g = self.inner.backends.lock().await;
        let (found, corrupt) = self
            .inner
            .read(|inner| {
                let mut found = Vec::new();
                let mut corrupt = Vec::new();
                inner.store.scan(Table::Meta, keys::BACKEND_PREFIX, Some(keys::BACKEND_END), |k, v| {
                    let name = keys::parse_backend_key(k).map(str::to_owned);
                    match (name, decode_backend(v)) {
                        (Some(name), Ok(rec)) => found.push((name, rec)),
                        (name, Err(e)) => {
                            tracing::error!("backend record {name:?} is corrupt: {e}");
                            corrupt.push(quarantine_change(Table::Meta, k, v, &e.to_string()));
                        }
                        (None, Ok(_)) => tracing::error!("backend record with a non-UTF-8 name ignored"),
                    }
                    Ok(true)
                })?;
                Ok((found, corrupt))
            })
            .await?;
        if let Some(w) = &self.inner.writer {
            for change in corrupt {
                w.submit(change).await?;
            }
        }
        Ok(found)
    }
}
