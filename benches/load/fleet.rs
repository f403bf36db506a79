//! The fleet runs: several sluice hosts in front of one mailbox server,
//! each with its own gate or, in fleet mode, one gate shared through a
//! private `redis-server`; and what fleet mode costs one host.
//!
//! `overload fleet [--out DIR]` plays the fleet shape (`shapes::fleet`: the
//! retrograde server, 20 ms + 60 ms per extra open connection, `421` past
//! 8, down from 3 s to 13 s) behind the shaping proxy in front of a real
//! Dovecot, with 300 messages spread over the hosts' queues before
//! delivery starts:
//! - `single-fixed-1`: one host at a fixed limit of 1, the best fixed
//!   limit on this server (the shapes bench's sweep), the reference for
//!   goodput;
//! - `single`: one host, adaptive;
//! - `nofleet-3`: three hosts, each with its own gate;
//! - `fleet-3`, `fleet-6`: three and six hosts in fleet mode.
//!
//! Every host is a queue and a delivery stage of its own (the daemon's
//! delivery half) with its own `sluice_fleet_host`; they run in one
//! process to keep the run cheap on a small machine, but share nothing
//! except Redis and the server: their gates, Redis connections, slots and
//! limits are each host's own, as on separate machines. Configuration is
//! the defaults otherwise (lease 10 s, heartbeat 1 s, call deadline
//! 200 ms, adaptive limit starting at 5 within 20). The Postfix side
//! (`overload.sh fleet`) runs three private Postfix instances through
//! `overload proxy fleet`.
//!
//! `overload fleet-cost [--messages N]` measures one host delivering a
//! queued backlog (10,000 messages) to the switchable test backend (no
//! shaping, answers at once) with and without fleet mode, alternating,
//! and counts Redis commands per delivery with `INFO commandstats`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice::shutdown::Stage;
use sluice_queue::{Options, Queue};

use crate::common::backend::{Backend, Mode, Proto};
use crate::common::dovecot::{Dovecot, User};
use crate::common::redis::Redis;
use crate::proxy::Proxy;
use crate::shapes::{self, DRAIN_CAP, Run, Shape};

/// One setup of the fleet run.
struct Setup {
    run: &'static str,
    hosts: usize,
    fleet: bool,
    fixed: Option<usize>,
}

const SETUPS: &[Setup] = &[
    Setup { run: "single-fixed-1", hosts: 1, fleet: false, fixed: Some(1) },
    Setup { run: "single", hosts: 1, fleet: false, fixed: None },
    Setup { run: "nofleet-3", hosts: 3, fleet: false, fixed: None },
    Setup { run: "fleet-3", hosts: 3, fleet: true, fixed: None },
    Setup { run: "fleet-6", hosts: 6, fleet: true, fixed: None },
];

/// The mailbox user of a run (each run's mail apart).
fn user(run: &str) -> String {
    run.replace('-', "")
}

/// One host: its queue, its delivery, its temp dir.
struct Host {
    queue: Queue,
    stage: Stage,
    _dir: tempfile::TempDir,
}

/// main.cf of host `i` delivering to `port`; in fleet mode sharing
/// `redis` as fleet `name`.
fn main_cf(i: usize, port: u16, fixed: Option<usize>, redis: Option<(&str, &str)>) -> String {
    let mut cf = format!(
        "myhostname = mx{i}.bench.test\nrelay_domains = dev.test\n\
         transport_maps = inline:{{ dev.test=lmtp:[127.0.0.1]:{port} }}\n"
    );
    if let Some(k) = fixed {
        cf.push_str(&format!("lmtp_destination_concurrency_limit = {k}\nsluice_adaptive_concurrency = no\n"));
    }
    if let Some((url, name)) = redis {
        cf.push_str(&format!("sluice_fleet_redis = {url}\nsluice_fleet_name = {name}\n"));
    }
    cf
}

/// Opens a host's queue and fills it with messages `range` of the run.
async fn host_queue(dir: &Path, shape: &Shape, run: &str, range: std::ops::Range<usize>) -> Queue {
    let queue =
        Queue::open(&dir.join("queue"), &Options::default(), sluice::clock::unix_millis()).expect("queue");
    shapes::fill(&queue, shape, run, &format!("{}@dev.test", user(run)), range).await;
    queue
}

/// Starts delivery on a host's queue with `main_cf`.
async fn start_host(dir: tempfile::TempDir, queue: Queue, main_cf: &str) -> Host {
    let (stage, _) = shapes::start_delivery(dir.path(), &queue, main_cf).await;
    Host { queue, stage, _dir: dir }
}

async fn queued(hosts: &[Host]) -> usize {
    let mut n = 0;
    for h in hosts {
        n += h.queue.stats().await.messages as usize;
    }
    n
}

