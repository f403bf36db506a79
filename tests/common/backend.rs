//! A switchable mailbox server for delivery tests and the overload bench:
//! an in-process tokio LMTP/SMTP server on 127.0.0.1 whose behaviour can be
//! changed while it runs, to play the failures sluice must survive.
//!
//! Modes ([`Mode`]): normal; slow (a plateau: latency flat up to a
//! capacity of concurrent transactions, growing in proportion beyond it,
//! and with `overload_at` it answers `421` past that many connections);
//! retrograde (latency grows with every open connection, as a server whose
//! shared database thrashes: one connection gets more done than two);
//! `421` at the greeting; refusing connections (the listening socket is
//! closed, and [`Backend::drop_connections`] resets the open ones);
//! silent (accepts, never speaks); per-recipient `451`/`452` after DATA;
//! closing the connection after the final dot; one reply too many after
//! the dot. The bench's shaping proxy
//! (`benches/load/proxy.rs`) gives a real Dovecot the same shapes through
//! [`Mode::latency`]. It records every message it accepted (envelope and
//! dot-unstuffed data) and counts peak concurrent connections and
//! transactions, so tests can check that nothing was lost and that the gate
//! kept its limits.
//!
//! It speaks enough of RFC 5321/2033 for a client under test: greeting,
//! LHLO/EHLO/HELO with PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, DSN,
//! SMTPUTF8, SIZE; MAIL, RCPT, DATA, RSET, NOOP, QUIT. It speaks no TLS:
//! it can offer STARTTLS and then break it, as a server with broken TLS
//! does, and take another name than `backend.test` (a server that calls
//! itself by sluice's own name).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which protocol the backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Lmtp,
    Smtp,
}

/// What the backend does; switch with [`Backend::set_mode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Accept everything promptly.
    Normal,
    /// Each transaction takes `base` while at most `capacity` transactions
    /// run, and `base × n / capacity` with `n` running beyond that (the
    /// excess queues inside the server). With `overload_at`, a connection
    /// arriving while that many are open gets `421` at the greeting.
    Slow { base: Duration, capacity: usize, overload_at: Option<usize> },
    /// Each transaction takes `base` plus `per_connection` for every other
    /// connection open when it ends (20 ms + 60 ms per extra connection:
    /// two connections do half the work of one). `overload_at` as above.
    Retrograde { base: Duration, per_connection: Duration, overload_at: Option<usize> },
    /// `421 4.3.2` at the greeting, then close.
    Greet421,
    /// Not listening: connections are refused.
    Refuse,
    /// Accept and never send a byte.
    Silent,
    /// After DATA, recipients whose address contains the pattern get this
    /// reply (`452 4.2.2 Mailbox full`, `451 4.3.0 ...`); others 250.
    /// The message is recorded for the accepted ones only.
    PerRecipient { pattern: String, code: u16, text: String },
    /// Read the whole message, then close without answering.
    CloseAfterDot,
    /// Answer the dot, then (in the same write) one reply too many,
    /// `250 2.0.0 Ok`: a server that lost count of its replies.
    StrayReply,
}

impl Mode {
    /// The added latency of a transaction ending with `connections` open
    /// and `transactions` in progress (itself included); `None` for the
    /// modes that add none.
    pub fn latency(&self, connections: usize, transactions: usize) -> Option<Duration> {
        match self {
            Mode::Slow { base, capacity, .. } => {
                Some(base.mul_f64((transactions as f64 / (*capacity).max(1) as f64).max(1.0)))
            }
            Mode::Retrograde { base, per_connection, .. } => {
                Some(*base + per_connection.saturating_mul(connections.saturating_sub(1) as u32))
            }
            _ => None,
        }
    }

    /// Connections past which the greeting is `421`.
    pub fn overload_at(&self) -> Option<usize> {
        match self {
            Mode::Slow { overload_at, .. } | Mode::Retrograde { overload_at, .. } => *overload_at,
            _ => None,
        }
    }
}

