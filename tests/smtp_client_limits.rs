//! The per-client limits count a client as its network
//! (`smtpd_client_ipv4_prefix_length`, `smtpd_client_ipv6_prefix_length`,
//! as Postfix 3.8), tested with many loopback clients (127.0.0.0/8), and a
//! listener at its session limit adapts as Postfix's master makes it
//! adapt: new sessions get the configuration expanded with `stress = yes`
//! (`smtpd_hard_error_limit` 1, `smtpd_junk_command_limit` 1,
//! `smtpd_timeout` 10s), with Postfix's warning in the log.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig};
use common::inbound::{Server, relay_settings};
use sluice::smtp::Settings;

#[tokio::test]
async fn clients_are_counted_by_their_network() {
    // Each address its own client (/32, the default): three sessions from
    // three addresses of one /24 all get in under a limit of two.
    let settings = Settings { client_connection_count_limit: 2, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut held = Vec::new();
    for source in ["127.0.0.10", "127.0.0.11", "127.0.0.12"] {
        let mut c = Raw::connect_from(server.addr, source).await;
        assert_eq!(c.reply().await.expect("greeting").code, 220, "{source}");
        held.push(c);
    }
    drop(held);
    server.stop().await;

    // With /24, they are one client: the third is refused, while a client
    // of another /24 still gets in.
    let settings = Settings { client_connection_count_limit: 2, client_prefix: (24, 84), ..relay_settings() };
    let server = Server::start(settings).await;
    let mut a = Raw::connect_from(server.addr, "127.0.0.10").await;
    let mut b = Raw::connect_from(server.addr, "127.0.0.11").await;
    assert_eq!((a.reply().await.expect("a").code, b.reply().await.expect("b").code), (220, 220));
    let mut c = Raw::connect_from(server.addr, "127.0.0.12").await;
    assert_eq!(
        c.reply().await.expect("reply").text(),
        "421 4.7.0 mx.test Error: too many connections from 127.0.0.12"
    );
    let mut other = Raw::connect_from(server.addr, "127.0.1.10").await;
    assert_eq!(other.reply().await.expect("greeting").code, 220);
    // A slot given back is the network's again (once the server has seen
    // the session end).
    drop(a);
    let mut d = None;
    for _ in 0..50 {
        let mut c = Raw::connect_from(server.addr, "127.0.0.13").await;
        if c.reply().await.expect("reply").code == 220 {
            d = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.is_some(), "a session of 127.0.0.0/24 ended: another gets in");
    drop((b, other, d));
    server.stop().await;

    // Message rates count the network too.
    let settings = Settings { client_message_rate_limit: 1, client_prefix: (24, 84), ..relay_settings() };
    let server = Server::start(settings).await;
    let mut a = Raw::connect_from(server.addr, "127.0.0.20").await;
    assert_eq!(a.reply().await.expect("greeting").code, 220);
    assert_eq!(a.cmd("EHLO a.test").await.code, 250);
    assert_eq!(a.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    let mut b = Raw::connect_from(server.addr, "127.0.0.21").await;
    assert_eq!(b.reply().await.expect("greeting").code, 220);
    assert_eq!(b.cmd("EHLO b.test").await.code, 250);
    assert_eq!(
        b.cmd("MAIL FROM:<b@source.test>").await.text(),
        "450 4.7.1 Error: too much mail from 127.0.0.21"
    );
    let mut c = Raw::connect_from(server.addr, "127.0.5.21").await;
    assert_eq!(c.reply().await.expect("greeting").code, 220);
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<c@source.test>").await.code, 250, "another network has its own rate");
    server.stop().await;
}

/// The real daemon with `maxproc` 3 on its listener and Postfix's
/// stress-dependent defaults (`${stress?{1}:{20}}` ...): the session that
/// takes the last slot, and every one after it, runs under stress, while
/// the sessions already running keep their settings.
#[test]
fn a_listener_at_its_limit_runs_new_sessions_under_stress() {
    let config = TestConfig::new("lmtp:[127.0.0.1]:9", "");
    std::fs::write(config.path().join("master.cf"), format!("{} inet n - n - 3 smtpd\n", config.smtp))
        .expect("master.cf");
    let daemon = Daemon::start(&config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // wait_for_port's probe held a slot for a moment: let it go.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut first = Raw::connect(config.smtp).await;
        let mut second = Raw::connect(config.smtp).await;
        assert_eq!(first.cmd("FOO").await.code, 502);
        assert_eq!(first.cmd("NOOP").await.code, 250, "20 errors allowed before stress");

        let mut third = Raw::connect(config.smtp).await;
        assert_eq!(third.cmd("FOO").await.code, 502);
        let r = third.reply().await.expect("the disconnect");
        assert_eq!(r.text(), "421 4.7.0 mx.test Error: too many errors", "one error under stress");
        assert!(third.closed().await);

        // The session that started before the limit keeps its settings.
        assert_eq!(first.cmd("FOO").await.code, 502);
        assert_eq!(second.cmd("NOOP").await.code, 250);
        drop((first, second));
        // Slots are free again, but the pulse lasts: one junk command only
        // (the second is answered, then counts as the one error allowed).
        let mut later = Raw::connect(config.smtp).await;
        assert_eq!(later.cmd("NOOP").await.code, 250);
        assert_eq!(later.cmd("NOOP").await.code, 250);
        let r = later.reply().await.expect("the disconnect");
        assert_eq!(r.text(), "421 4.7.0 mx.test Error: too many errors", "junk limit 1 under stress");
    });
    daemon.stop();
    let log = config.log();
    let limit = format!(
        "warning: service \"{0}\" ({0}) has reached its process limit \"3\": new clients may experience noticeable delays",
        config.smtp
    );
    assert_eq!(log.matches(&limit).count(), 1, "warned once:\n{log}");
    assert!(log.contains("warning: see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings"), "{log}");
}
