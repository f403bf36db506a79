//! End to end with rspamd as the milter, as a Postfix MX runs it
//! (`smtpd_milters = inet:127.0.0.1:PORT`): a real `sluice serve` refuses
//! the GTUBE test message over SMTP with rspamd's own reply, delivers a
//! clean message to a private Dovecot with rspamd's headers in it, and
//! when rspamd is stopped answers with `milter_default_action` at once
//! instead of hanging the client.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig, send};
use common::dovecot::{Dovecot, User};
use common::milter::Rspamd;
use common::wait_until;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Sender <sender@sender.test>\r\nTo: alice@relay.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@sender.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_refuses_gtube_marks_clean_mail_and_its_absence_costs_nothing() {
    Dovecot::require();
    let mut rspamd = Rspamd::start();
    let dc = Dovecot::start(&[User::new("alice")], false);
    let cfg = TestConfig::new(
        &format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port),
        &format!("smtpd_milters = {}\nmilter_default_action = tempfail", rspamd.endpoint),
    );
    let daemon = Daemon::start(&cfg);

    // GTUBE: refused at the end of the message with rspamd's reply.
    let err = send(cfg.smtp, "sender@sender.test", &["alice@relay.test"], &message("gtube", GTUBE))
        .expect_err("GTUBE must be refused");
    assert!(err.starts_with("554 5.7.1 ") && err.contains("Gtube"), "{err}\n{}", rspamd.log());
    wait_until(
        "the milter-reject log line",
        Duration::from_secs(10),
        || cfg.log().contains(": milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5.7.1 "),
        || cfg.log(),
    );

    // A clean message reaches Dovecot with rspamd's headers.
    let reply =
        send(cfg.smtp, "sender@sender.test", &["alice@relay.test"], &message("clean", "Hello Alice."))
            .unwrap_or_else(|e| panic!("{e}\n{}", cfg.log()));
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    wait_until(
        "the clean message in alice's mailbox",
        Duration::from_secs(60),
        || !dc.maildir("alice").is_empty(),
        || format!("sluice log:\n{}\ndovecot log:\n{}", cfg.log(), dc.log()),
    );
    let stored = String::from_utf8_lossy(&dc.maildir("alice")[0]).into_owned();
    assert!(stored.contains("X-Spamd-Result: ") || stored.contains("X-Rspamd-Server: "), "{stored}");
    assert!(stored.contains("Subject: clean"), "{stored}");
    assert!(!stored.contains("Gtube"), "only the clean message arrives");

    // rspamd stopped: the default action, at once.
    rspamd.stop();
    let started = sluice::clock::instant();
    let mut c = Raw::ehlo(cfg.smtp).await;
    let r = c.cmd("MAIL FROM:<sender@sender.test>").await;
    assert_eq!(r.text(), "451 4.7.1 Service unavailable - try again later");
    c.cmd("QUIT").await;
    assert!(started.elapsed() < Duration::from_secs(10), "no hang: {:?}", started.elapsed());
    drop(daemon);
}
