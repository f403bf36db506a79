//! Reading a body chunk by chunk with `BodyReader`, on both sides of
//! `PREFETCH_LIMIT` (a small body is read whole when it is opened, a large
//! one chunk by chunk): the same bytes in the same chunks either way, and
//! damage reported either way; and where the reads run (on the caller's
//! worker while RocksDB has the body in memory). Real RocksDB in a
//! temporary directory.

mod support;

use std::time::Duration;

use sluice_queue::{Error, Options, PREFETCH_LIMIT, Queue, ReadStats};
use support::envelope;

const T0: u64 = 1_700_000_000_000;
const CHUNK: usize = 1000;

fn open(dir: &std::path::Path) -> Queue {
    Queue::open(dir, &Options { recovery_spread: Duration::from_secs(10), body_chunk: CHUNK }, T0)
        .expect("open")
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn small_and_large_bodies_come_back_in_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let limit = PREFETCH_LIMIT as usize;
    for len in [0, 1, CHUNK, CHUNK + 1, limit, limit + 1, limit + 3 * CHUNK + 7] {
        let want = body(len);
        let id = q.enqueue(envelope("", &["r@example.net"]), &want, T0).await.unwrap();
        let mut reader = q.body_reader(id).await.unwrap();
        assert_eq!(reader.len(), len as u64);
        let mut got = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "{len}: chunk of {}", chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, want, "body of {len} bytes");
        assert_eq!(reader.next_chunk().await.unwrap(), None, "stays at the end");
    }
}

#[tokio::test]
async fn a_missing_chunk_is_damage_whether_read_ahead_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    for len in [3 * CHUNK, PREFETCH_LIMIT as usize + 2 * CHUNK] {
        let id = q.enqueue(envelope("", &["r@example.net"]), &body(len), T0).await.unwrap();
        q.debug_delete_chunk(id, 1).await.unwrap();
        let mut reader = q.body_reader(id).await.unwrap();
        assert!(reader.next_chunk().await.unwrap().is_some(), "chunk 0 is there");
        assert!(matches!(reader.next_chunk().await, Err(Error::Corrupt { .. })), "{len}: chunk 1 is not");
        assert_eq!(q.envelope(id).await.unwrap(), None, "{len}: moved to the quarantine");
    }
    assert_eq!(q.quarantined(10).await.unwrap().len(), 2);
}

/// Mail accepted moments ago is claimed and read without a hop to the
/// blocking pool: its envelope and body are in RocksDB's memtables. After a
/// reopen they are only in files (the close flushed them), and the same
/// reads move to the pool. The bytes are the same either way.
#[tokio::test]
async fn fresh_mail_is_read_on_the_worker_and_mail_on_disk_on_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let want = body(3 * CHUNK + 5);
    let id = q.enqueue(envelope("", &["r@example.net"]), &want, T0).await.unwrap();
    let since = |q: &Queue, before: ReadStats| {
        let now = q.read_stats();
        (now.near - before.near, now.moved - before.moved)
    };
    let read_all = |q: Queue| async move {
        let mut reader = q.body_reader(id).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        got
    };

    let before = q.read_stats();
    assert_eq!(q.claim_due(T0, 10).await.unwrap().len(), 1);
    assert_eq!(since(&q, before), (2, 0), "the claim's scan and check, from memory");
    let before = q.read_stats();
    assert_eq!(read_all(q.clone()).await, want);
    assert_eq!(since(&q, before), (1, 0), "envelope and chunks in one read, from memory");

    let q = support::reopen(q, dir.path(), T0).await;
    let before = q.read_stats();
    assert_eq!(read_all(q.clone()).await, want);
    assert_eq!(since(&q, before), (0, 1), "on disk only: the read moved to the pool");
}
