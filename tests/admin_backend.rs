//! `sluice backend list|pause|resume` against a running daemon delivering
//! to a private Dovecot: a paused mailbox server gets nothing, its mail
//! waits in the queue (logged as deferred, with the reason, no attempt
//! counted), and `resume` sends the backlog on at once. The list and the
//! metrics show why the gate's limit is where it is.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::dovecot::{Dovecot, User};
use common::wait_until;

/// GET `path` from the metrics endpoint; the body.
fn metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sluice backend list --json`: one JSON array.
fn backend_list(cfg: &TestConfig) -> Vec<serde_json::Value> {
    let out = cfg.sluice(&["backend", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// `sluice queue list --json`: one object per line, as `postqueue -j`.
fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn message(subject: &str) -> String {
    format!(
        "From: <a@sender.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nbody\r\n"
    )
}

#[test]
fn a_paused_backend_keeps_its_mail_queued_until_resumed() {
    let dovecot = Dovecot::start(&[User::new("alice")], false);
    let name = format!("lmtp:[127.0.0.1]:{}", dovecot.lmtp_port);
    let cfg = TestConfig::new(&name, "");
    let daemon = Daemon::start(&cfg);
    let log = || format!("sluice:\n{}\ndovecot:\n{}", cfg.log(), dovecot.log());

    send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message("before")).expect("accepted");
    wait_until(
        "the first message in alice's Maildir",
        Duration::from_secs(30),
        || dovecot.maildir("alice").len() == 1,
        log,
    );

    // The backend is known now, with its breaker closed.
    let backends = backend_list(&cfg);
    let b = backends.iter().find(|b| b["name"] == name.as_str()).unwrap_or_else(|| panic!("{backends:?}"));
    assert_eq!(b["breaker"], "closed", "{b}");
    assert!(stdout(&cfg.sluice(&["backend", "list"])).contains(&name));

    // An unknown name is refused, naming it.
    let out = cfg.sluice(&["backend", "pause", "lmtp:[127.0.0.1]:1"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lmtp:[127.0.0.1]:1"), "{out:?}");

    let out = cfg.sluice(&["backend", "pause", &name]);
    assert!(out.status.success(), "{out:?}");
    let mut ids = Vec::new();
    for s in ["paused-1", "paused-2"] {
        let reply = send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message(s)).expect("accepted");
        ids.push(queued_id(&reply));
    }
    // Both wait in the queue with the reason, and the log says deferred.
    wait_until(
        "both messages deferred with the pause as the reason",
        Duration::from_secs(30),
        || {
            let listing = stdout(&cfg.sluice(&["queue", "list"]));
            listing.matches("(delivery paused by administrator)").count() == 2
                && cfg.log().matches("dsn=4.3.2, status=deferred (delivery paused by administrator)").count()
                    == 2
        },
        log,
    );
    assert_eq!(dovecot.maildir("alice").len(), 1, "a paused backend got mail");
    let shown = stdout(&cfg.sluice(&["queue", "show", &ids[0]]));
    assert!(
        shown.contains("to=<alice@relay.test> state=deferred attempts=0"),
        "a pause counted an attempt:\n{shown}"
    );
    let listed = backend_list(&cfg);
    let b = listed.iter().find(|b| b["name"] == name.as_str()).expect("still listed");
    assert!(!b["paused_until"].is_null(), "{b}");
    // `sluice status` counts it: a paused backend holds mail back too.
    let status = stdout(&cfg.sluice(&["status"]));
    assert!(status.contains("backends_paused: 1\n"), "{status}");
    assert!(
        status.contains(&format!("backends_holding_mail:\n  {name} closed: paused until resumed\n")),
        "{status}"
    );

    let out = cfg.sluice(&["backend", "resume", &name]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "the held mail delivered after resume",
        Duration::from_secs(30),
        || dovecot.maildir("alice").len() == 3,
        log,
    );
    wait_until(
        "an empty queue",
        Duration::from_secs(30),
        || json_lines(&cfg.sluice(&["queue", "list", "--json"])).is_empty(),
        log,
    );
    for id in &ids {
        assert!(cfg.log().contains(&format!("{id}: to=<alice@relay.test>")), "{}", log());
    }
    assert!(daemon.stop().success());
}

/// After a round of deliveries at one level, `sluice backend list` (text
/// and JSON) and `/metrics` show the gate's latency baseline (the latency
/// at the lowest concurrency measured, and that concurrency) and why the
/// limit is where it is.
#[test]
fn backend_list_and_metrics_show_the_latency_baseline_and_the_limits_reason() {
    let dovecot = Dovecot::start(&[User::new("alice")], false);
    let name = format!("lmtp:[127.0.0.1]:{}", dovecot.lmtp_port);
    // One delivery at a time: each message sent is a sample at level 1,
    // and a round is eight of them.
    let cfg = TestConfig::new(&name, "initial_destination_concurrency = 1\n");
    let daemon = Daemon::start(&cfg);
    let log = || format!("sluice:\n{}\ndovecot:\n{}", cfg.log(), dovecot.log());
    let sent = 10;
    for i in 0..sent {
        send(cfg.smtp, "a@sender.test", &["alice@relay.test"], &message(&format!("pace-{i}")))
            .expect("accepted");
    }
    wait_until("all delivered", Duration::from_secs(30), || dovecot.maildir("alice").len() == sent, log);

    let backends = backend_list(&cfg);
    let b = backends.iter().find(|b| b["name"] == name.as_str()).unwrap_or_else(|| panic!("{backends:?}"));
    assert_eq!(b["baseline_concurrency"], 1, "{b}");
    let baseline = b["baseline_latency"].as_f64().unwrap_or_else(|| panic!("no baseline: {b}"));
    assert!(baseline > 0.0 && baseline < 10.0, "{b}");
    assert!(b["limit"].as_u64().is_some_and(|l| l >= 1), "{b}");
    assert!(!b["reason"].as_str().unwrap_or_default().is_empty(), "{b}");
    assert!(b["curve"].as_array().is_some_and(|c| !c.is_empty()), "{b}");
    assert!(b.get("gradient").is_some(), "the gradient is shown (null until two levels were compared): {b}");

    let text = stdout(&cfg.sluice(&["backend", "list"]));
    assert!(text.contains("BASELINE") && text.contains("GRADIENT"), "{text}");
    assert!(text.contains("ms @1"), "the baseline and its level: {text}");
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("limit {}: {reason}", b["limit"])), "the limit's reason: {text}");

    let scrape = metrics(cfg.metrics);
    let line = |metric: &str| {
        let prefix = format!("{metric}{{backend=\"{name}\"}} ");
        scrape.lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse::<f64>().ok()))
    };
    assert!(line("sluice_backend_latency_baseline_seconds").is_some_and(|v| v > 0.0), "{scrape}");
    assert!(line("sluice_backend_concurrency_limit").is_some_and(|v| v >= 1.0), "{scrape}");
    assert!(line("sluice_backend_latency_seconds").is_some_and(|v| v > 0.0), "{scrape}");
    assert!(daemon.stop().success());
}
