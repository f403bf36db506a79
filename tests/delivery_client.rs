//! The LMTP/SMTP delivery client against real peers: Dovecot's LMTP server,
//! Postfix's smtp-sink, and the switchable test backend.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::dovecot::{Dovecot, User};
use sluice::config::Protocol;
use sluice::delivery::client::{self, Connection, Health, Transfer, TransferRcpt, Verdict};
use sluice::delivery::nexthop::Target;
use sluice::delivery::settings::Timeouts;
use sluice_queue::{BodyType, DsnRet, Notify};

fn target(port: u16) -> Target {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Target::Inet { name: "localhost".into(), addr }
}

fn timeouts() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(10))
}

async fn open(port: u16, proto: Protocol) -> Connection {
    client::open(&[target(port)], proto, "mx.sluice.test", &timeouts()).await.expect("session opens")
}

fn rcpt(address: &str) -> TransferRcpt<'_> {
    TransferRcpt { address, notify: Notify::default(), orcpt: None }
}

fn tx<'a>(sender: &'a str, rcpts: Vec<TransferRcpt<'a>>, body: &'a Vec<u8>) -> Transfer<'a> {
    Transfer {
        sender,
        rcpts,
        body,
        body_type: BodyType::Unspecified,
        smtputf8: false,
        ret: DsnRet::Unspecified,
        envid: None,
    }
}

/// A message whose lines exercise dot-stuffing and 8-bit content.
fn tricky_body(tag: &str) -> Vec<u8> {
    format!(
        "From: sender@remote.test\r\nTo: alice@dev.test\r\nSubject: {tag}\r\nMessage-ID: <{tag}@remote.test>\r\n\r\n\
         first line\r\n.leading dot\r\n..two dots\r\n.\r\nlast line caf\u{e9}\r\n"
    )
    .into_bytes()
}

/// What Dovecot stores: our message with LF line ends after the
/// `Return-Path:` line it adds.
fn strip_return_path(stored: &[u8]) -> &[u8] {
    assert!(stored.starts_with(b"Return-Path: "), "{}", String::from_utf8_lossy(stored));
    let nl = stored.iter().position(|&b| b == b'\n').unwrap();
    &stored[nl + 1..]
}

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

#[tokio::test]
async fn lmtp_to_dovecot_delivers_byte_exact_to_every_recipient() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("alice"), User::new("bob")], false);
    let mut s = open(dc.lmtp_port, Protocol::Lmtp).await;
    assert!(s.caps().pipelining, "Dovecot LMTP offers PIPELINING");

    let one = tricky_body("single");
    let out = s.deliver(&tx("sender@remote.test", vec![rcpt("alice@dev.test")], &one)).await;
    assert_eq!(out.rcpts.len(), 1);
    assert_eq!(out.rcpts[0].verdict, Verdict::Sent, "{:?}", out.rcpts[0]);
    assert!(matches!(out.health, Health::Completed { latency: Some(_) }));
    assert!(out.reusable);

    // The same session carries a second, multi-recipient message, one of
    // whose recipients does not exist.
    let multi = tricky_body("multi");
    let out = s
        .deliver(&tx(
            "sender@remote.test",
            vec![rcpt("alice@dev.test"), rcpt("nobody@dev.test"), rcpt("bob@dev.test")],
            &multi,
        ))
        .await;
    let verdicts: Vec<Verdict> = out.rcpts.iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, [Verdict::Sent, Verdict::Bounced, Verdict::Sent], "{:?}", out.rcpts);
    assert_eq!(out.rcpts[1].dsn.to_string(), "5.1.1");
    assert!(
        out.rcpts[1].text.starts_with("host localhost[127.0.0.1] said: 550 5.1.1"),
        "{}",
        out.rcpts[1].text
    );
    assert!(out.rcpts[1].text.ends_with("(in reply to RCPT TO command)"), "{}", out.rcpts[1].text);
    assert_eq!(s.transactions(), 2);
    s.quit().await;

    let alice = dc.maildir("alice");
    assert_eq!(alice.len(), 2, "{}", dc.log());
    let bodies: Vec<Vec<u8>> = alice.iter().map(|m| strip_return_path(m).to_vec()).collect();
    assert!(
        bodies.contains(&lf(&one)),
        "single message byte-exact in alice's Maildir:\n{}",
        String::from_utf8_lossy(&alice[0])
    );
    assert!(bodies.contains(&lf(&multi)));
    let bob = dc.maildir("bob");
    assert_eq!(bob.len(), 1);
    assert_eq!(strip_return_path(&bob[0]), lf(&multi).as_slice());

    // Over IMAP the message comes back with CRLF line ends: byte-exact.
    let fetched = dc.imap_fetch_all("bob", "pw");
    assert_eq!(fetched.len(), 1);
    let crlf = String::from_utf8_lossy(&fetched[0]).into_owned();
    let after = &crlf[crlf.find("\r\n").unwrap() + 2..];
    assert_eq!(after.as_bytes(), multi.as_slice());
}

