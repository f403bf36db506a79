//! The inbound server's limits and session control, driven from a raw
//! client: recipient and size limits, hop-count loops, timeouts, error and
//! line-length limits, per-client counts and rates, queue high water,
//! storage failure and shutdown. The server runs in-process on a real queue
//! in a temp dir (the protocol itself is in `smtp_protocol.rs`).

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use sluice::smtp::Settings;
use sluice_queue::AcceptLimits;

#[tokio::test]
async fn too_many_recipients_get_452() {
    let settings = Settings { recipient_limit: 2, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<other@relay.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<third@relay.test>").await.text(), "452 4.5.3 Error: too many recipients");
    c.cmd("DATA").await;
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(server.messages().await[0].1.recipients.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn declared_or_actual_size_over_the_limit_is_refused() {
    let settings = Settings { message_size_limit: 10_000, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@source.test> SIZE=10001").await.text(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    // Declared small, sent big: refused at the end, nothing stored, and
    // the rest of the message is not taken for commands.
    c.cmd("MAIL FROM:<a@source.test> SIZE=100").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    let line = format!("{}\r\n", "z".repeat(500));
    for _ in 0..40 {
        c.send(line.as_bytes()).await;
    }
    c.send(b"RSET\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").text(), "552 5.3.4 Error: message file too big");
    assert!(server.messages().await.is_empty());
    // BDAT beyond the limit is refused as well.
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.send(format!("BDAT 20000 LAST\r\n{}", "b".repeat(20000)).as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").text(), "552 5.3.4 Error: message file too big");
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert!(server.messages().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn looping_mail_is_refused_by_hop_count() {
    let settings = Settings { hopcount_limit: 5, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    for (hops, want) in [(3, 250), (4, 554)] {
        c.cmd("MAIL FROM:<a@source.test>").await;
        c.cmd("RCPT TO:<user@relay.test>").await;
        c.cmd("DATA").await;
        let mut msg = String::new();
        for i in 0..hops {
            msg.push_str(&format!(
                "Received: from h{i}.test by h{}.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
                i + 1
            ));
        }
        msg.push_str("Subject: loop\r\n\r\nbody\r\n.\r\n");
        c.send(msg.as_bytes()).await;
        let r = c.reply().await.expect("reply");
        assert_eq!(r.code, want, "{hops} hops: {r:?}");
        if want == 554 {
            assert_eq!(r.text(), "554 5.4.0 Error: too many hops");
        }
    }
    assert_eq!(server.messages().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_is_timed_out() {
    let settings = Settings { timeout: Duration::from_millis(500), ..relay_settings() };
    let server = Server::start(settings).await;
    // Idle between commands.
    let mut c = Raw::ehlo(server.addr).await;
    c.send(b"MAIL FR").await;
    assert_eq!(c.reply().await.expect("reply").text(), "421 4.4.2 mx.test Error: timeout exceeded");
    assert!(c.closed().await);
    // Trickling a command byte by byte does not keep it alive: the whole
    // line must arrive within the timeout.
    let mut c = Raw::ehlo(server.addr).await;
    let trickle = async {
        for b in b"MAIL FROM:<slow@source.test>" {
            if !c.try_send(&[*b]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    };
    let mut c = trickle.await;
    assert_eq!(c.reply().await.expect("reply").code, 421);
    // Stalling in DATA.
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: half\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 421);
    assert!(server.messages().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let settings = Settings { hard_error_limit: 3, soft_error_limit: 3, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("FOO").await.code, 502);
    assert_eq!(c.cmd("BAR").await.code, 502);
    c.send(b"BAZ\r\n").await;
    let r = c.replies(2).await;
    assert_eq!(r[1].text(), "421 4.7.0 mx.test Error: too many errors");
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn over_long_command_lines_are_refused_and_skipped() {
    let settings = Settings { command_line_limit: 600, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.send(format!("NOOP {}\r\n", "a".repeat(5000)).as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").text(), "500 5.5.2 Error: command line too long");
    assert_eq!(c.cmd("NOOP").await.code, 250);
    server.stop().await;
}

#[tokio::test]
async fn http_and_header_lines_end_the_session() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 221);
    assert!(c.closed().await);
    let mut c = Raw::connect(server.addr).await;
    c.send(b"Subject: hello\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 221);
    server.stop().await;
}

#[tokio::test]
async fn per_client_connection_count_and_rates_are_limited() {
    let settings = Settings { client_connection_count_limit: 2, ..relay_settings() };
    let server = Server::start(settings).await;
    let _a = Raw::connect(server.addr).await;
    let _b = Raw::connect(server.addr).await;
    let mut c = Raw::connect_silent(server.addr).await;
    assert_eq!(
        c.reply().await.expect("reply").text(),
        "421 4.7.0 mx.test Error: too many connections from 127.0.0.1"
    );
    drop((_a, _b));
    server.stop().await;

    let settings = Settings { client_connection_rate_limit: 2, ..relay_settings() };
    let server = Server::start(settings).await;
    for _ in 0..2 {
        let mut c = Raw::connect(server.addr).await;
        c.cmd("QUIT").await;
    }
    let mut c = Raw::connect_silent(server.addr).await;
    assert_eq!(c.reply().await.expect("reply").code, 421);
    server.stop().await;

    let settings = Settings { client_message_rate_limit: 1, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    c.cmd("RSET").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@source.test>").await.text(),
        "450 4.7.1 Error: too much mail from 127.0.0.1"
    );
    server.stop().await;
}

#[tokio::test]
async fn queue_over_high_water_gets_452_then_accepts_again_after_draining() {
    let settings = Settings {
        accept_limits: AcceptLimits { max_messages: 2, ..AcceptLimits::default() },
        ..relay_settings()
    };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    for _ in 0..2 {
        assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
        c.cmd("RCPT TO:<user@relay.test>").await;
        c.cmd("DATA").await;
        c.send(b"x\r\n.\r\n").await;
        assert_eq!(c.reply().await.expect("reply").code, 250);
    }
    // The queue holds two: new mail is told to come back later.
    let r = c.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(r.text(), "452 4.3.1 Insufficient system storage");
    // Drain: the messages leave the queue (as after delivery).
    let ids: Vec<_> = server.messages().await.into_iter().map(|m| m.0).collect();
    assert_eq!(server.queue.delete(&ids).await.expect("delete"), 2);
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"y\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(server.messages().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn storage_failure_is_451_and_nothing_is_acknowledged() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    // The queue goes away under the session (disk failure, shutdown).
    server.queue.close().await.expect("close");
    c.send(b"Subject: lost\r\n\r\nbody\r\n.\r\n").await;
    let r = c.reply().await.expect("reply");
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text().starts_with("451 4.3.0"), "{r:?}");
    tokio::time::timeout(Duration::from_secs(30), server.stage.stop()).await.expect("stop");
}

#[tokio::test]
async fn shutdown_lets_a_message_in_flight_finish_then_says_421() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    let mut idle = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: in flight\r\n\r\n").await;
    server.stage.cancel();
    // The idle session is told at once.
    assert_eq!(idle.reply().await.expect("reply").code, 421);
    c.send(b"rest of body\r\n.\r\n").await;
    let r = c.reply().await.expect("reply");
    assert!(r.text().starts_with("250 2.0.0 Ok: queued as"), "{r:?}");
    assert_eq!(c.reply().await.expect("reply").code, 421);
    assert!(c.closed().await);
    assert_eq!(server.messages().await.len(), 1);
    server.stop().await;
}
