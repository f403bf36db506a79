//! Sessions driven over `tokio::io::duplex`: no sockets, and with tokio's
//! paused clock where time matters, so timeouts are tested without waiting.

use super::*;
use crate::smtp::Settings;
use sluice_queue::{Options, Queue};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct Harness {
    client: DuplexStream,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start(settings: Settings, early: &[u8]) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&dir.path().join("q"), &Options::default(), 0).expect("queue");
    let inbound = Inbound::new(queue, settings);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    // Bytes written before the session starts are "before the greeting".
    if !early.is_empty() {
        client.write_all(early).now_or_never().expect("duplex has room").expect("write");
    }
    let settings = inbound.settings();
    let peer = Peer::new("192.0.2.1:1234".parse().expect("literal"));
    let session = Session::new(server, peer, inbound, settings, Stage::new());
    let task = tokio::spawn(session.run());
    Harness { client, task, _dir: dir }
}

impl Harness {
    async fn read_all(mut self) -> String {
        let mut out = Vec::new();
        self.client.read_to_end(&mut out).await.expect("read");
        self.task.await.expect("session ends");
        String::from_utf8(out).expect("utf-8 replies")
    }

    /// Every remaining line up to the end of the stream.
    async fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return lines;
            }
            lines.push(l);
        }
    }

    async fn line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if self.client.read(&mut b).await.expect("read") == 0 {
                break;
            }
            out.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }
}

#[tokio::test]
async fn early_talker_is_refused_without_a_greeting() {
    let h = start(Settings::default(), b"EHLO x\r\n");
    let out = h.read_all().await;
    assert_eq!(out, "554 5.5.0 Error: SMTP protocol synchronization\r\n");
}

#[tokio::test]
async fn early_talker_is_served_when_allowed() {
    let settings = Settings { forbid_unauth_pipelining: false, ..Settings::default() };
    let h = start(settings, b"EHLO x\r\nQUIT\r\n");
    let out = h.read_all().await;
    assert!(out.starts_with("220 localhost ESMTP sluice\r\n250-localhost\r\n"), "{out}");
    assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn idle_client_is_timed_out() {
    let settings = Settings { timeout: Duration::from_secs(300), ..Settings::default() };
    let mut h = start(settings, b"");
    assert_eq!(h.line().await, "220 localhost ESMTP sluice\r\n");
    h.client.write_all(b"NOOP\r\n").await.expect("write");
    assert_eq!(h.line().await, "250 2.0.0 Ok\r\n");
    // Nothing more: the paused clock jumps to the deadline.
    assert_eq!(h.line().await, "421 4.4.2 localhost Error: timeout exceeded\r\n");
    assert_eq!(h.line().await, "");
}

#[tokio::test(start_paused = true)]
async fn trickled_command_is_cut_off_at_the_line_deadline() {
    let settings = Settings { timeout: Duration::from_secs(10), ..Settings::default() };
    let mut h = start(settings, b"");
    h.line().await;
    // One byte every 4 s: each read is within the timeout, the line is not.
    for b in b"NOOP" {
        let _ = h.client.write_all(&[*b]).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    assert_eq!(h.rest().await, ["421 4.4.2 localhost Error: timeout exceeded\r\n"]);
}

#[tokio::test(start_paused = true)]
async fn session_time_limit_ends_even_a_busy_session() {
    let settings = Settings {
        timeout: Duration::from_secs(10),
        session_time_limit: Duration::from_secs(32),
        junk_command_limit: 1000,
        ..Settings::default()
    };
    let mut h = start(settings, b"");
    h.line().await;
    // A command every 5 s keeps within smtpd_timeout, but not within the
    // session's limit.
    for _ in 0..10 {
        if h.client.write_all(b"NOOP\r\n").await.is_err() {
            break;
        }
        let l = h.line().await;
        if l != "250 2.0.0 Ok\r\n" {
            assert_eq!(l, "421 4.4.2 localhost Error: timeout exceeded\r\n");
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(
        h.rest().await.last().map(String::as_str),
        Some("421 4.4.2 localhost Error: timeout exceeded\r\n")
    );
}

#[tokio::test]
async fn junk_commands_beyond_the_limit_count_as_errors() {
    let settings = Settings { junk_command_limit: 2, hard_error_limit: 3, ..Settings::default() };
    let mut h = start(settings, b"");
    h.line().await;
    for _ in 0..4 {
        h.client.write_all(b"NOOP\r\n").await.expect("write");
        assert_eq!(h.line().await, "250 2.0.0 Ok\r\n");
    }
    // The fifth is the third error: answered, then the session ends.
    h.client.write_all(b"NOOP\r\n").await.expect("write");
    assert_eq!(h.rest().await, ["250 2.0.0 Ok\r\n", "421 4.7.0 localhost Error: too many errors\r\n"]);
}

#[test]
fn forbidden_verbs_are_http_and_headers() {
    assert!(is_forbidden("GET"));
    assert!(is_forbidden("POST"));
    assert!(is_forbidden("SUBJECT:"));
    assert!(is_forbidden("X-MAILER:"));
    assert!(!is_forbidden("MAIL"));
    assert!(!is_forbidden(":"));
}

#[test]
fn counts_print_like_postfix() {
    let mut c = Counts::default();
    c.add("ehlo", true);
    c.add("mail", true);
    c.add("rcpt", true);
    c.add("rcpt", false);
    c.add("data", true);
    c.add("quit", true);
    assert_eq!(c.to_string(), " ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6");
}

#[test]
fn parse_errors_map_to_replies_with_status() {
    let r = parse_error(smtp_proto::Error::UnsupportedParameter { param: "FOO".into() });
    assert_eq!(r.to_one_line(), "555 5.5.4 Unsupported option: FOO");
    let r = parse_error(smtp_proto::Error::InvalidSenderAddress);
    assert_eq!(r.to_one_line(), "501 5.1.7 Bad sender address syntax");
}
