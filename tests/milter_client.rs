//! The milter client against real milters: the libmilter test filter
//! (`tests/milter/test_milter.py`, told per test what to answer) and a
//! private rspamd. The client is driven stage by stage as the SMTP session
//! drives it, with the configuration read from main.cf text; the message
//! body lives in a small in-memory store here (the session's store is the
//! queue draft, tested with the daemon).
// Timeouts are measured in real time: the milters are real processes.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::Config;
use sluice::milter::{
    Action, Body, ConnectInfo, Edit, Family, HeaderSection, MacroLists, MacroSource, Milter, MilterSession,
    Registry, StoreError,
};
use sluice::reply::{Reply, Status};
use sluice_queue::{Envelope, Recipient};

use common::milter::{Rspamd, TestMilter};

/// Macro values as the session would give them.
struct Macros(HashMap<String, String>);

impl Macros {
    fn new() -> Macros {
        let mut m = HashMap::new();
        for (k, v) in [
            ("{j}", "mx.test"),
            ("{daemon_name}", "mx.test"),
            ("{daemon_addr}", "127.0.0.1"),
            ("{v}", "sluice 0.1.0"),
            ("{_}", "client.test [127.0.0.1]"),
            ("{client_addr}", "127.0.0.1"),
            ("{client_name}", "client.test"),
            ("{i}", "4HxTestId"),
            ("{mail_addr}", "sender@example.com"),
            ("{rcpt_addr}", "rcpt@relay.test"),
        ] {
            m.insert(k.to_owned(), v.to_owned());
        }
        Macros(m)
    }
}

impl MacroSource for Macros {
    fn value(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// A body store in memory: the message's chunks, and a replacement as it
/// streams in (kept only up to `keep` bytes, counted beyond).
#[derive(Debug, Default)]
struct MemBody {
    chunks: Vec<Vec<u8>>,
    replacing: Option<Vec<u8>>,
    replaced_len: u64,
    keep: usize,
    lines: u64,
}

impl MemBody {
    fn new(body: &[u8]) -> MemBody {
        MemBody {
            chunks: body.chunks(1000).map(<[u8]>::to_vec).collect(),
            keep: 1 << 20,
            ..MemBody::default()
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.chunks.concat()).into_owned()
    }
}

impl Body for MemBody {
    async fn chunk(&mut self, n: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.chunks.get(n as usize).cloned())
    }
    async fn replace_start(&mut self) -> Result<(), StoreError> {
        self.replacing = Some(Vec::new());
        self.replaced_len = 0;
        self.lines = 0;
        Ok(())
    }
    async fn replace_append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let r = self.replacing.as_mut().ok_or_else(|| StoreError {
            reply: Reply::new(451, Status(4, 3, 0), "x"),
            detail: "append before start".into(),
        })?;
        self.replaced_len += bytes.len() as u64;
        self.lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
        let room = self.keep.saturating_sub(r.len());
        r.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }
    async fn replace_finish(&mut self) -> Result<(), StoreError> {
        let r = self.replacing.take().unwrap_or_default();
        self.chunks = vec![r];
        Ok(())
    }
}

/// The milters named by `main_cf` (with the global milter settings).
fn configure(main_cf: &str) -> (Arc<Config>, Vec<Arc<Milter>>, Arc<MacroLists>) {
    let dir = tempfile::tempdir().unwrap();
    let main = format!("queue_directory = {}\nmyhostname = mx.test\n{main_cf}\n", dir.path().display());
    let loaded = Config::from_texts(dir.path(), &main, "").unwrap_or_else(|e| panic!("{e}"));
    let config = loaded.config;
    let milters = Registry::default().milters(&config);
    let lists = Arc::new(MacroLists::from_config(&config));
    (config, milters, lists)
}

fn connect_info() -> ConnectInfo {
    ConnectInfo {
        hostname: "client.test".into(),
        family: Family::Inet,
        port: 40000,
        address: "127.0.0.1".into(),
    }
}

const MESSAGE_HEAD: &str = "From: Sender <sender@example.com>\r\nTo: rcpt@relay.test\r\nSubject: hello\r\nMessage-ID: <1@example.com>\r\n";
const MESSAGE_BODY: &str = "Hello there.\r\nSecond line.\r\n";

