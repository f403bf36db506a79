//! The overload scenario: a mailbox server with capacity C concurrent
//! deliveries (each takes `base` up to C; beyond C the excess queues inside
//! it, so latency grows in proportion; past 2C connections it answers
//! `421`), offered more mail than it can take; then it recovers.
//!
//! Reports the server's peak concurrency, its goodput during the overload as
//! a fraction of its capacity, messages lost (must be 0), and the drain
//! time after recovery.
//!
//! Modes:
//! - `overload sluice [opts]`: the server runs in-process; mail is put in a
//!   real queue at the offered rate (as the inbound server would) and
//!   delivered by sluice's scheduler through its gate.
//! - `overload backend --port P [opts]`: only the server, for the Postfix
//!   side driven by `benches/load/overload.sh`: `SIGUSR1` makes it recover,
//!   `SIGTERM` makes it print its figures and exit.
//! - `overload shapes [NAMES] [--out DIR]` and `overload proxy SHAPE --port
//!   P [--out DIR]`: the four shapes of trouble against a real Dovecot
//!   behind a shaping proxy, sluice's side and the Postfix side
//!   (`shapes.rs`, `proxy.rs`; `overload.sh shapes` runs both).
//! - `overload fleet [RUNS] [--out DIR]` and `overload fleet-cost`: several
//!   hosts in front of one server, with and without fleet mode, and what
//!   fleet mode costs one host (`fleet.rs`; `overload.sh fleet` adds three
//!   Postfix instances and draws the chart).
//!
//! Options: `--capacity C` (10), `--base-ms B` (100), `--rate R` messages/s
//! offered (1.5 × capacity), `--seconds T` of overload (20), `--size S`
//! bytes per message (4096).

#[path = "../../tests/common/mod.rs"]
mod common;
mod fleet;
mod proxy;
mod shapes;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use sluice_queue::{Options, Queue};

#[derive(Debug, Clone)]
struct Opts {
    capacity: usize,
    base: Duration,
    rate: f64,
    seconds: u64,
    size: usize,
    port: u16,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut o = Opts {
            capacity: 10,
            base: Duration::from_millis(100),
            rate: 0.0,
            seconds: 20,
            size: 4096,
            port: 0,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().map(String::as_str).unwrap_or("");
            match a.as_str() {
                "--capacity" => o.capacity = v.parse().expect("--capacity N"),
                "--base-ms" => o.base = Duration::from_millis(v.parse().expect("--base-ms N")),
                "--rate" => o.rate = v.parse().expect("--rate N"),
                "--seconds" => o.seconds = v.parse().expect("--seconds N"),
                "--size" => o.size = v.parse().expect("--size N"),
                "--port" => o.port = v.parse().expect("--port N"),
                "--bench" => {}
                other => panic!("unknown option {other}"),
            }
        }
        if o.rate == 0.0 {
            o.rate = 1.5 * o.capacity_per_sec();
        }
        o
    }

    fn capacity_per_sec(&self) -> f64 {
        self.capacity as f64 / self.base.as_secs_f64()
    }

    fn slow(&self) -> Mode {
        Mode::Slow { base: self.base, capacity: self.capacity, overload_at: Some(2 * self.capacity) }
    }
}

fn message_id(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().take_while(|l| !l.is_empty() && *l != "\r").find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("message-id").then(|| value.trim().to_owned())
    })
}

fn unique_delivered(b: &Backend) -> HashSet<String> {
    b.received().iter().filter_map(|r| message_id(&r.data)).collect()
}

fn body(n: usize, size: usize) -> Vec<u8> {
    let mut b = format!(
        "From: load@remote.test\r\nTo: user@dev.test\r\nSubject: overload {n}\r\nMessage-ID: <ovl-{n}@remote.test>\r\n\r\n"
    )
    .into_bytes();
    while b.len() + 80 <= size {
        b.extend_from_slice(&[b'x'; 78]);
        b.extend_from_slice(b"\r\n");
    }
    b
}

