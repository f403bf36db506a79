//! The scheduler's side of the queue: claiming due messages (schedule
//! entry → in-flight entry, in one batch, from the schedule's floor so a
//! claim never walks over what earlier claims deleted; or only those that
//! became due lately, for fairness between new mail and a backlog), putting back what a
//! cancelled claimer left, the next due time, and recording delivery
//! results (every recipient's new state and the next due time in one
//! batch).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::Queue;
use crate::codec::encode_due;
use crate::error::Error;
use crate::ids::Held;
use crate::in_memory;
use crate::inner::{Inner, Lookup, is_inflight};
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::{Change, Durability};
use crate::{Recorded, Result};

impl Inner {
    /// Claims up to `limit` due messages; the caller holds the claim lock.
    /// Returns them with the stripes still held, so a caller that went away
    /// can put them back before anyone else touches them.
    ///
    /// With `since`, only entries due at or after it are candidates (the
    /// scan starts there, or at the floor if that is higher) and the floor
    /// is left where it is: such a scan says nothing about what lies below
    /// its start.
    async fn claim(
        self: &Arc<Self>,
        now: UnixMillis,
        since: Option<UnixMillis>,
        limit: usize,
    ) -> Result<(Vec<QueuedMessage>, Held)> {
        let writer = self.writer()?;
        let scan = self.books.schedule_floor.begin();
        let mut start = scan.start.clone();
        if let Some(since) = since {
            let from = keys::schedule_key(since, QueueId::from_micros(0));
            if from.as_slice() > start.as_slice() {
                start = from.to_vec();
            }
        }
        let upper = keys::schedule_upper(now);
        // 1. Candidates: the first `limit` entries due by `now`, from the
        //    floor (entries below it are known deleted; never the whole
        //    schedule).
        // How many are due is not known before the scan; mostly few. A scan
        // from an old due time (a backlog) reads from files; one from the
        // start (no floor yet) may well not.
        let recent = start.get(..8).and_then(|d| d.try_into().ok()).map(u64::from_be_bytes);
        let scan_keys = if recent.is_none_or(|due| in_memory::fresh_due(due, now)) { 1 } else { usize::MAX };
        let candidates = self
            .read_near(scan_keys, move |inner| {
                let mut out = Vec::with_capacity(limit.min(4096));
                inner.store.scan(Table::Schedule, &start, upper.as_ref().map(|u| &u[..]), |k, _| {
                    if let Some((due, id)) = keys::parse_schedule_key(k) {
                        out.push((k.to_vec(), due, id));
                    } else {
                        tracing::error!("schedule: ignoring malformed key {k:?}");
                    }
                    Ok(out.len() < limit)
                })?;
                Ok(out)
            })
            .await?;
        let full = candidates.len() >= limit;
        let last_key = candidates.last().map(|c| c.0.clone());
        // 2. Lock them, then re-check each against the current state: a
        //    hold, delete, requeue or second claim may have got there first.
        let held = self.locks.lock(candidates.iter().map(|c| c.2)).await;
        // Two reads per candidate: its schedule entry and its envelope.
        let newest = self.ids.last();
        let fresh = candidates.iter().all(|c| in_memory::fresh_id(c.2, newest));
        let check_keys = if fresh { 2 * candidates.len() } else { usize::MAX };
        let (change, claimed, stale) = self
            .read_near(check_keys, move |inner| {
                let mut change = Change::new(Durability::Buffered);
                let mut claimed = Vec::with_capacity(candidates.len());
                let mut stale = Vec::new();
                for (key, due, id) in &candidates {
                    let (due, id) = (*due, *id);
                    if !inner.store.contains(Table::Schedule, key)? {
                        continue; // moved by someone else meanwhile
                    }
                    match inner.lookup(id)? {
                        Lookup::Found(rec) if !rec.envelope.held && rec.due == due => {
                            // Claimed: the schedule entry becomes an
                            // in-flight entry. Not synced: if a crash loses
                            // this, the entry is simply still scheduled.
                            change.delete(Table::Schedule, key.clone());
                            change.put(Table::Inflight, keys::id_key(id).to_vec(), encode_due(due));
                            claimed.push(QueuedMessage { id, envelope: rec.envelope, due });
                        }
                        Lookup::Found(_) | Lookup::Missing => {
                            stale.push((id, due));
                            change.delete(Table::Schedule, key.clone());
                        }
                        Lookup::Corrupt(raw, e) => {
                            change.delete(Table::Schedule, key.clone());
                            let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                        }
                    }
                }
                Ok((change, claimed, stale))
            })
            .await?;
        // Logged here, once: the read above may run twice.
        for (id, due) in stale {
            tracing::warn!("{id}: removing stale schedule entry (due {due})");
        }
        if !change.is_empty() {
            writer.submit(change).await?;
        }
        // 3. Everything below where this scan stopped is gone now (when it
        //    started at the floor).
        if since.is_some() {
            drop(scan);
            return Ok((claimed, held));
        }
        match (full, last_key, upper) {
            (true, Some(k), _) => scan.raise(&keys::successor(&k)),
            (false, _, Some(u)) => scan.raise(&u),
            (false, _, None) => scan.raise(&[0xff; keys::SCHEDULE_KEY_LEN + 1]),
            (true, None, _) => {}
        }
        Ok((claimed, held))
    }

