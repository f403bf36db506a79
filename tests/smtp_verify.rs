//! `reject_unverified_recipient` against a real Dovecot (LMTP answers
//! `550 5.1.1 ... User doesn't exist` at RCPT for an unknown user), through
//! the real daemon: a known user is accepted and its mail delivered byte
//! for byte, an unknown one refused at RCPT with Postfix's text, cached
//! answers do not reach Dovecot (a counting proxy between sluice and
//! Dovecot counts connections and RCPT commands), a paused backend is not
//! probed (450 4.1.1, no connection), answers survive a restart, and a
//! backend whose breaker is open or that has no free slot is not probed
//! either (450 4.1.1), and an answer past its refresh time is given and
//! refreshed in the background.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::clients::Raw;
use common::daemon::{Daemon, TestConfig};
use common::dovecot::{Dovecot, User};
use common::{free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy in front of a backend that counts what passes: connections
/// and `RCPT TO` commands. While `down`, it accepts and closes at once (a
/// server that drops every connection before its greeting); while
/// `silent`, it accepts and never speaks (a server too busy to greet).
#[derive(Debug, Clone)]
struct Proxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    rcpts: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let p = Proxy {
            addr: listener.local_addr().expect("addr"),
            connections: Arc::default(),
            rcpts: Arc::default(),
            down: Arc::default(),
            silent: Arc::default(),
        };
        let me = p.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                me.connections.fetch_add(1, Ordering::SeqCst);
                if me.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if me.silent.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(client);
                    });
                    continue;
                }
                let rcpts = Arc::clone(&me.rcpts);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 8192];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let seen = memchr::memmem::find_iter(&buf[..n], b"RCPT TO:").count();
                            rcpts.fetch_add(seen, Ordering::SeqCst);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        p
    }

    fn counts(&self) -> (usize, usize) {
        (self.connections.load(Ordering::SeqCst), self.rcpts.load(Ordering::SeqCst))
    }
}

/// The reply to `RCPT TO:<rcpt>` in a fresh session (MAIL FROM first).
async fn rcpt(addr: SocketAddr, rcpt: &str) -> String {
    let mut c = Raw::ehlo(addr).await;
    let r = c.cmd("MAIL FROM:<sender@sender.test>").await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    let _ = c.cmd("QUIT").await;
    format!("{} {}", r.code, r.lines.join(" "))
}

