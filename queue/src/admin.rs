//! The administrator's commands: hold, release, delete, requeue, list and
//! the quarantine, each working through the queue in pages of
//! [`ADMIN_PAGE`] messages (one batch per page), so one command never
//! builds an unbounded batch or holds many locks.

use crate::Queue;
use crate::Result;
use crate::codec::{Record, decode_quarantine, decode_record};
use crate::inner::{Inner, Lookup};
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::{Change, Durability};

/// Admin operations touching many messages work through them in pages of
/// this many, each page one batch (so one admin command never builds an
/// unbounded batch or holds many locks).
const ADMIN_PAGE: usize = 512;

impl Queue {
    /// Applies `f` to each existing message among `ids`, page by page, one
    /// synced batch per page. `f` adds its writes to the change and says
    /// whether it changed the message; returns how many it changed.
    async fn for_each_message(
        &self,
        ids: &[QueueId],
        what: &'static str,
        f: impl Fn(&mut Change, QueueId, &Record, bool) -> bool + Clone + Send + 'static,
    ) -> Result<usize> {
        self.inner.writer()?;
        let mut total = 0;
        for page in ids.chunks(ADMIN_PAGE) {
            let mut page = page.to_vec();
            page.sort_unstable();
            page.dedup();
            let f = f.clone();
            total += self
                .inner
                .mutate(page.clone(), move |inner| {
                    let mut change = Change::new(Durability::Synced);
                    let mut n = 0;
                    for id in page {
                        match inner.lookup(id)? {
                            Lookup::Missing => {}
                            Lookup::Corrupt(raw, e) => {
                                let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                            }
                            Lookup::Found(rec) => {
                                if f(&mut change, id, &rec, inner.is_inflight(id)?) {
                                    // Only the administrator holds and deletes.
                                    tracing::info!(target: "postsuper", "{id}: {what}");
                                    n += 1;
                                }
                            }
                        }
                    }
                    Ok((change, Ok(n)))
                })
                .await?;
        }
        Ok(total)
    }

    /// Holds messages (`postsuper -h`): they leave the schedule until
    /// released. Returns how many were changed. An in-flight message stays
    /// in flight; when its result is recorded it is not scheduled.
    pub async fn hold(&self, ids: &[QueueId]) -> Result<usize> {
        self.for_each_message(ids, "placed on hold", |change, id, rec, inflight| {
            if rec.envelope.held {
                return false;
            }
            let mut after = rec.clone();
            after.envelope.held = true;
            Inner::rewrite(change, id, rec, &after, inflight, true);
            true
        })
        .await
    }

    /// Releases held messages (`postsuper -H`), due at `now`.
    pub async fn release(&self, ids: &[QueueId], now: UnixMillis) -> Result<usize> {
        let total = self
            .for_each_message(ids, "released from hold", move |change, id, rec, inflight| {
                if !rec.envelope.held {
                    return false;
                }
                let mut after = rec.clone();
                after.envelope.held = false;
                after.due = now;
                Inner::rewrite(change, id, rec, &after, inflight, true);
                true
            })
            .await?;
        if total > 0 {
            self.inner.wake();
        }
        Ok(total)
    }

    /// Deletes messages (`postsuper -d`), body included. Safe while a
    /// message is in flight: its later [`Queue::record`] finds it gone.
    pub async fn delete(&self, ids: &[QueueId]) -> Result<usize> {
        self.for_each_message(ids, "removed", |change, id, rec, inflight| {
            Inner::remove(change, id, rec, inflight);
            true
        })
        .await
    }

    /// Makes queued (not held) messages due at `now` (`postqueue -f`,
    /// `postsuper -r`); `None` means all. Messages already due, held or in
    /// flight are left as they are and not counted.
    pub async fn requeue(&self, ids: Option<&[QueueId]>, now: UnixMillis) -> Result<usize> {
        self.inner.writer()?;
        let total = match ids {
            Some(ids) => {
                let mut total = 0;
                for page in ids.chunks(ADMIN_PAGE) {
                    let page = page.to_vec();
                    total += self.requeue_page(page.into_iter().map(|id| (None, id)).collect(), now).await?;
                }
                total
            }
            None => {
                // Walk the schedule past `now`, page by page. Moved entries
                // land at `now`, behind the cursor, so none is seen twice.
                let Some(mut cursor) = keys::schedule_upper(now).map(|u| u.to_vec()) else { return Ok(0) };
                let mut total = 0;
                loop {
                    let from = cursor.clone();
                    let page = self
                        .inner
                        .read(move |inner| {
                            let mut out = Vec::new();
                            inner.store.scan(Table::Schedule, &from, None, |k, _| {
                                if let Some((due, id)) = keys::parse_schedule_key(k) {
                                    out.push((Some(due), id));
                                }
                                Ok(out.len() < ADMIN_PAGE)
                            })?;
                            Ok(out)
                        })
                        .await?;
                    let Some(&(Some(due), id)) = page.last() else { break };
                    cursor = keys::successor(&keys::schedule_key(due, id));
                    total += self.requeue_page(page, now).await?;
                }
                total
            }
        };
        if total > 0 {
            self.inner.wake();
        }
        Ok(total)
    }

