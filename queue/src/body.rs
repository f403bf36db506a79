//! Reading a message body chunk by chunk ([`BodyReader`]): delivery
//! streams a body from the queue to a backend, and a bounce reads only the
//! part of the original it returns, so neither ever holds a whole message
//! in memory however large it is (`message_size_limit = 0` allows any
//! size). Each chunk is one read, at most the `body_chunk` the message was
//! stored with, except that a small body (up to [`PREFETCH_LIMIT`] bytes, a
//! typical message) is read whole in the read that opens it. Reads run on
//! the caller's worker when RocksDB has the data in memory, as it has for
//! mail accepted moments ago, and on the blocking pool otherwise: every hop
//! to the pool is a thread wake-up and two context switches, one of the
//! largest kernel costs of relaying a small message.
//!
//! A chunk that is missing while the message's envelope is still there, or
//! a body whose length differs from its envelope's, is damage: the message
//! is moved to the quarantine and [`Error::Corrupt`] returned, as
//! [`Queue::body`] does. A chunk missing because the message was removed
//! meanwhile (an administrator's delete: envelope and chunks go in one
//! batch) is [`Error::NotFound`].

use std::collections::VecDeque;

use crate::Queue;
use crate::Result;
use crate::codec::encode_record;
use crate::error::Error;
use crate::inner::{Inner, Lookup, quarantine_change};
use crate::keys::{self, Table};
use crate::model::*;
use crate::writer::Delta;

/// The largest body [`Queue::body_reader`] reads whole when it opens it:
/// small enough that holding it costs nothing next to a session's
/// buffers, large enough for most mail (the median message is far below).
pub const PREFETCH_LIMIT: u64 = 64 * 1024;

/// A message body being read from the start, one stored chunk at a time.
#[derive(Debug)]
pub struct BodyReader {
    queue: Queue,
    id: QueueId,
    size: u64,
    chunks: u32,
    next: u32,
    read: u64,
    /// Chunks `next..` already read when the body was opened (a small
    /// body); a chunk missing then is looked up again, and reported, when
    /// its turn comes.
    ready: VecDeque<Vec<u8>>,
}

impl Queue {
    /// Opens message `id`'s body for reading chunk by chunk with
    /// [`BodyReader::next_chunk`]. A missing message is
    /// [`Error::NotFound`]; a corrupt envelope is quarantined and reported
    /// as [`Error::Corrupt`].
    ///
    /// A body of at most [`PREFETCH_LIMIT`] bytes is read in the same read
    /// as its envelope: on this worker when RocksDB has both in memory
    /// (mail that arrived moments ago), else on the blocking pool under the
    /// message's lock.
    pub async fn body_reader(&self, id: QueueId) -> Result<BodyReader> {
        // First on this worker, when RocksDB has the envelope and the small
        // body in memory (a message accepted moments ago): no hop to the
        // blocking pool. Anything else (on disk, large, missing, corrupt)
        // takes the path below, which also quarantines, and so does mail
        // that arrived more than moments ago (see `in_memory::FRESH_MS`).
        // Without the lock: a body never changes once committed, and a
        // delete (envelope and chunks in one batch) that lands between the
        // reads leaves a chunk missing, which its turn in `next_chunk`
        // reports as the message gone (`NotFound`), as for a delete during
        // the delivery.
        let fresh = crate::in_memory::fresh_id(id, self.inner.ids.last());
        if !fresh {
            self.inner.books.reads.count(false);
        }
        let near = fresh.then(|| {
            self.inner.attempt_near(|| match self.inner.lookup(id)? {
                Lookup::Found(rec) if rec.envelope.size <= PREFETCH_LIMIT => {
                    Ok((rec.envelope.size, rec.chunks, prefetch(&self.inner, id, rec.chunks)?))
                }
                // Large, missing or corrupt: read where it may block.
                _ => Err(crate::in_memory::miss()),
            })
        });
        let (size, chunks, ready) = match near.flatten() {
            Some(Ok(opened)) => opened,
            _ => {
                self.inner
                    .mutate_existing(id, move |inner, rec, _| {
                        let ready = if rec.envelope.size <= PREFETCH_LIMIT {
                            prefetch(inner, id, rec.chunks)?
                        } else {
                            VecDeque::new()
                        };
                        Ok(Ok((rec.envelope.size, rec.chunks, ready)))
                    })
                    .await?
            }
        };
        Ok(BodyReader { queue: self.clone(), id, size, chunks, next: 0, read: 0, ready })
    }
}

/// The chunks of a small body, read whole when it is opened: bounded by
/// what was read, not by what the envelope says (a damaged body may be
/// longer than its size). A missing chunk ends it; its turn reports it.
fn prefetch(inner: &Inner, id: QueueId, chunks: u32) -> Result<VecDeque<Vec<u8>>> {
    let mut ready = VecDeque::new();
    let mut held = 0u64;
    for n in 0..chunks {
        if held > PREFETCH_LIMIT {
            break;
        }
        match inner.store.get(Table::Bodies, &keys::chunk_key(id, n))? {
            Some(c) => {
                held += c.len() as u64;
                ready.push_back(c);
            }
            None => break,
        }
    }
    Ok(ready)
}

impl BodyReader {
    /// The message's ID.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// The body's length in bytes, as its envelope records it.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Bytes returned so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    /// The next chunk, or `None` after the last one (once the whole body,
    /// of the length its envelope says, has been returned).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.next >= self.chunks {
            if self.read != self.size {
                let reason = format!("body has {} bytes, envelope says {}", self.read, self.size);
                return Err(damaged(&self.queue, self.id, reason).await);
            }
            return Ok(None);
        }
        let (id, n) = (self.id, self.next);
        let chunk = match self.ready.pop_front() {
            Some(c) => Some(c),
            None => {
                self.queue
                    .inner
                    .read_near(1, move |inner| inner.store.get(Table::Bodies, &keys::chunk_key(id, n)))
                    .await?
            }
        };
        match chunk {
            Some(c) => {
                self.next += 1;
                self.read += c.len() as u64;
                if self.read > self.size {
                    let reason = format!("body is longer than the {} bytes its envelope says", self.size);
                    return Err(damaged(&self.queue, self.id, reason).await);
                }
                Ok(Some(c))
            }
            None => {
                let reason = format!("body chunk {n} of {} is missing", self.chunks);
                Err(damaged(&self.queue, self.id, reason).await)
            }
        }
    }
}

/// A body found damaged: quarantines the message if it still exists (the
/// error then is [`Error::Corrupt`]); [`Error::NotFound`] when it was
/// removed meanwhile, which is why its chunks are gone.
async fn damaged(queue: &Queue, id: QueueId, reason: String) -> Error {
    let r = queue
        .inner
        .mutate_existing(id, move |inner: &Inner, rec, change| {
            tracing::error!("{id}: damaged body, message moved to quarantine: {reason}");
            let raw = encode_record(&rec);
            change.extend(quarantine_change(Table::Envelopes, &keys::id_key(id), &raw, &reason));
            // The envelope is readable, so the counters are corrected exactly.
            change.delta.add(Delta::between(Some(&rec.envelope), None));
            if !rec.envelope.held && !inner.is_inflight(id)? {
                change.delete(Table::Schedule, keys::schedule_key(rec.due, id).to_vec());
            }
            Ok(Err::<(), Error>(Error::Corrupt { key: id.to_string(), reason }))
        })
        .await;
    match r {
        Ok(()) => Error::Storage(format!("{id}: damaged body")),
        Err(e) => e,
    }
}
