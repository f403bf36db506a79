//! Fleet-mode tests' mail: sending to several `sluice` hosts at once and
//! finding what reached the backend by subject.

use std::collections::HashSet;
use std::sync::Arc;

use super::backend::Backend;
use super::daemon::{Daemon, TestConfig, send};

/// A small message with `subject`, from and to the fleet tests' addresses.
pub fn message(subject: &str) -> String {
    format!("From: a@sender.test\r\nTo: alice@relay.test\r\nSubject: {subject}\r\n\r\nbody\r\n")
}

/// Sends `n` messages to each host, from blocking threads; their subjects.
pub async fn send_to_all(hosts: &[(Arc<TestConfig>, Daemon)], tag: &str, n: usize) -> Vec<String> {
    let mut senders = Vec::new();
    for (i, (cfg, _)) in hosts.iter().enumerate() {
        let addr = cfg.smtp;
        let tag = format!("{tag}-{i}");
        senders.push(tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|k| {
                    let s = format!("{tag}-{k}");
                    send(addr, "a@sender.test", &["alice@relay.test"], &message(&s)).expect("accepted");
                    s
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for s in senders {
        all.extend(s.await.expect("sender"));
    }
    all
}

/// The subjects of every message the backend received.
pub fn subjects(b: &Backend) -> HashSet<String> {
    b.received()
        .iter()
        .filter_map(|r| {
            String::from_utf8_lossy(&r.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
        })
        .collect()
}

/// How many of `sent` reached the backend.
pub fn delivered(b: &Backend, sent: &[String]) -> usize {
    let got = subjects(b);
    sent.iter().filter(|s| got.contains(*s)).count()
}

/// Whether all of `sent` reached the backend.
pub fn all_delivered(b: &Backend, sent: &[String]) -> bool {
    delivered(b, sent) == sent.len()
}

/// Every host's log, one after the other (for failure messages).
pub fn logs(hosts: &[(Arc<TestConfig>, Daemon)]) -> String {
    hosts.iter().map(|(c, _)| c.log()).collect::<Vec<_>>().join("\n----\n")
}
