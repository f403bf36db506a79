//! Many open sessions for `benches/load/idle.sh`: opens N SMTP connections
//! to a server from many loopback source addresses (127.0.S.T, so neither
//! the per-client limits nor the ephemeral ports of one source address run
//! out), reads each greeting, and then holds them: half stay silent (idle
//! clients), half trickle a `NOOP` one byte every `--trickle` seconds (slow
//! senders). It counts what the server does with them: greeted (220),
//! refused before the session (`421` as the greeting), not greeted within
//! 3 s (left waiting in the listener's backlog: such a connection stays
//! open), closed later by the server (with the time and the last reply,
//! i.e. `smtpd_timeout`), or still open when it stops.
//!
//! Usage: `idle_clients ADDR:PORT [--sessions N] [--sources K]
//! [--trickle SECS] [--hold SECS] [--burst ADDR:COUNT]`
//!
//! `--burst 127.0.9.9:60` opens COUNT more sessions from one address, to
//! see the per-client limit (`smtpd_client_connection_count_limit`) refuse
//! the excess with `421 4.7.0`. The program prints `ready` once every
//! connection has its first answer (or failed), then a summary when
//! `--hold` is over or on SIGTERM, and exits; every socket is closed then.
//! Loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

#[derive(Default, Debug)]
struct Counts {
    greeted: AtomicU64,
    refused_421: AtomicU64,
    connect_failed: AtomicU64,
    no_greeting: AtomicU64,
    closed_by_server: AtomicU64,
    closed_with_421: AtomicU64,
    /// Sum of the seconds from greeting to the server's close.
    closed_after_ms: AtomicU64,
    answered: AtomicU64,
}

fn source(i: usize, sources: usize) -> IpAddr {
    // 127.0.1.0 upwards; 127.0.0.1 stays for the normal client.
    let n = 256 + (i % sources);
    IpAddr::V4(Ipv4Addr::new(127, 0, (n >> 8) as u8, (n & 0xff) as u8))
}

async fn connect(addr: SocketAddr, from: IpAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(addr).await
}

/// One session: connect, read the first reply, then idle or trickle until
/// the server closes or `stop` comes.
async fn session(
    addr: SocketAddr,
    from: IpAddr,
    trickle: Option<Duration>,
    counts: Arc<Counts>,
    stop: Arc<tokio::sync::Notify>,
    wave: tokio::sync::OwnedSemaphorePermit,
) {
    // A listener whose backlog is full drops the SYN: the kernel would
    // retry for two minutes. 3 s, then it counts as a connect error.
    let mut s = match tokio::time::timeout(Duration::from_secs(3), connect(addr, from)).await {
        Ok(Ok(s)) => s,
        _ => {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            counts.answered.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut buf = vec![0u8; 512];
    // A server at its session limit leaves the connection waiting in its
    // backlog: after 3 s it counts as not greeted (and the next wave
    // goes), but it stays connected, as a real client would, until the
    // greeting comes or the run ends.
    let first = match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        Ok(r) => r,
        Err(_) => {
            counts.no_greeting.fetch_add(1, Ordering::Relaxed);
            counts.answered.fetch_add(1, Ordering::Relaxed);
            drop(wave);
            tokio::select! {
                _ = stop.notified() => {}
                _ = s.read(&mut buf) => {}
            }
            return;
        }
    };
    counts.answered.fetch_add(1, Ordering::Relaxed);
    drop(wave);
    match first {
        Ok(n) if n >= 3 && &buf[..3] == b"220" => {
            counts.greeted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(n) if n >= 3 && &buf[..3] == b"421" => {
            counts.refused_421.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => {
            counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let greeted = sluice::clock::instant();
    let line = b"NOOP\r\n";
    let mut sent = 0usize;
    let mut last = Vec::new();
    loop {
        let tick = async {
            match trickle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.notified() => return,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => last = buf[..n].to_vec(),
            },
            _ = tick => {
                if s.write_all(&line[sent % line.len()..sent % line.len() + 1]).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
    counts.closed_after_ms.fetch_add(greeted.elapsed().as_millis() as u64, Ordering::Relaxed);
    if last.starts_with(b"421") {
        counts.closed_with_421.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: idle_clients ADDR:PORT [--sessions N] [--sources K] [--trickle SECS] [--hold SECS] [--burst ADDR:COUNT]";
    let addr: SocketAddr =
        args.get(1).and_then(|a| a.parse().ok()).ok_or_else(|| std::io::Error::other(usage))?;
    let (mut sessions, mut sources, mut trickle, mut hold) = (10_000usize, 250usize, 5u64, 60u64);
    let mut burst: Option<(IpAddr, usize)> = None;
    let mut i = 2;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        let bad = || std::io::Error::other(format!("bad value {v} for {}", args[i]));
        match args[i].as_str() {
            "--sessions" => sessions = v.parse().map_err(|_| bad())?,
            "--sources" => sources = v.parse::<usize>().map_err(|_| bad())?.max(1),
            "--trickle" => trickle = v.parse().map_err(|_| bad())?,
            "--hold" => hold = v.parse().map_err(|_| bad())?,
            "--burst" => {
                let (a, n) = v.split_once(':').ok_or_else(bad)?;
                burst = Some((a.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?));
            }
            _ => return Err(std::io::Error::other(usage)),
        }
        i += 2;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        // Connect in waves of 1000 so the listener's backlog is not the
        // thing measured.
        let wave = Arc::new(Semaphore::new(1000));
        let start = sluice::clock::instant();
        let total = sessions + burst.map_or(0, |(_, n)| n);
        for k in 0..total {
            let (from, trickle) = match burst {
                Some((a, _)) if k >= sessions => (a, None),
                _ => (source(k, sources), (k % 2 == 1).then(|| Duration::from_secs(trickle))),
            };
            let permit = Arc::clone(&wave).acquire_owned().await.expect("semaphore");
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            tasks.push(tokio::spawn(session(addr, from, trickle, counts, stop, permit)));
        }
        while counts.answered.load(Ordering::Relaxed) < total as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = &counts;
        println!(
            "ready: {total} connections in {:.1} s: {} greeted, {} refused with 421, {} without greeting, {} connect errors",
            start.elapsed().as_secs_f64(),
            c.greeted.load(Ordering::Relaxed),
            c.refused_421.load(Ordering::Relaxed),
            c.no_greeting.load(Ordering::Relaxed),
            c.connect_failed.load(Ordering::Relaxed)
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(hold)) => {}
            _ = term.recv() => {}
        }
        let closed = c.closed_by_server.load(Ordering::Relaxed);
        let greeted = c.greeted.load(Ordering::Relaxed);
        println!(
            "after {:.0} s: {} of {greeted} greeted sessions closed by the server ({} with 421, mean {:.1} s after the greeting), {} still open",
            start.elapsed().as_secs_f64(),
            closed,
            c.closed_with_421.load(Ordering::Relaxed),
            c.closed_after_ms.load(Ordering::Relaxed) as f64 / 1000.0 / closed.max(1) as f64,
            greeted - closed
        );
        stop.notify_waiters();
        for t in tasks {
            t.abort();
        }
        Ok(())
    })
}