#[tokio::test]
async fn dovecot_over_quota_bounces_or_defers_that_recipient_only() {
    if !Dovecot::available() {
        return;
    }
    let big = {
        let mut b = b"Subject: big\r\n\r\n".to_vec();
        for _ in 0..200 {
            b.extend_from_slice(&[b'x'; 98]);
            b.extend_from_slice(b"\r\n");
        }
        b
    };
    for (tempfail, expect, class) in [(false, Verdict::Bounced, 5), (true, Verdict::Deferred, 4)] {
        let dc = Dovecot::start(&[User::new("alice"), User::with_quota("full", "*:storage=1K")], tempfail);
        let mut s = open(dc.lmtp_port, Protocol::Lmtp).await;
        let out = s
            .deliver(&tx("sender@remote.test", vec![rcpt("alice@dev.test"), rcpt("full@dev.test")], &big))
            .await;
        assert_eq!(out.rcpts[0].verdict, Verdict::Sent);
        assert_eq!(out.rcpts[1].verdict, expect, "tempfail={tempfail}: {:?}\n{}", out.rcpts[1], dc.log());
        assert_eq!(out.rcpts[1].dsn.0, class);
        assert_eq!(out.rcpts[1].dsn.1, 2, "a mailbox status, {:?}", out.rcpts[1]);
        assert!(out.rcpts[1].text.contains("(in reply to end of DATA command)"), "{}", out.rcpts[1].text);
        // A full mailbox is the mailbox's problem, not the server's.
        assert!(matches!(out.health, Health::Completed { .. }), "{:?}", out.health);
        assert_eq!(dc.maildir("alice").len(), 1);
        assert_eq!(dc.maildir("full").len(), 0);
    }
}

#[tokio::test]
async fn lmtp_over_a_unix_socket() {
    if !Dovecot::available() {
        return;
    }
    let dc = Dovecot::start(&[User::new("alice")], false);
    let path = dc.dir.path().join("run").join("lmtp");
    let t = Target::Unix(path);
    let mut s =
        client::open(&[t], Protocol::Lmtp, "mx.sluice.test", &timeouts()).await.expect("unix session");
    let body = tricky_body("unix");
    let out = s.deliver(&tx("sender@remote.test", vec![rcpt("alice@dev.test")], &body)).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Sent, "{:?}", out.rcpts[0]);
    assert_eq!(dc.maildir("alice").len(), 1);
}

/// Starts Postfix's smtp-sink with extra flags; `None` when not installed.
fn smtp_sink(flags: &[&str]) -> (common::ChildGuard, u16) {
    let sink = common::need("smtp-sink", "postfix");
    let port = common::free_port();
    let mut cmd = Command::new(sink);
    if Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false) {
        cmd.args(["-u", "nobody"]);
    }
    cmd.args(flags).arg(format!("127.0.0.1:{port}")).arg("10");
    let guard = common::ChildGuard::spawn("smtp-sink", &mut cmd);
    assert!(common::wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(5)));
    (guard, port)
}

#[tokio::test]
async fn smtp_to_postfix_smtp_sink() {
    let (_sink, port) = smtp_sink(&[]);
    let mut s = open(port, Protocol::Smtp).await;
    assert!(s.caps().pipelining);
    for i in 0..3 {
        let body = tricky_body(&format!("sink{i}"));
        let out =
            s.deliver(&tx("sender@remote.test", vec![rcpt("a@dest.test"), rcpt("b@dest.test")], &body)).await;
        assert!(out.rcpts.iter().all(|r| r.verdict == Verdict::Sent), "{:?}", out.rcpts);
        assert!(out.reusable);
    }
    assert!(s.reset().await, "RSET on a reused session");
    s.quit().await;
}

