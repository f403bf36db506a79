//! virtual_alias_maps and virtual_alias_domains in the real daemon, with
//! real peers:
//! - a texthash alias with three targets (one a duplicate, one also named
//!   in its own RCPT) is delivered to a private Dovecot once per target,
//!   byte for byte; the log says `orig_to=` as Postfix does; an unknown
//!   address in a virtual alias domain gets 550 5.1.1 at RCPT; a target
//!   Dovecot refuses bounces with a DSN whose Original-Recipient is the
//!   alias (the ORCPT sluice stores);
//! - the limits (a loop, too many addresses) answer 451 4.6.0 and log
//!   Postfix's warnings; catch-all `@domain`, `recipient_delimiter`
//!   extensions and a self-mapping alias, shown by `sluice config query
//!   virtual_alias_maps`, with the table's answers compared to Postfix's
//!   `postmap -q`;
//! - with `reject_unverified_recipient`, an alias is verified through its
//!   targets at Dovecot (a target Dovecot refuses refuses the alias, in
//!   any place among the first `sluice_address_verify_alias_targets`;
//!   targets past those are not probed);
//! - a PostgreSQL alias table expands at RCPT into the envelope (shown by
//!   `sluice queue list`), and while the database is down a recipient gets
//!   451 4.3.0, never 550.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::directory::{Postgres, same_as_postmap, sluice_table, write};
use common::dovecot::{Dovecot, User};
use common::wait_until;

/// Says `line` and returns the reply as `code text`.
async fn say(c: &mut Raw, line: &str) -> String {
    c.send(format!("{line}\r\n").as_bytes()).await;
    c.reply().await.expect("reply").text()
}

/// CRLF to LF, as Dovecot stores a message in its Maildir.
fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

/// The copies in `user`'s mailbox that contain `marker`.
fn copies(dc: &Dovecot, user: &str, marker: &str) -> Vec<Vec<u8>> {
    dc.maildir(user).into_iter().filter(|m| memchr::memmem::find(m, marker.as_bytes()).is_some()).collect()
}

const ALIASES: &str = "\
alias.test        virtual-alias-domain
team@alias.test   joe@relay.test, ann@relay.test, joe@relay.test
lost@alias.test   ghost@relay.test
";

