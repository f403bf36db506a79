//! Sender authentication through the real daemon: `sluice serve` asks the
//! tests' loopback DNS server (`sluice_dns_servers`) and delivers to a
//! private Dovecot. What is checked: the Authentication-Results header at
//! the top of the message as delivered, every other byte as sent, forged
//! results claiming sluice's authserv-id removed and others kept; the
//! default refusal of a DMARC p=reject forgery with 550 5.7.1; a
//! quarantine held when configured, and released; the SPF refusal at RCPT
//! when configured; a DNS server that never answers (the session is not
//! held past `sluice_auth_timeout`, the result is temperror, marked or
//! deferred); a client exempt from all of it; and a milter beside the
//! checks (our header above its edits, forged results never shown to it).
//! Log lines are Postfix-style, with the queue ID.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig};
use common::dns_server::DnsServer;
use common::dovecot::{Dovecot, User};
use common::signing::{DkimKey, message};
use common::wait_until;

/// The DNS world of these tests: example.test (SPF lists the loopback
/// client, DMARC p=reject, DKIM key `sel`), other.test (SPF lists the
/// client, no DMARC), quarantine.test (p=quarantine, SPF -all) and
/// hard.test (SPF -all with an explanation).
fn dns() -> (DnsServer, DkimKey) {
    let dns = DnsServer::start();
    dns.txt("example.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.example.test", "v=DMARC1; p=reject")
        .a("mail.example.test", Ipv4Addr::LOCALHOST)
        .txt("mail.example.test", "v=spf1 a -all")
        .txt("other.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("quarantine.test", "v=spf1 -all")
        .txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
        .txt("hard.test", "v=spf1 ip4:192.0.2.1 -all exp=why.hard.test")
        .txt("why.hard.test", "see https://hard.test/spf");
    let key = DkimKey::generate("example.test", "sel");
    key.publish(&dns);
    (dns, key)
}

/// A daemon relaying relay.test to `dc`, with the checks on and asking
/// `dns`; `extra` main.cf lines after.
fn start(dns: &DnsServer, dc: &Dovecot, extra: &str) -> (TestConfig, Daemon) {
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(
        &lmtp,
        &format!(
            "sluice_auth_checks = spf, dkim, dmarc, arc\nsluice_dns_servers = {}\nsluice_auth_timeout = 3s\n{extra}",
            dns.addr()
        ),
    );
    let d = Daemon::start(&cfg);
    (cfg, d)
}

/// Dot-stuffs a message for DATA.
fn stuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One SMTP transaction from HELO `mail.example.test`; the replies to
/// MAIL, each RCPT and (when every RCPT was accepted) the end of DATA.
async fn transaction(addr: SocketAddr, from: &str, rcpts: &[&str], data: &[u8]) -> Vec<(u16, String)> {
    let mut c = Raw::connect(addr).await;
    let r = c.cmd("EHLO mail.example.test").await;
    assert_eq!(r.code, 250);
    let mut out = Vec::new();
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    out.push((r.code, r.lines.join(" ")));
    let mut accepted = r.code == 250;
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        accepted &= r.code == 250;
        out.push((r.code, r.lines.join(" ")));
    }
    if accepted {
        let r = c.cmd("DATA").await;
        assert_eq!(r.code, 354, "{r:?}");
        c.send(&stuffed(data)).await;
        let r = c.reply().await.expect("end-of-data reply");
        out.push((r.code, r.lines.join(" ")));
    }
    c.cmd("QUIT").await;
    out
}

fn queue_id(reply: &str) -> String {
    reply.rsplit(' ').next().expect("queue id").to_owned()
}

/// LF line ends, as Dovecot stores them.
fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

/// The header field starting at `at` in `text` (LF line ends) and where
/// the next one begins.
fn field(text: &str, at: usize) -> (&str, usize) {
    let mut end = at;
    loop {
        end += text[end..].find('\n').expect("line end") + 1;
        if !text[end..].starts_with([' ', '\t']) {
            return (&text[at..end], end);
        }
    }
}

fn stored(dc: &Dovecot, marker: &str) -> String {
    let found: Vec<String> = dc
        .maildir("user")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .filter(|m| m.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "one copy of {marker}");
    found.into_iter().next().expect("one")
}

