//! End to end: a real `sluice serve` takes mail over SMTP from real clients
//! (Python's smtplib, swaks, lettre) and puts it into a private Dovecot over
//! LMTP byte for byte; a recipient Dovecot does not know bounces, and the
//! report reaches the sender's own mailbox. The daemon's log is checked
//! line by line: every event one line, with its queue ID, under the program
//! name Postfix would use (`smtpd`, `cleanup`, `qmgr`, `lmtp`, `bounce`).
//!
//! What a stored message holds beyond what was sent is exactly two things,
//! both checked: Dovecot's `Return-Path:` line (its configuration adds no
//! `Delivered-To:` and no `Received:`), then sluice's own `Received:`
//! header. Dovecot stores LF line ends in the Maildir; the IMAP copy (CRLF)
//! is compared too.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::clients::{python, swaks, text};
use common::daemon::{Daemon, TestConfig};
use common::dovecot::{Dovecot, User};
use common::{have, wait_until};
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mail_parser::{MessageParser, MimeHeaders};

const SENDER: &str = "sender@sender.test";

/// smtplib: MAIL (with the options after the file name), RCPT for each
/// recipient, DATA with the file's bytes (smtplib dot-stuffs them); prints
/// the final reply.
const SMTPLIB: &str = r#"
import smtplib, sys
host, port, sender, rcpts, path, opts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(','), sys.argv[5], sys.argv[6:]
data = open(path, 'rb').read()
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo('client.test')
code, msg = s.mail(sender, opts)
if code != 250:
    print(code, msg.decode()); sys.exit(1)
for r in rcpts:
    code, msg = s.rcpt(r)
    if code >= 400:
        print(code, msg.decode()); sys.exit(1)
code, msg = s.data(data)
print(code, msg.decode())
s.quit()
sys.exit(0 if code == 250 else 1)
"#;

/// A message sent, and what the test expects of it.
#[derive(Debug)]
struct Sent {
    client: &'static str,
    queue_id: String,
    rcpts: Vec<&'static str>,
    data: Vec<u8>,
}

fn lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The queue ID in a `250 2.0.0 Ok: queued as ID` reply.
fn queued_as(reply: &str) -> String {
    let at = reply.find("queued as ").unwrap_or_else(|| panic!("no queue ID in {reply:?}"));
    reply[at + 10..].split_whitespace().next().expect("queue id").to_owned()
}

/// Splits a stored message (LF line ends) into Dovecot's `Return-Path:`
/// line, sluice's `Received:` header (with its continuation lines) and the
/// rest, which must be what the client sent.
fn split_stored(stored: &[u8]) -> (String, String, &[u8]) {
    let text = String::from_utf8_lossy(stored);
    let first = text.find('\n').expect("a first line");
    let return_path = text[..first].to_owned();
    let mut end = first + 1;
    assert!(stored[end..].starts_with(b"Received: "), "sluice's Received: header second in:\n{text}");
    loop {
        let nl = end + stored[end..].iter().position(|&b| b == b'\n').expect("header line end") + 1;
        end = nl;
        if !matches!(stored.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let received = String::from_utf8_lossy(&stored[first + 1..end]).into_owned();
    (return_path, received, &stored[end..])
}

/// The stored copy of the message carrying `marker`, in `user`'s Maildir.
fn stored_copy(dc: &Dovecot, user: &str, marker: &str) -> Vec<u8> {
    let found: Vec<Vec<u8>> = dc
        .maildir(user)
        .into_iter()
        .filter(|m| memchr::memmem::find(m, marker.as_bytes()).is_some())
        .collect();
    assert_eq!(found.len(), 1, "{user} has exactly one copy of {marker}");
    found.into_iter().next().expect("one copy")
}

/// The log lines naming `id`, as (program, text after `ID: `).
fn lines_for<'a>(log: &'a str, id: &str) -> Vec<(&'a str, &'a str)> {
    let tag = format!(": {id}: ");
    log.lines()
        .filter_map(|l| {
            let at = l.find(&tag)?;
            let program = l[..at].rsplit_once("sluice/")?.1.split('[').next()?;
            Some((program, &l[at + tag.len()..]))
        })
        .collect()
}

/// The 8-bit test message: UTF-8 text, lines of the longest length SMTP
/// allows (998 octets), and lines that start with dots (one holding only a
/// dot), which only dot-stuffing carries through.
fn eight_bit_message() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"From: Sender <sender@sender.test>\r\nTo: alice@relay.test, bob@relay.test\r\n");
    m.extend_from_slice(b"Subject: e2e-8bit\r\nMessage-ID: <e2e-8bit@client.test>\r\n");
    m.extend_from_slice(b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    m.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice("Grüße aus Zürich, ½ € — naïve café\r\n".as_bytes());
    m.extend_from_slice(b".\r\n..\r\n.leading dot\r\n...three\r\n . not leading\r\n");
    m.extend(std::iter::repeat_n(b'x', 998));
    m.extend_from_slice(b"\r\n");
    let mut utf8_line = "é".repeat(499).into_bytes(); // 998 octets
    utf8_line.extend_from_slice(b"\r\n");
    m.extend_from_slice(&utf8_line);
    m.extend(std::iter::repeat_n(b'.', 998));
    m.extend_from_slice(b"\r\n\r\n\r\ntrailing blank lines above\r\n");
    m
}

