//! Sender authentication (`sluice::auth`) against real DNS answers from
//! the tests' loopback DNS server: SPF records of every common shape, DKIM
//! signatures made by `mail-auth` and by OpenDKIM (passing, and failing
//! once tampered with), DMARC policies and what they do by default and
//! when configured, ARC chains sealed by a mailing list, a large message
//! verified as it streams, and DNS that fails or never answers.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::dns_server::DnsServer;
use common::signing::{DkimKey, forward_through_list, message};
use sluice::auth::report::{AuthResult, Identity};
use sluice::auth::{Action, Authenticator, Decision, Disposition, Envelope, Settings, SpfReport, TempAction};
use sluice::resolver::SystemResolver;

const CLIENT: &str = "127.0.0.1";

/// A DNS server with the domains most tests use: `example.test` (SPF
/// lists 127.0.0.1, DMARC p=reject) and its DKIM key `sel`.
struct World {
    dns: DnsServer,
    resolver: SystemResolver,
    auth: Authenticator,
    key: DkimKey,
}

impl World {
    fn new() -> World {
        let dns = DnsServer::start();
        dns.txt("example.test", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_dmarc.example.test", "v=DMARC1; p=reject")
            .a("mail.example.test", Ipv4Addr::LOCALHOST)
            .txt("mail.example.test", "v=spf1 a -all");
        let key = DkimKey::generate("example.test", "sel");
        key.publish(&dns);
        let resolver = SystemResolver::with_servers(&[dns.addr()]).expect("resolver");
        let auth = Authenticator::new(&resolver);
        World { dns, resolver, auth, key }
    }

    async fn spf(&self, s: &Settings, sender: &str) -> SpfReport {
        self.auth.spf(s, &envelope(sender)).await.expect("SPF is on")
    }

    /// SPF at MAIL FROM, then the message fed in `chunk`-byte pieces and
    /// the end-of-data checks.
    async fn check(&self, s: &Settings, sender: &str, msg: &[u8], chunk: usize) -> Decision {
        let spf = self.spf(s, sender).await;
        let mut check = self.auth.begin(s);
        for c in msg.chunks(chunk) {
            check.feed(c);
        }
        self.auth.end_of_data(s, check, Some(&spf), &envelope(sender)).await
    }
}

fn envelope(sender: &str) -> Envelope<'_> {
    Envelope { client: CLIENT.parse().unwrap(), helo: "mail.example.test", sender, receiver: "mx.test" }
}

fn settings() -> Settings {
    Settings { authserv_id: "mx.test".into(), timeout: Duration::from_secs(3), ..Settings::default() }
}

fn dkim(d: &Decision) -> Vec<(AuthResult, String)> {
    d.report.dkim.iter().map(|c| (c.result, c.domain.clone())).collect()
}

fn dmarc(d: &Decision) -> AuthResult {
    d.report.dmarc.as_ref().expect("DMARC checked").result
}

