//! The address verification cache (`reject_unverified_recipient`): what a
//! recipient's mailbox server answered to a probe, kept under
//! `meta`'s `verify/<address>` keys so a restart does not probe every
//! address again (Postfix keeps its verify(8) cache on disk too).
//!
//! Owns storing, reading and sweeping the records; how long an answer is
//! believed is the caller's policy, passed in as a function (this crate
//! knows no clock and no `address_verify_*` parameter). Every update is
//! one batch. The records are written `Buffered`: an answer lost to a
//! power cut is only probed again, so it does not cost an fsync.

use crate::Queue;
use crate::Result;
use crate::codec::{decode_verify, encode_verify};
use crate::keys::{self, Table};
use crate::model::VerifyRecord;
use crate::writer::{Change, Durability};

/// What a sweep of the verification cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifySweep {
    /// Records kept.
    pub kept: usize,
    /// Records removed: expired, undecodable, or the oldest past the limit.
    pub removed: usize,
}

impl Queue {
    /// The stored answer for `address` (the caller chooses its case
    /// folding). An undecodable record reads as none: it is only a cache,
    /// and the next answer overwrites it.
    pub async fn verify_get(&self, address: &str) -> Result<Option<VerifyRecord>> {
        let key = keys::verify_key(address);
        self.inner
            .read(move |inner| {
                Ok(match inner.store.get(Table::Meta, &key)? {
                    None => None,
                    Some(raw) => match decode_verify(&raw) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::warn!("verify cache record is corrupt, ignored: {e}");
                            None
                        }
                    },
                })
            })
            .await
    }

    /// Stores the answer for `address` (one batch).
    pub async fn verify_put(&self, address: &str, record: &VerifyRecord) -> Result<()> {
        let writer = self.inner.writer()?;
        let mut change = Change::new(Durability::Buffered);
        change.put(Table::Meta, keys::verify_key(address), encode_verify(record));
        writer.submit(change).await
    }

    /// Removes every record `keep` rejects (expired) or that cannot be
    /// decoded, then the oldest records past `limit`, in one batch; this
    /// is what bounds the cache's size.
    pub async fn verify_sweep(
        &self,
        keep: impl Fn(&VerifyRecord) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<VerifySweep> {
        let writer = self.inner.writer()?;
        let (mut kept, mut dead) = self
            .inner
            .read(move |inner| {
                let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
                let mut dead: Vec<Vec<u8>> = Vec::new();
                inner.store.scan(Table::Meta, keys::VERIFY_PREFIX, Some(keys::VERIFY_END), |k, v| {
                    match decode_verify(v) {
                        Ok(r) if keep(&r) => kept.push((r.probed, k.to_vec())),
                        _ => dead.push(k.to_vec()),
                    }
                    Ok(true)
                })?;
                Ok((kept, dead))
            })
            .await?;
        if kept.len() > limit {
            // Oldest answers first: they are the nearest to expiring.
            kept.sort_unstable();
            let excess = kept.len() - limit;
            dead.extend(kept.drain(..excess).map(|(_, k)| k));
        }
        let sweep = VerifySweep { kept: kept.len(), removed: dead.len() };
        if !dead.is_empty() {
            let mut change = Change::new(Durability::Buffered);
            for k in dead {
                change.delete(Table::Meta, k);
            }
            writer.submit(change).await?;
        }
        Ok(sweep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(deliverable: bool, probed: u64) -> VerifyRecord {
        VerifyRecord { deliverable, probed, text: format!("said {probed}") }
    }

    #[tokio::test]
    async fn answers_survive_a_reopen_and_sweeps_bound_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(dir.path(), &Default::default(), 1).expect("open");
        assert_eq!(q.verify_get("a@x").await.expect("get"), None);
        for (i, a) in ["a@x", "b@x", "c@x", "d@x"].iter().enumerate() {
            q.verify_put(a, &record(i % 2 == 0, i as u64 + 10)).await.expect("put");
        }
        // A backend record shares the column family; a sweep never sees it.
        q.put_backend("lmtp:x", &Default::default()).await.expect("backend");
        q.close().await.expect("close");
        drop(q);

        let q = Queue::open(dir.path(), &Default::default(), 2).expect("reopen");
        assert_eq!(q.verify_get("b@x").await.expect("get"), Some(record(false, 11)));
        // b@x expires; of the other three the oldest goes past the limit.
        let sweep = q.verify_sweep(|r| r.probed != 11, 2).await.expect("sweep");
        assert_eq!(sweep, VerifySweep { kept: 2, removed: 2 });
        assert_eq!(q.verify_get("a@x").await.expect("get"), None);
        assert_eq!(q.verify_get("b@x").await.expect("get"), None);
        assert_eq!(q.verify_get("d@x").await.expect("get"), Some(record(false, 13)));
        assert_eq!(q.backends().await.expect("backends").len(), 1);
    }
}
