//! Where delivery may lead: never back to this host (mail that loops back,
//! found by address with a real listener of the daemon, and by Postfix's
//! EHLO check), and, when the next hop is a recipient's domain, never into
//! `sluice_mx_forbidden_networks`, decided before anything connects.
//!
//! DNS is the static double: it points MX hosts at private and loopback
//! addresses. A mailbox server listens on 127.0.0.2, which the rule keeps
//! delivery out of: that it never sees a connection is the proof that the
//! decision came first.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::backend::{Backend, Proto};
use common::daemon::{Daemon, TestConfig, send};
use common::delivery::{Harness, eventually, eventually_async, main_cf, message};
use common::{free_port, wait_until};
use sluice::delivery::Tuning;
use sluice::resolver::StaticResolver;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// `remote.test` (senders) on 127.0.0.1; `inside.test` only on a private
/// and a forbidden loopback address; `mixed.test` on both sides;
/// `other.test` on 127.0.0.3.
fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with_mx("remote.test", 10, "mx.remote.test")
        .with_ip("mx.remote.test", v4(127, 0, 0, 1))
        .with_mx("inside.test", 10, "mx.inside.test")
        .with_ip("mx.inside.test", v4(127, 0, 0, 2))
        .with_ip("mx.inside.test", v4(10, 0, 0, 5))
        .with_mx("mixed.test", 10, "mx.inside.test")
        .with_mx("mixed.test", 20, "mx.remote.test")
        .with_mx("loop.test", 10, "mx.loop.test")
        .with_ip("mx.loop.test", v4(127, 0, 0, 1))
        .with_mx("other.test", 10, "mx.other.test")
        .with_ip("mx.other.test", v4(127, 0, 0, 3))
}

/// A free port on 127.0.0.1 that is free on 127.0.0.2 and .3 too: the
/// same `smtp_tcp_port` reaches the backends on each address.
fn shared_port() -> u16 {
    loop {
        let p = free_port();
        let free = |last: u8| std::net::TcpListener::bind(SocketAddr::new(v4(127, 0, 0, last), p)).is_ok();
        if free(2) && free(3) {
            return p;
        }
    }
}

async fn smtp_backend(last: u8, port: u16) -> Backend {
    Backend::start_on(SocketAddr::new(v4(127, 0, 0, last), port), Proto::Smtp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_routed_mail_never_connects_into_forbidden_networks() {
    let port = shared_port();
    let outside = smtp_backend(1, port).await;
    let inside = smtp_backend(2, port).await;
    let extra = format!(
        "transport_maps = inline:{{ conf.test=smtp:[127.0.0.2]:{port}, {{ gone.test = error:5.1.1 gone }} }}\n\
         minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n"
    );
    let h =
        Harness::start_resolving(&main_cf(free_port(), port, &extra), Tuning::default(), resolver()).await;

    // Every address of inside.test's MX is forbidden: the mail bounces
    // without a connection, and the sender is told why.
    let id = h.enqueue("sender@remote.test", &["user@inside.test"], &message("inside")).await;
    eventually("the notice reaches the sender", Duration::from_secs(30), || !outside.received().is_empty())
        .await;
    // The explanation is quoted-printable: undo its soft line breaks.
    let notice = String::from_utf8_lossy(&outside.received()[0].data).replace("=\r\n", "");
    assert!(notice.contains("Status: 5.4.4"), "{notice}");
    assert!(notice.contains("sluice_mx_forbidden_networks"), "{notice}");
    assert!(notice.contains("127.0.0.2") && notice.contains("10.0.0.5"), "{notice}");
    eventually_async("the bounced message left", Duration::from_secs(10), || async {
        h.queue.envelope(id).await.unwrap().is_none()
    })
    .await;

    // A domain with an allowed MX as well gets its mail there.
    h.enqueue("sender@remote.test", &["user@mixed.test"], &message("mixed")).await;
    eventually("delivered to the allowed MX", Duration::from_secs(30), || {
        outside.received().iter().any(|r| r.rcpts == ["user@mixed.test"])
    })
    .await;

    // A bounce to a sender written as an address literal is the sender's
    // choice too: the notice is not sent (and, from the null sender, is
    // not answered with another).
    h.enqueue("x@[127.0.0.2]", &["nobody@gone.test"], &message("literal")).await;
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert_eq!(inside.accepted_connections(), 0, "nothing ever connected to 127.0.0.2");

    // A next hop the administrator configured is trusted as configured.
    h.enqueue("sender@remote.test", &["user@conf.test"], &message("configured")).await;
    eventually("the configured next hop gets its mail", Duration::from_secs(30), || {
        inside.received().iter().any(|r| r.rcpts == ["user@conf.test"])
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_ehlo_with_our_name_is_a_loop() {
    let port = shared_port();
    // loop.test's MX answers with sluice's own name (a NAT in front of this
    // very host would look like this).
    let looping = smtp_backend(1, port).await;
    looping.set_name("mx.sluice.test");
    let notices = smtp_backend(3, port).await;
    let extra = "sluice_mx_forbidden_networks_exceptions = 127.0.0.1, 127.0.0.3\n";
    let h = Harness::start_resolving(&main_cf(free_port(), port, extra), Tuning::default(), resolver()).await;
    h.enqueue("sender@other.test", &["user@loop.test"], &message("loop")).await;
    eventually("the sender is told", Duration::from_secs(30), || !notices.received().is_empty()).await;
    let notice = String::from_utf8_lossy(&notices.received()[0].data).replace("=\r\n", "");
    assert!(notice.contains("Status: 5.4.6"), "{notice}");
    assert!(notice.contains("mail for loop.test loops back to myself"), "{notice}");
    assert!(looping.received().is_empty(), "no mail was given to ourselves");
    h.stop().await;
}

#[test]
fn mail_routed_to_the_daemons_own_listener_loops_back_without_a_connection() {
    let cfg = TestConfig::new("smtp:[127.0.0.1]:1", "");
    // The next hop is the daemon's own SMTP listener.
    std::fs::write(
        cfg.path().join("transport"),
        format!("relay.test smtp:[127.0.0.1]:{}\n", cfg.smtp.port()),
    )
    .expect("transport");
    let daemon = Daemon::start(&cfg);
    send(cfg.smtp, "a@sender.test", &["x@relay.test"], "Subject: loop\r\n\r\nbody\r\n").expect("accepted");
    wait_until(
        "the loop is found",
        Duration::from_secs(30),
        || cfg.log().contains("loops back to myself"),
        || cfg.log(),
    );
    let log = cfg.log();
    let line = log.lines().find(|l| l.contains("to=<x@relay.test>")).expect("a result line");
    assert!(line.contains("dsn=5.4.6, status=bounced (mail for 127.0.0.1 loops back to myself)"), "{line}");
    // No SMTP session began once the message was taken for delivery: the
    // loop was found before connecting. (The sending client's own
    // `disconnect from` may be logged after that point: only a new
    // `connect from` counts.)
    let active = log.find("(queue active)").expect("the message was taken");
    let connected = log[active..].lines().any(|l| l.contains("]: connect from"));
    assert!(!connected, "the daemon connected to itself:\n{log}");
    assert!(daemon.stop().success());
}