fn plain_message(subject: &str, to: &str) -> Vec<u8> {
    format!(
        "From: sender@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n\
         Hello from {subject}.\r\n.dot at the start\r\nbye\r\n"
    )
    .into_bytes()
}

/// Sends `data` with smtplib (through a file named `name` in the config
/// directory); returns the queue ID from the reply.
async fn smtplib_send(cfg: &TestConfig, name: &str, rcpts: &[&str], data: &[u8], opts: &[&str]) -> String {
    let path = cfg.path().join(format!("{name}.eml"));
    std::fs::write(&path, data).expect("message file");
    let joined = rcpts.join(",");
    let mut args = vec![SENDER, joined.as_str(), path.to_str().expect("utf-8 path")];
    args.extend_from_slice(opts);
    let out = python(cfg.smtp, SMTPLIB, &args).await;
    assert!(out.status.success(), "smtplib: {}", text(&out));
    queued_as(&String::from_utf8_lossy(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_real_clients_lands_in_dovecot_byte_exact_and_the_log_reads_as_postfix() {
    Dovecot::require();
    assert!(have("swaks") && have("python3"), "swaks and python3 are needed");
    let users = ["alice", "bob", "carol", "sender"].map(User::new);
    let dc = Dovecot::start(&users, false);
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(&lmtp, "");
    // Bounces go back to the sender's domain, which has its mailbox on the
    // same Dovecot.
    std::fs::write(cfg.path().join("transport"), format!("relay.test {lmtp}\nsender.test {lmtp}\n"))
        .expect("transport");
    let daemon = Daemon::start(&cfg);
    let mut sent = Vec::new();

    // smtplib: one recipient.
    let data = plain_message("e2e-single", "alice@relay.test");
    let id = smtplib_send(&cfg, "single", &["alice@relay.test"], &data, &[]).await;
    sent.push(Sent { client: "smtplib", queue_id: id, rcpts: vec!["alice@relay.test"], data });

    // smtplib: three recipients, BODY=8BITMIME, longest lines, dots.
    let data = eight_bit_message();
    let rcpts = vec!["alice@relay.test", "bob@relay.test", "carol@relay.test"];
    let id = smtplib_send(&cfg, "8bit", &rcpts, &data, &["BODY=8BITMIME"]).await;
    sent.push(Sent { client: "smtplib", queue_id: id, rcpts, data });

    // swaks: the message from a file. swaks dot-stuffs it; the file ends
    // with the closing dot, or swaks would add a line end of its own.
    let data = plain_message("e2e-swaks", "bob@relay.test");
    let path = cfg.path().join("swaks.eml");
    std::fs::write(&path, [data.as_slice(), b".\r\n"].concat()).expect("swaks file");
    let data_arg = format!("@{}", path.display());
    let out = swaks(cfg.smtp, &["--from", SENDER, "--to", "bob@relay.test", "--data", &data_arg]).await;
    assert!(out.status.success(), "swaks: {}", text(&out));
    let transcript = text(&out);
    let reply = transcript.lines().find(|l| l.contains("queued as")).expect("swaks saw the 250 reply");
    sent.push(Sent { client: "swaks", queue_id: queued_as(reply), rcpts: vec!["bob@relay.test"], data });

    // lettre: two recipients, an 8bit part with dot-led lines.
    let message = Message::builder()
        .from("Sender <sender@sender.test>".parse::<Mailbox>().expect("from"))
        .to("alice@relay.test".parse::<Mailbox>().expect("to"))
        .to("carol@relay.test".parse::<Mailbox>().expect("to"))
        .subject("e2e-lettre")
        .message_id(Some("<e2e-lettre@client.test>".into()))
        .singlepart(
            SinglePart::builder()
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .header(ContentTransferEncoding::EightBit)
                .body(String::from("Ünïcödé body\r\n.\r\n.. two dots\r\nlast line\r\n")),
        )
        .expect("message");
    // lettre ends DATA with CRLF "." CRLF after the message whatever its
    // last bytes, so a message ending in a line end arrives with one more.
    let data = [message.formatted().as_slice(), b"\r\n"].concat();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(cfg.smtp.port())
        .hello_name(ClientId::Domain("client.test".into()))
        .build();
    let response = transport.send(message).await.expect("lettre send");
    let reply = response.message().collect::<Vec<_>>().join(" ");
    sent.push(Sent {
        client: "lettre",
        queue_id: queued_as(&reply),
        rcpts: vec!["alice@relay.test", "carol@relay.test"],
        data,
    });

    // A recipient Dovecot does not know, beside one it does.
    let bounce_data = plain_message("e2e-bounce", "alice@relay.test, nobody@relay.test");
    let bounce_id =
        smtplib_send(&cfg, "bounce", &["alice@relay.test", "nobody@relay.test"], &bounce_data, &[]).await;

    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sent {
        for r in &s.rcpts {
            *want.entry(r.split('@').next().expect("local part")).or_default() += 1;
        }
    }
    *want.entry("alice").or_default() += 1; // the bounce test's good recipient
    want.insert("sender", 1); // the report about nobody@relay.test
    wait_until(
        "every mailbox to get its mail",
        Duration::from_secs(60),
        || want.iter().all(|(u, n)| dc.maildir(u).len() >= *n),
        || format!("sluice log:\n{}\ndovecot log:\n{}", cfg.log(), dc.log()),
    );
    let all_ids: Vec<&str> = sent.iter().map(|s| s.queue_id.as_str()).chain([bounce_id.as_str()]).collect();
    wait_until(
        "every message to leave the queue",
        Duration::from_secs(60),
        || all_ids.iter().all(|id| cfg.log().contains(&format!(": {id}: removed"))),
        || cfg.log(),
    );
    for (u, n) in &want {
        assert_eq!(dc.maildir(u).len(), *n, "{u}'s mailbox holds exactly what was sent to it");
    }

    // Byte for byte: Return-Path, our Received header, then the message.
    let mut sizes = BTreeMap::new();
    for s in &sent {
        let marker = String::from_utf8_lossy(&s.data)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
            .expect("subject");
        for rcpt in &s.rcpts {
            let user = rcpt.split('@').next().expect("local part");
            let stored = stored_copy(&dc, user, &marker);
            let (return_path, received, rest) = split_stored(&stored);
            assert_eq!(return_path, format!("Return-Path: <{SENDER}>"), "{} to {rcpt}", s.client);
            assert!(
                received.starts_with("Received: from client.test (")
                    && received.contains("by mx.test (sluice) with ESMTP id ")
                    && received.contains(&format!(" id {}", s.queue_id)),
                "{} to {rcpt}: {received}",
                s.client
            );
            if s.rcpts.len() == 1 {
                assert!(received.contains(&format!("for <{rcpt}>;")), "{received}");
            }
            // What sluice stored and logs as `size=`: its header (CRLF) and
            // the message.
            sizes.insert(s.queue_id.clone(), received.replace('\n', "\r\n").len() + s.data.len());
            assert!(
                rest == lf(&s.data).as_slice(),
                "{} message to {rcpt} differs:\n--- sent\n{}\n--- stored\n{}",
                s.client,
                String::from_utf8_lossy(&lf(&s.data)),
                String::from_utf8_lossy(rest)
            );
        }
    }
    // Over IMAP Dovecot gives CRLF back: the sent bytes exactly, after the
    // same two headers.
    let imap = dc.imap_fetch_all("carol", "pw");
    let eight = &sent[1];
    let copy = imap
        .iter()
        .find(|m| memchr::memmem::find(m, b"Subject: e2e-8bit").is_some())
        .expect("carol's copy over IMAP");
    let body_at = memchr::memmem::find(copy, b"\r\nFrom: Sender").expect("message after headers") + 2;
    assert_eq!(&copy[body_at..], eight.data.as_slice(), "8-bit message byte-exact over IMAP");

    // The bounce: alice has the message, the sender a report about nobody.
    assert_eq!(split_stored(&stored_copy(&dc, "alice", "e2e-bounce")).2, lf(&bounce_data).as_slice());
    let report = dc.maildir("sender").into_iter().next().expect("the report");
    assert!(report.starts_with(b"Return-Path: <>\n"), "{}", String::from_utf8_lossy(&report));
    // Made by sluice itself: no Received header of ours.
    let report_rest = &report[report.iter().position(|&b| b == b'\n').expect("line") + 1..];
    let parsed = MessageParser::default().parse(report_rest).expect("report parses");
    let ct = parsed.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status"))
    );
    let status = String::from_utf8_lossy(parsed.parts[2].contents()).into_owned();
    assert!(status.contains("Final-Recipient: rfc822; nobody@relay.test"), "{status}");
    assert!(status.contains("Action: failed") && status.contains("Status: 5.1.1"), "{status}");
    assert!(!status.contains("alice@relay.test"), "only the failed recipient is reported: {status}");

    let status = daemon.stop();
    assert!(status.success(), "sluice exits 0 on SIGTERM: {status:?}");
    let log = cfg.log();
    let notice = format!(": {bounce_id}: sender non-delivery notification: ");
    let report_id = log
        .lines()
        .find_map(|l| l.split_once(&notice).map(|(_, id)| id.trim().to_owned()))
        .unwrap_or_else(|| panic!("no notification line for {bounce_id}:\n{log}"));
    check_log(&log, &sent, &sizes, &bounce_id, &report_id);
}

/// Every line is a syslog line of `sluice/<program>[pid]`, and each message
/// left exactly the lines Postfix would have written, in order.
fn check_log(log: &str, sent: &[Sent], sizes: &BTreeMap<String, usize>, bounce_id: &str, report_id: &str) {
    let layout =
        regex::Regex::new(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d mx\.test sluice/([a-z]+)\[\d+\]: ")
            .expect("regex");
    for line in log.lines() {
        assert!(layout.is_match(line), "not a syslog line: {line:?}");
    }
    let size_re =
        regex::Regex::new(r"^from=<([^>]*)>, size=(\d+), nrcpt=(\d+) \(queue active\)$").expect("regex");
    let to_re = regex::Regex::new(
        r"^to=<([^>]+)>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=(\d\.\d\.\d), status=(sent|bounced) \((.*)\)$",
    )
    .expect("regex");
    let check = |id: &str, sender: &str, rcpts: &[(&str, &str)], received: bool, extra: &[(&str, &str)]| {
        let lines = lines_for(log, id);
        let mut want: Vec<(&str, String)> = Vec::new();
        if received {
            want.push(("smtpd", "client=".into()));
            want.push(("cleanup", "message-id=<".into()));
        }
        want.push(("qmgr", format!("from=<{sender}>, size=")));
        let mut seen = Vec::new();
        for (program, rest) in &lines {
            seen.push(format!("{program}: {rest}"));
        }
        let context = seen.join("\n");
        // In order: arrival, queue manager, deliveries, then removed last.
        let mut at = 0;
        for (program, prefix) in &want {
            let found = lines[at..].iter().position(|(p, r)| p == program && r.starts_with(prefix.as_str()));
            assert!(found.is_some(), "{id}: no {program} line {prefix:?} in order in:\n{context}");
            at += found.unwrap_or(0) + 1;
        }
        assert_eq!(lines.last().copied(), Some(("qmgr", "removed")), "{id}: removed last:\n{context}");
        // One line per event.
        let count = |program: &str, prefix: &str| {
            lines.iter().filter(|(p, r)| *p == program && r.starts_with(prefix)).count()
        };
        assert_eq!(count("smtpd", "client="), usize::from(received), "{context}");
        assert_eq!(count("cleanup", "message-id="), usize::from(received), "{context}");
        assert_eq!(count("qmgr", "from=<"), 1, "{context}");
        assert_eq!(count("qmgr", "removed"), 1, "{context}");
        let (_, active) =
            lines.iter().find(|(p, r)| *p == "qmgr" && r.starts_with("from=<")).expect("active");
        let caps = size_re.captures(active).unwrap_or_else(|| panic!("{id}: {active}"));
        assert_eq!(&caps[1], sender);
        let size = caps[2].parse::<usize>().expect("size");
        assert!(size > 0, "{active}");
        if let Some(want) = sizes.get(id) {
            assert_eq!(size, *want, "{id}: size= is the stored message's: {active}");
        }
        assert_eq!(caps[3].parse::<usize>().expect("nrcpt"), rcpts.len(), "{active}");
        let results: Vec<(&str, &str)> =
            lines.iter().filter(|(_, r)| r.starts_with("to=<")).copied().collect();
        assert_eq!(results.len(), rcpts.len(), "{id}: one result line per recipient:\n{context}");
        for (rcpt, status) in rcpts {
            let (program, line) = results
                .iter()
                .find(|(_, r)| r.starts_with(&format!("to=<{rcpt}>,")))
                .unwrap_or_else(|| panic!("{id}: no result for {rcpt}:\n{context}"));
            assert_eq!(*program, "lmtp", "{line}");
            let caps = to_re.captures(line).unwrap_or_else(|| panic!("{id}: Postfix layout: {line}"));
            assert_eq!(&caps[3], *status, "{line}");
            assert_eq!(&caps[2][..1], if *status == "sent" { "2" } else { "5" }, "{line}");
        }
        for (program, prefix) in extra {
            assert_eq!(count(program, prefix), 1, "{id}: one {program} line {prefix:?}:\n{context}");
        }
    };
    for s in sent {
        let rcpts: Vec<(&str, &str)> = s.rcpts.iter().map(|r| (*r, "sent")).collect();
        check(&s.queue_id, SENDER, &rcpts, true, &[]);
        // The message-id line names the message's own Message-ID.
        let subject = String::from_utf8_lossy(&s.data)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
            .expect("subject");
        let mid = format!("message-id=<{subject}@client.test>");
        assert!(lines_for(log, &s.queue_id).iter().any(|(p, r)| *p == "cleanup" && *r == mid), "{mid}");
    }
    let notice = format!("sender non-delivery notification: {report_id}");
    check(
        bounce_id,
        SENDER,
        &[("alice@relay.test", "sent"), ("nobody@relay.test", "bounced")],
        true,
        &[("bounce", notice.as_str())],
    );
    // The report is mail sluice made itself: no smtpd or cleanup lines.
    check(report_id, "", &[(SENDER, "sent")], false, &[]);
    // Sessions: a disconnect line for each connect line (the harness's
    // port probe is a session too), and one with a DATA for each message.
    let smtpd = |what: &str| {
        log.lines().filter(|l| l.contains("sluice/smtpd[") && l.contains(&format!("]: {what}"))).count()
    };
    assert_eq!(smtpd("disconnect from "), smtpd("connect from "), "{log}");
    assert_eq!(smtpd("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt="), sent.len() + 1, "{log}");
}
