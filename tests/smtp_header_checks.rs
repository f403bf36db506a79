//! `header_checks` as a Postfix administrator writes them (a `regexp:`
//! table named in main.cf): REJECT answers 550 at the end of the message
//! and stores nothing, DISCARD claims delivery and stores nothing, HOLD
//! queues the message on hold, WARN only logs; folded headers are matched
//! as one logical line, body lines never; what passes is stored byte for
//! byte as sent, over DATA and BDAT. `body_checks` the same over body
//! lines, within body_checks_size_limit. Load-time checks refuse unknown
//! actions and warn about the ones sluice does not take.

mod common;

use common::clients::Raw;
use common::inbound::Server;
use common::log::Log;
use sluice::config::Config;
use sluice::smtp::Settings;

const MASTER: &str = "smtp inet n - n - - smtpd\n";

// Postfix's regexp tables match without regard to case unless the `i`
// flag toggles that.
const CHECKS: &str = "\
/^Subject:.*viagra/ REJECT
/^Subject: custom/ REJECT No thanks
/^X-Folded: first\\s+second-part$/ REJECT folded
/^X-Trash:/ DISCARD into the bin
/^X-Suspect:/ HOLD for review
/^X-Note:/ WARN noted
/^X-Mailer: ok/ DUNNO
";

/// Settings from a main.cf relaying for relay.test with header_checks,
/// and the temp dir holding the table (kept alive by the caller).
fn settings() -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("header_checks"), CHECKS).expect("write table");
    let main = "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
                header_checks = regexp:$config_directory/header_checks\n";
    let loaded = Config::from_texts(dir.path(), main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    (Settings::from_config(&loaded.config).expect("settings"), dir)
}

/// Sends `message` (CRLF lines, no final dot) over DATA; the final reply.
async fn send(server: &Server, message: &str) -> String {
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!("{message}.\r\n").as_bytes()).await;
    let r = c.reply().await.expect("reply").text();
    c.cmd("QUIT").await;
    r
}

#[tokio::test]
async fn reject_discard_hold_and_warn_act_as_in_postfix() {
    let (log, _guard) = Log::capture();
    let (s, _dir) = settings();
    let server = Server::start(s).await;

    let r = send(&server, "From: a@sender.test\r\nSubject: cheap VIAGRA\r\n\r\nbuy\r\n").await;
    assert_eq!(r, "550 5.7.1 Message content rejected");
    let r = send(&server, "Subject: custom\r\n\r\nx\r\n").await;
    assert_eq!(r, "550 5.7.1 No thanks");
    let r = send(&server, "X-Folded: first\r\n\tsecond-part\r\n\r\nx\r\n").await;
    assert_eq!(r, "550 5.7.1 folded", "a folded header is one logical line");
    assert!(server.messages().await.is_empty(), "a rejected message is not stored");

    let r = send(&server, "X-Trash: yes\r\n\r\nx\r\n").await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    assert!(server.messages().await.is_empty(), "a discarded message is not stored");

    let held = "X-Suspect: 1\r\nSubject: hi\r\n\r\nbody\r\n";
    assert!(send(&server, held).await.starts_with("250 "));
    let warned = "X-Note: 1\r\nX-Mailer: ok\r\n\r\nSubject: viagra in the body is not a header\r\n";
    assert!(send(&server, warned).await.starts_with("250 "));
    let mut msgs = server.messages().await;
    msgs.sort_by_key(|(_, e, _)| e.held);
    assert_eq!(msgs.len(), 2);
    let (_, env, body) = &msgs[0];
    assert!(!env.held);
    assert!(body.ends_with(warned.as_bytes()), "stored as sent:\n{}", String::from_utf8_lossy(body));
    let (_, env, body) = &msgs[1];
    assert!(env.held, "HOLD queues the message on hold");
    assert!(body.ends_with(held.as_bytes()));

    let lines = log.text();
    for want in [
        ": reject: header Subject: cheap VIAGRA from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: 5.7.1 Message content rejected\n",
        ": discard: header X-Trash: yes from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: into the bin\n",
        ": hold: header X-Suspect: 1 from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: for review\n",
        ": warning: header X-Note: 1 from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: noted\n",
    ] {
        assert!(lines.contains(want), "missing {want:?} in\n{lines}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bdat_messages_meet_the_same_checks() {
    let (s, _dir) = settings();
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    // The header section ends in the second chunk.
    c.send(b"BDAT 14\r\nX-Note: 1\r\nSub").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let rest = b"ject: Viagra\r\n\r\nx\r\n";
    c.send(format!("BDAT {} LAST\r\n", rest.len()).as_bytes()).await;
    c.send(rest).await;
    assert_eq!(c.reply().await.expect("reply").text(), "550 5.7.1 Message content rejected");
    c.cmd("QUIT").await;
    assert!(server.messages().await.is_empty());
    server.stop().await;
}

#[test]
fn unknown_actions_are_errors_and_unsupported_ones_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hc"), "/^A:/ REJCT\n/^B:/ PREPEND X-Seen: yes\n").expect("write");
    let main = "header_checks = regexp:$config_directory/hc\n";
    let table = dir.path().join("hc").display().to_string();
    match Config::from_texts(dir.path(), main, MASTER) {
        Ok(_) => panic!("an unknown action must be refused"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains(&format!("{table}:1: header_checks: unknown header_checks action \"REJCT\"")),
                "{e}"
            );
        }
    }
    std::fs::write(dir.path().join("hc"), "/^B:/ PREPEND X-Seen: yes\n").expect("write");
    let loaded = Config::from_texts(dir.path(), main, MASTER).expect("loads with a warning");
    let w: Vec<String> = loaded.warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter().any(|w| w == &format!(
            "{table}:1: header_checks: PREPEND is not supported (sluice relays mail unchanged); it is taken as DUNNO"
        )),
        "{w:#?}"
    );
}