#[tokio::test(flavor = "multi_thread")]
async fn alias_targets_are_delivered_once_with_orig_to_and_orcpt() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("joe"), User::new("ann"), User::new("sender")], false);
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(&lmtp, "");
    // Bounces go to the sender's own mailbox on the same Dovecot.
    std::fs::write(cfg.path().join("transport"), format!("relay.test {lmtp}\nsender.test {lmtp}\n"))
        .expect("transport");
    write(cfg.path(), "virtual", ALIASES);
    cfg.append_main_cf("virtual_alias_maps = texthash:virtual\n");
    let daemon = Daemon::start(&cfg);

    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert_eq!(
        say(&mut c, "RCPT TO:<nobody@alias.test>").await,
        "550 5.1.1 <nobody@alias.test>: Recipient address rejected: User unknown in virtual alias table"
    );
    drop(c);
    let log = cfg.log();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody@alias.test>: Recipient address rejected: User unknown in virtual alias table; from=<a@sender.test> to=<nobody@alias.test>"),
        "{log}"
    );

    let data = "From: <a@sender.test>\r\nTo: team@alias.test\r\nSubject: alias-fanout\r\n\
                Message-ID: <alias-fanout@sender.test>\r\n\r\nline one\r\n\r\nline three\r\n";
    let reply =
        send(cfg.smtp, "a@sender.test", &["team@alias.test", "joe@relay.test"], data).expect("accepted");
    let id = queued_id(&reply);
    wait_until(
        "joe's and ann's copies, and their result lines",
        Duration::from_secs(30),
        // Dovecot stores a copy before sluice hears the answer and logs it.
        || {
            let log = cfg.log();
            !copies(&dc, "joe", "alias-fanout").is_empty()
                && !copies(&dc, "ann", "alias-fanout").is_empty()
                && log.contains(&format!("{id}: to=<ann@relay.test>"))
                && log.contains(&format!("{id}: to=<joe@relay.test>"))
        },
        || cfg.log(),
    );
    for user in ["joe", "ann"] {
        let found = copies(&dc, user, "alias-fanout");
        assert_eq!(found.len(), 1, "{user} gets the message once");
        let stored = &found[0];
        // Return-Path, our Received:, then the message exactly as sent.
        assert!(stored.starts_with(b"Return-Path: <a@sender.test>\n"), "{}", String::from_utf8_lossy(stored));
        assert!(stored.ends_with(&lf(data.as_bytes())), "{}", String::from_utf8_lossy(stored));
    }
    let log = cfg.log();
    assert!(log.contains(&format!("{id}: to=<ann@relay.test>, orig_to=<team@alias.test>, relay=")), "{log}");
    // Named by the client itself too: stored once, with no orig_to.
    assert_eq!(log.matches(&format!("{id}: to=<joe@relay.test>")).count(), 1, "{log}");

    // A target the mailbox server refuses: the DSN names the alias.
    let data = "From: <a@sender.test>\r\nSubject: alias-lost\r\n\r\nbody\r\n";
    send(cfg.smtp, "sender@sender.test", &["lost@alias.test"], data).expect("accepted");
    wait_until(
        "the report in the sender's mailbox",
        Duration::from_secs(30),
        || !dc.maildir("sender").is_empty(),
        || cfg.log(),
    );
    let report = String::from_utf8_lossy(&dc.maildir("sender")[0]).into_owned();
    assert!(report.contains("Original-Recipient: rfc822; lost@alias.test"), "{report}");
    assert!(report.contains("Final-Recipient: rfc822; ghost@relay.test"), "{report}");
    // Our Received: names the address the client sent to, as Postfix's.
    assert!(report.contains("\n\tfor <lost@alias.test>;"), "{report}");
    assert!(cfg.log().contains("to=<ghost@relay.test>, orig_to=<lost@alias.test>, relay="), "{}", cfg.log());
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_catch_all_and_extensions_as_postfix() {
    let cfg = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    let table = "\
catch.test           domain
@catch.test          joe@relay.test
loop1@relay.test     loop2@relay.test
loop2@relay.test     loop1@relay.test
big@relay.test       a@relay.test b@relay.test c@relay.test d@relay.test
self@relay.test      self@relay.test, copy@relay.test
user@relay.test      box@relay.test
user+list@relay.test list@relay.test
";
    write(cfg.path(), "virtual", table);
    cfg.append_main_cf(
        "virtual_alias_maps = texthash:virtual\nrecipient_delimiter = +\nvirtual_alias_expansion_limit = 3\n",
    );
    let _daemon = Daemon::start(&cfg);

    // The table answers as Postfix's postmap does for the keys sluice asks.
    let spec = format!("texthash:{}", cfg.path().join("virtual").display());
    let dir = cfg.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let t = sluice_table(&dir, &spec, "");
        let keys = ["@catch.test", "user@relay.test", "user+list@relay.test", "nobody@relay.test"];
        same_as_postmap(&t, &spec, &keys);
    })
    .await
    .expect("postmap comparison");

    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert_eq!(say(&mut c, "RCPT TO:<loop1@relay.test>").await, "451 4.6.0 Alias expansion error");
    assert_eq!(say(&mut c, "RCPT TO:<big@relay.test>").await, "451 4.6.0 Alias expansion error");
    for ok in ["anyone@catch.test", "self@relay.test", "user+x@relay.test", "user+list@relay.test"] {
        assert!(say(&mut c, &format!("RCPT TO:<{ok}>")).await.starts_with("250"), "{ok}");
    }
    drop(c);
    let log = cfg.log();
    assert!(
        log.contains(
            "warning: NOQUEUE: unreasonable virtual_alias_maps map nesting for loop1@relay.test -- message not accepted, try again later"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "warning: NOQUEUE: unreasonable virtual_alias_maps map expansion size for big@relay.test"
        ),
        "{log}"
    );
    assert!(
        log.contains(": reject: RCPT from unknown[127.0.0.1]: 451 4.6.0 Alias expansion error;"),
        "{log}"
    );

    let query = |a: &str| {
        let out = cfg.sluice(&["config", "query", "virtual_alias_maps", a]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    assert_eq!(query("anyone@catch.test"), (Some(0), "joe@relay.test".into()));
    assert_eq!(query("self@relay.test"), (Some(0), "self@relay.test,copy@relay.test".into()));
    assert_eq!(query("user+x@relay.test"), (Some(0), "box+x@relay.test".into()));
    assert_eq!(query("user+list@relay.test"), (Some(0), "list@relay.test".into()));
    assert_eq!(query("nobody@relay.test"), (Some(1), String::new()));
    assert_eq!(query("loop2@relay.test").0, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn pgsql_aliases_expand_at_rcpt_and_a_dead_database_gets_451() {
    let mut pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE alias (address text PRIMARY KEY, goto text)");
    pg.sql(
        "postgres",
        "INSERT INTO alias VALUES ('team@alias.test', 'joe@relay.test,ann@relay.test'), ('@catch.test', 'joe@relay.test')",
    );
    let cfg = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    let cf = write(
        cfg.path(),
        "alias.cf",
        &format!(
            "hosts = inet:127.0.0.1:{}\nuser = postgres\npassword = postgres-secret\ndbname = postgres\nquery = SELECT goto FROM alias WHERE address='%s'\n",
            pg.port
        ),
    );
    cfg.append_main_cf(&format!(
        "virtual_alias_maps = pgsql:{}\nvirtual_alias_domains = alias.test, catch.test\n\
         sluice_table_cache_negative_lifetime = 0\nsluice_table_breaker_cooldown = 300ms\n",
        cf.display()
    ));
    let _daemon = Daemon::start(&cfg);

    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<team@alias.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<x@catch.test>").await.starts_with("250"));
    assert_eq!(
        say(&mut c, "RCPT TO:<nobody@alias.test>").await,
        "550 5.1.1 <nobody@alias.test>: Recipient address rejected: User unknown in virtual alias table"
    );
    assert_eq!(say(&mut c, "DATA").await.split(' ').next(), Some("354"));
    let r = say(&mut c, "Subject: pg-alias\r\n\r\nbody\r\n.").await;
    assert!(r.starts_with("250"), "{r}");
    let list = String::from_utf8_lossy(&cfg.sluice(&["queue", "list"]).stdout).into_owned();
    for rcpt in ["joe@relay.test", "ann@relay.test"] {
        assert_eq!(list.matches(rcpt).count(), 1, "{list}");
    }
    assert!(!list.contains("team@alias.test"), "the envelope holds the targets: {list}");

    pg.stop();
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert_eq!(
        say(&mut c, "RCPT TO:<other@alias.test>").await,
        "451 4.3.0 <other@alias.test>: Temporary lookup failure"
    );
    assert!(
        cfg.log().contains(&format!("warning: pgsql:{} lookup error for", cf.display())),
        "{}",
        cfg.log()
    );
    pg.resume();
}

#[tokio::test(flavor = "multi_thread")]
async fn unverified_recipient_probes_the_alias_targets() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("joe"), User::new("ann")], false);
    let lmtp = format!("lmtp:[127.0.0.1]:{}", dc.lmtp_port);
    let cfg = TestConfig::new(
        &lmtp,
        "smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient\n\
         unverified_recipient_reject_code = 550\nvirtual_alias_maps = texthash:virtual\n\
         sluice_address_verify_alias_targets = 2\n",
    );
    let aliases = format!(
        "{ALIASES}late@alias.test   joe@relay.test, ghost@relay.test\n\
         long@alias.test   joe@relay.test, ann@relay.test, ghost@relay.test\n"
    );
    write(cfg.path(), "virtual", &aliases);
    let _daemon = Daemon::start(&cfg);
    let mut c = Raw::ehlo(cfg.smtp).await;
    assert!(say(&mut c, "MAIL FROM:<a@sender.test>").await.starts_with("250"));
    assert!(say(&mut c, "RCPT TO:<team@alias.test>").await.starts_with("250"));
    let refused = say(&mut c, "RCPT TO:<lost@alias.test>").await;
    assert!(
        refused
            .starts_with("550 5.1.1 <lost@alias.test>: Recipient address rejected: undeliverable address:"),
        "{refused}"
    );
    assert!(refused.contains("<ghost@relay.test>"), "{refused}");
    // A refused target after a deliverable one refuses the alias too.
    let refused = say(&mut c, "RCPT TO:<late@alias.test>").await;
    assert!(
        refused
            .starts_with("550 5.1.1 <late@alias.test>: Recipient address rejected: undeliverable address:"),
        "{refused}"
    );
    // The third target is past sluice_address_verify_alias_targets: the
    // first two are deliverable, so the alias is accepted unprobed beyond.
    assert!(say(&mut c, "RCPT TO:<long@alias.test>").await.starts_with("250"));
}
