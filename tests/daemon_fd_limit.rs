//! The daemon's file-descriptor check at start (`server::fdlimit`): the
//! real binary started under `prlimit` with a short `RLIMIT_NOFILE` raises
//! its soft limit to the hard limit, and warns naming the parameters when
//! even the hard limit is below what the configured connection limits can
//! open, and still serves.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{TestConfig, sluice_bin};
use common::{ChildGuard, need, wait_for_port};

/// Starts `sluice serve` on `config` under `prlimit --nofile=SOFT:HARD`.
fn start_limited(config: &TestConfig, soft: u64, hard: u64) -> ChildGuard {
    let prlimit = need("prlimit", "util-linux");
    let mut cmd = Command::new(prlimit);
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(sluice_bin())
        .arg("-c")
        .arg(config.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn("sluice", &mut cmd);
    if !wait_for_port(config.smtp, Duration::from_secs(30)) {
        let st = child.child.try_wait();
        panic!("sluice did not listen on {} (exit: {st:?}); log:\n{}", config.smtp, config.log());
    }
    child
}

/// The daemon's "Max open files" soft and hard limits, from /proc.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line");
    let mut n = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    (n.next().expect("soft"), n.next().expect("hard"))
}

/// Waits (up to 10 s) until the log holds `text`.
fn wait_log(config: &TestConfig, text: &str) -> String {
    for _ in 0..200 {
        let log = config.log();
        if log.contains(text) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    config.log()
}

#[test]
fn a_short_soft_limit_is_raised_to_the_hard_limit() {
    // Defaults: 100 sessions, three transports of 100, the reserve: 912.
    let config = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    let mut daemon = start_limited(&config, 256, 4096);
    assert_eq!(open_files_limit(daemon.pid()), (4096, 4096));
    let log = wait_log(&config, "file descriptor limit raised");
    assert!(log.contains("file descriptor limit raised from 256 to 4096 (hard limit 4096)"), "log:\n{log}");
    assert!(!log.contains("is below the"), "no warning expected; log:\n{log}");
    assert!(daemon.terminate(Duration::from_secs(60)).is_some_and(|s| s.success()));
}

#[test]
fn a_hard_limit_below_the_connection_limits_is_named_in_a_warning() {
    let config = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    // 5,000 sessions on the listener: more than 1,024 descriptors.
    let smtp = config.smtp;
    std::fs::write(config.path().join("master.cf"), format!("{smtp} inet n - n - 5000 smtpd\n"))
        .expect("master.cf");
    let mut daemon = start_limited(&config, 512, 1024);
    assert_eq!(open_files_limit(daemon.pid()), (1024, 1024), "the soft limit goes as high as it can");
    let log = wait_log(&config, "is below the");
    let line =
        log.lines().find(|l| l.contains("is below the")).unwrap_or_else(|| panic!("no warning; log:\n{log}"));
    assert!(line.contains("file descriptor limit 1024 (hard limit 1024) is below the 5812"), "{line}");
    assert!(line.contains(&format!("service {smtp}: 5000 sessions (master.cf maxproc)")), "{line}");
    assert!(line.contains("transport lmtp: 100 connections (default_process_limit)"), "{line}");
    assert!(line.contains("raise LimitNOFILE"), "{line}");
    // It still serves.
    let reply = common::daemon::send(smtp, "a@remote.test", &["b@relay.test"], "Subject: x\r\n\r\nx\r\n");
    assert!(reply.as_ref().is_ok_and(|r| r.starts_with("250")), "{reply:?}");
    assert!(daemon.terminate(Duration::from_secs(60)).is_some_and(|s| s.success()));
}