/// A pooled session carries the next message without `RSET` while the
/// server is quiet and its last transaction ended; a server that has
/// closed the connection since is noticed without a command.
#[tokio::test]
async fn a_pooled_session_skips_rset_only_while_clean_and_quiet() {
    let (sink, port) = smtp_sink(&[]);
    let mut s = open(port, Protocol::Smtp).await;
    assert!(s.quiet(), "a new session has no transaction open");
    for i in 0..2 {
        let body = tricky_body(&format!("quiet{i}"));
        let out = s.deliver(&tx("sender@remote.test", vec![rcpt("a@dest.test")], &body)).await;
        assert!(out.rcpts.iter().all(|r| r.verdict == Verdict::Sent), "{:?}", out.rcpts);
        assert!(s.quiet(), "after a whole transaction the next MAIL needs no RSET");
    }
    drop(sink);
    let mut closed = false;
    for _ in 0..100 {
        if !s.quiet() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the server's close makes the session not quiet");
    assert!(!s.reset().await, "and RSET finds it gone");
}

/// A reply the server sent unasked after a transaction (read with the
/// last one, or arriving later) is the server speaking: the session is not
/// quiet, and stays so however often it is asked (the bytes are kept).
#[tokio::test]
async fn a_stray_reply_after_a_transaction_means_the_server_spoke() {
    let b = Backend::start(Proto::Smtp).await;
    b.set_mode(Mode::StrayReply).await;
    let mut s = open(b.port(), Protocol::Smtp).await;
    assert!(!s.spoke(), "nothing said after the greeting and EHLO");
    let body = tricky_body("stray");
    let out = s.deliver(&tx("sender@remote.test", vec![rcpt("a@dest.test")], &body)).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Sent, "{:?}", out.rcpts);
    assert!(s.clean(), "the transaction itself ended");
    let mut spoke = false;
    for _ in 0..100 {
        if s.spoke() {
            spoke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spoke, "the stray reply is seen");
    assert!(s.spoke() && !s.quiet(), "and stays seen");
}

/// A transaction that did not end (every recipient refused) leaves the
/// server mid-transaction: the session needs `RSET` before the next one.
#[tokio::test]
async fn a_transaction_left_open_needs_rset_before_the_next() {
    let (_sink, port) = smtp_sink(&["-f", "RCPT"]);
    let mut s = open(port, Protocol::Smtp).await;
    let body = tricky_body("open");
    let out = s.deliver(&tx("sender@remote.test", vec![rcpt("a@dest.test")], &body)).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Bounced, "{:?}", out.rcpts);
    assert!(out.reusable);
    assert!(!s.quiet(), "MAIL was accepted and never ended");
    assert!(s.reset().await);
    assert!(s.quiet(), "RSET ended it");
}

#[tokio::test]
async fn smtp_falls_back_to_helo_and_works_without_pipelining() {
    // -e: no ESMTP (EHLO is refused), -p: no PIPELINING.
    let (_sink, port) = smtp_sink(&["-e", "-p"]);
    let mut s = open(port, Protocol::Smtp).await;
    assert_eq!(*s.caps(), client::wire::Caps::default(), "nothing offered after HELO");
    let body = tricky_body("helo");
    let out =
        s.deliver(&tx("sender@remote.test", vec![rcpt("a@dest.test"), rcpt("b@dest.test")], &body)).await;
    assert!(out.rcpts.iter().all(|r| r.verdict == Verdict::Sent), "{:?}", out.rcpts);
    assert!(matches!(out.health, Health::Completed { latency: Some(_) }));
}

#[tokio::test]
async fn smtp_to_the_test_backend_is_byte_exact_and_passes_dsn_parameters() {
    let b = Backend::start(Proto::Smtp).await;
    let mut s = open(b.port(), Protocol::Smtp).await;
    let body = tricky_body("dsn");
    let notify = Notify { specified: true, never: false, success: true, failure: true, delay: false };
    let t = Transfer {
        sender: "sender@remote.test",
        rcpts: vec![TransferRcpt { address: "x@dest.test", notify, orcpt: Some("rfc822;alias@dest.test") }],
        body: &body,
        body_type: BodyType::EightBitMime,
        smtputf8: false,
        ret: DsnRet::Headers,
        envid: Some("ENV1"),
    };
    let out = s.deliver(&t).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Sent);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, body, "dot-unstuffed data equals the stored message");
    assert_eq!(
        got[0].mail_line,
        format!("MAIL FROM:<sender@remote.test> SIZE={} BODY=8BITMIME RET=HDRS ENVID=ENV1", body.len())
    );
    assert_eq!(
        got[0].rcpt_lines,
        ["RCPT TO:<x@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alias@dest.test"]
    );

    // Without DSN on offer the parameters are left out.
    b.offer(false, true);
    let mut s = open(b.port(), Protocol::Smtp).await;
    s.deliver(&t).await;
    assert_eq!(b.received()[1].rcpt_lines, ["RCPT TO:<x@dest.test>"]);
}

