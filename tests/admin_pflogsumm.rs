//! Postfix's log summariser reads sluice's log: a real `sluice serve`
//! delivering to a private Dovecot takes messages that are delivered,
//! messages Dovecot bounces (their reports go back to the sender's mailbox
//! on the same Dovecot) and recipients refused in the SMTP dialogue, then
//! `pflogsumm --syslog-name=sluice` runs on the daemon's `maillog_file`
//! and its counts must be what was sent.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::dovecot::{Dovecot, User};
use common::{wait_until, which};

const SENDER: &str = "sender@sender.test";

/// `pflogsumm`'s "Grand Totals" as name → count (`received`, `delivered`,
/// `bytes received`, ...). Counts are printed as they are below 512k.
fn grand_totals(report: &str) -> BTreeMap<String, u64> {
    let line = regex::Regex::new(r"^\s+(\d+)\s+([a-z][a-z /]*?)(?: \(\d+%\))?$").expect("regex");
    let start = report.find("Grand Totals").expect("Grand Totals section");
    report[start..]
        .lines()
        .take_while(|l| !l.starts_with("Per-"))
        .filter_map(|l| line.captures(l))
        .map(|c| (c[2].to_owned(), c[1].parse().expect("count")))
        .collect()
}

/// The rows of a report section (`Host/Domain Summary: Message Delivery`):
/// last column → first column.
fn section_counts(report: &str, title: &str) -> BTreeMap<String, u64> {
    let start = report.find(title).unwrap_or_else(|| panic!("no {title:?} section in:\n{report}"));
    report[start..]
        .lines()
        .skip(1)
        .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with('-') || l.contains("cnt"))
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.last()?.to_string(), cols.first()?.parse().ok()?))
        })
        .collect()
}

/// The percentage pflogsumm prints after the rejected count.
fn rejected_percent(report: &str) -> u64 {
    let re = regex::Regex::new(r"\d+\s+rejected \((\d+)%\)").expect("regex");
    re.captures(report).and_then(|c| c[1].parse().ok()).expect("rejected percentage")
}

