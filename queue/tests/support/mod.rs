//! Shared by the queue's integration tests: envelopes, deterministic bodies
//! derived from the queue ID (so a test can check a body knowing only the
//! ID), and wall-clock "now".
#![allow(dead_code)]

use std::time::Duration;

use sluice_queue::{ClientInfo, Envelope, Options, Outcome, Queue, QueueId, Recipient, UnixMillis};

/// An envelope from `sender` to `rcpts`, as a session would build it.
pub fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.to_owned(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        arrival: 0,
        size: 0,
        client: ClientInfo {
            addr: Some("127.0.0.1".parse().expect("literal address")),
            name: "localhost".into(),
            helo: "client.example".into(),
            protocol: "ESMTP".into(),
        },
        ..Envelope::default()
    }
}

/// Wall-clock milliseconds. (The queue crate sits below `sluice::clock`;
/// tests that need real time read it here.)
#[allow(clippy::disallowed_methods)]
pub fn wall_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A small fast PRNG (xorshift64*), seeded per message.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The body of message `id`: its length and bytes both follow from the ID.
/// Most are small (100 B .. 6 KB); one in eight spans several chunks of
/// `chunk` bytes (1 to 4 chunks plus a remainder, sometimes exactly on a
/// chunk boundary).
pub fn body_for(id: QueueId, chunk: usize) -> Vec<u8> {
    let mut rng = Rng::new(id.as_micros());
    let pick = rng.next_u64();
    let len = if pick.is_multiple_of(8) {
        let chunks = 1 + (rng.next_u64() % 4) as usize;
        let rest = if pick.is_multiple_of(3) { 0 } else { (rng.next_u64() % chunk as u64) as usize };
        chunks * chunk + rest
    } else {
        100 + (rng.next_u64() % 6000) as usize
    };
    let mut body = Vec::with_capacity(len + 8);
    while body.len() < len {
        body.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    body.truncate(len);
    body
}

/// The test epoch, and a queue opened at it with small chunks.
pub const T0: u64 = 1_700_000_000_000;

pub fn opts() -> Options {
    Options { recovery_spread: Duration::from_secs(10), body_chunk: 1000 }
}

pub fn open(dir: &std::path::Path, now: u64) -> Queue {
    Queue::open(dir, &opts(), now).expect("open queue")
}

pub async fn reopen(q: Queue, dir: &std::path::Path, now: u64) -> Queue {
    q.close().await.expect("close");
    drop(q);
    open(dir, now)
}

pub async fn table_lens(q: &Queue) -> Vec<(&'static str, usize)> {
    let mut out = Vec::new();
    for t in ["bodies", "envelopes", "schedule", "inflight", "drafts"] {
        out.push((t, q.debug_table_len(t).await.unwrap()));
    }
    out
}

pub async fn assert_empty(q: &Queue) {
    let lens = table_lens(q).await;
    assert!(lens.iter().all(|(_, n)| *n == 0), "tables not empty: {lens:?}");
    let s = q.stats().await;
    assert_eq!((s.messages, s.bytes, s.held, s.recipients_pending), (0, 0, 0, 0), "{s:?}");
    assert_eq!(s.oldest_arrival, None);
}

pub fn delivered() -> Outcome {
    Outcome::Delivered { reply: "250 2.0.0 ok".into() }
}