/// A message as the session holds it: our Received: first, hidden.
fn message() -> (HeaderSection, Envelope, MemBody) {
    let mut headers = HeaderSection::parse(MESSAGE_HEAD.as_bytes());
    headers.prepend_own("Received: from client.test (client.test [127.0.0.1])\r\n\tby mx.test (sluice) with ESMTP id 4HxTestId\r\n");
    let envelope = Envelope {
        sender: "sender@example.com".into(),
        recipients: vec![Recipient::new("rcpt@relay.test")],
        ..Envelope::default()
    };
    (headers, envelope, MemBody::new(MESSAGE_BODY.as_bytes()))
}

/// What a whole transaction came to.
#[derive(Debug)]
struct Outcome {
    stage: &'static str,
    action: Option<Action>,
    headers: HeaderSection,
    envelope: Envelope,
    body: MemBody,
}

/// One SMTP session with one message, stopping at the first refusal.
async fn transaction(s: &mut MilterSession, rcpts: &[&str]) -> Outcome {
    let m = Macros::new();
    let (mut headers, mut envelope, mut body) = message();
    let mut outcome = |stage, action| Outcome {
        stage,
        action,
        headers: std::mem::take(&mut headers),
        envelope: std::mem::take(&mut envelope),
        body: std::mem::take(&mut body),
    };
    if let Some(a) = s.connect(&m, &connect_info()).await
        && a.reply().is_some()
    {
        return outcome("CONNECT", Some(a));
    }
    if let Some(a @ Action::Shutdown) = s.helo(&m, "client.test").await {
        return outcome("HELO", Some(a));
    }
    if let Some(a) = s.mail(&m, &["<sender@example.com>".into(), "SIZE=100".into()]).await {
        return outcome("MAIL", Some(a));
    }
    let mut accepted = 0;
    let mut discard = false;
    for r in rcpts {
        match s.rcpt(&m, &[format!("<{r}>")], false).await {
            Some(a) if a.reply().is_some() => {}
            // The whole transaction is accepted and dropped.
            Some(Action::Discard) => {
                discard = true;
                accepted += 1;
            }
            _ => accepted += 1,
        }
    }
    if discard {
        return outcome("RCPT", Some(Action::Discard));
    }
    if accepted == 0 {
        return outcome("RCPT", Some(Action::Reply(Reply::new(554, Status(5, 5, 1), "no valid recipients"))));
    }
    if let Some(a) = s.data(&m).await {
        return outcome("DATA", Some(a));
    }
    content(s, &m).await
}

/// The message stage of a transaction whose envelope was accepted.
async fn content(s: &mut MilterSession, m: &Macros) -> Outcome {
    let (mut h, mut e, mut b) = message();
    let a = {
        let mut edit = Edit {
            headers: &mut h,
            envelope: &mut e,
            body: &mut b,
            header_checks: None,
            id: "4HxTestId",
            context: "client.test[127.0.0.1]; from=<sender@example.com> to=<rcpt@relay.test> proto=ESMTP helo=<client.test>",
        };
        s.message(m, &mut edit).await
    };
    s.abort();
    Outcome { stage: "END-OF-MESSAGE", action: a, headers: h, envelope: e, body: b }
}

fn reply_line(a: &Option<Action>) -> String {
    a.as_ref().and_then(Action::reply).map(|r| r.to_one_line()).unwrap_or_default()
}

