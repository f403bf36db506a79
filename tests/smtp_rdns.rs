//! The client's name as Postfix finds it: the PTR name of the client
//! address, confirmed by a forward lookup that lists the address, or
//! `unknown`. Checked where it shows — the `connect from` and `client=` log
//! lines, the `Received:` header, the envelope — and where it decides:
//! `reject_unknown_client_hostname` and
//! `reject_unknown_reverse_client_hostname`, with 450 for a lookup that only
//! failed for now (a silent name server).
//!
//! DNS is the StaticResolver test double (tests have no DNS); everything
//! else is real: the server on a loopback port, Python's smtplib or a raw
//! client, and the log lines in Postfix's format.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::clients::{Raw, python, text};
use common::inbound::{Server, relay_settings};
use common::log::Log;
use sluice::resolver::StaticResolver;
use sluice::smtp::Settings;
use sluice::smtp::policy::Restriction;

const LOOPBACK: &str = "127.0.0.1";

const SEND: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo('client.test')
s.sendmail('a@sender.test', ['user@relay.test'], b'Subject: rdns\r\n\r\nhello\r\n')
s.quit()
"#;

fn loopback() -> IpAddr {
    LOOPBACK.parse().expect("literal")
}

/// Relay settings whose client restrictions are `restrictions`, with
/// `unknown_client_reject_code = 550` so a permanent refusal and the 450
/// of a temporary failure cannot be confused.
fn settings_with(restrictions: Vec<Restriction>) -> Settings {
    let mut s = relay_settings();
    s.policy.client = restrictions;
    s.policy.unknown_client_reject_code = 550;
    s
}

/// Sends one message with smtplib; returns its queue ID from the log.
async fn send_one(server: &Server, log: &Log) -> String {
    let out = python(server.addr, SEND, &[]).await;
    assert!(out.status.success(), "smtplib: {}\nlog:\n{}", text(&out), log.text());
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    msgs[0].0.to_string()
}

#[tokio::test]
async fn a_forward_confirmed_name_is_logged_and_recorded_in_received() {
    let (log, _guard) = Log::capture();
    let resolver = StaticResolver::new()
        .with_ptr(loopback(), "client.example")
        .with_ip("client.example", "127.0.0.9".parse().expect("literal"))
        .with_ip("client.example", loopback());
    // Both restrictions pass for a confirmed name.
    let settings = settings_with(vec![
        Restriction::RejectUnknownReverseClientHostname,
        Restriction::RejectUnknownClientHostname,
    ]);
    let server = Server::start_with_resolver(settings, Arc::new(resolver)).await;
    let id = send_one(&server, &log).await;

    let lines = log.text();
    assert!(lines.contains("sluice/smtpd["), "{lines}");
    assert!(lines.contains("]: connect from client.example[127.0.0.1]\n"), "{lines}");
    assert!(lines.contains(&format!("]: {id}: client=client.example[127.0.0.1]\n")), "{lines}");
    assert!(lines.contains("]: disconnect from client.example[127.0.0.1]"), "{lines}");
    assert!(!lines.contains("warning"), "{lines}");

    let (_, envelope, body) = &server.messages().await[0];
    let body = String::from_utf8_lossy(body);
    assert!(body.starts_with("Received: from client.test (client.example [127.0.0.1])\r\n"), "{body}");
    assert_eq!(envelope.client.name, "client.example");
    server.stop().await;
}

#[tokio::test]
async fn a_ptr_name_without_a_matching_address_leaves_the_client_unknown() {
    let (log, _guard) = Log::capture();
    let resolver = StaticResolver::new()
        .with_ptr(loopback(), "liar.example")
        .with_ip("liar.example", "127.0.0.2".parse().expect("literal"));
    // The reverse name exists (that check passes); it is not confirmed.
    let settings = settings_with(vec![Restriction::RejectUnknownReverseClientHostname]);
    let server = Server::start_with_resolver(settings, Arc::new(resolver)).await;
    let id = send_one(&server, &log).await;

    let lines = log.text();
    assert!(
        lines.contains("]: warning: hostname liar.example does not resolve to address 127.0.0.1\n"),
        "{lines}"
    );
    assert!(lines.contains("]: connect from unknown[127.0.0.1]\n"), "{lines}");
    assert!(lines.contains(&format!("]: {id}: client=unknown[127.0.0.1]\n")), "{lines}");
    assert!(!lines.contains("liar.example["), "an unconfirmed name never names the client:\n{lines}");
    let (_, envelope, body) = &server.messages().await[0];
    assert!(
        String::from_utf8_lossy(body).starts_with("Received: from client.test (unknown [127.0.0.1])\r\n")
    );
    assert_eq!(envelope.client.name, "unknown");
    server.stop().await;

    // Under reject_unknown_client_hostname the forged name is refused with
    // unknown_client_reject_code (here 550), not the temporary 450.
    let resolver = StaticResolver::new()
        .with_ptr(loopback(), "liar.example")
        .with_ip("liar.example", "127.0.0.2".parse().expect("literal"));
    let settings = settings_with(vec![Restriction::RejectUnknownClientHostname]);
    let server = Server::start_with_resolver(settings, Arc::new(resolver)).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<user@relay.test>").await;
    assert_eq!(
        r.text(),
        "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.1]",
        "log:\n{}",
        log.text()
    );
    c.cmd("QUIT").await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_name_server_times_out_to_unknown_and_a_temporary_refusal() {
    let (log, _guard) = Log::capture();
    // Every PTR query for the client goes unanswered.
    let resolver = Arc::new(StaticResolver::new().with_silence(LOOPBACK));
    let mut settings = settings_with(vec![Restriction::RejectUnknownClientHostname]);
    // Short, so the test does not wait long; the greeting comes after it.
    settings.peername_timeout = Duration::from_millis(300);
    let server = Server::start_with_resolver(settings.clone(), resolver.clone()).await;

    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<user@relay.test>").await;
    // 450 although unknown_client_reject_code is 550: the name may exist,
    // the sender should come back later.
    assert_eq!(r.text(), "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.1]");
    c.cmd("QUIT").await;
    let lines = log.text();
    assert!(lines.contains("]: connect from unknown[127.0.0.1]\n"), "{lines}");
    assert!(
        lines.contains(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.1];"
        ),
        "{lines}"
    );
    server.stop().await;

    // The reverse-name check answers 450 too (4.7.1, Postfix's code for it).
    settings.policy.client = vec![Restriction::RejectUnknownReverseClientHostname];
    let server = Server::start_with_resolver(settings, resolver).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<user@relay.test>").await;
    assert_eq!(r.text(), "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.1]");
    c.cmd("QUIT").await;
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_a_resolver_names_no_one() {
    // Inbound::new (tests, tools): no lookups, every client unknown, and the
    // restriction treats that as certain (as smtpd_peername_lookup = no).
    let (log, _guard) = Log::capture();
    let server = Server::start(settings_with(vec![Restriction::RejectUnknownClientHostname])).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 550);
    c.cmd("QUIT").await;
    assert!(log.text().contains("]: connect from unknown[127.0.0.1]\n"), "{}", log.text());
    server.stop().await;
}