fn wait_delivered(cfg: &TestConfig, dc: &Dovecot, markers: &[&str]) {
    wait_until(
        "delivery to dovecot",
        Duration::from_secs(60),
        || {
            let all: Vec<String> =
                dc.maildir("user").iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            markers.iter().all(|k| all.iter().any(|m| m.contains(k)))
        },
        || format!("sluice log:\n{}\ndovecot log:\n{}", cfg.log(), dc.log()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_mail_carries_the_results_on_top_and_no_forged_ones() {
    Dovecot::require();
    let (dns, key) = dns();
    let dc = Dovecot::start(&[User::new("user")], false);
    let (cfg, _daemon) = start(&dns, &dc, "");

    // Signed by mail-auth, with a forged result claiming our authserv-id
    // and a genuine one from elsewhere; the signature covers neither.
    let forged = "Authentication-Results: mx.test; dkim=pass header.d=example.test\r\n";
    let foreign = "Authentication-Results: upstream.example;\r\n\tspf=pass smtp.mailfrom=x@y.test\r\n";
    let signed = key.sign(&message("alice@example.test", "auth-signed", "Hello.\r\n.dot line\r\n"));
    let sent = [forged.as_bytes(), foreign.as_bytes(), &signed].concat();
    let r = transaction(cfg.smtp, "alice@example.test", &["user@relay.test"], &sent).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "{r:?}");
    let id = queue_id(&r.last().unwrap().1);
    // Signed by OpenDKIM's own signer.
    let odk = key.sign_with_opendkim(&message("alice@example.test", "auth-opendkim", "From OpenDKIM.\r\n"));
    let r2 = transaction(cfg.smtp, "alice@example.test", &["user@relay.test"], &odk).await;
    assert_eq!(r2.last().map(|r| r.0), Some(250), "{r2:?}");
    wait_delivered(&cfg, &dc, &["auth-signed@", "auth-opendkim@"]);

    // Return-Path (Dovecot's), our results, our Received:, then the
    // message as sent but for the forged field.
    let copy = stored(&dc, "auth-signed@");
    let (return_path, at) = field(&copy, 0);
    assert!(return_path.starts_with("Return-Path: <alice@example.test>"), "{copy}");
    let (results, at) = field(&copy, at);
    let want = [
        "Authentication-Results: mx.test;\n",
        "\tspf=pass (example.test designates the client) smtp.mailfrom=alice@example.test;\n",
        "\tspf=pass (mail.example.test designates the client) smtp.helo=mail.example.test;\n",
        "\tdkim=pass header.d=example.test header.s=sel header.b=",
    ];
    let mut rest = results;
    for w in want {
        assert!(rest.starts_with(w), "want {w:?} at {rest:?}\nin\n{copy}");
        rest = &rest[w.len()..];
    }
    assert!(
        results.ends_with(";\n\tarc=none;\n\tdmarc=pass (p=reject dis=none) header.from=example.test\n"),
        "{results}"
    );
    let (received, at) = field(&copy, at);
    assert!(received.starts_with("Received: from mail.example.test"), "{copy}");
    assert_eq!(&copy.as_bytes()[at..], lf(&[foreign.as_bytes(), &signed].concat()), "the rest is as sent");
    // The OpenDKIM signature verified too.
    let copy = stored(&dc, "auth-opendkim@");
    assert!(copy.contains("\tdkim=pass header.d=example.test header.s=sel"), "{copy}");

    let log = cfg.log();
    let line = log.lines().find(|l| l.contains(&format!(": {id}: auth: "))).expect("an auth line");
    assert!(line.contains("sluice/smtpd["), "{line}");
    assert!(
        line.ends_with(&format!(
            "{id}: auth: spf=pass smtp.mailfrom=alice@example.test, spf=pass smtp.helo=mail.example.test, \
             dkim=pass header.d=example.test, arc=none, dmarc=pass p=reject header.from=example.test"
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dmarc_reject_forgery_is_refused_and_quarantine_can_be_held() {
    Dovecot::require();
    let (dns, _key) = dns();
    let dc = Dovecot::start(&[User::new("user")], false);
    let (cfg, _daemon) = start(&dns, &dc, "sluice_dmarc_quarantine_policy = hold");

    // From example.test, envelope other.test (SPF passes, does not align),
    // unsigned: refused at the end of data, nothing queued.
    let forged = message("ceo@example.test", "auth-forged", "Pay this invoice.\r\n");
    let r = transaction(cfg.smtp, "billing@other.test", &["user@relay.test"], &forged).await;
    assert_eq!(
        r.last().unwrap(),
        &(550, "5.7.1 Message rejected by DMARC policy for example.test".to_owned())
    );
    let log = cfg.log();
    let line = log.lines().find(|l| l.contains("reject: END-OF-MESSAGE")).expect("a reject line");
    assert!(
        line.contains(
            ": reject: END-OF-MESSAGE from unknown[127.0.0.1]: 550 5.7.1 Message rejected by DMARC policy for \
             example.test; from=<billing@other.test> to=<user@relay.test> proto=ESMTP helo=<mail.example.test>"
        ),
        "{line}"
    );
    assert!(log.contains("auth: spf=pass smtp.mailfrom=billing@other.test"), "{log}");

    // p=quarantine, configured to hold: queued on hold, then released.
    let q = message("news@quarantine.test", "auth-quarantine", "Held for review.\r\n");
    let r = transaction(cfg.smtp, "news@quarantine.test", &["user@relay.test"], &q).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "{r:?}");
    let id = queue_id(&r.last().unwrap().1);
    let list = String::from_utf8_lossy(&cfg.sluice(&["queue", "list"]).stdout).into_owned();
    assert!(list.contains(&format!("{id}!")), "held: {list}");
    let log = cfg.log();
    assert!(
        log.contains(&format!(
            "{id}: hold: DMARC policy of quarantine.test (p=quarantine) from unknown[127.0.0.1]; \
             from=<news@quarantine.test> to=<user@relay.test>"
        )),
        "{log}"
    );
    assert!(cfg.sluice(&["queue", "release", &id]).status.success());
    wait_delivered(&cfg, &dc, &["auth-quarantine@"]);
    let copy = stored(&dc, "auth-quarantine@");
    assert!(
        copy.contains("\tdmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test\n"),
        "{copy}"
    );
    assert!(dc.maildir("user").iter().all(|m| !String::from_utf8_lossy(m).contains("auth-forged")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_fail_is_refused_at_rcpt_when_asked_after_relay_control() {
    Dovecot::require();
    let (dns, _key) = dns();
    let dc = Dovecot::start(&[User::new("user")], false);
    let (cfg, _daemon) = start(&dns, &dc, "sluice_spf_fail_policy = reject");
    let m = message("a@hard.test", "auth-spf", "x\r\n");
    let r = transaction(cfg.smtp, "a@hard.test", &["user@elsewhere.test", "user@relay.test"], &m).await;
    assert_eq!(r[0].0, 250, "MAIL is accepted: {r:?}");
    assert_eq!(r[1].0, 454, "relay control (defer_unauth_destination) answers first: {r:?}");
    assert_eq!(
        r[2],
        (
            550,
            "5.7.23 <a@hard.test>: Sender address rejected: SPF fail: hard.test does not designate 127.0.0.1 \
             as a permitted sender: see https://hard.test/spf"
                .to_owned()
        )
    );
    assert!(cfg.log().contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.7.23"), "{}", cfg.log());
    // A softfail or a pass is not refused.
    let ok = message("a@example.test", "auth-spf-ok", "x\r\n");
    let r = transaction(cfg.smtp, "a@example.test", &["user@relay.test"], &ok).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_that_never_answers_costs_the_timeout_and_is_marked_or_deferred() {
    Dovecot::require();
    let (dns, key) = dns();
    dns.silence("example.test").silence("_dmarc.example.test").silence("sel._domainkey.example.test");
    let dc = Dovecot::start(&[User::new("user")], false);
    let (cfg, daemon) = start(&dns, &dc, "sluice_auth_timeout = 1s");
    let signed = key.sign(&message("alice@example.test", "auth-silent", "x\r\n"));
    let r = transaction(cfg.smtp, "alice@example.test", &["user@relay.test"], &signed).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "accepted, marked: {r:?}");
    wait_delivered(&cfg, &dc, &["auth-silent@"]);
    let copy = stored(&dc, "auth-silent@");
    assert!(copy.contains("\tspf=temperror (no DNS answer for example.test within 1s)"), "{copy}");
    assert!(copy.contains("\tdkim=temperror (DNS timeout)"), "{copy}");
    assert!(copy.contains("\tdmarc=temperror (DNS timeout;"), "{copy}");
    drop(daemon);

    // Deferring instead: 451, and the client keeps its message.
    let (cfg, _daemon) = start(&dns, &dc, "sluice_auth_timeout = 1s\nsluice_auth_temperror_policy = defer");
    let r = transaction(cfg.smtp, "alice@example.test", &["user@relay.test"], &signed).await;
    let last = r.last().unwrap();
    assert_eq!(last.0, 451, "{r:?}");
    assert!(last.1.starts_with("4.7.1 DMARC check of example.test failed temporarily"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_client_is_neither_checked_nor_marked() {
    Dovecot::require();
    let (dns, _key) = dns();
    let dc = Dovecot::start(&[User::new("user")], false);
    let (cfg, _daemon) = start(&dns, &dc, "sluice_auth_exempt_clients = 127.0.0.1");
    // A forgery that would be refused, carrying an internal result.
    let internal = "Authentication-Results: mx.test; dkim=pass (internal scanner)\r\n";
    let m = [internal.as_bytes(), &message("ceo@example.test", "auth-exempt", "x\r\n")].concat();
    let r = transaction(cfg.smtp, "billing@other.test", &["user@relay.test"], &m).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "{r:?}");
    wait_delivered(&cfg, &dc, &["auth-exempt@"]);
    let copy = stored(&dc, "auth-exempt@");
    let (_, at) = field(&copy, 0);
    let (next, _) = field(&copy, at);
    assert!(next.starts_with("Received: "), "no results added: {copy}");
    assert!(copy.contains("Authentication-Results: mx.test; dkim=pass (internal scanner)\n"), "kept: {copy}");
    assert!(!cfg.log().contains(": auth: "), "{}", cfg.log());
    assert!(dns.asked().is_empty(), "no DNS asked: {:?}", dns.asked());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_milter_our_results_stay_on_top_and_it_never_sees_forged_ones() {
    Dovecot::require();
    let (dns, key) = dns();
    let dc = Dovecot::start(&[User::new("user")], false);
    let milter = common::milter::TestMilter::start(serde_json::json!({
        "edits": [["addheader", "X-Filter", "seen"]]
    }));
    let (cfg, _daemon) = start(&dns, &dc, &format!("smtpd_milters = {}", milter.endpoint));

    let forged = "Authentication-Results: mx.test; dkim=pass header.d=example.test\r\n";
    let signed = key.sign(&message("alice@example.test", "auth-milter", "Filtered.\r\n"));
    let sent = [forged.as_bytes(), &signed].concat();
    let r = transaction(cfg.smtp, "alice@example.test", &["user@relay.test"], &sent).await;
    assert_eq!(r.last().map(|r| r.0), Some(250), "{r:?}");
    // A DMARC p=reject forgery is refused before the milter's end of
    // message, and the milter is told the transaction is over.
    let refused = message("ceo@example.test", "auth-milter-forged", "Pay.\r\n");
    let r2 = transaction(cfg.smtp, "billing@other.test", &["user@relay.test"], &refused).await;
    assert_eq!(r2.last().map(|r| r.0), Some(550), "{r2:?}");
    wait_delivered(&cfg, &dc, &["auth-milter@"]);

    // Return-Path, our results (the signature verified: what the client
    // sent, not what the milter made of it), our Received:, the message
    // less the forged field, the milter's header last in the section.
    let copy = stored(&dc, "auth-milter@");
    let (_, at) = field(&copy, 0);
    let (results, at) = field(&copy, at);
    assert!(results.starts_with("Authentication-Results: mx.test;\n"), "{copy}");
    assert!(results.contains("\tdkim=pass header.d=example.test"), "{results}");
    assert!(results.ends_with("\tdmarc=pass (p=reject dis=none) header.from=example.test\n"), "{results}");
    let (received, at) = field(&copy, at);
    assert!(received.starts_with("Received: from mail.example.test"), "{copy}");
    let split = signed.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 2;
    let want = [&signed[..split], b"X-Filter: seen\r\n", &signed[split..]].concat();
    assert_eq!(&copy.as_bytes()[at..], lf(&want), "the rest is as sent, with the milter's header");

    // The milter saw the client's header section without the forged field.
    let names: Vec<String> =
        milter.events_named("header").iter().map(|h| h["name"].as_str().unwrap_or("").to_owned()).collect();
    assert!(names.iter().any(|n| n == "DKIM-Signature"), "{names:?}");
    assert!(!names.iter().any(|n| n.eq_ignore_ascii_case("Authentication-Results")), "{names:?}");
    assert_eq!(milter.events_named("eom").len(), 1, "only the accepted message reached its end");
    assert!(!milter.wait_for("abort", 1).is_empty(), "the refused one was aborted");
}