#[tokio::test]
async fn spf_follows_the_published_records() {
    let w = World::new();
    w.dns
        .txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all")
        .txt("hard.test", "v=spf1 ip4:192.0.2.1 -all exp=why.hard.test")
        .txt("why.hard.test", "%{d} does not send from %{i}")
        .txt("inc.test", "v=spf1 include:_spf.inc.test -all")
        .txt("_spf.inc.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("mx.test", "v=spf1 mx -all")
        .mx("mx.test", 10, "in.mx.test")
        .a("in.mx.test", Ipv4Addr::LOCALHOST)
        .txt("exists.test", "v=spf1 exists:%{ir}.allow.exists.test -all")
        .a("1.0.0.127.allow.exists.test", Ipv4Addr::new(127, 0, 0, 2))
        .txt("exists-not.test", "v=spf1 exists:%{ir}.deny.exists.test -all")
        .txt("broken.test", "v=spf1 include:nothing.test -all")
        .servfail("servfail.test")
        .a("nospf.test", Ipv4Addr::LOCALHOST);
    let s = settings();
    for (sender, want) in [
        ("a@example.test", AuthResult::Pass),
        ("a@soft.test", AuthResult::SoftFail),
        ("a@hard.test", AuthResult::Fail),
        ("a@inc.test", AuthResult::Pass),
        ("a@mx.test", AuthResult::Pass),
        ("a@exists.test", AuthResult::Pass),
        ("a@exists-not.test", AuthResult::Fail),
        ("a@broken.test", AuthResult::PermError),
        ("a@servfail.test", AuthResult::TempError),
        ("a@nospf.test", AuthResult::None),
        ("a@nowhere.test", AuthResult::None),
    ] {
        let r = w.spf(&s, sender).await;
        let m = r.mail_from.as_ref().expect("MAIL FROM checked");
        assert_eq!(m.result, want, "{sender}: {r:?}");
        assert_eq!(m.identity, Identity::MailFrom(sender.to_owned()));
        // The HELO identity is checked alongside.
        assert_eq!(r.helo.as_ref().map(|h| h.result), Some(AuthResult::Pass), "{sender}");
    }
    // The domain's explanation comes with a fail, for the reply.
    let r = w.spf(&s, "a@hard.test").await;
    assert_eq!(r.mail_from.unwrap().explanation.as_deref(), Some("hard.test does not send from 127.0.0.1"));
    // A null reverse path is judged by the HELO name alone.
    let r = w.spf(&s, "").await;
    assert!(r.mail_from.is_none());
    assert_eq!(r.decisive().map(|c| c.result), Some(AuthResult::Pass));
}

#[tokio::test]
async fn spf_gives_up_on_silent_dns_within_the_timeout() {
    let w = World::new();
    w.dns.txt("slow.test", "v=spf1 -all").silence("slow.test");
    let s = Settings { timeout: Duration::from_millis(400), ..settings() };
    let r = tokio::time::timeout(Duration::from_secs(10), w.spf(&s, "a@slow.test")).await.expect("bounded");
    let m = r.mail_from.unwrap();
    assert_eq!(m.result, AuthResult::TempError);
    assert!(m.note.unwrap().contains("no DNS answer for slow.test"));
}

#[tokio::test]
async fn mail_auth_signatures_pass_and_fail_when_tampered() {
    let w = World::new();
    let s = settings();
    let signed = w.key.sign(&message("alice@example.test", "hello", "Hi there.\r\n"));
    for chunk in [1, 13, 4096] {
        let d = w.check(&s, "alice@example.test", &signed, chunk).await;
        assert_eq!(dkim(&d), [(AuthResult::Pass, "example.test".to_owned())], "chunks of {chunk}");
        assert_eq!(dmarc(&d), AuthResult::Pass);
        assert_eq!(d.disposition, Disposition::Accept);
    }
    // A changed body breaks the body hash, a changed signed header the
    // signature itself.
    let body = String::from_utf8(signed.clone()).unwrap().replace("Hi there.", "Hi there!");
    let d = w.check(&s, "alice@example.test", body.as_bytes(), 100).await;
    assert_eq!(d.report.dkim[0].result, AuthResult::Fail);
    assert_eq!(d.report.dkim[0].reason.as_deref(), Some("body hash did not verify"));
    let subject = String::from_utf8(signed).unwrap().replace("Subject: hello", "Subject: hullo");
    let d = w.check(&s, "alice@example.test", subject.as_bytes(), 100).await;
    assert_eq!(d.report.dkim[0].result, AuthResult::Fail);
    assert_eq!(d.report.dkim[0].reason.as_deref(), Some("signature did not verify"));
    // SPF still passes and aligns, so DMARC passes.
    assert_eq!(dmarc(&d), AuthResult::Pass);
}

#[tokio::test]
async fn opendkim_signatures_pass_and_fail_when_tampered() {
    let w = World::new();
    let s = settings();
    let signed = w.key.sign_with_opendkim(&message("alice@example.test", "odkim", "Signed by OpenDKIM.\r\n"));
    let d = w.check(&s, "alice@example.test", &signed, 512).await;
    assert_eq!(dkim(&d), [(AuthResult::Pass, "example.test".to_owned())], "{:?}", d.report);
    let tampered = String::from_utf8(signed).unwrap().replace("Signed by", "Forged by");
    let d = w.check(&s, "alice@example.test", tampered.as_bytes(), 512).await;
    assert_eq!(d.report.dkim[0].result, AuthResult::Fail);
}

#[tokio::test]
async fn dmarc_reject_refuses_forgeries_by_default() {
    let w = World::new();
    let s = settings();
    // From example.test, sent from a host its SPF does not list, unsigned:
    // the envelope sender is another domain (SPF passes there, but does
    // not align).
    w.dns.txt("other.test", "v=spf1 ip4:127.0.0.1 -all");
    let forged = message("ceo@example.test", "invoice", "Pay now.\r\n");
    let d = w.check(&s, "bounce@other.test", &forged, 4096).await;
    assert_eq!(dkim(&d), [(AuthResult::None, String::new())]);
    assert_eq!(dmarc(&d), AuthResult::Fail);
    let Disposition::Refuse(reply) = &d.disposition else { panic!("{:?}", d.disposition) };
    assert_eq!(reply.to_string(), "550 5.7.1 Message rejected by DMARC policy for example.test");
    let header = d.header.unwrap();
    assert!(header.contains("dmarc=fail (p=reject dis=reject) header.from=example.test"), "{header}");
    // Signed by the domain: DKIM aligns and DMARC passes whatever SPF says.
    let signed = w.key.sign(&forged);
    let d = w.check(&s, "bounce@other.test", &signed, 4096).await;
    assert_eq!(dmarc(&d), AuthResult::Pass);
    assert_eq!(d.disposition, Disposition::Accept);
    // Configured to mark, the same forgery is accepted with the header.
    let mark = Settings { dmarc_reject: Action::Mark, ..settings() };
    let d = w.check(&mark, "bounce@other.test", &forged, 4096).await;
    assert_eq!(d.disposition, Disposition::Accept);
    assert!(d.header.unwrap().contains("dmarc=fail (p=reject dis=none)"));
}

#[tokio::test]
async fn dmarc_quarantine_is_marked_or_held_and_p_none_only_recorded() {
    let w = World::new();
    w.dns
        .txt("quarantine.test", "v=spf1 -all")
        .txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
        .txt("monitor.test", "v=spf1 -all")
        .txt("_dmarc.monitor.test", "v=DMARC1; p=none; rua=mailto:d@monitor.test");
    let s = settings();
    let q = message("a@quarantine.test", "q", "x\r\n");
    let d = w.check(&s, "a@quarantine.test", &q, 4096).await;
    assert_eq!((dmarc(&d), &d.disposition), (AuthResult::Fail, &Disposition::Accept));
    let hold = Settings { dmarc_quarantine: Action::Hold, ..settings() };
    let d = w.check(&hold, "a@quarantine.test", &q, 4096).await;
    assert_eq!(d.disposition, Disposition::Hold("DMARC policy of quarantine.test (p=quarantine)".into()));
    assert!(d.header.unwrap().contains("dis=quarantine"));
    let d = w.check(&hold, "a@monitor.test", &message("a@monitor.test", "n", "x\r\n"), 4096).await;
    assert_eq!((dmarc(&d), &d.disposition), (AuthResult::Fail, &Disposition::Accept));
}

#[tokio::test]
async fn arc_sealed_by_a_trusted_list_saves_a_dmarc_failure() {
    let w = World::new();
    let list = DkimKey::generate("lists.test", "arc");
    list.publish(&w.dns);
    w.dns.txt("lists.test", "v=spf1 ip4:127.0.0.1 -all");
    let original = w.key.sign(&message("alice@example.test", "to the list", "Hello list.\r\n"));
    let forwarded = forward_through_list(&list, &original, &w.resolver).await;
    // The list's envelope sender: SPF passes for lists.test, which does
    // not align with example.test, and the footer broke the signature.
    let s = settings();
    let d = w.check(&s, "owner@lists.test", &forwarded, 1000).await;
    let arc = d.report.arc.clone().unwrap();
    assert_eq!((arc.result, arc.sealers.clone()), (AuthResult::Pass, vec!["lists.test".to_owned()]));
    assert_eq!(d.report.dkim[0].result, AuthResult::Fail);
    assert_eq!(dmarc(&d), AuthResult::Fail);
    assert!(matches!(d.disposition, Disposition::Refuse(_)), "the list is not trusted by default");
    let trusting = Settings { trusted_sealers: vec!["lists.test".into()], ..settings() };
    let d = w.check(&trusting, "owner@lists.test", &forwarded, 1000).await;
    assert_eq!(d.disposition, Disposition::Accept);
    assert!(d.header.unwrap().contains("arc=pass (sealed by lists.test)"));
    // Changed after sealing: the chain no longer vouches for anything.
    let changed = String::from_utf8(forwarded).unwrap().replace("Hello list.", "Hello, list.");
    let d = w.check(&trusting, "owner@lists.test", changed.as_bytes(), 1000).await;
    assert_ne!(d.report.arc.unwrap().result, AuthResult::Pass);
    assert!(matches!(d.disposition, Disposition::Refuse(_)));
}

#[tokio::test]
async fn a_large_message_is_verified_while_it_streams() {
    let w = World::new();
    let s = settings();
    // 8 MiB of body, fed in 64 KiB pieces as the session does.
    let line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let body = line.repeat(8 * 1024 * 1024 / line.len());
    let signed = w.key.sign(&message("alice@example.test", "big", &body));
    let d = w.check(&s, "alice@example.test", &signed, 64 * 1024).await;
    assert_eq!(dkim(&d), [(AuthResult::Pass, "example.test".to_owned())]);
    let mut tampered = signed;
    let n = tampered.len();
    tampered[n - 10] = b'X';
    let d = w.check(&s, "alice@example.test", &tampered, 64 * 1024).await;
    assert_eq!(d.report.dkim[0].result, AuthResult::Fail);
}

#[tokio::test]
async fn dns_that_fails_or_never_answers_is_a_temperror_and_can_defer() {
    let w = World::new();
    let signed = w.key.sign(&message("alice@example.test", "slow", "x\r\n"));
    // The key's server breaks and SPF does not align: DMARC cannot decide.
    w.dns.txt("other.test", "v=spf1 ip4:127.0.0.1 -all").servfail("sel._domainkey.example.test");
    let s = settings();
    let d = w.check(&s, "a@other.test", &signed, 4096).await;
    assert_eq!(d.report.dkim[0].result, AuthResult::TempError);
    assert_eq!(dmarc(&d), AuthResult::TempError);
    assert_eq!(d.disposition, Disposition::Accept, "marked by default");
    let defer = Settings { temperror: TempAction::Defer, ..settings() };
    let d = w.check(&defer, "a@other.test", &signed, 4096).await;
    let Disposition::Refuse(reply) = &d.disposition else { panic!("{:?}", d.disposition) };
    assert_eq!(reply.code(), 451);
    // Silence: the checks end by sluice_auth_timeout, as temperror.
    w.dns.heal("sel._domainkey.example.test").silence("sel._domainkey.example.test");
    let quick = Settings { timeout: Duration::from_millis(500), ..settings() };
    let d = tokio::time::timeout(Duration::from_secs(10), w.check(&quick, "a@other.test", &signed, 4096))
        .await
        .expect("bounded by the timeout");
    assert_eq!(d.report.dkim[0].result, AuthResult::TempError);
    assert_eq!(dmarc(&d), AuthResult::TempError);
}

#[tokio::test]
async fn the_header_records_every_result() {
    let w = World::new();
    let s = settings();
    let signed = w.key.sign(&message("alice@example.test", "hdr", "x\r\n"));
    let d = w.check(&s, "alice@example.test", &signed, 4096).await;
    let h = d.header.unwrap();
    let lines: Vec<&str> = h.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "Authentication-Results: mx.test;");
    assert_eq!(lines[1], "\tspf=pass (example.test designates the client) smtp.mailfrom=alice@example.test;");
    assert_eq!(lines[2], "\tspf=pass (mail.example.test designates the client) smtp.helo=mail.example.test;");
    assert!(lines[3].starts_with("\tdkim=pass header.d=example.test header.s=sel header.b="), "{h}");
    assert_eq!(lines[4], "\tarc=none;");
    assert_eq!(lines[5], "\tdmarc=pass (p=reject dis=none) header.from=example.test");
    assert_eq!(
        d.report.summary(),
        "spf=pass smtp.mailfrom=alice@example.test, spf=pass smtp.helo=mail.example.test, \
         dkim=pass header.d=example.test, arc=none, dmarc=pass p=reject header.from=example.test"
    );
}