    /// Puts claimed messages whose claimer went away back in the schedule
    /// at the due time they were claimed at. The caller holds their stripes.
    async fn unclaim(self: &Arc<Self>, msgs: Vec<QueuedMessage>) -> Result<()> {
        let writer = self.writer()?;
        let change = self
            .read(move |inner| {
                let mut change = Change::new(Durability::Buffered);
                for m in msgs {
                    let Lookup::Found(rec) = inner.lookup(m.id)? else { continue };
                    if inner.is_inflight(m.id)? {
                        change.delete(Table::Inflight, keys::id_key(m.id).to_vec());
                        if !rec.envelope.held {
                            change.put(
                                Table::Schedule,
                                keys::schedule_key(rec.due, m.id).to_vec(),
                                Vec::new(),
                            );
                        }
                    }
                }
                Ok(change)
            })
            .await?;
        writer.submit(change).await
    }
}

impl Queue {
    /// Up to `limit` messages whose due time is at or before `now`, oldest
    /// due first. Each is moved from the schedule to the in-flight set in one
    /// batch, so a second call does not return it again; its result must be
    /// recorded with [`Queue::record`] (or it is due again after a restart).
    ///
    /// Reads at most `limit` schedule entries past the floor (never the
    /// whole queue). A corrupt envelope met on the way is quarantined and
    /// skipped. Cancel-safe: if the caller goes away before the answer, the
    /// claimed messages are put back.
    pub async fn claim_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.claim_between(None, now, limit).await
    }

    /// Like [`Queue::claim_due`], among the messages due between `since`
    /// and `now` only (oldest due first among them): the mail that became
    /// due lately, new mail above all. The scheduler claims part of each
    /// batch this way, so new mail is not queued behind a backlog that was
    /// due long before it (as Postfix's qmgr takes turns between its
    /// incoming and deferred queues). Costs a scan of `limit` entries from
    /// `since`, plus what earlier claims deleted in that range.
    pub async fn claim_recent(
        &self,
        since: UnixMillis,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>> {
        self.claim_between(Some(since), now, limit).await
    }

    async fn claim_between(
        &self,
        since: Option<UnixMillis>,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>> {
        self.inner.writer()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let one_at_a_time = Arc::clone(&inner.claim).lock_owned().await;
            let result = inner.claim(now, since, limit).await;
            // Let go of the queue before answering, so a caller that then
            // closes and drops it can reopen the directory at once.
            let weak = Arc::downgrade(&inner);
            drop(inner);
            match result {
                Ok((msgs, held)) => {
                    if let Err(Ok(msgs)) = tx.send(Ok(msgs))
                        && !msgs.is_empty()
                        && let Some(inner) = weak.upgrade()
                    {
                        tracing::debug!("claim cancelled: returning {} messages to the schedule", msgs.len());
                        if let Err(e) = inner.unclaim(msgs).await {
                            tracing::error!("cannot return claimed messages to the schedule: {e}");
                        }
                    }
                    drop(held);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            drop(one_at_a_time);
        });
        rx.await.map_err(|_| Error::Storage("queue claim task failed".into()))?
    }

    /// The earliest due time in the schedule, if any (held and in-flight
    /// messages are not in the schedule).
    pub async fn next_due(&self) -> Result<Option<UnixMillis>> {
        self.inner
            .read_near(1, |inner| {
                let scan = inner.books.schedule_floor.begin();
                let first = inner.store.first_key(Table::Schedule, &scan.start, None)?;
                match first {
                    Some(k) => {
                        scan.raise(&k);
                        Ok(keys::parse_schedule_key(&k).map(|(due, _)| due))
                    }
                    None => Ok(None),
                }
            })
            .await
    }

    /// Records the outcome of one delivery attempt for some of a claimed
    /// message's recipients (by index into `envelope.recipients`) and, if
    /// any recipient is still not final, schedules it at `next_due`. One
    /// synced batch. (Written unsynced, it spared an fsync per relayed
    /// message, but in a drain with no acceptance to share fsyncs with, the
    /// results were written one small batch each instead of many per
    /// fsync, and the drain lost 8 % or more: benches/README.md.) A message
    /// whose recipients are all final is removed, body included.
    ///
    /// A held message is not scheduled (its release will). A message deleted
    /// meanwhile gives [`Error::NotFound`] and stays deleted. Indexes beyond
    /// the recipient list are ignored (and logged).
    pub async fn record(
        &self,
        id: QueueId,
        results: &[(usize, Outcome)],
        next_due: UnixMillis,
        now: UnixMillis,
    ) -> Result<Recorded> {
        self.inner.writer()?;
        let results = results.to_vec();
        // On the writer thread: the envelope was read by the claim moments
        // ago (hot), and this is once per delivered message.
        self.inner
            .mutate_existing_on_writer(id, move |store, rec, change| {
                let inflight = is_inflight(store, id)?;
                let mut after = rec.clone();
                for (idx, outcome) in &results {
                    if !after.envelope.apply(*idx, outcome, now) {
                        tracing::warn!("{id}: result for recipient #{idx} ignored: no such recipient");
                    }
                }
                if after.envelope.is_done() {
                    Inner::remove(change, id, &rec, inflight);
                    tracing::info!(target: "qmgr", "{id}: removed");
                    return Ok(Ok(Recorded::Removed));
                }
                after.due = next_due;
                Inner::rewrite(change, id, &rec, &after, inflight, false);
                Ok(Ok(Recorded::Scheduled(next_due)))
            })
            .await
    }

    /// Sets flags on a claimed or queued message's envelope (delay warning
    /// sent, bounce notified) without changing its schedule. The body size
    /// cannot be changed; a change of `held` moves the schedule entry as
    /// hold/release would.
    pub async fn update_envelope(
        &self,
        id: QueueId,
        f: impl FnOnce(&mut Envelope) + Send + 'static,
    ) -> Result<()> {
        self.inner.writer()?;
        self.inner
            .mutate_existing(id, move |inner, rec, change| {
                let mut after = rec.clone();
                f(&mut after.envelope);
                after.envelope.size = rec.envelope.size;
                if after != rec {
                    Inner::rewrite(change, id, &rec, &after, inner.is_inflight(id)?, true);
                }
                Ok(Ok(()))
            })
            .await
    }
}