const BODY_CHECKS: &str = "\
/^Subject:/ WARN a header line in the body
/click here to win/ REJECT Looks like spam
/^X-Body-Trash/ DISCARD
/^hold me$/ HOLD body hold
/^\\.one dot$/ REJECT Dot line
";

/// Settings with body_checks (and the header_checks above), the body
/// inspected up to `limit` bytes.
fn body_settings(limit: usize) -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("header_checks"), CHECKS).expect("write table");
    std::fs::write(dir.path().join("body_checks"), BODY_CHECKS).expect("write table");
    let main = format!(
        "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
         header_checks = regexp:$config_directory/header_checks\n\
         body_checks = regexp:$config_directory/body_checks\nbody_checks_size_limit = {limit}\n"
    );
    let loaded = Config::from_texts(dir.path(), &main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    (Settings::from_config(&loaded.config).expect("settings"), dir)
}

#[tokio::test]
async fn body_checks_see_body_lines_only_within_the_size_limit() {
    let (log, _guard) = Log::capture();
    let (s, _dir) = body_settings(1000);
    let server = Server::start(s).await;

    // A header never meets body_checks, a body line does (also when the
    // DATA reads split it).
    let r = send(&server, "Subject: click here to win\r\n\r\nhello\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    let r = send(&server, "Subject: hi\r\n\r\nfirst\r\nplease click here to win now\r\n").await;
    assert_eq!(r, "550 5.7.1 Looks like spam");
    let r = send(&server, "Subject: hi\r\n\r\nX-Body-Trash: 1\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    let held = "Subject: hi\r\n\r\nhold me\r\n";
    assert!(send(&server, held).await.starts_with("250 "));
    // Past body_checks_size_limit, nothing is looked at.
    let filler = format!("{}\r\n", "x".repeat(60)).repeat(20);
    let late = format!("Subject: late\r\n\r\n{filler}click here to win\r\n");
    assert!(send(&server, &late).await.starts_with("250 "));
    // A dot-stuffed line is checked as the message holds it (one dot).
    let r = send(&server, "Subject: hi\r\n\r\n..one dot\r\n").await;
    assert_eq!(r, "550 5.7.1 Dot line");

    let mut msgs = server.messages().await;
    msgs.sort_by_key(|(_, e, _)| e.held);
    assert_eq!(msgs.len(), 3, "the rejected and discarded messages are not stored");
    assert!(msgs[2].1.held, "HOLD from body_checks");
    assert!(msgs[2].2.ends_with(held.as_bytes()));
    let lines = log.text();
    for want in [
        ": reject: body please click here to win now from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: 5.7.1 Looks like spam\n",
        ": discard: body X-Body-Trash: 1 from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: body_checks\n",
        ": hold: body hold me from unknown[127.0.0.1]; from=<a@sender.test> to=<user@relay.test> proto=ESMTP helo=<client.test>: body hold\n",
    ] {
        assert!(lines.contains(want), "missing {want:?} in\n{lines}");
    }
    assert!(!lines.contains("warning: body"), "no body line starts with Subject: here\n{lines}");
    server.stop().await;
}

#[tokio::test]
async fn body_checks_apply_to_bdat_chunks_split_inside_a_line() {
    let (s, _dir) = body_settings(51_200);
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    let first = b"Subject: hi\r\n\r\nclick here";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes()).await;
    c.send(first).await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let rest = b" to win\r\n";
    c.send(format!("BDAT {} LAST\r\n", rest.len()).as_bytes()).await;
    c.send(rest).await;
    assert_eq!(c.reply().await.expect("reply").text(), "550 5.7.1 Looks like spam");
    assert!(server.messages().await.is_empty());
    server.stop().await;
}

/// A REJECT text built from `$1` holds whatever the header held: the line
/// break of a folded header, or a bare CR when `smtpd_forbid_bare_newline
/// = no` keeps it. The reply is one line whatever it is built from.
#[tokio::test]
async fn a_reject_text_from_the_header_never_splits_the_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("header_checks"), "/^X-Echo: ([^!]*)$/ REJECT echo $1\n").expect("write");
    let main = "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
                header_checks = regexp:$config_directory/header_checks\nsmtpd_forbid_bare_newline = no\n";
    let loaded = Config::from_texts(dir.path(), main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    let server = Server::start(Settings::from_config(&loaded.config).expect("settings")).await;

    let mut c = Raw::ehlo(server.addr).await;
    for (message, want) in [
        (
            "X-Echo: first\r\n\t250 2.0.0 Ok: queued as X\r\n\r\nx\r\n",
            "550 5.7.1 echo first__250 2.0.0 Ok: queued as X",
        ),
        ("X-Echo: one\r250 2.0.0 forged\r\n\r\nx\r\n", "550 5.7.1 echo one_250 2.0.0 forged"),
    ] {
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!("{message}.\r\n").as_bytes()).await;
        assert_eq!(c.reply().await.expect("reply").text(), want);
    }
    // Nothing else was sent: the next reply is NOOP's own.
    assert_eq!(c.cmd("NOOP").await.text(), "250 2.0.0 Ok");
    c.cmd("QUIT").await;
    assert!(server.messages().await.is_empty());
    server.stop().await;
}
