//! Fills a queue for `benches/load/backlog.sh`: N messages of SIZE bytes
//! for `user@dev.test`, through the queue crate's public enqueue path (the
//! one the SMTP server commits through: body, envelope and schedule entry
//! in one synced batch per message, 64 writers sharing fsyncs), all due at
//! once, as mail that piled up while the backend was down. Then closes
//! the queue (memtables flushed) and prints the fill rate.
//!
//! Usage: `backlog_fill QUEUE_DB_DIR N [SIZE]` (the daemon's queue lives in
//! `queue_directory/db`). Run it while no daemon has the queue open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_queue::{ClientInfo, Envelope, Options, Queue, Recipient};

fn body(size: usize) -> Vec<u8> {
    let mut b = b"From: load@remote.test\r\nTo: user@dev.test\r\nSubject: backlog\r\n\r\n".to_vec();
    while b.len() + 80 <= size {
        b.extend_from_slice(&[b'x'; 78]);
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, n, size) = match args.as_slice() {
        [_, d, n] => (d.clone(), n.parse::<u64>()?, 4096),
        [_, d, n, s] => (d.clone(), n.parse::<u64>()?, s.parse::<usize>()?),
        _ => anyhow::bail!("usage: backlog_fill QUEUE_DB_DIR N [SIZE]"),
    };
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let now = sluice::clock::unix_millis();
        let q = Queue::open(dir.as_ref(), &Options::default(), now)?;
        let body = Arc::new(body(size));
        let next = Arc::new(AtomicU64::new(0));
        let start = sluice::clock::instant();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (q, next, body) = (q.clone(), Arc::clone(&next), Arc::clone(&body));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok::<(), sluice_queue::Error>(());
                        }
                        let env = Envelope {
                            sender: "backlog@remote.test".into(),
                            recipients: vec![Recipient::new("user@dev.test")],
                            arrival: now,
                            size: body.len() as u64,
                            client: ClientInfo {
                                addr: Some([127, 0, 0, 1].into()),
                                name: "localhost".into(),
                                helo: "backlog".into(),
                                protocol: "ESMTP".into(),
                            },
                            ..Envelope::default()
                        };
                        q.enqueue(env, &body, now).await?;
                        if (i + 1) % 100_000 == 0 {
                            eprintln!("{} queued", i + 1);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        q.close().await?;
        println!("filled {n} messages of {size} bytes in {secs:.1} s ({:.0}/s)", n as f64 / secs);
        Ok(())
    })
}
