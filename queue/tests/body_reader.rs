//! Reading a body chunk by chunk with `BodyReader`, on both sides of
//! `PREFETCH_LIMIT` (a small body is read whole when it is opened, a large
//! one chunk by chunk): the same bytes in the same chunks either way, and
//! damage reported either way. Real RocksDB in a temporary directory.

mod support;

use std::time::Duration;

use sluice_queue::{Error, Options, PREFETCH_LIMIT, Queue};
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
