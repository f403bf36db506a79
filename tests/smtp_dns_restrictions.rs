//! Client, HELO and sender restrictions an internet MX leans on,
//! configured in main.cf the way a Postfix administrator writes them:
//! `reject_rbl_client` (DNS blocklists, with and without an answer filter),
//! `permit_dnswl_client`, the `reject_rhsbl_*` domain blocklists,
//! `reject_invalid_helo_hostname`, `reject_non_fqdn_helo_hostname`,
//! `reject_unknown_helo_hostname` and `reject_unknown_sender_domain` (with
//! RFC 7505 null MX), with Postfix's reply codes and texts and the
//! reply-code parameters.
//!
//! DNS is the StaticResolver test double (tests have no DNS); the server
//! listens on loopback and a raw client talks to it. The blocklist sees the
//! client as 127.0.0.1, i.e. the name `1.0.0.127.<blocklist>`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::clients::Raw;
use common::inbound::Server;
use sluice::config::Config;
use sluice::resolver::StaticResolver;
use sluice::smtp::Settings;

const MASTER: &str = "smtp inet n - n - - smtpd\n";

/// Settings read from a main.cf that relays for relay.test and adds
/// `extra` lines.
fn settings(extra: &str) -> Settings {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = format!(
        "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
         smtpd_peername_lookup = no\n{extra}"
    );
    let loaded = Config::from_texts(dir.path(), &main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    Settings::from_config(&loaded.config).expect("settings")
}

fn listed(answers: &[&str]) -> StaticResolver {
    let mut r = StaticResolver::new();
    for a in answers {
        r = r.with_ip("1.0.0.127.bl.test", a.parse().expect("literal"));
    }
    r
}

/// HELO, MAIL and RCPT; the RCPT reply.
async fn rcpt_reply(server: &Server, helo: &str) -> String {
    rcpt_reply_from(server, helo, "a@sender.test").await
}

async fn rcpt_reply_from(server: &Server, helo: &str, sender: &str) -> String {
    rcpt_reply_to(server, helo, sender, "user@relay.test").await
}

async fn rcpt_reply_to(server: &Server, helo: &str, sender: &str, rcpt: &str) -> String {
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd(&format!("EHLO {helo}")).await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{sender}>")).await.code, 250);
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await.text();
    c.cmd("QUIT").await;
    r
}

fn ip(literal: &str) -> std::net::IpAddr {
    literal.parse().expect("literal")
}

#[tokio::test]
async fn a_listed_client_is_refused_and_an_unlisted_one_accepted() {
    let s = settings("smtpd_client_restrictions = reject_rbl_client bl.test\n");
    let server = Server::start_with_resolver(s.clone(), Arc::new(listed(&["127.0.0.2"]))).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test"
    );
    server.stop().await;

    // Not listed: NXDOMAIN from the blocklist.
    let server = Server::start_with_resolver(s.clone(), Arc::new(StaticResolver::new())).await;
    assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok");
    server.stop().await;

    // A blocklist refusing the query (127.255.255.x) or failing lists
    // nothing: a broken blocklist must not stop mail.
    for resolver in [listed(&["127.255.255.254"]), StaticResolver::new().with_failure("1.0.0.127.bl.test")] {
        let server = Server::start_with_resolver(s.clone(), Arc::new(resolver)).await;
        assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok");
        server.stop().await;
    }
}

#[tokio::test]
async fn an_answer_filter_and_the_reply_code_parameter_apply() {
    let s = settings(
        "smtpd_recipient_restrictions = reject_rbl_client bl.test=127.0.0.[4..11], reject_unauth_destination\n\
         maps_rbl_reject_code = 550\n",
    );
    let server = Server::start_with_resolver(s.clone(), Arc::new(listed(&["127.0.0.2"]))).await;
    assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok", "127.0.0.2 is outside the filter");
    server.stop().await;
    let server = Server::start_with_resolver(s, Arc::new(listed(&["127.0.0.2", "127.0.0.10"]))).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "550 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_blocklist_costs_one_timeout_and_lists_nothing() {
    let mut s = settings("smtpd_client_restrictions = reject_rbl_client bl.test\n");
    s.peername_timeout = Duration::from_millis(300);
    let server =
        Server::start_with_resolver(s, Arc::new(StaticResolver::new().with_silence("1.0.0.127.bl.test")))
            .await;
    assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok");
    server.stop().await;
}