fn config(backend: SocketAddr, extra: &str) -> TestConfig {
    TestConfig::new(
        &format!("lmtp:[127.0.0.1]:{}", backend.port()),
        &format!(
            "smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient\n\
             unverified_recipient_reject_code = 550\n{extra}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_are_verified_with_dovecot_once_and_remembered() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("known")], false);
    let proxy = Proxy::start(([127, 0, 0, 1], dc.lmtp_port).into()).await;
    let cfg = config(proxy.addr, "");
    let mut daemon = Daemon::start(&cfg);
    let smtp = cfg.smtp;

    assert!(rcpt(smtp, "known@relay.test").await.starts_with("250 2.1.5"));
    let refused = rcpt(smtp, "nobody@relay.test").await;
    assert!(
        refused.starts_with(
            "550 5.1.1 <nobody@relay.test>: Recipient address rejected: undeliverable address: \
             host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@relay.test> User doesn't exist"
        ),
        "{refused}"
    );
    assert!(refused.ends_with("(in reply to RCPT TO command)"), "{refused}");
    let probed = proxy.counts();
    assert_eq!(probed.1, 2, "one RCPT per probe");

    // Cached: Dovecot hears nothing more.
    for _ in 0..3 {
        assert!(rcpt(smtp, "known@relay.test").await.starts_with("250 "));
        assert!(rcpt(smtp, "Nobody@relay.test").await.starts_with("550 5.1.1 "));
    }
    assert_eq!(proxy.counts(), probed, "cache hits do not touch the backend");
    let log = cfg.log();
    assert!(log.contains("NOQUEUE: to=<known@relay.test>, relay=127.0.0.1[127.0.0.1]:"), "{log}");
    assert!(log.contains("dsn=2.1.5, status=deliverable (250 2.1.5"), "{log}");
    assert!(
        log.contains("dsn=5.1.1, status=undeliverable (host 127.0.0.1[127.0.0.1] said: 550 5.1.1"),
        "{log}"
    );
    let metrics = reqwest_metrics(cfg.metrics).await;
    assert!(metrics.contains("sluice_verify_probes_total"), "{metrics}");
    assert!(metrics.contains("sluice_verify_cache_lookups_total{result=\"hit\"} 6"), "{metrics}");

    // The accepted recipient's mail arrives as sent.
    let body =
        "Subject: verified\r\nMessage-ID: <verify-1@sender.test>\r\n\r\nHello, known.\r\n.. a dot line\r\n";
    let sent = common::daemon::send(smtp, "sender@sender.test", &["known@relay.test"], body).expect("sent");
    assert!(sent.starts_with("250 "), "{sent}");
    wait_until(
        "delivery to known",
        Duration::from_secs(30),
        || !dc.maildir("known").is_empty(),
        || cfg.log(),
    );
    let stored = dc.maildir("known").pop().expect("one message");
    // smtplib dot-stuffs on the wire; the stored copy is what was given.
    let want = body.replace("\r\n", "\n");
    assert!(String::from_utf8_lossy(&stored).ends_with(&want), "{}", String::from_utf8_lossy(&stored));

    // Paused: no probe, no connection; the cache still answers.
    let name = format!("lmtp:[127.0.0.1]:{}", proxy.addr.port());
    let out = cfg.sluice(&["backend", "pause", &name]);
    assert!(out.status.success(), "{out:?}");
    let before = proxy.counts();
    let paused = rcpt(smtp, "new@relay.test").await;
    assert_eq!(
        paused,
        format!(
            "450 4.1.1 <new@relay.test>: Recipient address rejected: unverified address: backend {name} is paused"
        )
    );
    assert!(rcpt(smtp, "known@relay.test").await.starts_with("250 "));
    assert_eq!(proxy.counts(), before, "a paused backend is not probed");
    let out = cfg.sluice(&["backend", "resume", &name]);
    assert!(out.status.success(), "{out:?}");

    // A restart keeps the answers.
    assert!(daemon.stop().success());
    daemon = Daemon::start(&cfg);
    let before = proxy.counts();
    assert!(rcpt(smtp, "known@relay.test").await.starts_with("250 "));
    assert!(rcpt(smtp, "nobody@relay.test").await.starts_with("550 5.1.1 "));
    assert_eq!(proxy.counts().1, before.1, "answers survive a restart");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_an_open_breaker_is_not_probed() {
    // Nothing listens behind the proxy; it drops every connection.
    let proxy = Proxy::start(([127, 0, 0, 1], free_port()).into()).await;
    proxy.down.store(true, Ordering::SeqCst);
    let cfg = config(proxy.addr, "sluice_breaker_failure_threshold = 2\nsluice_breaker_probe_interval = 60s");
    let daemon = Daemon::start(&cfg);

    // Each failed probe is a failure the breaker counts; the client is
    // told to come back (never refused for good).
    for r in ["a@relay.test", "b@relay.test"] {
        let reply = rcpt(cfg.smtp, r).await;
        assert!(
            reply.starts_with(&format!("450 4.1.1 <{r}>: Recipient address rejected: unverified address: ")),
            "{reply}"
        );
    }
    let name = format!("lmtp:[127.0.0.1]:{}", proxy.addr.port());
    wait_until(
        "the breaker opens",
        Duration::from_secs(10),
        || String::from_utf8_lossy(&cfg.sluice(&["backend", "list"]).stdout).contains("open"),
        || cfg.log(),
    );
    let before = proxy.counts();
    let reply = rcpt(cfg.smtp, "c@relay.test").await;
    assert!(
        reply.starts_with(&format!(
            "450 4.1.1 <c@relay.test>: Recipient address rejected: unverified address: backend {name} is not answering"
        )),
        "{reply}"
    );
    assert_eq!(proxy.counts(), before, "no connection to a backend whose breaker is open");
    assert!(cfg.log().contains("address verification of <c@relay.test> not attempted"), "{}", cfg.log());
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_backend_is_not_given_more_probes() {
    // One connection at most, and the server never greets: the first
    // probe holds the only slot.
    let proxy = Proxy::start(([127, 0, 0, 1], free_port()).into()).await;
    proxy.silent.store(true, Ordering::SeqCst);
    let cfg = config(
        proxy.addr,
        "lmtp_destination_concurrency_limit = 1
address_verify_poll_count = 1
address_verify_poll_delay = 1s",
    );
    let daemon = Daemon::start(&cfg);
    let name = format!("lmtp:[127.0.0.1]:{}", proxy.addr.port());

    // The client stops waiting after the poll time; the probe goes on.
    let reply = rcpt(cfg.smtp, "a@relay.test").await;
    assert_eq!(
        reply,
        "450 4.1.1 <a@relay.test>: Recipient address rejected: unverified address: Address verification in progress"
    );
    // No slot within sluice_address_verify_slot_wait: no second connection.
    let before = proxy.counts();
    let reply = rcpt(cfg.smtp, "b@relay.test").await;
    assert_eq!(
        reply,
        format!(
            "450 4.1.1 <b@relay.test>: Recipient address rejected: unverified address: backend {name} is busy: no free connection slot"
        )
    );
    assert_eq!(proxy.counts(), before, "a busy backend gets no more connections");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_answers_are_given_and_refreshed_in_the_background() {
    Dovecot::require();
    let dc = Dovecot::start(&[User::new("known")], false);
    let proxy = Proxy::start(([127, 0, 0, 1], dc.lmtp_port).into()).await;
    let cfg = config(
        proxy.addr,
        "address_verify_positive_refresh_time = 1s
address_verify_positive_expire_time = 1h",
    );
    let daemon = Daemon::start(&cfg);
    assert!(rcpt(cfg.smtp, "known@relay.test").await.starts_with("250 "));
    assert_eq!(proxy.counts().1, 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Past the refresh time: answered from the cache, and probed again
    // behind the client's back.
    assert!(rcpt(cfg.smtp, "known@relay.test").await.starts_with("250 "));
    wait_until("the refresh probe", Duration::from_secs(10), || proxy.counts().1 == 2, || cfg.log());
    // The refreshed answer is fresh again.
    assert!(rcpt(cfg.smtp, "known@relay.test").await.starts_with("250 "));
    assert_eq!(proxy.counts().1, 2);
    assert!(daemon.stop().success());
}

/// The Prometheus exposition of the daemon's metrics endpoint.
async fn reqwest_metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("metrics connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