/// One accepted message, as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    /// The recipients it was accepted for (after DATA).
    pub rcpts: Vec<String>,
    /// The MAIL FROM line as sent (to check parameters).
    pub mail_line: String,
    pub rcpt_lines: Vec<String>,
    /// The data, dot-unstuffed, with CRLF line ends.
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    /// Bumped by `reset_peaks`; the peak counts only connections accepted
    /// since (one left over from before, e.g. a timed-out probe still being
    /// closed, is not the gate's doing now).
    generation: AtomicUsize,
    generation_connections: AtomicUsize,
    peak_connections: AtomicUsize,
    transactions: AtomicUsize,
    peak_transactions: AtomicUsize,
    accepted_connections: AtomicUsize,
    refused_421: AtomicUsize,
}

#[derive(Debug)]
struct Shared {
    proto: Proto,
    mode: Mutex<Mode>,
    counters: Counters,
    received: Mutex<Vec<Received>>,
    offer_dsn: AtomicBool,
    offer_smtputf8: AtomicBool,
    /// Offer STARTTLS, answer it with 220, then close: a server whose TLS
    /// is broken, as the client sees it.
    broken_starttls: AtomicBool,
    /// The name in the greeting and the LHLO/EHLO reply.
    name: Mutex<String>,
    /// The SIZE offered (0: none, any size is taken).
    size_limit: AtomicU64,
}

/// A running backend. Dropping it stops the listener and every connection.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    /// Starts a backend on a free 127.0.0.1 port.
    pub async fn start(proto: Proto) -> Backend {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), proto).await
    }

    /// Starts a backend on a given address (the overload bench's fixed port).
    pub async fn start_on(addr: SocketAddr, proto: Proto) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            proto,
            mode: Mutex::new(Mode::Normal),
            counters: Counters::default(),
            received: Mutex::new(Vec::new()),
            offer_dsn: AtomicBool::new(true),
            offer_smtputf8: AtomicBool::new(true),
            broken_starttls: AtomicBool::new(false),
            name: Mutex::new("backend.test".into()),
            size_limit: AtomicU64::new(50_000_000),
        });
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = spawn_acceptor(listener, Arc::clone(&shared), Arc::clone(&conns));
        Backend { addr, shared, acceptor: Mutex::new(Some(acceptor)), conns }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches behaviour. Leaving `Refuse` listens again on the same port.
    pub async fn set_mode(&self, mode: Mode) {
        let refuse = mode == Mode::Refuse;
        *self.shared.mode.lock().unwrap() = mode;
        let running = self.acceptor.lock().unwrap().is_some();
        if refuse && running {
            let h = self.acceptor.lock().unwrap().take();
            if let Some(h) = h {
                h.abort();
                let _ = h.await;
            }
        } else if !refuse && !running {
            // The port was ours a moment ago; listeners set SO_REUSEADDR.
            let mut tries = 0;
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("rebind {}: {e}", self.addr),
                }
            };
            let h = spawn_acceptor(listener, Arc::clone(&self.shared), Arc::clone(&self.conns));
            *self.acceptor.lock().unwrap() = Some(h);
        }
    }

    /// Whether LHLO/EHLO offers DSN and SMTPUTF8 (both on by default).
    pub fn offer(&self, dsn: bool, smtputf8: bool) {
        self.shared.offer_dsn.store(dsn, Ordering::SeqCst);
        self.shared.offer_smtputf8.store(smtputf8, Ordering::SeqCst);
    }

    /// Offers STARTTLS and breaks it: the connection closes after the
    /// `220` to the command (no TLS is spoken).
    pub fn offer_broken_starttls(&self, on: bool) {
        self.shared.broken_starttls.store(on, Ordering::SeqCst);
    }

    /// The name the backend gives itself in its greeting and its
    /// LHLO/EHLO reply.
    pub fn set_name(&self, name: &str) {
        *self.shared.name.lock().unwrap() = name.to_owned();
    }

    /// The `SIZE` offered in the LHLO/EHLO reply; 0 offers none.
    pub fn set_size_limit(&self, bytes: u64) {
        self.shared.size_limit.store(bytes, Ordering::SeqCst);
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Recipient deliveries accepted so far (a message to 3 counts 3).
    pub fn delivered_rcpts(&self) -> usize {
        self.shared.received.lock().unwrap().iter().map(|r| r.rcpts.len()).sum()
    }

    /// Most connections ever open at once.
    pub fn peak_connections(&self) -> usize {
        self.shared.counters.peak_connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.counters.connections.load(Ordering::SeqCst)
    }

    /// Most transactions (MAIL to final reply) ever running at once.
    pub fn peak_transactions(&self) -> usize {
        self.shared.counters.peak_transactions.load(Ordering::SeqCst)
    }

    /// Connections accepted in total.
    pub fn accepted_connections(&self) -> usize {
        self.shared.counters.accepted_connections.load(Ordering::SeqCst)
    }

    /// Greetings answered with 421 because of `overload_at`.
    pub fn refused_421(&self) -> usize {
        self.shared.counters.refused_421.load(Ordering::SeqCst)
    }

    /// Closes every open connection at once (a server that crashed or
    /// restarted: its clients see their connections lost).
    pub fn drop_connections(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Forgets the peaks (between phases of a test): from now on the peak
    /// counts only connections accepted after this call.
    pub fn reset_peaks(&self) {
        let c = &self.shared.counters;
        c.generation.fetch_add(1, Ordering::SeqCst);
        c.generation_connections.store(0, Ordering::SeqCst);
        c.peak_connections.store(0, Ordering::SeqCst);
        c.peak_transactions.store(c.transactions.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(h) = self.acceptor.lock().unwrap().take() {
            h.abort();
        }
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

fn spawn_acceptor(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let shared = Arc::clone(&shared);
            let h = tokio::spawn(async move {
                let _ = serve(stream, &shared).await;
            });
            let mut v = conns.lock().unwrap();
            v.retain(|h| !h.is_finished());
            v.push(h);
        }
    })
}

/// Counts a connection while it is open. Declared after the socket, so it
/// is dropped (and the count goes down) before the socket closes: the
/// client never sees the close while the connection still counts.
struct Connected<'a>(&'a Counters, usize);

