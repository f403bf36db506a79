//! `sluice backend list|pause|resume` against a running daemon delivering
//! to a private Dovecot: a paused mailbox server gets nothing, its mail
//! waits in the queue (logged as deferred, with the reason, no attempt
//! counted), and `resume` sends the backlog on at once.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::dovecot::{Dovecot, User};
use common::wait_until;

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
