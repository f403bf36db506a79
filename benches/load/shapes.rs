//! The gate against a real mailbox server with four shapes of trouble:
//! Dovecot LMTP behind the shaping proxy (`proxy.rs`), a backlog queued
//! before delivery starts, and the figures the issue asks for.
//!
//! Shapes (every one refuses connections past [`CAPACITY`] with `421`):
//! 1. `retrograde`: 20 ms + 60 ms per extra open connection (one
//!    connection does the most work);
//! 2. `plateau`: 50 ms flat up to 5 transactions at once, queueing beyond;
//! 3. `step`: 60 ms flat up to 6, then from 5 s to 35 s the server can
//!    work on 3 at once (at full load every delivery twice as slow), then
//!    6 again;
//! 4. `outage`: as the step's server, down from 3 s to 23 s (open
//!    connections reset, new ones reset at once), then back.
//!
//! For 1–3 sluice runs with its adaptive limit and with every fixed limit
//! 1..=[`CAPACITY`] (`sluice_adaptive_concurrency = no`), each for the
//! shape's window from its first connection; goodput is deliveries in the
//! window per second. The adaptive run then drains the rest and every
//! message is looked for in the mailbox. For 4 the adaptive run drains the
//! backlog and reports when deliveries resumed after the return. Each run
//! writes its series (`t,connections,delivered`, for `chart.py`) and
//! appends a JSON line to `results.jsonl` in the output directory; the
//! Postfix side of `overload.sh` runs the same proxy and shape in
//! `overload proxy` and appends its own line.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice::config::Config;
use sluice::delivery::Handle;
use sluice::resolver::StaticResolver;
use sluice::shutdown::Stage;
use sluice_queue::{ClientInfo, Envelope, Options, Queue, Recipient};

use crate::common::backend::Mode;
use crate::common::dovecot::{Dovecot, User};
use crate::proxy::{Figures, Proxy};

/// Connections past which every shape answers `421`; the fixed limits
/// swept are 1..=CAPACITY.
pub const CAPACITY: usize = 8;
/// Bytes per message.
const SIZE: usize = 2048;
/// The longest a run waits for its backlog to drain.
pub const DRAIN_CAP: Duration = Duration::from_secs(300);

/// One shape of trouble.
#[derive(Debug, Clone)]
pub struct Shape {
    pub name: &'static str,
    /// The server at time zero.
    start: Mode,
    /// Changes at seconds from time zero.
    timeline: Vec<(f64, Mode)>,
    /// Goodput is measured over `[0, window)` seconds.
    pub window: f64,
    /// Messages queued before delivery starts.
    pub messages: usize,
    /// Fixed limits 1..=CAPACITY are run too.
    pub sweep: bool,
    /// When the server came back (outage).
    pub recovery: Option<f64>,
}

impl Shape {
    /// The server at time zero.
    pub fn start_mode(&self) -> Mode {
        self.start.clone()
    }
}

fn plateau(base_ms: u64, capacity: usize) -> Mode {
    Mode::Slow { base: Duration::from_millis(base_ms), capacity, overload_at: Some(CAPACITY) }
}

/// The four shapes.
pub fn all() -> Vec<Shape> {
    vec![
        Shape {
            name: "retrograde",
            start: Mode::Retrograde {
                base: Duration::from_millis(20),
                per_connection: Duration::from_millis(60),
                overload_at: Some(CAPACITY),
            },
            timeline: Vec::new(),
            window: 20.0,
            messages: 1500,
            sweep: true,
            recovery: None,
        },
        Shape {
            name: "plateau",
            start: plateau(50, 5),
            timeline: Vec::new(),
            window: 20.0,
            messages: 3000,
            sweep: true,
            recovery: None,
        },
        Shape {
            name: "step",
            start: plateau(60, 6),
            timeline: vec![(5.0, plateau(60, 3)), (35.0, plateau(60, 6))],
            window: 45.0,
            messages: 4500,
            sweep: true,
            recovery: None,
        },
        Shape {
            name: "outage",
            start: plateau(60, 6),
            timeline: vec![(3.0, Mode::Refuse), (23.0, plateau(60, 6))],
            window: 0.0,
            messages: 1500,
            sweep: false,
            recovery: Some(23.0),
        },
    ]
}

