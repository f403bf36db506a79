//! The inbound server's log lines, word for word as Postfix's smtpd and
//! cleanup write them.
//!
//! A file of its own: the test captures logs with a thread-scoped tracing
//! subscriber, and tracing caches per call site whether anyone listens;
//! other tests starting and stopping servers in parallel threads of the
//! same process would race that cache and drop lines now and then.

mod common;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use common::log::Log;

#[tokio::test]
async fn log_lines_read_like_postfix() {
    // The shared capture buffer, with a plain formatter: the bare messages.
    let buf = Log::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_level(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    // A known command with bad syntax counts as that command, not as unknown.
    c.cmd("MAIL FROM:<a@source.test> SIZE=ten").await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<x@elsewhere.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("RCPT TO:<ghost@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"x\r\n.\r\n").await;
    let queued = c.reply().await.expect("reply").text();
    let id = queued.rsplit(' ').next().expect("id").to_owned();
    c.cmd("XYZZY").await;
    c.cmd("QUIT").await;
    assert!(c.closed().await);
    server.stop().await;
    let log = buf.text();
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let want = [
        "connect from unknown[127.0.0.1]".to_owned(),
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@elsewhere.test>: Relay access denied; \
         from=<a@source.test> to=<x@elsewhere.test> proto=ESMTP helo=<client.test>"
            .to_owned(),
        format!("{id}: client=unknown[127.0.0.1]"),
        format!(
            "{id}: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <ghost@relay.test>: Recipient address rejected: \
             User unknown in relay recipient table; from=<a@source.test> to=<ghost@relay.test> proto=ESMTP helo=<client.test>"
        ),
        format!("{id}: message-id=<>"),
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=1/2 rcpt=1/3 data=1 unknown=0/1 quit=1 commands=5/9"
            .to_owned(),
    ];
    let mut at = 0;
    for w in &want {
        let found = lines[at..].iter().position(|l| l.starts_with(w.as_str()));
        assert!(found.is_some(), "missing {w:?} after line {at} in:\n{log}");
        at += found.unwrap_or(0) + 1;
    }
}
