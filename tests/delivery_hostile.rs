//! Hostile next hops: a server that never ends its reply costs bounded
//! memory and ends as a deferral with a clear reason, in the client and
//! in the daemon (which lives on, restart after restart); a server that
//! speaks unasked between transactions gets no more mail on that
//! connection; and what goes out is unambiguous whatever was stored (bare
//! CR and bare LF).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::daemon::{Daemon, TestConfig, queued_id, send};
use common::delivery::{Harness, envelope, eventually, eventually_async, main_cf, message, subject};
use common::{free_port, wait_until};
use sluice::config::Protocol;
use sluice::delivery::client;
use sluice::delivery::nexthop::Target;
use sluice::delivery::settings::Timeouts;
use sluice_queue::BodyType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that greets with `line` repeated for as long as the peer
/// reads, and reads whatever comes.
async fn flooding_server(line: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let h = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
                });
                let chunk = line.repeat(4096 / line.len().max(1) + 1);
                while w.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    (addr, h)
}

/// The daemon's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn an_endless_reply_ends_the_connection_with_a_clear_reason() {
    // Long timeouts: only the reply's bounds can end these.
    let timeouts = Timeouts::uniform(Duration::from_secs(300));
    for (line, why) in [
        (&b"220-\r\n"[..], "reply has more than 100 lines"),
        (&b"garbage\r\n"[..], "malformed reply line \"garbage\""),
        (&b"220 xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..], "reply is longer than 65536 bytes"),
    ] {
        let (addr, server) = flooding_server(line).await;
        let target = Target::Inet { name: "hostile.test".into(), addr };
        let e = client::open(&[target], Protocol::Smtp, "mx.sluice.test", &timeouts).await.unwrap_err();
        assert!(e.text.contains(why), "{}", e.text);
        assert!(e.text.starts_with("host hostile.test[127.0.0.1] sent an invalid reply"), "{}", e.text);
        assert_eq!(e.dsn.0, 4, "deferred, not bounced");
        server.abort();
    }
}

/// The issue's scenario: a transport (or a bounce's MX) pointing at a
/// server that answers `220-` forever. The mail is deferred with the
/// reason, the daemon's memory stays bounded, and it goes on serving,
/// also after a restart with the message still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_hop_that_never_ends_its_greeting_defers_and_the_daemon_lives_on() {
    let (addr, _server) = flooding_server(b"220-\r\n").await;
    let cfg = TestConfig::new(&format!("smtp:[127.0.0.1]:{}", addr.port()), "");
    let daemon = Daemon::start(&cfg);
    let reply =
        send(cfg.smtp, "a@sender.test", &["x@relay.test"], "Subject: t\r\n\r\nbody\r\n").expect("accepted");
    let id = queued_id(&reply);
    wait_until(
        "the delivery is deferred with the reason",
        Duration::from_secs(60),
        || cfg.log().contains("status=deferred (host 127.0.0.1[127.0.0.1] sent an invalid reply"),
        || cfg.log(),
    );
    // A few retries (queue_run_delay and backoff are a second or two).
    wait_until(
        "more attempts",
        Duration::from_secs(60),
        || cfg.log().matches("reply has more than 100 lines").count() >= 3,
        || cfg.log(),
    );
    let peak = peak_rss_kib(daemon.child.pid());
    // Generous: the daemon's own footprint; the flood once took hundreds
    // of megabytes within seconds.
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
    let listed = cfg.sluice(&["queue", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&id) && text.contains("reply has more than 100 lines"), "{text}");
    assert!(daemon.stop().success(), "a clean stop");

    // The message is still queued: the next daemon meets the same server.
    let daemon = Daemon::start(&cfg);
    wait_until(
        "attempts after the restart",
        Duration::from_secs(60),
        || cfg.log().matches("reply has more than 100 lines").count() >= 5,
        || cfg.log(),
    );
    send(cfg.smtp, "a@sender.test", &["y@relay.test"], "Subject: t2\r\n\r\nbody\r\n").expect("still serving");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_and_bare_lf_leave_as_crlf_so_no_dot_line_can_hide() {
    let b = Backend::start(Proto::Lmtp).await;
    let h = Harness::start(&main_cf(b.port(), free_port(), "")).await;
    // Stored as sent, as BINARYMIME content and unnormalized mail from
    // mynetworks are: a dot line behind a bare CR and behind a bare LF,
    // each followed by what would be a smuggled command.
    let body =
        b"Subject: smuggle\r\n\r\nline\r.\r\nMAIL FROM:<evil@x.test>\r\nmore\n.\nRCPT TO:<v@y.test>\r\nend\r"
            .to_vec();
    let mut env = envelope("sender@remote.test", &["user@dev.test"]);
    env.body_type = BodyType::BinaryMime;
    h.queue.enqueue(env, &body, sluice::clock::unix_millis()).await.expect("enqueue");
    eventually("delivered", Duration::from_secs(30), || b.received().len() == 1).await;
    let data = &b.received()[0].data;
    for (i, &c) in data.iter().enumerate() {
        if c == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR at {i}: {:?}", String::from_utf8_lossy(data));
        }
        if c == b'\n' {
            assert!(i > 0 && data[i - 1] == b'\r', "bare LF at {i}: {:?}", String::from_utf8_lossy(data));
        }
    }
    assert_eq!(
        String::from_utf8_lossy(data),
        "Subject: smuggle\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x.test>\r\nmore\r\n.\r\nRCPT TO:<v@y.test>\r\nend\r\n",
        "one message, every line of it, nothing ended early"
    );
    assert_eq!(b.received()[0].rcpts, ["user@dev.test"], "no smuggled recipient");
    h.stop().await;
}

/// A server that sent one reply too many after a transaction has bytes
/// waiting on the pooled connection. The next message must not go there,
/// not even after an `RSET`: the `RSET` would read the stray reply as its
/// own, the `MAIL` the `RSET`'s, and so on, every reply one command late.
/// Each message goes on a connection of its own instead, delivered at the
/// first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_server_spoke_unasked_carries_no_more_mail() {
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::StrayReply).await;
    let h = Harness::start(&main_cf(b.port(), free_port(), "")).await;
    for i in 0..3 {
        let tag = format!("stray{i}");
        h.enqueue("sender@remote.test", &["user@dev.test"], &message(&tag)).await;
        // Far below the retry time: a deferral would fail here.
        eventually("delivered at the first attempt", Duration::from_secs(30), || b.received().len() == i + 1)
            .await;
        assert_eq!(subject(&b.received()[i].data), tag);
    }
    assert_eq!(b.accepted_connections(), 3, "one connection per message");
    eventually_async("every result recorded", Duration::from_secs(10), || async { h.queued().await == 0 })
        .await;
    h.stop().await;
}