/// The fleet run's server (`fleet.rs`, not among [`all`]): the
/// retrograde server (20 ms + 60 ms per extra open connection, `421` past
/// [`CAPACITY`]), down from 3 s to 13 s, then back; 300 messages.
pub fn fleet() -> Shape {
    let retrograde = Mode::Retrograde {
        base: Duration::from_millis(20),
        per_connection: Duration::from_millis(60),
        overload_at: Some(CAPACITY),
    };
    Shape {
        name: "fleet",
        start: retrograde.clone(),
        timeline: vec![(FLEET_DOWN.0, Mode::Refuse), (FLEET_DOWN.1, retrograde)],
        window: 0.0,
        messages: 300,
        sweep: false,
        recovery: Some(FLEET_DOWN.1),
    }
}

/// When the fleet run's server is down (seconds from time zero).
pub const FLEET_DOWN: (f64, f64) = (3.0, 13.0);

pub fn by_name(name: &str) -> Shape {
    all()
        .into_iter()
        .chain([fleet()])
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("unknown shape {name}"))
}

/// Goodput while the server is up: deliveries per second over the run up
/// to `end`, the fleet shape's outage left out (the other shapes count
/// their whole window).
pub fn goodput(shape: &Shape, proxy: &Proxy, end: f64) -> f64 {
    if shape.name != "fleet" {
        return proxy.delivered_between(0.0, end) as f64 / end.max(1e-9);
    }
    let (down, back) = FLEET_DOWN;
    let up = down.min(end) + (end - back).max(0.0);
    (proxy.delivered_between(0.0, down) + proxy.delivered_between(back, end)) as f64 / up.max(1e-9)
}

/// Plays the shape's timeline on `proxy` from its first connection.
pub async fn play(shape: &Shape, proxy: &Proxy) {
    proxy.first_connection().await;
    for (at, mode) in &shape.timeline {
        let now = proxy.elapsed().unwrap_or(0.0);
        if *at > now {
            tokio::time::sleep(Duration::from_secs_f64(at - now)).await;
        }
        proxy.set_mode(mode.clone());
    }
}

/// One run's figures, as appended to `results.jsonl`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub shape: String,
    /// `adaptive`, `fixed-K` or `postfix`.
    pub run: String,
    pub messages: usize,
    /// Deliveries the server made in the whole run.
    pub delivered: usize,
    pub window: f64,
    /// Deliveries per second over the window (outage: over the drain).
    pub goodput: f64,
    pub peak_connections: usize,
    pub refused_421: usize,
    /// Seconds from time zero to the last delivery, when all were made.
    pub drained: Option<f64>,
    /// Messages never delivered (only when the run drained).
    pub lost: Option<usize>,
    /// Outage: seconds from the return to the first delivery after it.
    pub flowing_after: Option<f64>,
    /// Outage: connection attempts while down.
    pub outage_attempts: Option<usize>,
}

impl Run {
    /// A run's figures: `figures` as the proxy counted them when the run
    /// ended, goodput over `window`, `drained` when every message was
    /// delivered. `lost` is left to the caller (only it knows where the
    /// mail went): `Run { lost, ..Run::measured(..) }`.
    pub fn measured(
        shape: &Shape,
        run: String,
        proxy: &Proxy,
        figures: &Figures,
        window: f64,
        goodput: f64,
        drained: Option<f64>,
    ) -> Run {
        Run {
            shape: shape.name.into(),
            run,
            messages: shape.messages,
            delivered: figures.delivered,
            window,
            goodput,
            peak_connections: figures.peak_connections,
            refused_421: figures.refused_421,
            drained,
            lost: None,
            flowing_after: shape.recovery.and_then(|r| proxy.first_delivery_after(r).map(|t| t - r)),
            outage_attempts: shape.recovery.map(|_| figures.outage_attempts),
        }
    }

