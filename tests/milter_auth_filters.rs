//! OpenDKIM and OpenDMARC, Debian's own, as the daemon's milters in a row
//! (`smtpd_milters = opendkim opendmarc`, as Postfix MX hosts run them):
//! a message signed with a test key, its public key and the sender's
//! DMARC policy served by the test's loopback DNS server, is accepted with
//! both filters' `Authentication-Results:`; the same message tampered with
//! fails DKIM, and OpenDMARC, reading OpenDKIM's result, refuses it under
//! `p=reject` with its own reply, over SMTP.
//!
//! One DNS server, one of each filter and one server for the whole file:
//! the filters take seconds to start.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::clients::Raw;
use common::dns_server::DnsServer;
use common::inbound::Server;
use common::log::Log;
use common::milter::{AuthFilter, AuthKind};
use common::signing::{DkimKey, message};
use sluice::config::Config;
use sluice::smtp::Settings;

const MASTER: &str = "smtp inet n - n - - smtpd\n";

/// A DNS server on port 53 of a spare loopback address (the filters'
/// resolvers cannot be told a port), one this test binary alone uses.
fn dns_on_port_53() -> DnsServer {
    let pid = std::process::id();
    for attempt in 0..64u32 {
        let n = pid.wrapping_add(attempt.wrapping_mul(7919));
        let ip = Ipv4Addr::new(127, 53, (n >> 8) as u8, (n as u8).max(1));
        if let Ok(dns) = DnsServer::start_on(SocketAddr::from((ip, 53))) {
            return dns;
        }
    }
    panic!("no loopback address with port 53 free (the test needs root)");
}

fn settings(milters: &str) -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = format!(
        "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
         queue_directory = {}\nsmtpd_milters = {milters}\nmilter_default_action = tempfail\n",
        dir.path().display()
    );
    let loaded = Config::from_texts(dir.path(), &main, MASTER).unwrap_or_else(|e| panic!("config: {e}"));
    (Settings::from_config(&loaded.config).expect("settings"), dir)
}

/// Sends `msg` from alice@example.test; the final reply.
async fn send(server: &Server, msg: &[u8]) -> String {
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut data = msg.to_vec();
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    let r = c.reply().await.expect("reply").text();
    c.cmd("QUIT").await;
    r
}

#[tokio::test]
async fn opendkim_and_opendmarc_judge_signed_mail_through_the_daemon() {
    let (log, _guard) = Log::capture();
    let dns = dns_on_port_53();
    let key = DkimKey::generate("example.test", "sel");
    key.publish(&dns);
    dns.txt("_dmarc.example.test", "v=DMARC1; p=reject");
    let dkim = AuthFilter::start(AuthKind::OpenDkim, dns.addr(), "mx.test");
    let dmarc = AuthFilter::start(AuthKind::OpenDmarc, dns.addr(), "mx.test");
    let (s, _dir) = settings(&format!("{}, {}", dkim.endpoint, dmarc.endpoint));
    let server = Server::start(s).await;
    let context = || {
        format!("opendkim:\n{}\nopendmarc:\n{}\nDNS asked: {:?}", dkim.output(), dmarc.output(), dns.asked())
    };

    // Signed by OpenDKIM's own signer: both filters pass it.
    let signed = key.sign_with_opendkim(&message("alice@example.test", "signed", "Hello.\r\n"));
    let r = send(&server, &signed).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}\n{}", context());
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    let text = String::from_utf8_lossy(&msgs[0].2).into_owned();
    // OpenDKIM's result, then OpenDMARC's, which it read from OpenDKIM's:
    // the second milter sees the first one's edits.
    let dkim_at =
        text.find("dkim=pass").unwrap_or_else(|| panic!("no passing DKIM result in:\n{text}\n{}", context()));
    assert!(text[..dkim_at].ends_with("Authentication-Results: mx.test;\r\n\t"), "{text}");
    // "unprotected": the key came without DNSSEC.
    assert!(
        text[dkim_at..].starts_with("dkim=pass (2048-bit key; unprotected) header.d=example.test "),
        "{text}"
    );
    assert!(
        text.contains(
            "Authentication-Results: mx.test; dmarc=pass (p=reject dis=none) header.from=example.test"
        ),
        "no passing DMARC result in:\n{text}\n{}",
        context()
    );
    assert!(text.contains("DKIM-Signature:"), "the signature stays: {text}");
    assert!(dns.asked().iter().any(|q| q == "sel._domainkey.example.test TXT"), "{:?}", dns.asked());

    // The same message with its body changed after signing: DKIM fails,
    // and OpenDMARC refuses it as the domain's policy says, in its words.
    let text = String::from_utf8_lossy(&signed).replace("Hello.", "Hello, changed.");
    let r = send(&server, text.as_bytes()).await;
    assert_eq!(r, "550 5.7.1 rejected by DMARC policy for example.test", "{}", context());
    assert_eq!(server.messages().await.len(), 1, "nothing more queued");
    let logged = log.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("milter-reject: END-OF-MESSAGE from ")
                && l.contains("from=<alice@example.test>")),
        "{logged}"
    );
    server.stop().await;
}