#[tokio::test]
async fn helo_names_must_be_valid_and_fully_qualified() {
    let s = settings(
        "smtpd_helo_required = yes\n\
         smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n",
    );
    let server = Server::start(s).await;
    for ok in ["mail.client.test", "mail.client.test.", "[127.0.0.1]", "[IPv6:::1]"] {
        assert_eq!(rcpt_reply(&server, ok).await, "250 2.1.5 Ok", "{ok}");
    }
    for bad in ["bad_-.test!", "192.0.2.1", "[not-an-address]", "-x.test"] {
        assert_eq!(
            rcpt_reply(&server, bad).await,
            format!("501 5.5.2 <{bad}>: Helo command rejected: Invalid name"),
            "{bad}"
        );
    }
    assert_eq!(
        rcpt_reply(&server, "localhost").await,
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    );
    server.stop().await;
}

#[tokio::test]
async fn sender_domains_must_exist_in_dns() {
    let s = settings(
        "smtpd_sender_restrictions = reject_unknown_sender_domain\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{ vip@relay.test=REJECT }, reject_unauth_destination\n",
    );
    let r = StaticResolver::new()
        .with_mx("mx.sender.test", 10, "in.sender.test")
        .with_ip("a.sender.test", "192.0.2.1".parse().expect("literal"))
        .with_mx("nullmx.sender.test", 0, ".")
        .with_failure("flaky.sender.test");
    let server = Server::start_with_resolver(s, Arc::new(r)).await;
    for ok in ["u@mx.sender.test", "u@a.sender.test", ""] {
        assert_eq!(rcpt_reply_from(&server, "client.test", ok).await, "250 2.1.5 Ok", "<{ok}>");
    }
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "u@gone.sender.test").await,
        "450 4.1.8 <u@gone.sender.test>: Sender address rejected: Domain not found"
    );
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "u@nullmx.sender.test").await,
        "556 5.1.10 <u@nullmx.sender.test>: Sender address rejected: Domain nullmx.sender.test does not accept mail (nullMX)"
    );
    // A failed lookup defers (defer_if_permit), and a later rejection wins.
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "u@flaky.sender.test").await,
        "450 4.1.8 <u@flaky.sender.test>: Sender address rejected: Domain not found"
    );
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<u@flaky.sender.test>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<vip@relay.test>").await.text(),
        "554 5.7.1 <vip@relay.test>: Recipient address rejected: Access denied"
    );
    server.stop().await;
}