    /// Appends this run to `dir/results.jsonl` and its series to
    /// `dir/<shape>-<run>.csv`.
    pub fn save(&self, dir: &Path, proxy: &Proxy) {
        std::fs::create_dir_all(dir).expect("output dir");
        let csv = dir.join(format!("{}-{}.csv", self.shape, self.run));
        std::fs::write(csv, proxy.series_csv()).expect("write series");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("results.jsonl"))
            .expect("results.jsonl");
        writeln!(f, "{}", serde_json::to_string(self).expect("json")).expect("write results");
    }

    pub fn print(&self) {
        let mut line = format!(
            "  {:<10} {:<9} goodput {:6.1} msg/s  peak {:2} conn  421s {:4}",
            self.shape, self.run, self.goodput, self.peak_connections, self.refused_421
        );
        if let Some(d) = self.drained {
            line.push_str(&format!("  drained {d:.1} s"));
        }
        if let Some(l) = self.lost {
            line.push_str(&format!("  lost {l}"));
        }
        if let Some(f) = self.flowing_after {
            line.push_str(&format!("  flowing {f:.2} s after the return"));
        }
        if let Some(a) = self.outage_attempts {
            line.push_str(&format!("  {a} connection attempts while down"));
        }
        println!("{line}");
    }
}

pub fn message(shape: &str, run: &str, n: usize) -> Vec<u8> {
    let mut b = format!(
        "From: load@remote.test\r\nTo: user@dev.test\r\nSubject: {shape} {run} {n}\r\n\
         Message-ID: <{shape}-{run}-{n}@remote.test>\r\n\r\n"
    )
    .into_bytes();
    while b.len() + 80 <= SIZE {
        b.extend_from_slice(&[b'x'; 78]);
        b.extend_from_slice(b"\r\n");
    }
    b
}

pub fn envelope(rcpt: &str) -> Envelope {
    Envelope {
        sender: "load@remote.test".into(),
        recipients: vec![Recipient::new(rcpt)],
        arrival: sluice::clock::unix_millis(),
        size: 0,
        client: ClientInfo {
            addr: Some([127, 0, 0, 1].into()),
            name: "localhost".into(),
            helo: "load".into(),
            protocol: "ESMTP".into(),
        },
        ..Envelope::default()
    }
}

/// Message-IDs in a user's maildir.
pub fn delivered_ids(dc: &Dovecot, user: &str) -> HashSet<String> {
    dc.maildir(user)
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(m).lines().take_while(|l| !l.is_empty()).find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("message-id").then(|| value.trim().to_owned())
            })
        })
        .collect()
}

/// The users the runs deliver to, one per run (each run's mail apart).
pub fn users() -> Vec<User> {
    let mut u: Vec<User> = (0..=CAPACITY).map(|k| User::new(&format!("run{k}"))).collect();
    u.push(User::new("postfix"));
    u
}

pub const MASTER_CF: &str = "lmtp unix - - n - - lmtp\nsmtp unix - - n - - smtp\n";

/// Queues messages `range` of `shape`'s run `run` for `rcpt`, 64 enqueues
/// at a time (each its own synced batch, as the inbound server makes them).
pub async fn fill(queue: &Queue, shape: &Shape, run: &str, rcpt: &str, range: Range<usize>) {
    let mut pending = Vec::new();
    for n in range {
        let q = queue.clone();
        let (data, env) = (message(shape.name, run, n), envelope(rcpt));
        pending.push(tokio::spawn(async move { q.enqueue(env, &data, sluice::clock::unix_millis()).await }));
        if pending.len() >= 64 {
            for t in pending.drain(..) {
                t.await.expect("task").expect("enqueue");
            }
        }
    }
    for t in pending {
        t.await.expect("task").expect("enqueue");
    }
}