async fn run_sluice(o: Opts) {
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(o.slow()).await;
    let dir = tempfile::Builder::new().prefix("sluice-overload-").tempdir().expect("temp dir");
    let queue = Queue::open(&dir.path().join("queue"), &Options::default(), sluice::clock::unix_millis())
        .expect("queue");
    let main_cf = format!(
        "myhostname = mx.bench.test\nrelay_domains = dev.test\n\
         transport_maps = inline:{{ dev.test=lmtp:[127.0.0.1]:{} }}\n",
        b.port()
    );
    let (stage, handle) = shapes::start_delivery(dir.path(), &queue, &main_cf).await;

    // Offer `rate` messages per second for `seconds`, in 10 ms ticks.
    let total = (o.rate * o.seconds as f64) as usize;
    let start = sluice::clock::instant();
    let mut sent = 0usize;
    let mut limit_samples = Vec::new();
    let (mut gate_peak, mut limit_max) = (0, 0);
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * o.rate) as usize).min(total);
        let mut batch = Vec::new();
        while sent < due {
            let q = queue.clone();
            let data = body(sent, o.size);
            batch.push(tokio::spawn(async move {
                q.enqueue(shapes::envelope("user@dev.test"), &data, sluice::clock::unix_millis()).await
            }));
            sent += 1;
        }
        for t in batch {
            t.await.expect("task").expect("enqueue");
        }
        if let Some(s) = handle.list().first() {
            limit_samples.push(s.snapshot.limit);
            gate_peak = gate_peak.max(s.snapshot.peak);
            limit_max = limit_max.max(s.snapshot.limit);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let phase = start.elapsed();
    let during = unique_delivered(&b).len();
    let peak_tx = b.peak_transactions();
    let peak_conn = b.peak_connections();
    let refused = b.refused_421();

    // Recovery: the server is healthy again (no added latency).
    b.set_mode(Mode::Normal).await;
    let recovered = sluice::clock::instant();
    loop {
        if queue.stats().await.messages == 0 {
            break;
        }
        if recovered.elapsed() > Duration::from_secs(900) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = recovered.elapsed();
    let delivered = unique_delivered(&b);
    let lost = (0..sent).filter(|n| !delivered.contains(&format!("<ovl-{n}@remote.test>"))).count();
    let avg_limit = limit_samples.iter().map(|&l| l as f64).sum::<f64>() / limit_samples.len().max(1) as f64;
    stage.stop().await;
    queue.close().await.ok();

    let goodput = during as f64 / phase.as_secs_f64();
    println!("overload scenario, sluice");
    println!(
        "  server: capacity C = {} concurrent, {} ms each ({:.0} msg/s), 421 past {} connections",
        o.capacity,
        o.base.as_millis(),
        o.capacity_per_sec(),
        2 * o.capacity
    );
    println!(
        "  offered: {sent} messages of {} bytes at {:.0} msg/s for {:.1} s",
        o.size,
        o.rate,
        phase.as_secs_f64()
    );
    println!(
        "  peak concurrency at the server: {peak_tx} transactions ({:.2} C), {peak_conn} connections ({:.2} C)",
        peak_tx as f64 / o.capacity as f64,
        peak_conn as f64 / o.capacity as f64
    );
    println!(
        "  gate limit during overload: mean {avg_limit:.1}, max {limit_max}; most deliveries at once: {gate_peak}"
    );
    println!("  421 answers: {refused}");
    println!(
        "  goodput during overload: {goodput:.1} msg/s = {:.0} % of capacity",
        100.0 * goodput / o.capacity_per_sec()
    );
    println!("  lost: {lost}");
    println!("  drain after recovery: {:.2} s", drain.as_secs_f64());
}

async fn run_backend(o: Opts) {
    use tokio::signal::unix::{SignalKind, signal};
    let addr: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let b = Backend::start_on(addr, Proto::Lmtp).await;
    b.set_mode(o.slow()).await;
    eprintln!("overload backend on {addr}: SIGUSR1 = recover, SIGTERM = report and exit");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("signal");
    let mut term = signal(SignalKind::terminate()).expect("signal");
    let mut first: Option<tokio::time::Instant> = None;
    let mut during = None;
    let mut phase = None;
    let (mut peak_tx, mut peak_conn, mut refused) = (0, 0, 0);
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let f = first.unwrap_or_else(sluice::clock::instant);
                phase = Some(f.elapsed());
                during = Some(unique_delivered(&b).len());
                peak_tx = b.peak_transactions();
                peak_conn = b.peak_connections();
                refused = b.refused_421();
                b.set_mode(Mode::Normal).await;
                eprintln!("recovered");
            }
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if first.is_none() && b.accepted_connections() > 0 {
                    first = Some(sluice::clock::instant());
                }
            }
        }
    }
    let total = unique_delivered(&b).len();
    let phase = phase.unwrap_or_default().as_secs_f64().max(1e-9);
    let during = during.unwrap_or(total);
    let goodput = during as f64 / phase;
    println!("peak_transactions={peak_tx} ({:.2} C)", peak_tx as f64 / o.capacity as f64);
    println!("peak_connections={peak_conn} ({:.2} C)", peak_conn as f64 / o.capacity as f64);
    println!("refused_421={refused}");
    println!(
        "goodput={goodput:.1} msg/s ({:.0} % of capacity over {phase:.1} s)",
        100.0 * goodput / o.capacity_per_sec()
    );
    println!("delivered_unique={total}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let (mode, rest) = args.split_first().map(|(m, r)| (m.as_str(), r)).unwrap_or(("sluice", &[]));
    if mode == "info" {
        return shapes::main_info(rest);
    }
    if matches!(mode, "shapes" | "proxy" | "fleet" | "fleet-cost") {
        if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
        }
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        match mode {
            "shapes" => rt.block_on(shapes::main_shapes(rest)),
            "fleet" => rt.block_on(fleet::main_fleet(rest)),
            "fleet-cost" => rt.block_on(fleet::main_cost(rest)),
            _ => rt.block_on(shapes::main_proxy(rest)),
        }
        return;
    }
    let o = Opts::parse(rest);
    if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match mode {
        "sluice" => rt.block_on(run_sluice(o)),
        "backend" => rt.block_on(run_backend(o)),
        other => panic!("unknown mode {other}: sluice | backend | shapes | proxy"),
    }
}
