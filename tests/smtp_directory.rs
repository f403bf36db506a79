//! Directory tables in the real daemon, against real directory servers and
//! a real mailbox server (a private Dovecot over LMTP):
//! - relay_recipient_maps from LDAP decides at RCPT who exists (250 or
//!   550 5.1.1); repeated recipients are answered from the cache without a
//!   search reaching slapd; with slapd down an unknown-to-the-cache
//!   recipient gets 451 4.3.0 and the lookup error is logged as Postfix
//!   logs it, while mail accepted before is delivered; once slapd is back
//!   recipients are checked again;
//! - transport_maps from PostgreSQL routes mail to Dovecot; with
//!   PostgreSQL down the mail is deferred (nothing is lost, the reason is
//!   shown by mailq) and delivered once it is back;
//! - relay_domains and check_recipient_access from a socketmap server, and
//!   a socketmap that fails answering 451.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig, send};
use common::directory::{Postgres, Slapd, write};
use common::dovecot::{Dovecot, User};
use common::socketmap::{Mode, Socketmap};
use common::wait_until;

const LDIF: &str = "\
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: uid=joe,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: joe
cn: Joe
sn: User
mailLocalAddress: joe@relay.test
mailLocalAddress: joseph@relay.test
mailRoutingAddress: joe@relay.test

dn: uid=ann,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: ann
cn: Ann
sn: User
mailLocalAddress: ann@relay.test
mailRoutingAddress: ann@relay.test
";

/// Says `line` and returns the reply as `code text`.
async fn say(c: &mut Raw, line: &str) -> String {
    c.send(format!("{line}\r\n").as_bytes()).await;
    c.reply().await.expect("reply").text()
}

fn message(subject: &str) -> String {
    format!(
        "From: <a@sender.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nbody {subject}\r\n"
    )
}

