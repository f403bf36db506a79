//! The operator's view of a running daemon, through the real binary:
//! mailq-compatible listing, postsuper-like hold/release/delete, the direct
//! fallback when the daemon is down, reload, stop, status, and `mailq` as
//! argv[0]. Mail is routed to a closed loopback port so it stays deferred.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, TestConfig, queued_id, send};

/// A transport nobody listens on: deliveries fail with "connection refused"
/// and the mail stays in the queue, deferred.
fn closed_port_transport() -> String {
    format!("lmtp:[127.0.0.1]:{}", common::free_port())
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until `sluice queue list --json` satisfies `pred`.
fn wait_queue(
    cfg: &TestConfig,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let list = || -> Vec<serde_json::Value> {
        let out = cfg.sluice(&["queue", "list", "--json"]);
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    };
    common::wait_until(
        what,
        Duration::from_secs(30),
        || pred(&list()),
        || format!("queue: {:?}\nlog:\n{}", list(), cfg.log()),
    );
    list()
}

#[test]
fn queue_commands_show_and_manage_deferred_mail_like_postfix() {
    let cfg = TestConfig::new(&closed_port_transport(), "");
    let daemon = Daemon::start(&cfg);
    let body = "Subject: first\r\nFrom: a@sender.test\r\n\r\nhello\r\n";
    let id1 = queued_id(&send(cfg.smtp, "a@sender.test", &["u1@relay.test", "u2@relay.test"], body).unwrap());
    let id2 = queued_id(
        &send(cfg.smtp, "b@sender.test", &["u3@relay.test"], "Subject: second\r\n\r\nx\r\n").unwrap(),
    );

    let v = wait_queue(&cfg, "both messages deferred", |v| {
        v.len() == 2 && v.iter().all(|m| m["queue_name"] == "deferred")
    });
    let m1 = v.iter().find(|m| m["queue_id"] == id1.as_str()).expect("first message listed");
    assert_eq!(m1["sender"], "a@sender.test");
    assert_eq!(m1["recipients"].as_array().unwrap().len(), 2);
    assert!(m1["recipients"][0]["delay_reason"].as_str().unwrap().contains("refused"), "{m1}");

    // mailq layout: header, the entry line with ID, size, date and sender,
    // the reason in parentheses, recipients at column 41, the total line.
    let text = stdout(&cfg.sluice(&["queue", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------");
    let entry = lines.iter().find(|l| l.starts_with(&id1)).expect("entry line");
    assert!(entry.ends_with("  a@sender.test"), "{entry:?}");
    assert!(text.contains(&format!("\n{:41}u1@relay.test\n", "")), "{text}");
    assert!(text.trim_end().ends_with("in 2 Requests."), "{text}");

    // queue show: state and headers.
    let show = stdout(&cfg.sluice(&["queue", "show", &id1]));
    assert!(show.contains("to=<u2@relay.test> state=deferred"), "{show}");
    assert!(show.contains("Subject: first"), "{show}");

    // Hold everything: `!` marks, queue_name hold.
    assert!(cfg.sluice(&["queue", "hold", "ALL"]).status.success());
    let text = stdout(&cfg.sluice(&["queue", "list"]));
    assert!(text.contains(&format!("{id1}!")) && text.contains(&format!("{id2}!")), "{text}");
    // Release one, reading IDs from stdin as postsuper does.
    let out = cfg.sluice_stdin(&["queue", "release", "-"], &format!("{id2}\n"));
    assert!(stdout(&out).contains("Released from hold: 1 message"), "{out:?}");
    wait_queue(&cfg, "second released", |v| {
        v.iter().any(|m| m["queue_id"] == id2.as_str() && m["queue_name"] != "hold")
            && v.iter().any(|m| m["queue_id"] == id1.as_str() && m["queue_name"] == "hold")
    });

    // Delete the held one; the other stays.
    let out = cfg.sluice(&["queue", "delete", &id1]);
    assert!(stdout(&out).contains("Deleted: 1 message"), "{out:?}");
    wait_queue(&cfg, "first deleted", |v| v.len() == 1 && v[0]["queue_id"] == id2.as_str());
    assert!(cfg.sluice(&["queue", "show", &id1]).status.code() == Some(1));

    // Summary counts the remaining recipient under its backend and domain.
    let summary = stdout(&cfg.sluice(&["queue", "summary"]));
    assert!(
        summary.lines().any(|l| l.trim_start().starts_with("relay.test") && l.contains(" 1 ")),
        "{summary}"
    );

    assert!(daemon.stop().success());

    // Daemon down: listing and deleting work on the queue directly.
    let out = cfg.sluice(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mail system is down"), "{out:?}");
    assert!(stdout(&out).contains(&id2));
    assert!(cfg.sluice(&["queue", "delete", "ALL"]).status.success());
    assert_eq!(stdout(&cfg.sluice(&["queue", "list"])), "Mail queue is empty\n");
}

#[test]
fn invoked_as_mailq_it_lists_the_queue() {
    let cfg = TestConfig::new(&closed_port_transport(), "");
    let link = cfg.path().join("mailq");
    std::os::unix::fs::symlink(common::daemon::sluice_bin(), &link).unwrap();
    let out = std::process::Command::new(&link).arg("-c").arg(cfg.path()).output().unwrap();
    assert_eq!(stdout(&out), "Mail queue is empty\n", "{out:?}");
}

#[test]
fn reload_refuses_a_broken_config_and_applies_a_good_one() {
    let cfg = TestConfig::new(&closed_port_transport(), "");
    let daemon = Daemon::start(&cfg);
    let big = format!("Subject: big\r\n\r\n{}", format!("{}\r\n", "x".repeat(70)).repeat(70));

    cfg.append_main_cf("message_size_limit = ten");
    daemon.signal("HUP");
    common::wait_until(
        "the refusal in the log",
        Duration::from_secs(10),
        || cfg.log().contains("reload refused"),
        || cfg.log(),
    );
    assert!(cfg.log().contains("message_size_limit"), "the refusal names the parameter:\n{}", cfg.log());
    // Still serving with the old settings.
    send(cfg.smtp, "a@sender.test", &["u@relay.test"], &big).expect("old limit still applies");

    // `sluice reload` reports the refusal too.
    let out = cfg.sluice(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("message_size_limit"), "{out:?}");

    cfg.append_main_cf("message_size_limit = 2000");
    let out = cfg.sluice(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let err = send(cfg.smtp, "a@sender.test", &["u@relay.test"], &big).expect_err("new limit applies");
    assert!(err.contains("552"), "{err}");

    let status = stdout(&cfg.sluice(&["status"]));
    assert!(status.contains("sluice is running") && status.contains("queue_messages: 1"), "{status}");
    assert!(status.contains("backends_holding_mail: none\n"), "{status}");
    assert!(cfg.sluice(&["stop"]).status.success());
    let mut daemon = daemon;
    let mut exit = None;
    common::wait_until(
        "sluice stop to stop the daemon",
        Duration::from_secs(30),
        || {
            exit = daemon.child.child.try_wait().ok().flatten();
            exit.is_some()
        },
        || cfg.log(),
    );
    assert!(exit.is_some_and(|st| st.success()), "{exit:?}");
    let out = cfg.sluice(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"), "{out:?}");
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_message() {
    let cfg = TestConfig::new(&closed_port_transport(), "");
    let daemon = Daemon::start(&cfg);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let through = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for t in 0..4 {
        let addr = cfg.smtp;
        let stop = stop.clone();
        let through = through.clone();
        senders.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("Subject: load {t}-{i}\r\n\r\nbody {t}-{i}\r\n");
                match send(addr, "load@sender.test", &["u@relay.test"], &body) {
                    Ok(reply) => {
                        acked.push(queued_id(&reply));
                        through.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Refused or cut off during shutdown: not acknowledged, fine.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
                i += 1;
            }
            acked
        }));
    }
    // Under load, not after a fixed time: on a busy machine the senders
    // (a Python process each) may need seconds to get their first mail in.
    common::wait_until(
        "the load generator to get mail through",
        Duration::from_secs(60),
        || through.load(std::sync::atomic::Ordering::Relaxed) > 5,
        || cfg.log(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let acked: Vec<String> = senders.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(acked.len() > 5, "the load generator got mail through ({})", acked.len());

    let out = cfg.sluice(&["queue", "list", "--json"]);
    let queued: std::collections::HashSet<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["queue_id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &acked {
        assert!(queued.contains(id), "acknowledged {id} missing after shutdown");
    }
}

/// Every path under `dir` (itself included) owned by root.
fn owned_by_root(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        if meta.uid() == 0 {
            found.push(p.clone());
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).expect("read_dir").map(|e| e.expect("entry").path()));
        }
    }
    found
}

#[test]
fn direct_fallback_as_root_leaves_no_root_owned_file_in_the_spool() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown the spool and to run the fallback as root");
        return;
    }
    let cfg = TestConfig::new(&closed_port_transport(), "");
    let daemon = Daemon::start(&cfg);
    let id =
        queued_id(&send(cfg.smtp, "a@sender.test", &["u@relay.test"], "Subject: s\r\n\r\nx\r\n").unwrap());
    assert!(daemon.stop().success());

    // The spool as a packaged install has it: owned by the daemon's user
    // (here nobody:nogroup), reachable through the config directory, which
    // tempfile created 0700.
    let spool = cfg.path().join("spool");
    let st = std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(&spool).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(cfg.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(owned_by_root(&spool).is_empty());

    // Read-only and read-write fallbacks, as root. RocksDB creates files at
    // every open (info log, manifest, options, a new write-ahead log).
    let out = cfg.sluice(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mail system is down"), "{out:?}");
    assert!(stdout(&out).contains(&id), "{out:?}");
    let out = cfg.sluice(&["queue", "hold", "ALL"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&cfg.sluice(&["queue", "list"])).contains(&format!("{id}!")));
    let out = cfg.sluice(&["queue", "release", "ALL"]);
    assert!(out.status.success(), "{out:?}");

    let root_owned = owned_by_root(&spool);
    assert!(root_owned.is_empty(), "root-owned after the fallback: {root_owned:?}");

    // The fallback's writes are intact for the next reader.
    let text = stdout(&cfg.sluice(&["queue", "list"]));
    assert!(text.contains(&id) && !text.contains(&format!("{id}!")), "{text}");
}