async fn run_setup(shape: &Shape, setup: &Setup, dc: &Dovecot, redis: &Redis, out: &Path) -> Run {
    let upstream: SocketAddr = ([127, 0, 0, 1], dc.lmtp_port).into();
    let proxy = Proxy::start(([127, 0, 0, 1], 0).into(), upstream, shape.start_mode()).await;
    let per = shape.messages.div_ceil(setup.hosts);
    let url = redis.url();
    let mut hosts = Vec::new();
    let mut filled = Vec::new();
    for i in 0..setup.hosts {
        let dir = tempfile::Builder::new().prefix("sluice-fleet-").tempdir().expect("temp dir");
        let range = (i * per).min(shape.messages)..((i + 1) * per).min(shape.messages);
        let queue = host_queue(dir.path(), shape, setup.run, range).await;
        filled.push((dir, queue));
    }
    // Every host starts delivering at once, its backlog already queued.
    for (i, (dir, queue)) in filled.into_iter().enumerate() {
        let fleet = setup.fleet.then_some((url.as_str(), setup.run));
        let cf = main_cf(i + 1, proxy.addr().port(), setup.fixed, fleet);
        hosts.push(start_host(dir, queue, &cf).await);
    }
    let timeline = shapes::play(shape, &proxy);
    let done = async {
        proxy.first_connection().await;
        let start = sluice::clock::instant();
        while queued(&hosts).await > 0 && start.elapsed() < DRAIN_CAP {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::join!(timeline, done);
    let figures = proxy.figures();
    let drained = if queued(&hosts).await == 0 { proxy.last_delivery() } else { None };
    for h in &hosts {
        h.stage.stop().await;
        h.queue.close().await.ok();
    }
    let window = drained.unwrap_or(DRAIN_CAP.as_secs_f64());
    let lost = shapes::lost(dc, &user(setup.run), shape, setup.run, drained);
    let goodput = shapes::goodput(shape, &proxy, window);
    let run =
        Run { lost, ..Run::measured(shape, setup.run.into(), &proxy, &figures, window, goodput, drained) };
    run.save(out, &proxy);
    run
}

/// `overload fleet [RUN...] [--out DIR]`: the fleet runs (all when none is
/// named).
pub async fn main_fleet(args: &[String]) {
    let out = shapes::flag(args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/overload-fleet"));
    let names = shapes::names(args);
    let users: Vec<User> = SETUPS.iter().map(|s| User::new(&user(s.run))).collect();
    let dc = Dovecot::start(&users, false);
    let redis = Redis::start();
    let shape = shapes::fleet();
    for setup in SETUPS.iter().filter(|s| names.is_empty() || names.iter().any(|n| n == s.run)) {
        println!(
            "== fleet {} ({} host(s){})",
            setup.run,
            setup.hosts,
            if setup.fleet { ", fleet mode" } else { "" }
        );
        run_setup(&shape, setup, &dc, &redis, &out).await.print();
    }
}

/// Redis calls served so far: (round trips: `EVALSHA`/`EVAL` and other
/// commands sent by clients; every command, those run inside the scripts
/// included), from `INFO commandstats` (the `INFO` calls left out).
fn redis_commands(redis: &Redis) -> (u64, u64) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.addr().port().to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    let (mut scripts, mut all) = (0, 0);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let Some(calls) = rest.split("calls=").nth(1).and_then(|r| r.split(',').next()?.parse::<u64>().ok())
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        all += calls;
        if matches!(name, "evalsha" | "eval" | "script|load" | "hello" | "client|setinfo" | "ping") {
            scripts += calls;
        }
    }
    (scripts, all)
}

/// One host delivering `n` queued messages to `port`: seconds from start
/// to an empty queue.
async fn drain_one(n: usize, port: u16, fixed: Option<usize>, redis: Option<(&str, &str)>) -> f64 {
    let dir = tempfile::Builder::new().prefix("sluice-fleet-cost-").tempdir().expect("temp dir");
    let queue = host_queue(dir.path(), &shapes::fleet(), "cost", 0..n).await;
    let start = sluice::clock::instant();
    let host = start_host(dir, queue, &main_cf(1, port, fixed, redis)).await;
    while host.queue.stats().await.messages > 0 && start.elapsed() < DRAIN_CAP {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed().as_secs_f64();
    host.stage.stop().await;
    host.queue.close().await.ok();
    took
}

/// `overload fleet-cost [--messages N] [--rounds R] [--fixed K]`: one host
/// with and without fleet mode, alternating R times (3), N messages each
/// (10000); with `--fixed`, at a fixed concurrency limit K (the default:
/// the adaptive limit).
pub async fn main_cost(args: &[String]) {
    let n: usize = shapes::flag(args, "--messages").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let fixed: Option<usize> = shapes::flag(args, "--fixed").and_then(|v| v.parse().ok());
    let rounds: usize = shapes::flag(args, "--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Normal).await;
    let redis = Redis::start();
    let url = redis.url();
    let (mut local, mut fleet, mut trips, mut calls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        local.push(n as f64 / drain_one(n, b.port(), fixed, None).await);
        let before = redis_commands(&redis);
        let name = format!("cost{r}");
        fleet.push(n as f64 / drain_one(n, b.port(), fixed, Some((url.as_str(), name.as_str()))).await);
        let after = redis_commands(&redis);
        trips.push((after.0 - before.0) as f64 / n as f64);
        calls.push((after.1 - before.1) as f64 / n as f64);
        println!(
            "  round {}: without fleet mode {:.0} msg/s, with {:.0} msg/s; per delivery {:.2} round trips, {:.2} commands",
            r + 1,
            local[r],
            fleet[r],
            trips[r],
            calls[r]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (l, f, t, c) = (median(&mut local), median(&mut fleet), median(&mut trips), median(&mut calls));
    let limit = fixed.map_or_else(|| "adaptive limit".to_owned(), |k| format!("fixed limit {k}"));
    println!(
        "fleet mode's cost on one host ({n} queued messages to a backend that answers at once, {limit}, median of {rounds})"
    );
    println!("  without fleet mode: {l:.0} msg/s");
    println!("  with fleet mode:    {f:.0} msg/s ({:+.1} %)", 100.0 * (f - l) / l);
    println!("  redis round trips per delivery: {t:.2} (EVALSHA and the client's own commands)");
    println!("  redis commands per delivery: {c:.2} (those run inside the scripts included)");
}