impl<'a> Connected<'a> {
    fn new(c: &'a Counters) -> (Self, usize) {
        let n = c.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let generation = c.generation.load(Ordering::SeqCst);
        let g = c.generation_connections.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_connections.fetch_max(g, Ordering::SeqCst);
        c.accepted_connections.fetch_add(1, Ordering::SeqCst);
        (Connected(c, generation), n)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        if self.0.generation.load(Ordering::SeqCst) == self.1 {
            self.0.generation_connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Counts a transaction while it runs.
struct InTransaction<'a>(&'a Counters);

impl<'a> InTransaction<'a> {
    fn new(c: &'a Counters) -> (Self, usize) {
        let n = c.transactions.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_transactions.fetch_max(n, Ordering::SeqCst);
        (InTransaction(c), n)
    }
}

impl Drop for InTransaction<'_> {
    fn drop(&mut self) {
        self.0.transactions.fetch_sub(1, Ordering::SeqCst);
    }
}

fn mode(shared: &Shared) -> Mode {
    shared.mode.lock().unwrap().clone()
}

fn angle(arg: &str) -> String {
    let start = arg.find('<').map(|i| i + 1).unwrap_or(0);
    let end = arg[start..].find('>').map(|i| start + i).unwrap_or(arg.len());
    arg[start..end].to_owned()
}

async fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let (connected, open_now) = Connected::new(&shared.counters);
    match mode(shared) {
        Mode::Silent => {
            // Hold the connection open without a word until the peer leaves.
            let mut sink = Vec::new();
            while r.read_until(b'\n', &mut sink).await? > 0 {
                sink.clear();
            }
            return Ok(());
        }
        Mode::Greet421 => {
            w.write_all(b"421 4.3.2 backend.test Service shutting down\r\n").await?;
            return Ok(());
        }
        m if m.overload_at().is_some_and(|limit| open_now > limit) => {
            shared.counters.refused_421.fetch_add(1, Ordering::SeqCst);
            w.write_all(b"421 4.3.2 backend.test Too many connections, try later\r\n").await?;
            return Ok(());
        }
        _ => {}
    }
    let name = shared.name.lock().unwrap().clone();
    let greet = match shared.proto {
        Proto::Lmtp => format!("220 {name} LMTP ready\r\n"),
        Proto::Smtp => format!("220 {name} ESMTP ready\r\n"),
    };
    w.write_all(greet.as_bytes()).await?;

