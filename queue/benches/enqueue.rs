//! Enqueue throughput of 4 KB messages, synced, with 1, 16 and 64
//! concurrent writers, beside the raw `fdatasync` rate of the same disk
//! measured in the same run. The ratio says how well group commit works:
//! one fsync per message would make it at most 1.
//!
//! `cargo bench -p sluice-queue --bench enqueue` (see benches/README.md).
//! Environment: `SLUICE_BENCH_DIR` (default: cargo's target tmp dir) picks
//! the disk, `SLUICE_BENCH_SECS` (default 5) the length of each run.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_queue::{Options, Queue};
use support::{envelope, wall_millis};

const BODY: usize = 4096;

/// Appends 4 KiB and `fdatasync`s, over and over: what a spool that syncs
/// every message by itself could do at best on this disk.
fn fdatasync_rate(dir: &Path, dur: Duration) -> std::io::Result<f64> {
    let path = dir.join("fdatasync.probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = [0x5au8; BODY];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

struct Run {
    writers: usize,
    messages: u64,
    secs: f64,
    syncs: u64,
    p50_us: u64,
    p99_us: u64,
}

async fn run(dir: &Path, writers: usize, dur: Duration) -> Run {
    let q = Queue::open(dir, &Options::default(), wall_millis()).expect("open queue");
    let body: Arc<[u8]> = (0..BODY).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    // Warm up: open files, fill caches.
    for _ in 0..100 {
        q.enqueue(envelope("bench@example.org", &["rcpt@example.net"]), &body, wall_millis()).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let before = q.writer_stats();
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (q, stop, body) = (q.clone(), Arc::clone(&stop), Arc::clone(&body));
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let env = envelope("bench@example.org", &["rcpt@example.net"]);
                    q.enqueue(env, &body, wall_millis()).await.expect("enqueue");
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let after = q.writer_stats();
    q.close().await.unwrap();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    Run {
        writers,
        messages: lat.len() as u64,
        secs,
        syncs: after.syncs - before.syncs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dur = Duration::from_secs(secs);
    let base = std::env::var_os("SLUICE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/tmp")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");

    println!(
        "disk: {} ({secs} s per run, 4096-byte bodies, sync on); load average {}",
        base.display(),
        loadavg()
    );
    println!(
        "{:>7} {:>11} {:>12} {:>10} {:>9} {:>9} {:>12} {:>13}",
        "writers", "messages/s", "WAL syncs/s", "msgs/sync", "p50 ms", "p99 ms", "fdatasync/s", "× fdatasync"
    );
    // The raw rate is measured right before and after each run (the disk
    // and the machine's load drift), and the ratio taken against their mean.
    let probe = Duration::from_secs(secs.div_ceil(2).max(1));
    for writers in [1, 16, 64] {
        let before = fdatasync_rate(tmp.path(), probe).expect("fdatasync probe");
        let dir = tmp.path().join(format!("queue-{writers}"));
        let r = rt.block_on(run(&dir, writers, dur));
        let after = fdatasync_rate(tmp.path(), probe).expect("fdatasync probe");
        let raw = (before + after) / 2.0;
        let mps = r.messages as f64 / r.secs;
        println!(
            "{:>7} {:>11.0} {:>12.0} {:>10.1} {:>9.2} {:>9.2} {:>12.0} {:>13.1}",
            r.writers,
            mps,
            r.syncs as f64 / r.secs,
            r.messages as f64 / r.syncs.max(1) as f64,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            raw,
            mps / raw,
        );
    }
    println!("load average at the end: {}", loadavg());
}