fn has_subject(dc: &Dovecot, user: &str, subject: &str) -> bool {
    let want = format!("Subject: {subject}");
    dc.maildir(user).iter().any(|m| String::from_utf8_lossy(m).lines().any(|l| l.trim_end() == want))
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_decides_at_rcpt_and_a_dead_directory_gets_451() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("joe"), User::new("ann")], false);
    let mut slapd = Slapd::start(LDIF);
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(&lmtp, "");
    let cf = write(
        cfg.path(),
        "users.cf",
        &format!(
            "server_host = {}\nversion = 3\nsearch_base = dc=example,dc=com\nquery_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress\ntimeout = 2\n",
            slapd.url()
        ),
    );
    cfg.append_main_cf(&format!(
        "relay_recipient_maps = ldap:{}\nsluice_table_cache_negative_lifetime = 0\nsluice_table_breaker_cooldown = 300ms\n",
        cf.display()
    ));
    let daemon = Daemon::start(&cfg);

    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    for rcpt in ["joe@relay.test", "JOE@Relay.Test", "joseph@relay.test", "ann@relay.test"] {
        let r = say(&mut c, &format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
    assert_eq!(
        say(&mut c, "RCPT TO:<nobody@relay.test>").await,
        "550 5.1.1 <nobody@relay.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    assert_eq!(say(&mut c, "DATA").await.split(' ').next(), Some("354"));
    let r = say(&mut c, &format!("{}.", message("before-outage"))).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(say(&mut c, "QUIT").await.starts_with("221"));
    // JOE@Relay.Test was the cached joe@relay.test.
    assert_eq!(slapd.searches("mailLocalAddress=joe@relay.test"), 1, "{}", slapd.log());

    // The directory goes away. What is cached still answers; anything else
    // is a temporary failure, never "unknown user".
    slapd.stop();
    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<ann@relay.test>").await.starts_with("250"));
    for _ in 0..4 {
        assert_eq!(
            say(&mut c, "RCPT TO:<carol@relay.test>").await,
            "451 4.3.0 <carol@relay.test>: Temporary lookup failure"
        );
    }
    assert!(say(&mut c, "RSET").await.starts_with("250"));
    let log = cfg.log();
    assert!(
        log.contains(&format!("warning: ldap:{} lookup error for \"carol@relay.test\"", cf.display())),
        "{log}"
    );
    assert!(
        log.contains(
            ": reject: RCPT from unknown[127.0.0.1]: 451 4.3.0 <carol@relay.test>: Temporary lookup failure"
        ),
        "{log}"
    );

    // Mail accepted before the outage is delivered all the same.
    wait_until(
        "the message to reach both mailboxes",
        Duration::from_secs(30),
        || has_subject(&dc, "joe", "before-outage") && has_subject(&dc, "ann", "before-outage"),
        || cfg.log(),
    );

    // Back: after the breaker's cool-down the directory decides again.
    slapd.resume();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(say(&mut c, "MAIL FROM:<a@sender.test>").await.split(' ').next(), Some("250"));
    assert_eq!(
        say(&mut c, "RCPT TO:<carol@relay.test>").await,
        "550 5.1.1 <carol@relay.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    drop(c);
    assert!(daemon.stop().success());
}

#[test]
fn pgsql_transport_maps_route_mail_and_defer_it_while_down() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("joe")], false);
    let mut pg = Postgres::start();
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    pg.sql("postgres", "CREATE TABLE transport (domain text PRIMARY KEY, nexthop text)");
    pg.sql("postgres", &format!("INSERT INTO transport VALUES ('relay.test', '{lmtp}')"));
    // The texthash transport map of the test config would send mail
    // nowhere: only the database knows the way.
    let cfg = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    let cf = write(
        cfg.path(),
        "transport.cf",
        &format!(
            "hosts = inet:127.0.0.1:{}\nuser = postgres\npassword = postgres-secret\ndbname = postgres\nquery = SELECT nexthop FROM transport WHERE domain='%s'\n",
            pg.port
        ),
    );
    cfg.append_main_cf(&format!(
        "transport_maps = pgsql:{}\nsluice_table_cache_positive_lifetime = 0\nsluice_table_cache_negative_lifetime = 0\nsluice_table_breaker_cooldown = 300ms\n",
        cf.display()
    ));
    let _daemon = Daemon::start(&cfg);
    send(cfg.smtp, "a@sender.test", &["joe@relay.test"], &message("routed")).expect("accepted");
    wait_until(
        "delivery through the routed transport",
        Duration::from_secs(30),
        || has_subject(&dc, "joe", "routed"),
        || cfg.log(),
    );

    pg.stop();
    send(cfg.smtp, "a@sender.test", &["joe@relay.test"], &message("while-down")).expect("accepted");
    let log_has = |s: &str| cfg.log().contains(s);
    wait_until(
        "the delivery to be deferred",
        Duration::from_secs(30),
        || log_has("status=deferred (transport map lookup failure"),
        || cfg.log(),
    );
    assert!(log_has(&format!("warning: pgsql:{} lookup error for", cf.display())), "{}", cfg.log());
    let mailq = String::from_utf8_lossy(&cfg.sluice(&["queue", "list"]).stdout).into_owned();
    assert!(mailq.contains("transport map lookup failure"), "{mailq}");
    assert!(!has_subject(&dc, "joe", "while-down"));

    pg.resume();
    std::thread::sleep(Duration::from_millis(400));
    assert!(cfg.sluice(&["queue", "flush"]).status.success());
    wait_until(
        "delivery once the database is back",
        Duration::from_secs(30),
        || has_subject(&dc, "joe", "while-down"),
        || cfg.log(),
    );
    wait_until(
        "an empty queue",
        Duration::from_secs(30),
        || String::from_utf8_lossy(&cfg.sluice(&["queue", "list"]).stdout).contains("Mail queue is empty"),
        || cfg.log(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_domains_and_access_maps_from_a_socketmap() {
    let map = Socketmap::start(&[
        ("domains", "relay2.test", "OK"),
        ("access", "blocked@relay.test", "REJECT no thanks"),
    ]);
    let cfg = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    cfg.append_main_cf(&format!(
        "relay_domains = relay.test, socketmap:inet:127.0.0.1:{p}:domains\n\
         smtpd_recipient_restrictions = check_recipient_access socketmap:inet:127.0.0.1:{p}:access\n\
         sluice_table_cache_negative_lifetime = 0\n",
        p = map.port
    ));
    let _daemon = Daemon::start(&cfg);
    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<user@relay.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<user@relay2.test>").await.starts_with("250"));
    assert_eq!(
        say(&mut c, "RCPT TO:<blocked@relay.test>").await,
        "554 5.7.1 <blocked@relay.test>: Recipient address rejected: no thanks"
    );
    assert_eq!(
        say(&mut c, "RCPT TO:<user@other.test>").await,
        "454 4.7.1 <user@other.test>: Relay access denied"
    );
    map.set_mode(Mode::Temp);
    assert_eq!(
        say(&mut c, "RCPT TO:<user@relay3.test>").await,
        "451 4.3.0 <user@relay3.test>: Temporary lookup failure"
    );
    assert!(cfg.log().contains(&format!(
        "warning: socketmap:inet:127.0.0.1:{}:domains lookup error for \"relay3.test\"",
        map.port
    )));
}