#[tokio::test]
async fn smtputf8_message_to_a_server_without_it_bounces() {
    let b = Backend::start(Proto::Lmtp).await;
    b.offer(true, false);
    let mut s = open(b.port(), Protocol::Lmtp).await;
    let body = "Subject: caf\u{e9}\r\n\r\nhi\r\n".as_bytes().to_vec();
    let mut t = tx("sender@remote.test", vec![rcpt("j\u{f6}rg@dest.test")], &body);
    t.smtputf8 = true;
    let out = s.deliver(&t).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Bounced);
    assert_eq!(out.rcpts[0].dsn.to_string(), "5.6.7");
    assert!(out.rcpts[0].text.starts_with("SMTPUTF8 is required, but was not offered by host"));
    assert!(b.received().is_empty());
    // All-ASCII mail flagged SMTPUTF8 still goes.
    let ascii = b"Subject: plain\r\n\r\nhi\r\n".to_vec();
    let mut t = tx("sender@remote.test", vec![rcpt("jorg@dest.test")], &ascii);
    t.smtputf8 = true;
    assert_eq!(s.deliver(&t).await.rcpts[0].verdict, Verdict::Sent);
}

#[tokio::test]
async fn per_recipient_tempfail_after_data_defers_only_those_recipients() {
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::PerRecipient { pattern: "full".into(), code: 452, text: "4.2.2 Mailbox full".into() })
        .await;
    let mut s = open(b.port(), Protocol::Lmtp).await;
    let body = tricky_body("452");
    let out = s.deliver(&tx("s@remote.test", vec![rcpt("ok@d.test"), rcpt("full@d.test")], &body)).await;
    assert_eq!(out.rcpts[0].verdict, Verdict::Sent);
    assert_eq!(out.rcpts[1].verdict, Verdict::Deferred);
    assert_eq!(out.rcpts[1].dsn.to_string(), "4.2.2");
    assert!(matches!(out.health, Health::Completed { .. }), "mailbox full is not server trouble");

    b.set_mode(Mode::PerRecipient {
        pattern: "full".into(),
        code: 451,
        text: "4.3.0 Temporary internal error".into(),
    })
    .await;
    let out = s.deliver(&tx("s@remote.test", vec![rcpt("ok@d.test"), rcpt("full@d.test")], &body)).await;
    assert_eq!(out.rcpts[1].verdict, Verdict::Deferred);
    assert!(matches!(out.health, Health::Overloaded(_)), "4.3.0 is server trouble: {:?}", out.health);
}

#[tokio::test]
async fn lost_connection_after_the_dot_defers_and_says_so() {
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::CloseAfterDot).await;
    let mut s = open(b.port(), Protocol::Lmtp).await;
    let body = tricky_body("dot");
    let out = s.deliver(&tx("s@remote.test", vec![rcpt("a@d.test"), rcpt("b@d.test")], &body)).await;
    for r in &out.rcpts {
        assert_eq!(r.verdict, Verdict::Deferred);
        assert_eq!(
            r.text,
            "lost connection with localhost[127.0.0.1] while sending end of data -- message may be sent more than once"
        );
    }
    assert!(matches!(out.health, Health::Failed(_)));
    assert!(!out.reusable);
}

#[tokio::test]
async fn silent_and_refusing_and_421_backends_fail_to_open() {
    let b = Backend::start(Proto::Lmtp).await;
    let quick = Timeouts::uniform(Duration::from_millis(300));

    b.set_mode(Mode::Silent).await;
    let e = client::open(&[target(b.port())], Protocol::Lmtp, "mx", &quick).await.unwrap_err();
    assert_eq!(
        e.text,
        "conversation with localhost[127.0.0.1] timed out while receiving the initial server greeting"
    );

    b.set_mode(Mode::Greet421).await;
    let e = client::open(&[target(b.port())], Protocol::Lmtp, "mx", &quick).await.unwrap_err();
    assert!(e.text.starts_with("host localhost[127.0.0.1] refused to talk to me: 421 4.3.2"), "{}", e.text);
    assert_eq!(e.dsn.to_string(), "4.3.2");

    b.set_mode(Mode::Refuse).await;
    let e = client::open(&[target(b.port())], Protocol::Lmtp, "mx", &quick).await.unwrap_err();
    assert_eq!(e.text, format!("connect to localhost[127.0.0.1]:{}: Connection refused", b.port()));
    assert_eq!(e.dsn.to_string(), "4.4.1");

    b.set_mode(Mode::Normal).await;
    assert!(client::open(&[target(b.port())], Protocol::Lmtp, "mx", &quick).await.is_ok(), "listens again");
}
