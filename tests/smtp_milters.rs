//! Milters in the SMTP session, against the libmilter test filter
//! (`tests/milter/test_milter.py`): each stage asks them after sluice's own
//! checks, their refusals reach the client (per recipient at RCPT), their
//! decisions are logged as Postfix logs them, and the message made durable
//! before `250` is the one they edited — headers, envelope and a replaced
//! body, up to 50 MB — over DATA and BDAT. A milter that never answers
//! costs a session its timeout, then nothing.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::inbound::Server;
use common::log::Log;
use common::milter::TestMilter;
use serde_json::json;
use sluice::config::Config;
use sluice::smtp::Settings;

const MASTER: &str = "smtp inet n - n - - smtpd\n";

/// Settings relaying for relay.test with `extra` main.cf lines.
fn settings(extra: &str) -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = format!(
        "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
         queue_directory = {}\n{extra}\n",
        dir.path().display()
    );
    let loaded = Config::from_texts(dir.path(), &main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    (Settings::from_config(&loaded.config).expect("settings"), dir)
}

/// Sends one message over DATA to `rcpts`; the replies to each RCPT and
/// the final reply (None when DATA itself was refused).
async fn send(server: &Server, rcpts: &[&str], message: &str) -> (Vec<u16>, String) {
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test> SIZE=100").await.code, 250);
    let mut codes = Vec::new();
    for r in rcpts {
        codes.push(c.cmd(&format!("RCPT TO:<{r}>")).await.code);
    }
    let data = c.cmd("DATA").await;
    if data.code != 354 {
        c.cmd("QUIT").await;
        return (codes, data.text());
    }
    c.send(format!("{message}.\r\n").as_bytes()).await;
    let r = c.reply().await.expect("reply").text();
    c.cmd("QUIT").await;
    (codes, r)
}

const MESSAGE: &str = "From: a@sender.test\r\nTo: user@relay.test\r\nSubject: hello\r\n\r\nHello.\r\n";

#[tokio::test]
async fn the_queued_message_is_the_one_the_milter_edited() {
    let (log, _guard) = Log::capture();
    let t = TestMilter::start(json!({
        "macros": { "mail": ["i", "{mail_addr}", "{client_addr}"], "rcpt": ["i", "{rcpt_addr}"], "eom": ["i"] },
        "edits": [
            ["insheader", 0, "X-Top", "first of all"],
            ["addheader", "X-Filter", "seen"],
            ["chgheader", "Subject", 1, "[filtered] hello"],
            ["chgfrom", "<bounces@sender.test>", null],
            ["addrcpt", "<other@relay.test>", null],
            ["replacebody", "A new body.\nSecond line.\n"]
        ]
    }));
    // {client_addr} is in no default list: an administrator adds it.
    let (s, _dir) = settings(&format!(
        "smtpd_milters = {}\nmilter_mail_macros = i {{mail_addr}} {{client_addr}}",
        t.endpoint
    ));
    let server = Server::start(s).await;
    let (codes, r) = send(&server, &["user@relay.test"], MESSAGE).await;
    assert_eq!(codes, [250]);
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_owned();
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    let (qid, env, body) = &msgs[0];
    assert_eq!(qid.to_string(), id);
    assert_eq!(env.sender, "bounces@sender.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["user@relay.test", "other@relay.test"]);
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.starts_with("X-Top: first of all\r\nReceived: from "), "{text}");
    assert!(
        text.ends_with(
            "From: a@sender.test\r\nTo: user@relay.test\r\nSubject: [filtered] hello\r\nX-Filter: seen\r\n\r\nA new body.\r\nSecond line.\r\n"
        ),
        "{text}"
    );
    assert_eq!(env.size, body.len() as u64);
    server.stop().await;

    // The milter saw Postfix's macros, the queue ID among them once known.
    let mail = &t.events_named("mail")[0];
    assert_eq!(mail["sender"], "<a@sender.test>");
    assert_eq!(mail["args"], json!(["SIZE=100"]));
    assert_eq!(mail["macros"]["{mail_addr}"], "a@sender.test");
    assert_eq!(mail["macros"]["{client_addr}"], "127.0.0.1");
    assert_eq!(mail["macros"]["i"], serde_json::Value::Null, "no queue ID before the first recipient");
    assert_eq!(t.events_named("rcpt")[0]["macros"]["{rcpt_addr}"], "user@relay.test");
    assert_eq!(t.events_named("eom")[0]["macros"]["i"], id.as_str());
    // Our Received: is hidden from it; the client's headers are not.
    let names: Vec<String> =
        t.events_named("header").iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["From", "To", "Subject"]);
    assert!(log.text().contains(&format!("{id}: client=")));
}

