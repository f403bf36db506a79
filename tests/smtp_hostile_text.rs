//! Control characters from a client never reach a log line, the queue or a
//! header: an address whose quoted local part holds ESC, BEL or NUL
//! (`MAIL FROM:<"\x1b]0;x\x07"@a.b>`) is refused as Postfix refuses a bad
//! address (`501 5.1.7` / `501 5.1.3`, with its `Illegal address syntax`
//! warning), SMTPUTF8 addresses pass, and the log the server wrote holds no
//! control character whatever the client sent.

mod common;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use common::log::Log;
use std::time::Duration;

/// True when `text` holds a control character other than the line ends
/// of log lines.
fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

#[tokio::test]
async fn addresses_with_control_characters_are_refused_and_never_logged_raw() {
    let (log, _guard) = Log::capture();
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;

    let r = c.cmd("MAIL FROM:<\"\x1b]0;owned\x07\"@sender.test>").await;
    assert_eq!(r.text(), "501 5.1.7 Bad sender address syntax");
    let r = c.cmd("MAIL FROM:<\"a\x00b\"@sender.test>").await;
    assert_eq!(r.text(), "501 5.1.7 Bad sender address syntax");
    let r = c.cmd("MAIL FROM:<a\x7fb@sender.test>").await;
    assert_eq!(r.text(), "501 5.1.7 Bad sender address syntax", "DEL is a control too");

    assert_eq!(c.cmd("MAIL FROM:<ok@sender.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<\"\x1b[2J\"@relay.test>").await;
    assert_eq!(r.text(), "501 5.1.3 Bad recipient address syntax");
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);

    // SMTPUTF8 allows UTF-8 in addresses, but never a C1 control or an
    // invisible bidirectional override.
    let r = c.cmd("MAIL FROM:<\"x\u{9b}31m\"@sender.test> SMTPUTF8").await;
    assert_eq!(r.text(), "501 5.1.7 Bad sender address syntax");
    let r = c.cmd("MAIL FROM:<gr\u{fc}\u{202e}n@sender.test> SMTPUTF8").await;
    assert_eq!(r.text(), "501 5.1.7 Bad sender address syntax");
    assert_eq!(c.cmd("MAIL FROM:<gr\u{fc}n@sender.test> SMTPUTF8").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<j\u{f6}rg@any.relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: y\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    // A HELO name goes into Received: as it is: no invisible characters.
    assert_eq!(c.cmd("EHLO client\u{200b}.test").await.code, 501);
    c.cmd("QUIT").await;

    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 2);
    for (_, env, body) in &msgs {
        assert!(!has_control(&env.sender) && env.recipients.iter().all(|r| !has_control(&r.address)));
        let body = String::from_utf8_lossy(body).replace("\r\n", "\n").replace("\n\t", " ");
        assert!(!has_control(&body), "{body:?}");
    }
    assert!(String::from_utf8_lossy(&msgs[1].2).contains("for <j\u{f6}rg@any.relay.test>"));
    let text = log.text();
    assert!(!has_control(&text), "the log holds a control character:\n{text:?}");
    // smtp-proto hands the address over without its quotes.
    assert!(
        text.contains("warning: Illegal address syntax from unknown[127.0.0.1] in MAIL command: ?]0;owned?@sender.test\n"),
        "{text}"
    );
    assert!(text.contains("in RCPT command: ?[2J@relay.test\n"), "{text}");
    server.stop().await;
}

/// A mailbox server's reply text reaches the log, `mailq` and the bounce
/// the sender gets: control characters in it are filtered on the way, so
/// none reaches any of them (the reply is filtered when it is parsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_reply_text_reaches_logs_mailq_and_bounces_filtered() {
    use common::backend::{Backend, Mode, Proto};
    use common::daemon::{Daemon, TestConfig, send};
    use common::delivery::eventually;

    let backend = Backend::start(Proto::Lmtp).await;
    let cfg = TestConfig::new(&format!("lmtp:[127.0.0.1]:{}", backend.port()), "minimal_backoff_time = 1h");
    let daemon = Daemon::start(&cfg);
    backend
        .set_mode(Mode::PerRecipient {
            pattern: "full".into(),
            code: 452,
            text: "4.2.2 full\u{1b}]0;owned\u{7}\rX".into(),
        })
        .await;
    let addr = cfg.smtp;
    let sent = tokio::task::spawn_blocking(move || {
        send(addr, "sender@relay.test", &["full@relay.test"], "Subject: deferred\r\n\r\nx\r\n")
    })
    .await
    .expect("send task");
    assert!(sent.is_ok_and(|r| r.starts_with("250 ")));
    let listing = || {
        let text = cfg.sluice(&["queue", "list"]);
        let json = cfg.sluice(&["queue", "list", "--json"]);
        format!("{}{}", String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&json.stdout))
    };
    // (The reply reader turns the bare CR inside the line into a space.)
    eventually("the deferral recorded", Duration::from_secs(30), || listing().contains("full_]0;owned_ X"))
        .await;
    let shown = listing();
    assert!(!has_control(&shown), "mailq shows a control character: {shown:?}");

    // A permanent refusal bounces to the sender (relay.test, the same
    // server): the DSN's diagnostic is filtered too.
    backend
        .set_mode(Mode::PerRecipient {
            pattern: "gone".into(),
            code: 550,
            text: "5.1.1 gone\u{1b}[2J\u{0}".into(),
        })
        .await;
    let sent = tokio::task::spawn_blocking(move || {
        send(addr, "sender@relay.test", &["gone@relay.test"], "Subject: bounced\r\n\r\nx\r\n")
    })
    .await
    .expect("send task");
    assert!(sent.is_ok_and(|r| r.starts_with("250 ")));
    eventually("the bounce delivered", Duration::from_secs(60), || {
        backend.received().iter().any(|m| m.rcpts.iter().any(|r| r == "sender@relay.test"))
    })
    .await;
    let dsn = backend.received().into_iter().find(|m| m.rcpts.iter().any(|r| r == "sender@relay.test"));
    let dsn = String::from_utf8_lossy(&dsn.expect("dsn").data).replace("\r\n", "\n");
    assert!(dsn.contains("550 5.1.1 gone_[2J_"), "{dsn}");
    assert!(!dsn.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{dsn:?}");
    drop(daemon);
    let log = cfg.log();
    assert!(log.contains("full_]0;owned_ X"), "{log}");
    assert!(!has_control(&log), "{log:?}");
}