#[tokio::test]
async fn domain_blocklists_refuse_listed_helo_names_senders_and_recipients() {
    let s = settings(
        "smtpd_helo_restrictions = reject_rhsbl_helo dbl.test\n\
         smtpd_sender_restrictions = reject_rhsbl_sender dbl.test\n\
         smtpd_recipient_restrictions = reject_unauth_destination, reject_rhsbl_recipient dbl.test=127.0.1.[2..99]\n",
    );
    let r = StaticResolver::new()
        .with_ip("bad.test.dbl.test", ip("127.0.1.2"))
        .with_ip("evil.client.test.dbl.test", ip("127.0.1.2"))
        .with_ip("refused.test.dbl.test", ip("127.255.255.254"))
        .with_failure("flaky.test.dbl.test")
        // Outside the recipient list's filter: not a listing there.
        .with_ip("relay.test.dbl.test", ip("127.0.0.2"));
    let server = Server::start_with_resolver(s.clone(), Arc::new(r.clone())).await;
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "a@bad.test").await,
        "554 5.7.1 Service unavailable; Sender address [a@bad.test] blocked using dbl.test"
    );
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "a@BAD.Test").await,
        "554 5.7.1 Service unavailable; Sender address [a@BAD.Test] blocked using dbl.test"
    );
    assert_eq!(
        rcpt_reply(&server, "evil.client.test").await,
        "554 5.7.1 Service unavailable; Helo command [evil.client.test] blocked using dbl.test"
    );
    // Not listed, no sender, an address literal, a blocklist that fails
    // or refuses the query: nothing blocks.
    for (helo, sender) in [
        ("client.test", "a@sender.test"),
        ("client.test", ""),
        ("[127.0.0.1]", "a@sender.test"),
        ("client.test", "a@flaky.test"),
        ("client.test", "a@refused.test"),
    ] {
        let r = rcpt_reply_from(&server, helo, sender).await;
        assert_eq!(r, "250 2.1.5 Ok", "HELO {helo}, MAIL FROM:<{sender}>");
    }
    server.stop().await;

    let r = r.with_ip("relay.test.dbl.test", ip("127.0.1.5"));
    let server = Server::start_with_resolver(s, Arc::new(r)).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "554 5.7.1 Service unavailable; Recipient address [user@relay.test] blocked using dbl.test"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_domain_blocklists_ask_about_the_confirmed_or_the_reverse_name() {
    let both = "smtpd_peername_lookup = yes\n\
         smtpd_client_restrictions = reject_rhsbl_client dbl.test, reject_rhsbl_reverse_client dbl.test\n";
    let confirmed = StaticResolver::new()
        .with_ptr(ip("127.0.0.1"), "host.client.test")
        .with_ip("host.client.test", ip("127.0.0.1"))
        .with_ip("host.client.test.dbl.test", ip("127.0.0.2"));
    let server = Server::start_with_resolver(settings(both), Arc::new(confirmed)).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "554 5.7.1 Service unavailable; Client host [host.client.test] blocked using dbl.test"
    );
    server.stop().await;

    // A reverse name that does not resolve back to the client: only the
    // reverse-client list asks about it.
    let unconfirmed = StaticResolver::new()
        .with_ptr(ip("127.0.0.1"), "liar.client.test")
        .with_ip("liar.client.test.dbl.test", ip("127.0.0.2"));
    let client_only = "smtpd_peername_lookup = yes\n\
         smtpd_client_restrictions = reject_rhsbl_client dbl.test\n";
    let server = Server::start_with_resolver(settings(client_only), Arc::new(unconfirmed.clone())).await;
    assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok");
    server.stop().await;
    let server = Server::start_with_resolver(settings(both), Arc::new(unconfirmed)).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "554 5.7.1 Service unavailable; Unverified Client host [liar.client.test] blocked using dbl.test"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_allowlisted_client_passes_the_client_list_but_never_relay_control() {
    let s = settings(
        "smtpd_client_restrictions = permit_dnswl_client wl.test, reject_rbl_client bl.test\n\
         smtpd_relay_restrictions = permit_dnswl_client wl.test, reject_unauth_destination\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{ vip@relay.test=REJECT }\n",
    );
    let both = listed(&["127.0.0.2"]).with_ip("1.0.0.127.wl.test", ip("127.0.10.1"));
    let server = Server::start_with_resolver(s.clone(), Arc::new(both)).await;
    assert_eq!(rcpt_reply(&server, "client.test").await, "250 2.1.5 Ok", "the blocklist is not reached");
    // The relay list's permit ends that list only, as in Postfix: the
    // recipient list still applies...
    assert_eq!(
        rcpt_reply_to(&server, "client.test", "a@sender.test", "vip@relay.test").await,
        "554 5.7.1 <vip@relay.test>: Recipient address rejected: Access denied"
    );
    // ...and the permit is ignored for a destination sluice does not relay
    // to, or it would make an open relay.
    assert_eq!(
        rcpt_reply_to(&server, "client.test", "a@sender.test", "user@elsewhere.test").await,
        "554 5.7.1 <user@elsewhere.test>: Relay access denied"
    );
    server.stop().await;

    // Not on the allowlist, or the allowlist refusing the query
    // (127.0.0.255): the blocklist decides.
    for wl in [None, Some("127.0.0.255")] {
        let mut r = listed(&["127.0.0.2"]);
        if let Some(a) = wl {
            r = r.with_ip("1.0.0.127.wl.test", ip(a));
        }
        let server = Server::start_with_resolver(s.clone(), Arc::new(r)).await;
        assert_eq!(
            rcpt_reply(&server, "client.test").await,
            "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test",
            "allowlist answer {wl:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn helo_names_must_exist_in_dns() {
    let r = StaticResolver::new()
        .with_ip("mail.client.test", ip("127.0.0.1"))
        .with_mx("mx-only.client.test", 10, "in.client.test")
        .with_failure("flaky.client.test");
    let s = settings("smtpd_helo_restrictions = reject_unknown_helo_hostname\n");
    let server = Server::start_with_resolver(s, Arc::new(r.clone())).await;
    for ok in ["mail.client.test", "MX-only.client.test.", "[127.0.0.1]"] {
        assert_eq!(rcpt_reply(&server, ok).await, "250 2.1.5 Ok", "{ok}");
    }
    // Postfix's default unknown_hostname_reject_code is 450; a failed
    // lookup defers too (unknown_helo_hostname_tempfail_action).
    for bad in ["gone.client.test", "flaky.client.test"] {
        assert_eq!(
            rcpt_reply(&server, bad).await,
            format!("450 4.7.1 <{bad}>: Helo command rejected: Host not found"),
            "{bad}"
        );
    }
    server.stop().await;

    let s = settings(
        "smtpd_helo_restrictions = reject_unknown_hostname\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{ vip@relay.test=REJECT }, reject_unauth_destination\n\
         unknown_hostname_reject_code = 550\n",
    );
    let server = Server::start_with_resolver(s, Arc::new(r)).await;
    assert_eq!(
        rcpt_reply(&server, "gone.client.test").await,
        "550 5.7.1 <gone.client.test>: Helo command rejected: Host not found"
    );
    // A failed lookup defers only if nothing else rejects.
    assert_eq!(
        rcpt_reply_to(&server, "flaky.client.test", "a@sender.test", "vip@relay.test").await,
        "554 5.7.1 <vip@relay.test>: Recipient address rejected: Access denied"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_blocklist_reason_from_txt_goes_into_the_reply_made_safe() {
    let s = settings(
        "smtpd_client_restrictions = reject_rbl_client bl.test\n\
         smtpd_sender_restrictions = reject_rhsbl_sender dbl.test\n",
    );
    let r =
        listed(&["127.0.0.2"]).with_txt("1.0.0.127.bl.test", "Listed, see https://bl.test/q?ip=127.0.0.1");
    let server = Server::start_with_resolver(s.clone(), Arc::new(r)).await;
    assert_eq!(
        rcpt_reply(&server, "client.test").await,
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test; \
         Listed, see https://bl.test/q?ip=127.0.0.1"
    );
    server.stop().await;

    // A reason with line breaks or 8-bit text cannot break the reply.
    let r = StaticResolver::new()
        .with_ip("bad.test.dbl.test", ip("127.0.1.2"))
        .with_txt("bad.test.dbl.test", "spam\r\n250 2.0.0 Ok caf\u{e9}");
    let server = Server::start_with_resolver(s, Arc::new(r)).await;
    assert_eq!(
        rcpt_reply_from(&server, "client.test", "a@bad.test").await,
        "554 5.7.1 Service unavailable; Sender address [a@bad.test] blocked using dbl.test; spam__250 2.0.0 Ok caf_"
    );
    server.stop().await;
}
