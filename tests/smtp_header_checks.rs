//! `header_checks` as a Postfix administrator writes them (a `regexp:`
//! table named in main.cf): REJECT answers 550 at the end of the message
//! and stores nothing, DISCARD claims delivery and stores nothing, HOLD
//! queues the message on hold, WARN only logs; folded headers are matched
//! as one logical line, body lines never; what passes is stored byte for
//! byte as sent, over DATA and BDAT. Load-time checks refuse unknown
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
