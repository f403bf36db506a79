//! A shaping proxy in front of a real mailbox server (Dovecot LMTP in the
//! overload bench): it relays every byte both ways and gives the server a
//! shape it does not have by itself, with the test backend's [`Mode`]s:
//! - the reply to the final dot is held until the mode's latency has passed
//!   since the dot (plateau: `Slow`, flat up to a capacity of transactions;
//!   `Retrograde`: growing with every open connection), so the real
//!   server's own time is inside the shaped latency, not added to it;
//! - past `overload_at` open connections a new one is told `421` at the
//!   greeting, without bothering the server;
//! - `Refuse` is an outage: the open connections are reset, and each new
//!   one is accepted and reset at once (counted, so the bench can say how
//!   many connection attempts the outage cost the server).
//!
//! It counts what the bench reports: open connections and their peak,
//! `421`s, deliveries (`250` replies after the dot), connection attempts
//! during an outage, and samples connections and deliveries every 100 ms
//! for the charts. Loopback only; stopped by dropping it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::backend::Mode;

/// How often connections and deliveries are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    peak_connections: AtomicUsize,
    transactions: AtomicUsize,
    delivered: AtomicUsize,
    refused_421: AtomicUsize,
    outage_attempts: AtomicUsize,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    counters: Counters,
    /// Told to every connection when an outage starts.
    reset: Notify,
    /// Set at the first connection: the run's time zero.
    started: Mutex<Option<Instant>>,
    first: Notify,
    /// Completion times of deliveries (seconds from time zero).
    deliveries: Mutex<Vec<f64>>,
    /// (seconds from time zero, open connections, deliveries so far).
    samples: Mutex<Vec<(f64, usize, usize)>>,
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a run looked like at the server.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub peak_connections: usize,
    pub refused_421: usize,
    pub outage_attempts: usize,
    pub delivered: usize,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and relays to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, mode: Mode) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(mode),
            counters: Counters::default(),
            reset: Notify::new(),
            started: Mutex::new(None),
            first: Notify::new(),
            deliveries: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let s = Arc::clone(&s);
                tokio::spawn(async move { connection(stream, s).await });
            }
        });
        let s = Arc::clone(&shared);
        let sampler = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAMPLE_EVERY).await;
                let Some(t) = s.elapsed() else { continue };
                let c = &s.counters;
                let sample = (t, c.connections.load(Ordering::SeqCst), c.delivered.load(Ordering::SeqCst));
                s.samples.lock().unwrap().push(sample);
            }
        });
        Proxy { addr, shared, tasks: vec![accept, sampler] }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the shape. `Refuse` resets every open connection.
    pub fn set_mode(&self, mode: Mode) {
        let outage = mode == Mode::Refuse;
        *self.shared.mode.lock().unwrap() = mode;
        if outage {
            self.shared.reset.notify_waiters();
        }
    }

    /// Resolves at the first connection (time zero of the run).
    pub async fn first_connection(&self) {
        loop {
            let notified = self.shared.first.notified();
            if self.shared.elapsed().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Seconds since the first connection.
    pub fn elapsed(&self) -> Option<f64> {
        self.shared.elapsed()
    }

    /// Deliveries completed in `[from, to)` seconds from time zero.
    pub fn delivered_between(&self, from: f64, to: f64) -> usize {
        self.shared.deliveries.lock().unwrap().iter().filter(|&&t| t >= from && t < to).count()
    }

    /// The first delivery at or after `t` seconds.
    pub fn first_delivery_after(&self, t: f64) -> Option<f64> {
        self.shared.deliveries.lock().unwrap().iter().copied().filter(|&d| d >= t).reduce(f64::min)
    }

    /// When the last delivery so far was made.
    pub fn last_delivery(&self) -> Option<f64> {
        self.shared.deliveries.lock().unwrap().iter().copied().reduce(f64::max)
    }

    pub fn figures(&self) -> Figures {
        let c = &self.shared.counters;
        Figures {
            peak_connections: c.peak_connections.load(Ordering::SeqCst),
            refused_421: c.refused_421.load(Ordering::SeqCst),
            outage_attempts: c.outage_attempts.load(Ordering::SeqCst),
            delivered: c.delivered.load(Ordering::SeqCst),
        }
    }

    /// The samples as CSV: `t,connections,delivered`.
    pub fn series_csv(&self) -> String {
        let mut out = String::from("t,connections,delivered\n");
        for (t, c, d) in self.shared.samples.lock().unwrap().iter() {
            out.push_str(&format!("{t:.2},{c},{d}\n"));
        }
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.reset.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shared {
    fn elapsed(&self) -> Option<f64> {
        self.started.lock().unwrap().map(|s| s.elapsed().as_secs_f64())
    }
}

/// Counts an open connection while it lives.
struct Open<'a>(&'a Counters);

impl<'a> Open<'a> {
    fn new(c: &'a Counters) -> (Open<'a>, usize) {
        let n = c.connections.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_connections.fetch_max(n, Ordering::SeqCst);
        (Open(c), n)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Drops a connection with a reset (no orderly close): what a crashed or
/// restarted server leaves its clients with.
// tokio deprecates SO_LINGER because a positive linger blocks the thread on
// close; a zero linger never waits (the kernel resets at once).
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(mut client: TcpStream, s: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    {
        let mut started = s.started.lock().unwrap();
        if started.is_none() {
            *started = Some(sluice::clock::instant());
            s.first.notify_waiters();
        }
    }
    let mode = s.mode.lock().unwrap().clone();
    if mode == Mode::Refuse {
        s.counters.outage_attempts.fetch_add(1, Ordering::SeqCst);
        return reset(client);
    }
    let (open, n) = Open::new(&s.counters);
    if mode.overload_at().is_some_and(|limit| n > limit) {
        s.counters.refused_421.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(b"421 4.3.2 proxy.bench.test Too many connections, try later\r\n").await;
        drop(open);
        return;
    }
    let Ok(mut server) = TcpStream::connect(s.upstream).await else {
        drop(open);
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let reset_now = s.reset.notified();
    tokio::pin!(reset_now);
    {
        let (cr, mut cw) = client.split();
        let (sr, mut sw) = server.split();
        // When the reply to the final dot may be passed on.
        let hold: Mutex<Option<Instant>> = Mutex::new(None);
        // This connection's transactions between DATA and their reply
        // (given back if the connection dies in between).
        let open_tx = AtomicUsize::new(0);
        let up = async {
            let mut r = BufReader::new(cr);
            let mut line = Vec::new();
            let mut in_data = false;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if in_data && line == b".\r\n" {
                    in_data = false;
                    let mode = s.mode.lock().unwrap().clone();
                    let c = &s.counters;
                    let load = (c.connections.load(Ordering::SeqCst), c.transactions.load(Ordering::SeqCst));
                    let wait = mode.latency(load.0, load.1).unwrap_or_default();
                    *hold.lock().unwrap() = Some(sluice::clock::instant() + wait);
                } else if !in_data && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"DATA") {
                    in_data = true;
                    open_tx.fetch_add(1, Ordering::SeqCst);
                    s.counters.transactions.fetch_add(1, Ordering::SeqCst);
                }
                if sw.write_all(&line).await.is_err() {
                    return;
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut r = sr;
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let until = hold.lock().unwrap().take();
                if let Some(until) = until {
                    tokio::time::sleep_until(until).await;
                    let ok = buf[..n].split(|&b| b == b'\n').filter(|l| l.starts_with(b"250")).count();
                    open_tx.fetch_sub(1, Ordering::SeqCst);
                    s.counters.transactions.fetch_sub(1, Ordering::SeqCst);
                    if ok > 0 {
                        s.counters.delivered.fetch_add(ok, Ordering::SeqCst);
                        if let Some(t) = s.elapsed() {
                            s.deliveries.lock().unwrap().extend(std::iter::repeat_n(t, ok));
                        }
                    }
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = &mut reset_now => {}
        }
        s.counters.transactions.fetch_sub(open_tx.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    drop(open);
    reset(client);
}
