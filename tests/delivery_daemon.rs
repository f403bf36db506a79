//! The whole daemon against a real mailbox server (a private Dovecot over
//! LMTP), in the two situations an MX host must survive without losing
//! mail:
//! - `sluice serve` killed with SIGKILL while it accepts and delivers:
//!   after a restart on the same spool, every message that got `250` is in
//!   the mailbox (a duplicate is allowed, a loss is not), and the mail that
//!   was in flight is made due again spread out, not all at once, and a
//!   mailbox server counting its connections sees no more after the
//!   restart than the concurrency limit allows;
//! - the mailbox server down for a while, then back on the same port: mail
//!   is deferred with the reason shown by `mailq`, the breaker opens and the
//!   admin commands say so, the log names the backend without a flood of
//!   lines per message, and once Dovecot is back the backlog is delivered
//!   by the breaker's probe, not at the next retry (`minimal_backoff_time =
//!   300s` here), also when sluice was restarted during the outage.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::dovecot::{Dovecot, User};
use common::wait_until;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn message(subject: &str) -> String {
    format!(
        "From: <a@sender.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nbody of {subject}\r\n"
    )
}

/// The subjects of the messages in a user's Maildir, with their counts.
fn subjects(dc: &Dovecot, user: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in dc.maildir(user) {
        let text = String::from_utf8_lossy(&m).into_owned();
        if let Some(s) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *seen.entry(s.trim().to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// `sluice queue list --json`: one object per message.
fn queue_json(cfg: &TestConfig) -> Vec<serde_json::Value> {
    stdout(&cfg.sluice(&["queue", "list", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `sluice backend list --json`, the entry for `name`.
fn backend(cfg: &TestConfig, name: &str) -> Option<serde_json::Value> {
    let out = cfg.sluice(&["backend", "list", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).ok()?;
    all.into_iter().find(|b| b["name"] == name)
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

#[test]
fn sigkill_while_delivering_loses_no_acknowledged_message() {
    let dc = Dovecot::start(&[User::new("alice")], false);
    let name = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    // A rate limit below what the clients send builds a backlog, so mail
    // is in flight (claimed, waiting for its turn or being delivered) when
    // the daemon dies.
    let cfg = TestConfig::new(&name, "lmtp_sluice_rate_limit = 3/s\n");
    let daemon = Daemon::start(&cfg);
    let context = || format!("sluice:\n{}\ndovecot:\n{}", cfg.log(), dc.log());

    // Several clients send as fast as they can while the daemon delivers.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for t in 0..6 {
        let addr = cfg.smtp;
        let stop = stop.clone();
        senders.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let subject = format!("crash-{t}-{i}");
                if send(addr, "a@sender.test", &["alice@relay.test"], &message(&subject)).is_ok() {
                    acked.push(subject);
                }
                i += 1;
            }
            acked
        }));
    }
    // Kill it once mail is flowing both ways: delivered and still arriving.
    wait_until(
        "some mail delivered before the kill",
        Duration::from_secs(60),
        || dc.maildir("alice").len() >= 8,
        context,
    );
    daemon.signal("KILL");
    let mut daemon = daemon;
    let killed = daemon.child.child.wait().expect("wait");
    assert!(!killed.success(), "{killed:?}");
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = senders.into_iter().flat_map(|h| h.join().expect("sender")).collect();
    drop(daemon);

    let before_restart = cfg.log().len();
    let daemon = Daemon::start(&cfg);
    wait_until(
        "every acknowledged message in the mailbox",
        Duration::from_secs(120),
        || {
            let got = subjects(&dc, "alice");
            acked.iter().all(|s| got.contains_key(s))
        },
        || {
            let got = subjects(&dc, "alice");
            let missing: Vec<&String> = acked.iter().filter(|s| !got.contains_key(*s)).collect();
            format!("missing {missing:?}\n{}", context())
        },
    );
    wait_until("an empty queue", Duration::from_secs(60), || queue_json(&cfg).is_empty(), context);

    // The restart found the mail that was in flight and spread it out.
    let log = cfg.log();
    let restart = &log[before_restart..];
    let opened = restart
        .lines()
        .find(|l| l.contains("in-flight messages due again within"))
        .unwrap_or_else(|| panic!("no recovery line after the restart:\n{restart}"));
    let at = opened.find(" in-flight messages").expect("count");
    let inflight: usize =
        opened[..at].rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{opened}"));
    let dups = subjects(&dc, "alice").values().filter(|&&n| n > 1).count();
    eprintln!("{} acknowledged, {inflight} in flight at the kill, {dups} delivered twice", acked.len());
    assert!(inflight > 0, "nothing was in flight at the kill, the test proves little: {opened}");
    assert!(!opened.contains("within 0ns"), "recovered mail is not spread out: {opened}");

    // Nothing arrived that was not sent (a message cut off before its
    // `250` may arrive or not; it was never promised).
    let got = subjects(&dc, "alice");
    assert!(got.keys().all(|s| s.starts_with("crash-") || s.is_empty()), "{got:?}");
    assert!(daemon.stop().success());
}

/// A daemon for `name` whose retries are five minutes apart, so only the
/// breaker's probe (every 1 to 2 s here) can bring a backlog out within
/// the test's time.
fn outage_config(name: &str) -> TestConfig {
    TestConfig::new(
        name,
        "minimal_backoff_time = 300s\n\
         maximal_backoff_time = 600s\n\
         lmtp_sluice_breaker_cooldown = 1s\n\
         lmtp_sluice_breaker_max_cooldown = 2s\n",
    )
}

#[test]
fn a_mailbox_server_outage_defers_opens_the_breaker_and_drains_on_return() {
    let mut dc = Dovecot::start(&[User::new("alice")], false);
    let name = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = outage_config(&name);
    let daemon = Daemon::start(&cfg);
    let context = |dc: &Dovecot| format!("sluice:\n{}\ndovecot:\n{}", cfg.log(), dc.log());

    send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message("before")).expect("accepted");
    wait_until(
        "the first message delivered",
        Duration::from_secs(30),
        || dc.maildir("alice").len() == 1,
        || context(&dc),
    );

    dc.stop();
    const N: usize = 12;
    let mut ids = Vec::new();
    for i in 0..N {
        let reply = send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message(&format!("outage-{i}")))
            .expect("accepted");
        ids.push(queued_id(&reply));
    }

    // Deferred, with the reason, and the breaker open.
    wait_until(
        "all mail deferred with a reason and the breaker open",
        Duration::from_secs(30),
        || {
            let q = queue_json(&cfg);
            q.len() == N
                && q.iter().all(|m| {
                    m["queue_name"] == "deferred"
                        && m["recipients"][0]["delay_reason"].as_str().is_some_and(|r| !r.is_empty())
                })
                && backend(&cfg, &name).is_some_and(|b| b["breaker"] == "open")
        },
        || format!("queue: {:?}\nbackend: {:?}\n{}", queue_json(&cfg), backend(&cfg, &name), context(&dc)),
    );
    let mailq = stdout(&cfg.sluice(&["queue", "list"]));
    assert_eq!(
        mailq.lines().filter(|l| l.trim_start().starts_with('(')).count(),
        N,
        "mailq shows one reason per message:\n{mailq}\n{:?}\n{}",
        queue_json(&cfg),
        ids.iter().map(|id| stdout(&cfg.sluice(&["queue", "show", id]))).collect::<Vec<_>>().join("\n")
    );
    assert!(mailq.trim_end().ends_with(&format!("in {N} Requests.")), "{mailq}");
    let b = backend(&cfg, &name).expect("listed");
    assert!(
        b["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "backend list gives the last error: {b}"
    );
    let text = stdout(&cfg.sluice(&["backend", "list"]));
    assert!(text.contains(&name) && text.contains("open"), "{text}");

    // What the other commands say while the mailbox server is down.
    let status = stdout(&cfg.sluice(&["status"]));
    assert!(
        status.contains("sluice is running")
            && status.contains(&format!("queue_messages: {N}\n"))
            && status.contains("backends_not_closed: 1\n")
            && status.contains(&format!("backends_holding_mail:\n  {name} open: probe in ")),
        "{status}"
    );
    let summary = stdout(&cfg.sluice(&["queue", "summary"]));
    assert!(
        summary.lines().any(|l| l.trim_start().starts_with("relay.test") && l.contains(&format!(" {N} "))),
        "{summary}"
    );
    // The MX itself is healthy: it still accepts and keeps mail safely.
    let (code, body) = http_get(cfg.metrics, "/health");
    assert_eq!(code, 200, "/health while only the backend is down: {body}");

    // Stay down through a few probes, and through a flush: the flush makes
    // the mail due, the open breaker keeps it from hammering the server.
    std::thread::sleep(Duration::from_secs(4));
    let out = cfg.sluice(&["queue", "flush"]);
    assert!(out.status.success(), "{out:?}");
    // It says that this backend's mail will not move yet, and why.
    assert!(
        stdout(&out).contains(&format!("backend {name}: circuit breaker open")),
        "flush hides the open breaker: {out:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(queue_json(&cfg).len(), N, "nothing lost or bounced during the outage");

    // The log names the backend in its breaker line and does not flood.
    let log = cfg.log();
    assert!(
        log.lines().any(|l| l.contains(&format!("backend {name}: circuit breaker open"))),
        "no breaker line naming the backend:\n{log}"
    );
    // Held back, not expired: the status is the failure's, never 4.4.7.
    let held: Vec<&str> = log.lines().filter(|l| l.contains("(delivery temporarily suspended: ")).collect();
    assert!(!held.is_empty(), "{log}");
    for l in &held {
        assert!(l.contains(", dsn=4.4.1, status=deferred"), "{l}");
    }
    // One attempt per message, plus one per trial it served as: a failed
    // delivery is not retried at once while the breaker is still closed,
    // and the breaker's hold counts no attempt. A trial is the half-open
    // breaker's one delivery, or, before the breaker opened, a deferred
    // message retried to test a troubled backend with no mail waiting (on
    // a slow machine the sends come more than a cool-down apart). While
    // the breaker is open, connect probes carry no message. (The same
    // message may be the trial twice, e.g. the oldest one before and after
    // the flush.)
    let probes = log
        .lines()
        .filter(|l| {
            l.contains("circuit breaker half-open, sending one probe delivery")
                || (l.contains("no mail waiting, retrying deferred") && l.contains("to test the backend"))
        })
        .count();
    let mut extra = 0;
    for m in queue_json(&cfg) {
        let id = m["queue_id"].as_str().expect("id");
        let shown = stdout(&cfg.sluice(&["queue", "show", id]));
        let attempts: usize = shown
            .split_whitespace()
            .find_map(|w| w.strip_prefix("attempts="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{shown}"));
        // Mail that came in while the breaker was open has 0.
        extra += attempts.saturating_sub(1);
    }
    assert!(
        extra <= probes,
        "{extra} attempts beyond the first, but only {probes} probes, during a 6 s outage:\n{log}"
    );
    // Per message: deferred when it came in, once more for the flush, and
    // once per probe it served as; not once per probe of the breaker.
    let mut deferred_lines = 0;
    for id in &ids {
        let deferred = log
            .lines()
            .filter(|l| l.contains(&format!(": {id}: to=")) && l.contains("status=deferred"))
            .count();
        assert!(deferred <= 2 + probes, "{id}: {deferred} deferred lines during a 6 s outage:\n{log}");
        deferred_lines += deferred;
    }
    assert!(
        deferred_lines <= 2 * ids.len() + probes,
        "{deferred_lines} deferred lines for {} messages and {probes} probes:\n{log}",
        ids.len()
    );

    dc.restart();
    wait_until(
        "the backlog delivered after the mailbox server returned",
        Duration::from_secs(60),
        || {
            let got = subjects(&dc, "alice");
            (0..N).all(|i| got.contains_key(&format!("outage-{i}")))
        },
        || context(&dc),
    );
    wait_until("an empty queue", Duration::from_secs(30), || queue_json(&cfg).is_empty(), || context(&dc));
    let b = backend(&cfg, &name).expect("listed");
    assert_eq!(b["breaker"], "closed", "{b}");
    assert!(
        cfg.log().lines().any(|l| l.contains(&format!("backend {name}: circuit breaker closed"))),
        "{}",
        cfg.log()
    );
    assert!(daemon.stop().success());
}

#[test]
fn mail_deferred_before_a_restart_goes_out_as_soon_as_the_backend_returns() {
    let mut dc = Dovecot::start(&[User::new("alice")], false);
    let name = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = outage_config(&name);
    let daemon = Daemon::start(&cfg);
    let context = |dc: &Dovecot| format!("sluice:\n{}\ndovecot:\n{}", cfg.log(), dc.log());
    dc.stop();
    const N: usize = 8;
    for i in 0..N {
        send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message(&format!("restart-{i}")))
            .expect("accepted");
    }
    wait_until(
        "all mail deferred and the breaker open",
        Duration::from_secs(30),
        || {
            let q = queue_json(&cfg);
            q.len() == N
                && q.iter().all(|m| m["queue_name"] == "deferred")
                && backend(&cfg, &name).is_some_and(|b| b["breaker"] == "open")
        },
        || context(&dc),
    );
    // The daemon restarts during the outage: what it had parked in memory
    // to wake on recovery is gone; the queue and the breaker's record are
    // what is left.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&cfg);
    dc.restart();
    // Well before the next retry (5 minutes) or the breaker's hold (60 s).
    wait_until(
        "the backlog delivered after the mailbox server returned",
        Duration::from_secs(30),
        || {
            let got = subjects(&dc, "alice");
            (0..N).all(|i| got.contains_key(&format!("restart-{i}")))
        },
        || format!("queue: {:?}\n{}", queue_json(&cfg), context(&dc)),
    );
    assert_eq!(backend(&cfg, &name).expect("listed")["breaker"], "closed");
    assert!(daemon.stop().success());
}

/// The SIGKILL restart seen from the mailbox server: a test backend that
/// counts its connections, slow enough that many deliveries are under way
/// or waiting when the daemon dies. After the restart the backend sees no
/// more connections than the concurrency limit, and gets everything.
// The waits below block their thread; the backend runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_restart_after_sigkill_does_not_hammer_the_backend() {
    const LIMIT: usize = 3;
    const N: usize = 30;
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(300), capacity: 100, overload_at: None }).await;
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let cfg = Arc::new(TestConfig::new(&name, &format!("lmtp_destination_concurrency_limit = {LIMIT}\n")));
    let daemon = Daemon::start(&cfg);
    let mut senders = Vec::new();
    for t in 0..3 {
        let addr = cfg.smtp;
        senders.push(tokio::task::spawn_blocking(move || {
            (0..N / 3)
                .map(|i| {
                    let s = format!("hammer-{t}-{i}");
                    send(addr, "a@sender.test", &["alice@relay.test"], &message(&s)).expect("accepted");
                    s
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.expect("sender"));
    }
    let c = Arc::clone(&cfg);
    wait_until("a few deliveries", Duration::from_secs(30), || b.received().len() >= 3, move || c.log());
    daemon.signal("KILL");
    let mut daemon = daemon;
    daemon.child.child.wait().expect("wait");
    drop(daemon);
    assert!(b.received().len() < N, "everything was delivered before the kill");
    assert!(b.peak_connections() <= LIMIT, "peak {} before the kill", b.peak_connections());

    // Connections the dead daemon left open are closed by the kernel; the
    // count starts again with the new daemon's.
    wait_until("the old connections closed", Duration::from_secs(10), || b.connections() == 0, String::new);
    b.reset_peaks();
    let daemon = Daemon::start(&cfg);
    let c = Arc::clone(&cfg);
    let received = || b.received().iter().map(|r| subject_of(&r.data)).collect::<HashSet<String>>();
    wait_until(
        "everything delivered after the restart",
        Duration::from_secs(60),
        || sent.iter().all(|s| received().contains(s)),
        move || c.log(),
    );
    assert!(
        b.peak_connections() <= LIMIT,
        "the restarted daemon opened {} connections at once (limit {LIMIT})",
        b.peak_connections()
    );
    assert!(daemon.stop().success());
}

/// The Subject of a message as the test backend received it.
fn subject_of(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
        .unwrap_or_default()
}