    let mut from: Option<String> = None;
    let mut mail_line = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut rcpt_lines: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        let upper = text.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_owned();
        match verb.as_str() {
            "LHLO" | "EHLO" => {
                let size = match shared.size_limit.load(Ordering::SeqCst) {
                    0 => "SIZE".to_owned(),
                    n => format!("SIZE {n}"),
                };
                let mut caps =
                    vec![name.as_str(), "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", size.as_str()];
                if shared.broken_starttls.load(Ordering::SeqCst) {
                    caps.push("STARTTLS");
                }
                if shared.offer_dsn.load(Ordering::SeqCst) {
                    caps.push("DSN");
                }
                if shared.offer_smtputf8.load(Ordering::SeqCst) {
                    caps.push("SMTPUTF8");
                }
                let mut out = String::new();
                for (i, c) in caps.iter().enumerate() {
                    let sep = if i + 1 == caps.len() { ' ' } else { '-' };
                    out.push_str(&format!("250{sep}{c}\r\n"));
                }
                w.write_all(out.as_bytes()).await?;
            }
            "HELO" => w.write_all(format!("250 {name}\r\n").as_bytes()).await?,
            "STARTTLS" if shared.broken_starttls.load(Ordering::SeqCst) => {
                w.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                return Ok(());
            }
            "MAIL" => {
                from = Some(angle(&text));
                mail_line = text.clone();
                rcpts.clear();
                rcpt_lines.clear();
                w.write_all(b"250 2.1.0 Ok\r\n").await?;
            }
            "RCPT" => {
                if from.is_none() {
                    w.write_all(b"503 5.5.1 Error: need MAIL command\r\n").await?;
                    continue;
                }
                let a = angle(&text);
                if a.starts_with("unknown") {
                    w.write_all(format!("550 5.1.1 <{a}> User doesn't exist\r\n").as_bytes()).await?;
                    continue;
                }
                rcpts.push(a);
                rcpt_lines.push(text.clone());
                w.write_all(b"250 2.1.5 Ok\r\n").await?;
            }
            "DATA" => {
                if rcpts.is_empty() {
                    w.write_all(b"503 5.5.1 Error: need RCPT command\r\n").await?;
                    continue;
                }
                let (tx, _) = InTransaction::new(&shared.counters);
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    if line.first() == Some(&b'.') {
                        data.extend_from_slice(&line[1..]);
                    } else {
                        data.extend_from_slice(&line);
                    }
                }
                let m = mode(shared);
                let c = &shared.counters;
                let load = (c.connections.load(Ordering::SeqCst), c.transactions.load(Ordering::SeqCst));
                if let Some(l) = m.latency(load.0, load.1) {
                    tokio::time::sleep(l).await;
                }
                if m == Mode::CloseAfterDot {
                    return Ok(());
                }
                let sender = from.take().unwrap_or_default();
                let mut replies = Vec::new();
                let mut accepted = Vec::new();
                for a in &rcpts {
                    match &m {
                        Mode::PerRecipient { pattern, code, text } if a.contains(pattern.as_str()) => {
                            replies.push(format!("{code} {text}\r\n"));
                        }
                        _ => {
                            replies.push(format!("250 2.0.0 <{a}> delivered\r\n"));
                            accepted.push(a.clone());
                        }
                    }
                }
                if !accepted.is_empty() {
                    shared.received.lock().unwrap().push(Received {
                        from: sender,
                        rcpts: accepted.clone(),
                        mail_line: std::mem::take(&mut mail_line),
                        rcpt_lines: std::mem::take(&mut rcpt_lines),
                        data,
                    });
                }
                let mut out = match shared.proto {
                    Proto::Lmtp => replies.concat(),
                    Proto::Smtp => {
                        if accepted.len() == rcpts.len() {
                            "250 2.0.0 Ok: queued\r\n".to_owned()
                        } else {
                            replies.into_iter().find(|r| !r.starts_with("250")).unwrap_or_default()
                        }
                    }
                };
                if m == Mode::StrayReply {
                    out.push_str("250 2.0.0 Ok\r\n");
                }
                rcpts.clear();
                // The work is done: stop counting before the client hears so.
                drop(tx);
                w.write_all(out.as_bytes()).await?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                rcpt_lines.clear();
                w.write_all(b"250 2.0.0 Ok\r\n").await?;
            }
            "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                // Closing: stop counting before the client hears it.
                drop(connected);
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n").await?,
        }
    }
}