#[test]
fn pflogsumm_counts_what_sluice_received_delivered_bounced_and_rejected() {
    Dovecot::require();
    let pflogsumm = which("pflogsumm").expect("pflogsumm is needed (scripts/bootstrap test installs it)");
    let dc = Dovecot::start(&["alice", "bob", "carol", "sender"].map(User::new), false);
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(&lmtp, "");
    std::fs::write(cfg.path().join("transport"), format!("relay.test {lmtp}\nsender.test {lmtp}\n"))
        .expect("transport");
    let daemon = Daemon::start(&cfg);
    let body =
        |n: usize| format!("Subject: pflogsumm {n}\r\nMessage-ID: <pf{n}@client.test>\r\n\r\nbody {n}\r\n");

    // Delivered: four messages, six recipients in relay.test.
    let delivered: [&[&str]; 4] = [
        &["alice@relay.test"],
        &["bob@relay.test"],
        &["alice@relay.test", "bob@relay.test", "carol@relay.test"],
        &["carol@relay.test"],
    ];
    // Bounced by Dovecot (no such mailbox): each one's report is delivered
    // to the sender, in sender.test.
    let bounced: [&[&str]; 2] = [&["ghost1@relay.test"], &["ghost2@relay.test"]];
    let mut ids = Vec::new();
    for (n, rcpts) in delivered.iter().chain(&bounced).enumerate() {
        let reply = send(cfg.smtp, SENDER, rcpts, &body(n)).unwrap_or_else(|e| panic!("send {n}: {e}"));
        ids.push(queued_id(&reply));
    }
    // Rejected in the dialogue: not a domain this MX relays for.
    let rejected = ["a@elsewhere.test", "b@elsewhere.test", "c@elsewhere.test"];
    for r in rejected {
        let err = send(cfg.smtp, SENDER, &[r], &body(99)).expect_err("relaying is refused");
        assert!(err.contains("Relay access denied"), "{err}");
    }

    // Each accepted message and each report leaves the queue.
    let removed = |log: &str| log.lines().filter(|l| l.ends_with(": removed")).count();
    wait_until(
        "every message and report to be delivered and removed",
        Duration::from_secs(60),
        || removed(&cfg.log()) == ids.len() + bounced.len(),
        || format!("sluice log:\n{}\ndovecot log:\n{}", cfg.log(), dc.log()),
    );
    let status = daemon.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(dc.maildir("sender").len(), bounced.len(), "one report per bounced message");

    let log_path = cfg.path().join("mail.log");
    let out =
        Command::new(&pflogsumm).arg("--syslog-name=sluice").arg(&log_path).output().expect("run pflogsumm");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pflogsumm: {}{report}", String::from_utf8_lossy(&out.stderr));
    let log = cfg.log();
    let context = format!("pflogsumm:\n{report}\nlog:\n{log}");

    let totals = grand_totals(&report);
    let n = |k: &str| totals.get(k).copied().unwrap_or_else(|| panic!("no {k:?} total:\n{context}"));
    let delivered_rcpts: u64 = delivered.iter().map(|r| r.len() as u64).sum();
    let reports = bounced.len() as u64;
    assert_eq!(n("received"), (delivered.len() + bounced.len()) as u64, "{context}");
    assert_eq!(n("delivered"), delivered_rcpts + reports, "recipients and reports: {context}");
    assert_eq!(n("bounced"), reports, "{context}");
    assert_eq!(n("rejected"), rejected.len() as u64, "{context}");
    assert_eq!(n("deferred"), 0, "{context}");
    assert_eq!(n("forwarded") + n("held") + n("discarded") + n("reject warnings"), 0, "{context}");
    // rejected / (delivered + rejected), as pflogsumm computes it.
    assert_eq!(rejected_percent(&report), 3 * 100 / (delivered_rcpts + reports + 3), "{context}");
    assert_eq!((n("senders"), n("sending hosts/domains")), (1, 1), "{context}");
    // alice, bob, carol and the sender (who got the reports).
    assert_eq!((n("recipients"), n("recipient hosts/domains")), (4, 2), "{context}");

    // Sizes come from the queue manager's `from=<...>, size=N` lines, which
    // pflogsumm only credits to a message whose smtpd `client=` line it saw.
    let size_re = regex::Regex::new(r": (\w+): from=<[^>]*>, size=(\d+), nrcpt=").expect("regex");
    let sizes: BTreeMap<String, u64> = log
        .lines()
        .filter(|l| l.contains("sluice/qmgr["))
        .filter_map(|l| size_re.captures(l).map(|c| (c[1].to_owned(), c[2].parse().expect("size"))))
        .collect();
    let received_bytes: u64 = ids.iter().map(|id| sizes.get(id).copied().expect("a size line")).sum();
    assert!(received_bytes > 0);
    assert_eq!(n("bytes received"), received_bytes, "{context}");
    assert!(!report.contains("no size data"), "every delivered message has a size: {context}");

    // Per recipient domain, and per sender.
    let per_domain = section_counts(&report, "Host/Domain Summary: Message Delivery");
    assert_eq!(per_domain.get("relay.test"), Some(&delivered_rcpts), "{context}");
    assert_eq!(per_domain.get("sender.test"), Some(&reports), "{context}");
    assert_eq!(per_domain.len(), 2, "{context}");
    let senders = section_counts(&report, "Senders by message count");
    assert_eq!(senders.get(SENDER), Some(&((delivered.len() + bounced.len()) as u64)), "{context}");

    // The bounces are listed under Dovecot's address, the rejections with
    // their reason. (pflogsumm shortens a long reply at its colons, as it
    // does Postfix's "host ... said: 550 5.1.1 <x> User doesn't exist: x".)
    let bounces = &report[report.find("message bounce detail").expect("bounce detail")..];
    assert!(bounces.contains(&format!("(total: {reports})")), "{context}");
    for r in bounced.iter().flat_map(|r| r.iter()) {
        assert!(bounces.contains(&format!("1   {r} (in reply to RCPT TO command)")), "{r}: {context}");
    }
    let rejects = &report[report.find("message reject detail").expect("reject detail")..];
    assert!(rejects.contains(&format!("Relay access denied (total: {})", rejected.len())), "{context}");
    assert!(report.contains("Warnings: none"), "{context}");
}