/// Starts sluice's delivery (the daemon's delivery half, DNS from the
/// static double) on `queue` with `main_cf` and [`MASTER_CF`]; stopping the
/// returned stage stops it.
pub async fn start_delivery(dir: &Path, queue: &Queue, main_cf: &str) -> (Stage, Handle) {
    let loaded = Config::from_texts(dir, main_cf, MASTER_CF).expect("config");
    let stage = Stage::new();
    let handle = sluice::delivery::start_with_resolver(
        queue.clone(),
        Arc::new(ArcSwap::new(loaded.config)),
        Arc::new(StaticResolver::new()),
        stage.clone(),
    )
    .await
    .expect("delivery starts");
    (stage, handle)
}

/// Messages of `shape`'s run `run` missing from `user`'s mailbox, once the
/// run drained (`None` when it did not: not all could have arrived).
pub fn lost(dc: &Dovecot, user: &str, shape: &Shape, run: &str, drained: Option<f64>) -> Option<usize> {
    drained.map(|_| {
        let got = delivered_ids(dc, user);
        (0..shape.messages)
            .filter(|n| !got.contains(&format!("<{}-{run}-{n}@remote.test>", shape.name)))
            .count()
    })
}

/// Runs sluice on `shape`: adaptive when `fixed` is `None`, else with its
/// limit pinned at `fixed`.
pub async fn run_sluice(shape: &Shape, fixed: Option<usize>, dc: &Dovecot, out: &Path) -> Run {
    let upstream: SocketAddr = ([127, 0, 0, 1], dc.lmtp_port).into();
    let proxy = Proxy::start(([127, 0, 0, 1], 0).into(), upstream, shape.start.clone()).await;
    let label = match fixed {
        Some(k) => format!("fixed-{k}"),
        None => "adaptive".to_owned(),
    };
    let user = format!("run{}", fixed.unwrap_or(0));
    let dir = tempfile::Builder::new().prefix("sluice-shapes-").tempdir().expect("temp dir");
    let now = sluice::clock::unix_millis();
    let queue = Queue::open(&dir.path().join("queue"), &Options::default(), now).expect("queue");
    // The backlog, queued before delivery starts.
    fill(&queue, shape, &label, &format!("{user}@dev.test"), 0..shape.messages).await;
    let pin = match fixed {
        Some(k) => format!("lmtp_destination_concurrency_limit = {k}\nsluice_adaptive_concurrency = no\n"),
        None => String::new(),
    };
    let main_cf = format!(
        "myhostname = mx.bench.test\nrelay_domains = dev.test\n\
         transport_maps = inline:{{ dev.test=lmtp:[127.0.0.1]:{} }}\n{pin}",
        proxy.addr().port()
    );
    let (stage, _handle) = start_delivery(dir.path(), &queue, &main_cf).await;
    let timeline = play(shape, &proxy);
    let done = async {
        proxy.first_connection().await;
        if shape.window > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(shape.window)).await;
        }
        // The adaptive run (and the outage) drains the rest.
        if fixed.is_none() {
            let start = sluice::clock::instant();
            while queue.stats().await.messages > 0 && start.elapsed() < DRAIN_CAP {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::join!(timeline, done);
    let figures = proxy.figures();
    let drained = if queue.stats().await.messages == 0 { proxy.last_delivery() } else { None };
    stage.stop().await;
    queue.close().await.ok();
    let window = if shape.window > 0.0 { shape.window } else { drained.unwrap_or(1.0) };
    let lost = lost(dc, &user, shape, &label, drained);
    let goodput = proxy.delivered_between(0.0, window) as f64 / window;
    let run = Run { lost, ..Run::measured(shape, label, &proxy, &figures, window, goodput, drained) };
    run.save(out, &proxy);
    run
}

/// `overload shapes [NAMES] [--out DIR]`: sluice's runs.
pub async fn main_shapes(args: &[String]) {
    let (names, out) = parse(args);
    let dc = Dovecot::start(&users(), false);
    for shape in names.iter().map(|n| by_name(n)) {
        println!("== {} (sluice)", shape.name);
        run_sluice(&shape, None, &dc, &out).await.print();
        if shape.sweep {
            for k in 1..=CAPACITY {
                run_sluice(&shape, Some(k), &dc, &out).await.print();
            }
        }
    }
}

/// Messages in a user's maildir (files in `new/` and `cur/`).
fn maildir_count(dc: &Dovecot, user: &str) -> usize {
    let base = dc.dir.path().join("mail").join(user).join("Maildir");
    ["new", "cur"].iter().filter_map(|d| std::fs::read_dir(base.join(d)).ok()).map(|rd| rd.count()).sum()
}

/// `overload proxy SHAPE --port P [--out DIR] [--limit SECONDS] [--run
/// NAME]`: Dovecot
/// behind the proxy for the Postfix side, delivering to the `postfix`
/// user. The run ends by itself: after the shape's window from the first
/// connection, or (outage) when every message is in the mailbox or
/// `--limit` seconds (600) have passed; then it saves its figures.
pub async fn main_proxy(args: &[String]) {
    let shape = by_name(args.first().map(String::as_str).unwrap_or("retrograde"));
    let (_, out) = parse(&args[1..]);
    let port: u16 = flag(args, "--port").and_then(|p| p.parse().ok()).expect("--port P");
    let limit: f64 = flag(args, "--limit").and_then(|p| p.parse().ok()).unwrap_or(600.0);
    let dc = Dovecot::start(&users(), false);
    let upstream: SocketAddr = ([127, 0, 0, 1], dc.lmtp_port).into();
    let proxy = Proxy::start(([127, 0, 0, 1], port).into(), upstream, shape.start.clone()).await;
    eprintln!("proxy for {} on {}", shape.name, proxy.addr());
    let end = async {
        proxy.first_connection().await;
        if shape.window > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(shape.window)).await;
        } else {
            while maildir_count(&dc, "postfix") < shape.messages && proxy.elapsed().unwrap_or(0.0) < limit {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        _ = async { play(&shape, &proxy).await; std::future::pending::<()>().await } => {}
        _ = end => {}
    }
    let figures = proxy.figures();
    let got = maildir_count(&dc, "postfix");
    let drained = if got >= shape.messages { proxy.last_delivery() } else { None };
    let window = if shape.window > 0.0 { shape.window } else { drained.unwrap_or(limit) };
    let label = flag(args, "--run").unwrap_or_else(|| "postfix".into());
    let goodput = goodput(&shape, &proxy, window);
    let run = Run {
        lost: drained.map(|_| shape.messages.saturating_sub(got)),
        ..Run::measured(&shape, label, &proxy, &figures, window, goodput, drained)
    };
    run.save(&out, &proxy);
    run.print();
}

/// `overload info SHAPE`: what the script needs to feed Postfix.
pub fn main_info(args: &[String]) {
    let shape = by_name(args.first().map(String::as_str).unwrap_or("retrograde"));
    println!("messages={} window={} size={SIZE}", shape.messages, shape.window);
}

/// The value after `--name` in `args`.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Shape names (all when none) and `--out DIR` (default
/// `target/overload-shapes`).
fn parse(args: &[String]) -> (Vec<String>, PathBuf) {
    let out =
        flag(args, "--out").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/overload-shapes"));
    let mut names = names(args);
    if names.is_empty() {
        names = all().iter().map(|s| s.name.to_owned()).collect();
    }
    (names, out)
}

/// The arguments that are not options (every `--name` takes a value).
pub fn names(args: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with("--") {
            it.next();
        } else {
            names.push(a.clone());
        }
    }
    names
}