#[tokio::test]
async fn refusals_reach_the_client_per_recipient_and_are_logged_as_postfix_does() {
    let (log, _guard) = Log::capture();
    let t = TestMilter::start(json!({
        "rcpt": { "other@relay.test": ["reply", "550", "5.1.1", "No such user here"] },
        "reply": { "eom": ["reply", "554", "5.7.1", "Spam, says the filter"] }
    }));
    let (s, _dir) = settings(&format!("smtpd_milters = {}", t.endpoint));
    let server = Server::start(s).await;
    let (codes, r) = send(&server, &["user@relay.test", "other@relay.test"], MESSAGE).await;
    assert_eq!(codes, [250, 550]);
    assert_eq!(r, "554 5.7.1 Spam, says the filter");
    assert!(server.messages().await.is_empty(), "a refused message is not stored");
    server.stop().await;
    let text = log.text();
    assert!(
        text.contains(
            "milter-reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 No such user here; from=<a@sender.test> to=<other@relay.test> proto=ESMTP helo=<client.test>"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5.7.1 Spam, says the filter; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn quarantine_holds_and_discard_drops() {
    let (log, _guard) = Log::capture();
    let t = TestMilter::start(json!({ "edits": [["quarantine", "needs a look"]] }));
    let (s, _dir) = settings(&format!("smtpd_milters = {}", t.endpoint));
    let server = Server::start(s).await;
    let (_, r) = send(&server, &["user@relay.test"], MESSAGE).await;
    assert!(r.starts_with("250 "), "{r}");
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].1.held, "quarantine is HOLD");

    t.set_script(json!({ "reply": { "eom": "discard" } }));
    let (_, r) = send(&server, &["user@relay.test"], MESSAGE).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    assert_eq!(server.messages().await.len(), 1, "the discarded message is not stored");
    server.stop().await;
    let text = log.text();
    assert!(
        text.contains(
            ": milter-hold: END-OF-MESSAGE from unknown[127.0.0.1]: needs a look; from=<a@sender.test>"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            ": milter-discard: END-OF-MESSAGE from unknown[127.0.0.1]: milter triggers DISCARD action;"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_connection_gets_554_and_its_reply_at_mail() {
    let t = TestMilter::start(json!({ "reply": { "connect": "reject" } }));
    let (s, _dir) = settings(&format!("smtpd_milters = {}", t.endpoint));
    let server = Server::start(s).await;
    let mut c = Raw::connect_silent(server.addr).await;
    let greeting = c.reply().await.expect("greeting");
    assert_eq!(greeting.text(), "554 mx.test ESMTP not accepting connections");
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.text(), "550 5.7.1 Command rejected");
    c.cmd("QUIT").await;
    server.stop().await;
}

#[tokio::test]
async fn bdat_content_goes_to_the_milter_too() {
    let t = TestMilter::start(json!({ "edits": [["addheader", "X-Via", "bdat"]] }));
    let (s, _dir) = settings(&format!("smtpd_milters = {}", t.endpoint));
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    let (first, second) = MESSAGE.split_at(30);
    c.send(format!("BDAT {}\r\n{first}", first.len()).as_bytes()).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    c.send(format!("BDAT {} LAST\r\n{second}", second.len()).as_bytes()).await;
    let r = c.reply().await.unwrap().text();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT").await;
    let body = server.only_body().await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text, MESSAGE.replace("\r\n\r\n", "\r\nX-Via: bdat\r\n\r\n"));
    assert_eq!(t.events_named("data").len(), 1, "one DATA event for the BDAT chunks");
    server.stop().await;
}

#[tokio::test]
async fn an_unedited_message_is_stored_byte_for_byte() {
    let t = TestMilter::start(json!({}));
    let (s, _dir) = settings(&format!("smtpd_milters = {}", t.endpoint));
    let server = Server::start(s).await;
    // Odd but legal shapes: a header with white space before its colon,
    // a folded header, a body line that looks like a header.
    let message = "Subject : odd\r\nX-Folded: a\r\n\tb\r\n\r\nNot: a header\r\n";
    let (_, r) = send(&server, &["user@relay.test"], message).await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(server.only_body().await, message.as_bytes());
    // A message of headers only (no empty line) and one without headers.
    for message in ["Subject: only headers\r\n", "\r\nonly a body\r\n"] {
        let (_, r) = send(&server, &["user@relay.test"], message).await;
        assert!(r.starts_with("250 "), "{r}");
    }
    let bodies: Vec<Vec<u8>> = server.messages().await.into_iter().map(|m| m.2).collect();
    assert!(bodies.iter().any(|b| b.ends_with(b"\r\nSubject: only headers\r\n")));
    assert!(bodies.iter().any(|b| b.ends_with(b"\r\n\r\nonly a body\r\n")));
    server.stop().await;
}

#[tokio::test]
async fn a_fifty_megabyte_message_gets_its_body_replaced() {
    // The client sends 50 MB; the milter reads it all and replaces the
    // body with another 50 MB. Neither is ever held whole by sluice.
    let line = format!("{}\r\n", "r".repeat(62));
    let count = 50 * 1024 * 1024 / line.len();
    let t = TestMilter::start(json!({ "edits": [["replacebody_repeat", line, count]] }));
    let (s, _dir) = settings(&format!("smtpd_milters = {}\nmessage_size_limit = 0", t.endpoint));
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: big\r\n\r\n").await;
    let sent_line = format!("{}\r\n", "s".repeat(78));
    let block = sent_line.repeat(1024 * 1024 / sent_line.len());
    for _ in 0..50 {
        c.send(block.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    let r = tokio::time::timeout(Duration::from_secs(300), c.reply()).await.expect("reply in time").unwrap();
    assert!(r.text().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    c.cmd("QUIT").await;
    assert_eq!(t.events_named("eom")[0]["body_bytes"], block.len() * 50, "the milter read the whole body");
    let msgs = server.messages().await;
    let body = &msgs[0].2;
    let split = memchr::memmem::find(body, b"\r\n\r\n").unwrap() + 4;
    assert!(body[..split].ends_with(b"Subject: big\r\n\r\n"));
    assert_eq!(body.len() - split, count * line.len());
    assert!(body[split..].chunks(line.len()).all(|l| l == line.as_bytes()), "the replacement, intact");
    server.stop().await;
}

#[tokio::test]
async fn a_milter_that_never_answers_costs_its_timeout_then_nothing() {
    let (log, _guard) = Log::capture();
    let t = TestMilter::start(json!({ "hang": { "eom": 3600 } }));
    let (s, _dir) = settings(&format!(
        "smtpd_milters = {{ {}, content_timeout=2s }}\nmilter_default_action = tempfail\n\
         sluice_milter_failure_threshold = 1\nsluice_milter_cooldown = 1h",
        t.endpoint
    ));
    let server = Server::start(s).await;
    let started = sluice::clock::instant();
    let (_, r) = send(&server, &["user@relay.test"], MESSAGE).await;
    assert_eq!(r, "451 4.7.1 Service unavailable - try again later");
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the milter: {:?}", started.elapsed());
    // The breaker is open: the next session meets the default action at
    // MAIL already, without waiting.
    let started = sluice::clock::instant();
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@sender.test>").await.text(),
        "451 4.7.1 Service unavailable - try again later"
    );
    c.cmd("QUIT").await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(server.messages().await.is_empty());
    server.stop().await;
    let text = log.text();
    assert_eq!(text.matches("failures in a row; not contacted").count(), 1, "logged once:\n{text}");
    assert!(text.contains("can't read SMFIC_BODYEOB reply packet header: timeout"), "{text}");
}

#[tokio::test]
async fn a_message_sluice_refuses_is_aborted_at_the_milters_and_the_session_goes_on() {
    let t = TestMilter::start(json!({ "edits": [["addheader", "X-Filter", "seen"]] }));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("header_checks"), "/^Subject: refuse me/ REJECT\n").unwrap();
    let (s, _cfg) = settings(&format!(
        "smtpd_milters = {}\nheader_checks = regexp:{}/header_checks",
        t.endpoint,
        dir.path().display()
    ));
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    for (subject, want) in
        [("refuse me", "550 5.7.1 Message content rejected"), ("fine", "250 2.0.0 Ok: queued as ")]
    {
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes()).await;
        let r = c.reply().await.unwrap().text();
        assert!(r.starts_with(want), "{subject}: {r}");
    }
    c.cmd("QUIT").await;
    let body = String::from_utf8(server.only_body().await).unwrap();
    assert_eq!(body, "Subject: fine\r\nX-Filter: seen\r\n\r\nbody\r\n");
    server.stop().await;
    // The refused message was aborted at the milter, which saw only the
    // second one's content.
    t.wait_for("close", 1);
    let names: Vec<String> =
        t.events().iter().filter_map(|e| e["event"].as_str().map(str::to_owned)).collect();
    let first_abort = names.iter().position(|n| n == "abort").expect("an abort");
    let second_mail = names.iter().rposition(|n| n == "mail").unwrap();
    assert!(first_abort < second_mail, "{names:?}");
    assert_eq!(t.events_named("eom").len(), 1, "{names:?}");
}