#[tokio::test]
async fn every_stage_reaches_the_milter_with_postfix_macros() {
    let t = TestMilter::start(json!({
        "macros": {
            "connect": ["j", "{daemon_name}", "{daemon_addr}", "v", "_"],
            "mail": ["i", "{mail_addr}", "{auth_type}"],
            "rcpt": ["i", "{rcpt_addr}"],
            "data": ["i"], "eoh": ["i"], "eom": ["i"]
        }
    }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    assert_eq!(out.action, None);
    s.disconnect().await;
    t.wait_for("close", 1);

    let ev = t.events();
    let names: Vec<&str> = ev.iter().filter_map(|e| e["event"].as_str()).filter(|n| *n != "start").collect();
    assert_eq!(
        names,
        [
            "negotiate",
            "connect",
            "helo",
            "mail",
            "rcpt",
            "data",
            "header",
            "header",
            "header",
            "header",
            "eoh",
            "body",
            "eom",
            "close"
        ],
        "{ev:#?}"
    );
    let connect = &t.events_named("connect")[0];
    assert_eq!(connect["hostname"], "client.test");
    assert_eq!(connect["addr"], json!(["127.0.0.1", 40000]));
    assert_eq!(connect["macros"]["j"], "mx.test");
    assert_eq!(connect["macros"]["{daemon_name}"], "mx.test");
    assert_eq!(connect["macros"]["_"], "client.test [127.0.0.1]");
    let mail = &t.events_named("mail")[0];
    assert_eq!(mail["sender"], "<sender@example.com>");
    assert_eq!(mail["args"], json!(["SIZE=100"]));
    assert_eq!(mail["macros"]["i"], "4HxTestId");
    assert_eq!(mail["macros"]["{mail_addr}"], "sender@example.com");
    assert_eq!(mail["macros"]["{auth_type}"], serde_json::Value::Null, "no SASL: never set");
    assert_eq!(t.events_named("rcpt")[0]["macros"]["{rcpt_addr}"], "rcpt@relay.test");
    assert_eq!(t.events_named("eom")[0]["macros"]["i"], "4HxTestId");
    // Our own Received: is not shown; the others are, as sent.
    let headers: Vec<(String, String)> = t
        .events_named("header")
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_owned(), h["value"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(headers[0], ("From".to_owned(), "Sender <sender@example.com>".to_owned()));
    assert_eq!(headers[2], ("Subject".to_owned(), "hello".to_owned()));
    assert_eq!(t.events_named("body")[0]["text"], MESSAGE_BODY);
    // Every action was offered to the filter.
    assert_eq!(t.events_named("negotiate")[0]["actions"], 0x1ff);
}

#[tokio::test]
async fn refusals_at_each_stage_are_postfix_replies() {
    let t = TestMilter::start(json!({}));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let cases = [
        ("mail", json!("reject"), "MAIL", "550 5.7.1 Command rejected"),
        ("mail", json!("tempfail"), "MAIL", "451 4.7.1 Service unavailable - try again later"),
        ("data", json!(["reply", "554", "5.7.1", "Go away"]), "DATA", "554 5.7.1 Go away"),
        ("eoh", json!("reject"), "END-OF-MESSAGE", "550 5.7.1 Command rejected"),
        ("body", json!("tempfail"), "END-OF-MESSAGE", "451 4.7.1 Service unavailable - try again later"),
        (
            "eom",
            json!(["reply", "550", "5.7.0", "100%% spam", "really"]),
            "END-OF-MESSAGE",
            "550 5.7.0 100% spam really",
        ),
    ];
    for (stage, answer, at, want) in cases {
        t.set_script(json!({ "reply": { stage: answer } }));
        let mut s = MilterSession::new(&milters, Arc::clone(&lists));
        let out = transaction(&mut s, &["rcpt@relay.test"]).await;
        s.disconnect().await;
        assert_eq!((out.stage, reply_line(&out.action).as_str()), (at, want), "{stage}: {answer}");
    }
    // A multi-line reply stays multi-line on the wire.
    t.set_script(json!({ "reply": { "eom": ["reply", "550", "5.7.1", "first", "second"] } }));
    let mut s = MilterSession::new(&milters, Arc::clone(&lists));
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    let wire = out.action.and_then(|a| a.reply()).unwrap().to_wire();
    assert_eq!(String::from_utf8(wire).unwrap(), "550-5.7.1 first\r\n550 5.7.1 second\r\n");
}

#[tokio::test]
async fn a_refused_connection_answers_every_later_command() {
    let t = TestMilter::start(json!({ "reply": { "connect": "tempfail" } }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let m = Macros::new();
    let a = s.connect(&m, &connect_info()).await;
    assert_eq!(reply_line(&a), "451 4.7.1 Service unavailable - try again later");
    assert_eq!(s.helo(&m, "client.test").await.map(|a| a.reply().map(|r| r.code())), Some(Some(451)));
    assert_eq!(
        reply_line(&s.mail(&m, &["<a@b>".into()]).await),
        "451 4.7.1 Service unavailable - try again later"
    );
    assert!(s.persistent().is_some());
    s.disconnect().await;
    assert_eq!(t.events_named("mail").len(), 0, "nothing more is sent to it");
}

#[tokio::test]
async fn recipients_are_refused_one_by_one() {
    let t =
        TestMilter::start(json!({ "rcpt": { "bad@relay.test": "reject", "later@relay.test": "tempfail" } }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let m = Macros::new();
    s.connect(&m, &connect_info()).await;
    s.mail(&m, &["<a@example.com>".into()]).await;
    let answers = [
        reply_line(&s.rcpt(&m, &["<good@relay.test>".into()], false).await),
        reply_line(&s.rcpt(&m, &["<bad@relay.test>".into()], false).await),
        reply_line(&s.rcpt(&m, &["<later@relay.test>".into(), "NOTIFY=NEVER".into()], false).await),
    ];
    assert_eq!(
        answers,
        ["", "550 5.7.1 Command rejected", "451 4.7.1 Service unavailable - try again later"]
    );
    assert_eq!(t.wait_for("rcpt", 3)[2]["args"], json!(["NOTIFY=NEVER"]));
    // The transaction goes on with the accepted one.
    assert_eq!(s.data(&m).await, None);
    s.disconnect().await;
}

#[tokio::test]
async fn discard_and_quarantine() {
    let t = TestMilter::start(json!({ "reply": { "rcpt": "discard" } }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, Arc::clone(&lists));
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    // A discard accepts and drops; the message never reaches the milter.
    assert_eq!(out.action, Some(Action::Discard));
    s.disconnect().await;

    t.set_script(json!({ "edits": [["quarantine", "looks odd"]] }));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    assert_eq!(out.action, Some(Action::Hold("looks odd".into())));
    s.disconnect().await;
}

#[tokio::test]
async fn header_edits_follow_postfix_index_rules() {
    let t = TestMilter::start(json!({ "edits": [
        ["addheader", "X-Added", "appended"],
        ["insheader", 0, "X-Top", "above our Received"],
        ["insheader", 2, "X-Second", "after our Received"],
        ["chgheader", "Subject", 1, "changed\n\tand folded"],
        ["chgheader", "Message-ID", 1, ""],
        ["chgheader", "X-Missing", 1, "added by change"],
        ["addheader", "X-Evil", "a\nInjected: yes"]
    ]}));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    let text = String::from_utf8(out.headers.to_bytes()).unwrap();
    assert_eq!(
        text,
        "X-Top: above our Received\r\n\
         Received: from client.test (client.test [127.0.0.1])\r\n\tby mx.test (sluice) with ESMTP id 4HxTestId\r\n\
         X-Second: after our Received\r\n\
         From: Sender <sender@example.com>\r\n\
         To: rcpt@relay.test\r\n\
         Subject: changed\r\n\tand folded\r\n\
         X-Added: appended\r\n\
         X-Missing: added by change\r\n\
         X-Evil: a\r\n\tInjected: yes\r\n"
    );
}

#[tokio::test]
async fn envelope_edits_change_sender_and_recipients() {
    let t = TestMilter::start(json!({ "edits": [
        ["chgfrom", "<bounce@example.com>", "RET=HDRS"],
        ["addrcpt", "<archive@relay.test>", null],
        ["addrcpt", "<copy@relay.test>", "NOTIFY=NEVER"],
        ["delrcpt", "<rcpt@relay.test>"]
    ]}));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    assert_eq!(out.envelope.sender, "bounce@example.com");
    assert_eq!(out.envelope.ret, sluice_queue::DsnRet::Headers);
    let rcpts: Vec<&str> = out.envelope.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["archive@relay.test", "copy@relay.test"]);
    assert!(out.envelope.recipients[1].notify.never);
}

#[tokio::test]
async fn a_replaced_body_is_streamed_with_crlf_line_ends() {
    let t = TestMilter::start(json!({ "edits": [["replacebody", "new body\nwith bare LF\r\nand no end"]] }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    assert_eq!(out.body.text(), "new body\r\nwith bare LF\r\nand no end\r\n");
}

#[tokio::test]
async fn a_fifty_megabyte_replacement_streams_through() {
    // 50 MiB of 64-byte lines, sent by libmilter in 64 KiB packets.
    let line = format!("{}\r\n", "x".repeat(62));
    let count = 50 * 1024 * 1024 / line.len();
    let t = TestMilter::start(json!({ "edits": [["replacebody_repeat", line, count]] }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    assert_eq!(out.body.replaced_len, (count * line.len()) as u64);
    assert_eq!(out.body.lines, count as u64);
}

#[tokio::test]
async fn a_milter_that_never_answers_times_out_then_is_left_alone() {
    let t = TestMilter::start(json!({ "hang": { "eom": 3600 } }));
    let (_c, milters, lists) = configure(&format!(
        "smtpd_milters = {{ {}, content_timeout=1s, default_action=accept }}\nsluice_milter_failure_threshold = 2\nsluice_milter_cooldown = 1h",
        t.endpoint
    ));
    for round in 0..2 {
        let started = Instant::now();
        let mut s = MilterSession::new(&milters, Arc::clone(&lists));
        let out = transaction(&mut s, &["rcpt@relay.test"]).await;
        s.disconnect().await;
        assert_eq!(out.action, None, "default_action = accept");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(20),
            "round {round}: {took:?}"
        );
    }
    // Two failures in a row: the breaker is open, sessions no longer wait.
    let connects = t.events_named("connect").len();
    let started = Instant::now();
    let mut s = MilterSession::new(&milters, Arc::clone(&lists));
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert_eq!(t.events_named("connect").len(), connects, "not contacted while open");
}

#[tokio::test]
async fn a_down_milter_means_the_default_action() {
    let port = common::free_port();
    for (action, want) in [
        ("tempfail", "451 4.7.1 Service unavailable - try again later"),
        ("reject", "550 5.5.0 Service unavailable"),
        ("shutdown", "421 4.7.0 Server closing connection"),
    ] {
        let (_c, milters, lists) =
            configure(&format!("smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = {action}"));
        let mut s = MilterSession::new(&milters, lists);
        let out = transaction(&mut s, &["rcpt@relay.test"]).await;
        assert_eq!((out.stage, reply_line(&out.action).as_str()), ("CONNECT", want));
    }
    let (_c, milters, lists) =
        configure(&format!("smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = quarantine"));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    assert_eq!(out.action, Some(Action::Hold("default_action".into())));
    let (_c, milters, lists) =
        configure(&format!("smtpd_milters = {{ inet:127.0.0.1:{port}, default_action=accept }}"));
    let mut s = MilterSession::new(&milters, lists);
    assert_eq!(transaction(&mut s, &["rcpt@relay.test"]).await.action, None);
}

#[tokio::test]
async fn unix_socket_milters_work() {
    let t = TestMilter::start_unix(json!({ "reply": { "eom": "reject" } }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(reply_line(&out.action), "550 5.7.1 Command rejected");
}

#[tokio::test]
async fn the_second_milter_sees_the_edits_of_the_first() {
    let first = TestMilter::start(
        json!({ "edits": [["addheader", "Authentication-Results", "mx.test; dkim=pass"]] }),
    );
    let second = TestMilter::start(json!({}));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}, {}", first.endpoint, second.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    let seen: Vec<String> =
        second.events_named("header").iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    assert!(seen.contains(&"Authentication-Results".to_owned()), "{seen:?}");
    assert!(!first.events_named("header").iter().any(|h| h["name"] == "Authentication-Results"));
}

#[tokio::test]
async fn milter_header_checks_judge_added_headers() {
    let t = TestMilter::start(json!({ "edits": [
        ["addheader", "X-Internal", "drop me"],
        ["addheader", "X-Spam", "yes"]
    ]}));
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("milter_header_checks");
    std::fs::write(&table, "/^X-Internal:/ IGNORE\n/^X-Spam: yes/ REJECT 5.7.1 Spam, says the filter\n")
        .unwrap();
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let (config, _, _) = configure(&format!("milter_header_checks = regexp:{}", table.display()));
    let checks = config.maps("milter_header_checks");
    let mut s = MilterSession::new(&milters, lists);
    let m = Macros::new();
    s.connect(&m, &connect_info()).await;
    s.mail(&m, &["<a@b>".into()]).await;
    s.rcpt(&m, &["<rcpt@relay.test>".into()], false).await;
    s.data(&m).await;
    let (mut h, mut e, mut b) = message();
    let mut edit = Edit {
        headers: &mut h,
        envelope: &mut e,
        body: &mut b,
        header_checks: Some(checks),
        id: "4HxTestId",
        context: "client.test[127.0.0.1]; from=<a@b> to=<rcpt@relay.test> proto=ESMTP helo=<client.test>",
    };
    let a = s.message(&m, &mut edit).await;
    s.disconnect().await;
    assert_eq!(reply_line(&a), "550 5.7.1 Spam, says the filter");
    assert!(!String::from_utf8(h.to_bytes()).unwrap().contains("X-Internal"));
}

#[tokio::test]
async fn negotiated_protocol_steps_are_honoured() {
    // No reply per header, the leading space kept, own macro lists, and
    // rejected recipients reported.
    let t = TestMilter::start(json!({
        "protocol": ["P_NR_HDR", "P_HDR_LEADSPC", "P_RCPT_REJ"],
        "symlist": { "mail": ["{mail_addr}", "{client_addr}"] },
        "macros": { "mail": ["{mail_addr}", "{client_addr}", "i"] }
    }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let m = Macros::new();
    s.connect(&m, &connect_info()).await;
    s.mail(&m, &["<a@b>".into()]).await;
    // Refused by sluice: reported, and the milter's answer changes nothing.
    assert_eq!(s.rcpt(&m, &["<nobody@relay.test>".into()], true).await, None);
    assert_eq!(s.rcpt(&m, &["<rcpt@relay.test>".into()], false).await, None);
    assert_eq!(s.data(&m).await, None);
    let out = content(&mut s, &m).await;
    s.disconnect().await;
    assert_eq!(out.action, None);
    let mail = &t.events_named("mail")[0];
    assert_eq!(mail["macros"]["{client_addr}"], "127.0.0.1");
    assert_eq!(
        mail["macros"]["i"],
        serde_json::Value::Null,
        "the milter's own list replaces the configured one"
    );
    assert_eq!(t.events_named("rcpt")[0]["rcpt"], "<nobody@relay.test>");
    assert_eq!(t.events_named("header")[0]["value"], " Sender <sender@example.com>");
}

#[tokio::test]
async fn rspamd_rejects_gtube_and_marks_clean_mail() {
    let r = Rspamd::start();
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", r.endpoint));
    let m = Macros::new();
    let gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
    let mut s = MilterSession::new(&milters, Arc::clone(&lists));
    s.connect(&m, &connect_info()).await;
    s.helo(&m, "client.test").await;
    s.mail(&m, &["<sender@example.com>".into()]).await;
    s.rcpt(&m, &["<rcpt@relay.test>".into()], false).await;
    s.data(&m).await;
    let (mut h, mut e, _) = message();
    let mut b = MemBody::new(format!("{gtube}\r\n").as_bytes());
    let mut edit = Edit {
        headers: &mut h,
        envelope: &mut e,
        body: &mut b,
        header_checks: None,
        id: "4HxTestId",
        context: "x",
    };
    let a = s.message(&m, &mut edit).await;
    s.disconnect().await;
    let line = reply_line(&a);
    assert!(line.starts_with("554 5.7.1 ") && line.contains("Gtube"), "{line:?}\n{}", r.log());

    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    s.disconnect().await;
    assert!(out.action.is_none() || matches!(out.action, Some(Action::Hold(_))), "{:?}", out.action);
    let text = String::from_utf8(out.headers.to_bytes()).unwrap();
    assert!(
        text.contains("X-Spam-Status") || text.contains("X-Rspamd"),
        "no rspamd header in:\n{text}\n{}",
        r.log()
    );
}

#[tokio::test]
async fn rspamd_stopped_means_the_default_action_at_once() {
    let mut r = Rspamd::start();
    let (_c, milters, lists) =
        configure(&format!("smtpd_milters = {}\nmilter_default_action = tempfail", r.endpoint));
    r.stop();
    let started = Instant::now();
    let mut s = MilterSession::new(&milters, lists);
    let out = transaction(&mut s, &["rcpt@relay.test"]).await;
    assert_eq!(reply_line(&out.action), "451 4.7.1 Service unavailable - try again later");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_large_body_without_replies_is_sent_in_bounded_pieces() {
    let t = TestMilter::start(json!({ "protocol": ["P_NR_BODY", "P_NR_HDR"] }));
    let (_c, milters, lists) = configure(&format!("smtpd_milters = {}", t.endpoint));
    let mut s = MilterSession::new(&milters, lists);
    let m = Macros::new();
    s.connect(&m, &connect_info()).await;
    s.mail(&m, &["<a@b>".into()]).await;
    s.rcpt(&m, &["<rcpt@relay.test>".into()], false).await;
    s.data(&m).await;
    let line = format!("{}\r\n", "y".repeat(78));
    let body = line.repeat(3 * 1024 * 1024 / line.len());
    let (mut h, mut e, _) = message();
    let mut b = MemBody::new(body.as_bytes());
    let mut edit = Edit {
        headers: &mut h,
        envelope: &mut e,
        body: &mut b,
        header_checks: None,
        id: "4HxTestId",
        context: "x",
    };
    assert_eq!(s.message(&m, &mut edit).await, None);
    s.disconnect().await;
    assert_eq!(t.events_named("eom")[0]["body_bytes"], body.len());
}