    /// Requeues one page: each `(expected due, id)` is moved to `now` if it
    /// is still scheduled (at that due time, when one is given) after `now`.
    async fn requeue_page(&self, page: Vec<(Option<UnixMillis>, QueueId)>, now: UnixMillis) -> Result<usize> {
        let ids: Vec<QueueId> = page.iter().map(|p| p.1).collect();
        self.inner
            .mutate(ids, move |inner| {
                let mut change = Change::new(Durability::Synced);
                let mut n = 0;
                let mut seen = std::collections::HashSet::new();
                for (expect, id) in page {
                    if !seen.insert(id) {
                        continue;
                    }
                    match inner.lookup(id)? {
                        Lookup::Found(rec)
                            if !rec.envelope.held
                                && rec.due > now
                                && expect.is_none_or(|d| d == rec.due)
                                && !inner.is_inflight(id)? =>
                        {
                            let mut after = rec.clone();
                            after.due = now;
                            Inner::rewrite(&mut change, id, &rec, &after, false, false);
                            tracing::info!(target: "qmgr", "{id}: requeued");
                            n += 1;
                        }
                        Lookup::Corrupt(raw, e) => {
                            let _ = Inner::quarantine_envelope(id, &raw, &e.to_string(), &mut change);
                        }
                        _ => {}
                    }
                }
                Ok((change, Ok(n)))
            })
            .await
    }

    /// Messages matching `filter`, in queue-ID order, with their due time.
    /// Corrupt envelopes met on the way are skipped (logged) and
    /// quarantined.
    pub async fn list(&self, filter: Filter) -> Result<Vec<(QueueId, Envelope, Option<UnixMillis>)>> {
        let (found, corrupt) = self
            .inner
            .read(move |inner| {
                let start = match filter.after {
                    Some(id) => keys::successor(&keys::id_key(id)),
                    None => inner.books.envelope_floor.get(),
                };
                let limit = filter.limit.unwrap_or(usize::MAX);
                let domain =
                    filter.rcpt_domain.as_deref().map(|d| d.trim_start_matches('@').to_ascii_lowercase());
                let mut found = Vec::new();
                let mut corrupt = Vec::new();
                if limit == 0 {
                    return Ok((found, corrupt));
                }
                inner.store.scan(Table::Envelopes, &start, None, |k, v| {
                    let Some(id) = keys::parse_id_key(k) else { return Ok(true) };
                    let rec = match decode_record(v) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("{id}: corrupt envelope skipped: {e}");
                            corrupt.push(id);
                            return Ok(true);
                        }
                    };
                    let e = &rec.envelope;
                    if filter.held.is_some_and(|h| h != e.held)
                        || (filter.deferred_only
                            && !e.recipients.iter().any(|r| matches!(r.state, RcptState::Deferred { .. })))
                        || domain.as_deref().is_some_and(|d| {
                            !e.recipients.iter().any(|r| {
                                r.address.rsplit_once('@').is_some_and(|(_, dom)| dom.eq_ignore_ascii_case(d))
                            })
                        })
                    {
                        return Ok(true);
                    }
                    let due = (!e.held && !inner.is_inflight(id)?).then_some(rec.due);
                    found.push((id, rec.envelope, due));
                    Ok(found.len() < limit)
                })?;
                Ok((found, corrupt))
            })
            .await?;
        self.inner.quarantine_ids(corrupt).await?;
        Ok(found)
    }

    /// Records moved to the quarantine, at most `limit` of them.
    pub async fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>> {
        self.inner
            .read(move |inner| {
                let mut out = Vec::new();
                if limit == 0 {
                    return Ok(out);
                }
                inner.store.scan(Table::Quarantine, &[], None, |k, v| {
                    let (table, key) = keys::parse_quarantine_key(k).unwrap_or(("?", k));
                    let key = match (table, keys::parse_id_key(key)) {
                        ("envelopes" | "inflight" | "drafts", Some(id)) => id.to_string(),
                        _ => String::from_utf8_lossy(key).into_owned(),
                    };
                    let (reason, size) = match decode_quarantine(v) {
                        Ok((reason, raw)) => (reason, raw.len()),
                        Err(e) => (format!("unreadable quarantine record: {e}"), v.len()),
                    };
                    out.push(Quarantined { table: table.to_owned(), key, reason, size });
                    Ok(out.len() < limit)
                })?;
                Ok(out)
            })
            .await
    }
}
