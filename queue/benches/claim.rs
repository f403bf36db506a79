//! A queue of 1,000,000 small envelopes: how long opening it takes, how
//! long `next_due` and `claim_due` of a 100-message batch take, and the
//! process's peak memory (VmHWM) — printed, not asserted.
//!
//! The queue is filled in this process; the measurements run in a fresh
//! child process (this executable re-run with `--measure DIR`), so its peak
//! RSS is that of a daemon opening and working a big queue, not of the fill.
//! The child then claims and delivers 100,000 messages in batches of 100 and
//! times the claims again, to show the scan cost does not grow with the
//! deletions behind it.
//!
//! `cargo bench -p sluice-queue --bench claim` (see benches/README.md).
//! `SLUICE_BENCH_MESSAGES` (default 1,000,000) sets the size;
//! `SLUICE_BENCH_DIR` the disk.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_queue::{Options, Outcome, Queue};
use support::envelope;

const T0: u64 = 1_700_000_000_000;
const BATCH: usize = 100;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        v.len()
    )
}

/// Fills `dir` with `n` messages of 100-byte bodies, due one millisecond
/// apart, from 64 concurrent writers.
async fn fill(dir: &Path, n: u64) {
    let q = Queue::open(dir, &Options::default(), T0).expect("open queue");
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (q, next) = (q.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let body = [b'x'; 100];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let env = envelope("fill@example.org", &["rcpt@example.net"]);
                    q.enqueue(env, &body, T0 + i).await.expect("enqueue");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    q.close().await.unwrap();
    println!(
        "filled {n} messages in {secs:.1} s ({:.0}/s); close (memtable flush) {:.1} s; fill process VmHWM {} MiB",
        n as f64 / secs,
        t.elapsed().as_secs_f64(),
        vm_hwm_kib() / 1024
    );
}

async fn measure(dir: &Path) {
    println!("measuring process: VmHWM at start {} MiB", vm_hwm_kib() / 1024);
    let t = Instant::now();
    let q = Queue::open(dir, &Options::default(), T0).expect("open queue");
    println!("open (recovery, no body reads): {:.1} ms; VmHWM {} MiB", ms(t.elapsed()), vm_hwm_kib() / 1024);
    let t = Instant::now();
    let s = q.stats().await;
    println!("stats(): {:.3} ms -> {} messages, {} bytes", ms(t.elapsed()), s.messages, s.bytes);

    let mut next_due = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        q.next_due().await.unwrap();
        next_due.push(t.elapsed());
    }
    println!("next_due: {}", summary(next_due));

    // The far future: everything is due, so each claim is a full batch.
    let now = u64::MAX - 1;
    let mut rounds: Vec<(usize, Vec<Duration>)> = Vec::new();
    let mut claims = Vec::new();
    let mut delivered = 0usize;
    for b in 0..1000 {
        let t = Instant::now();
        let got = q.claim_due(now, BATCH).await.unwrap();
        claims.push(t.elapsed());
        assert_eq!(got.len(), BATCH);
        // Deliver them all: the queue churns as in production and the
        // schedule fills with tombstones behind the next claims.
        let tasks: Vec<_> = got
            .into_iter()
            .map(|m| {
                let q = q.clone();
                tokio::spawn(async move {
                    q.record(m.id, &[(0, Outcome::Delivered { reply: "250 ok".into() })], now, T0)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        delivered += BATCH;
        if b == 9 || b == 999 {
            rounds.push((delivered, std::mem::take(&mut claims)));
        }
    }
    for (after, v) in rounds {
        println!("claim_due({BATCH}) up to {after} delivered: {}", summary(v));
    }
    let mut next_due = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        q.next_due().await.unwrap();
        next_due.push(t.elapsed());
    }
    println!("next_due after {delivered} removals: {}", summary(next_due));
    let w = q.writer_stats();
    println!("writer: {} changes in {} writes, {} syncs", w.changes, w.writes, w.syncs);
    q.close().await.unwrap();
    println!("measuring process peak RSS (VmHWM): {} MiB", vm_hwm_kib() / 1024);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let dir = args.get(i + 1).expect("--measure DIR");
        rt.block_on(measure(Path::new(dir)));
        return;
    }
    let n: u64 =
        std::env::var("SLUICE_BENCH_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let base = std::env::var_os("SLUICE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/tmp")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("temp dir");
    let dir = tmp.path().join("queue");
    rt.block_on(fill(&dir, n));
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--measure")
        .arg(&dir)
        .status()
        .expect("run the measuring process");
    assert!(status.success(), "measuring process failed");
}
