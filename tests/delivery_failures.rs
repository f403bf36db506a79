//! The scheduler and gates against a mailbox server that misbehaves, one
//! failure at a time: for each, no message is lost, none is bounced that
//! should have been deferred, the breaker opens and closes as designed, the
//! server never sees more connections than the gate allows, and once it
//! recovers the backlog is delivered within seconds — not at the next
//! five-minute retry (`minimal_backoff_time = 300s` here).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::delivery::{Harness, eventually, eventually_async, main_cf, message, subject};

/// The concurrency ceiling configured by `main_cf`.
const LIMIT: usize = 4;
const MESSAGES: usize = 30;

fn backend_name(b: &Backend) -> String {
    format!("lmtp:[127.0.0.1]:{}", b.port())
}

/// Queues `MESSAGES` messages (every third to two recipients) and returns
/// their subjects.
async fn load(h: &Harness, tag: &str) -> HashSet<String> {
    let mut subjects = HashSet::new();
    for i in 0..MESSAGES {
        let s = format!("{tag}-{i}");
        let rcpts: &[&str] = if i % 3 == 0 { &["a@dev.test", "b@dev.test"] } else { &["a@dev.test"] };
        h.enqueue("sender@remote.test", rcpts, &message(&s)).await;
        subjects.insert(s);
    }
    subjects
}

/// The scenario shared by the connection-level failures: the backend fails
/// in `mode`, mail piles up, the breaker opens; the backend recovers and the
/// backlog drains.
async fn outage_and_recovery(mode: Mode, extra: &str) {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    let h =
        Harness::start(&main_cf(b.port(), bounces.port(), &format!("minimal_backoff_time = 300s\n{extra}")))
            .await;
    let name = backend_name(&b);
    b.set_mode(mode.clone()).await;
    let subjects = load(&h, "outage").await;

    eventually("the breaker opens", Duration::from_secs(30), || h.breaker(&name) == Some("open")).await;
    // Stay down through a few probes: while open, only the probes (one per
    // cool-down of 0.5 s, then 1 s, 2 s) reach the server.
    let before = b.accepted_connections();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let during = b.accepted_connections() - before;
    assert!(during <= 3, "{during} connections while the breaker was open");
    assert!(b.received().is_empty(), "nothing delivered during the outage in {mode:?}");
    let snap = h.handle.list().into_iter().find(|s| s.snapshot.name == name).unwrap();
    assert!(snap.snapshot.last_error.is_some());

    b.reset_peaks();
    b.set_mode(Mode::Normal).await;
    eventually("the backlog is delivered after recovery", Duration::from_secs(60), || {
        let got: HashSet<String> = b.received().iter().map(|r| subject(&r.data)).collect();
        subjects.is_subset(&got)
    })
    .await;
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert_eq!(h.breaker(&name), Some("closed"));
    // Every recipient got the message (duplicates are allowed, loss is not).
    let mut per_rcpt = std::collections::HashMap::<(String, String), usize>::new();
    for r in b.received() {
        for a in &r.rcpts {
            *per_rcpt.entry((subject(&r.data), a.clone())).or_default() += 1;
        }
    }
    for (i, s) in (0..MESSAGES).map(|i| (i, format!("outage-{i}"))) {
        assert!(per_rcpt.contains_key(&(s.clone(), "a@dev.test".into())), "{s} lost for a@");
        if i % 3 == 0 {
            assert!(per_rcpt.contains_key(&(s.clone(), "b@dev.test".into())), "{s} lost for b@");
        }
    }
    assert!(
        bounces.received().is_empty(),
        "nothing bounced: {:?}",
        bounces.received().first().map(|r| subject(&r.data))
    );
    assert!(b.peak_connections() <= LIMIT, "peak {} connections > limit {LIMIT}", b.peak_connections());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_open_the_breaker_and_the_backlog_drains_after_recovery() {
    outage_and_recovery(Mode::Refuse, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_421_opens_the_breaker_and_the_backlog_drains_after_recovery() {
    outage_and_recovery(Mode::Greet421, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_times_out_opens_the_breaker_and_the_backlog_drains() {
    outage_and_recovery(Mode::Silent, "lmtp_lhlo_timeout = 1s\n").await;
}

/// A mailbox server that crashes with deliveries in flight (their
/// connections lost) and then turns every connection away at the door is
/// watched by connect probes (connect, greeting, LHLO, QUIT: no message),
/// one connection per `sluice_breaker_probe_interval`; the first one it
/// answers lets a trial delivery through, and the backlog flows within
/// seconds of its return, though the breaker's cool-down (30 s here) is
/// far from over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backend_is_seen_again_within_seconds_of_its_return() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(
        b.port(),
        bounces.port(),
        "minimal_backoff_time = 300s\n\
         sluice_breaker_cooldown = 30s\n\
         sluice_breaker_max_cooldown = 60s\n\
         sluice_breaker_probe_interval = 1s\n",
    ))
    .await;
    let name = backend_name(&b);
    // Slow enough that deliveries are under way when it crashes.
    b.set_mode(Mode::Slow { base: Duration::from_millis(500), capacity: 10, overload_at: None }).await;
    let subjects = load(&h, "return").await;
    eventually("deliveries under way", Duration::from_secs(30), || b.connections() > 0).await;
    // The crash: every open connection lost; from now on each new one is
    // told 421 at the greeting (the backend counts these, where a closed
    // port would hide the attempts).
    b.set_mode(Mode::Greet421).await;
    b.drop_connections();
    eventually("the breaker opens", Duration::from_secs(30), || h.breaker(&name) == Some("open")).await;

    // Five seconds of outage: about one connection a second, no delivery.
    let delivered = b.received().len();
    let before = b.accepted_connections();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let probes = b.accepted_connections() - before;
    assert!((3..=6).contains(&probes), "{probes} connections in 5 s of outage (probe interval 1 s)");
    assert_eq!(b.received().len(), delivered);
    assert_eq!(h.breaker(&name), Some("open"), "no trial while the probes are refused");

    // Back: the next probe sees it, the trial goes, the backlog follows.
    b.set_mode(Mode::Normal).await;
    eventually("the first delivery after the return", Duration::from_secs(4), || {
        b.received().len() > delivered
    })
    .await;
    eventually("the backlog is delivered", Duration::from_secs(30), || {
        let got: HashSet<String> = b.received().iter().map(|r| subject(&r.data)).collect();
        subjects.is_subset(&got)
    })
    .await;
    assert_eq!(h.breaker(&name), Some("closed"));
    assert!(bounces.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_after_the_final_dot_defers_and_nothing_is_lost() {
    // The server swallows each message and hangs up: maybe delivered, maybe
    // not, so sluice defers ("may be sent more than once") and redelivers.
    outage_and_recovery(Mode::CloseAfterDot, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_full_defers_that_recipient_only_and_leaves_the_breaker_closed() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    // Per-recipient deferrals follow the backoff (here short): the server is
    // healthy, only one mailbox is full.
    let h = Harness::start(&main_cf(
        b.port(),
        bounces.port(),
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n",
    ))
    .await;
    let name = backend_name(&b);
    b.set_mode(Mode::PerRecipient { pattern: "full".into(), code: 452, text: "4.2.2 Mailbox full".into() })
        .await;
    for i in 0..10 {
        h.enqueue("sender@remote.test", &["ok@dev.test", "full@dev.test"], &message(&format!("quota-{i}")))
            .await;
    }
    eventually("the other recipient gets every message", Duration::from_secs(30), || {
        b.received().iter().filter(|r| r.rcpts == ["ok@dev.test"]).count() >= 10
    })
    .await;
    assert_eq!(h.breaker(&name), Some("closed"));
    assert!(!b.received().iter().any(|r| r.rcpts.iter().any(|a| a == "full@dev.test")));

    b.set_mode(Mode::Normal).await;
    eventually("the full mailbox gets its mail once there is room", Duration::from_secs(60), || {
        b.received().iter().filter(|r| r.rcpts.iter().any(|a| a == "full@dev.test")).count() >= 10
    })
    .await;
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert!(bounces.received().is_empty(), "a full mailbox is deferred, not bounced");
    assert_eq!(h.breaker(&name), Some("closed"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_errors_per_recipient_are_retried_as_soon_as_the_server_is_healthy() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(b.port(), bounces.port(), "minimal_backoff_time = 300s\n")).await;
    b.set_mode(Mode::PerRecipient {
        pattern: "@".into(),
        code: 451,
        text: "4.3.0 Temporary internal error".into(),
    })
    .await;
    let subjects = load(&h, "sys").await;
    eventually("some mail was tried", Duration::from_secs(30), || b.accepted_connections() > 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.set_mode(Mode::Normal).await;
    eventually("the backlog is delivered well before the 300 s retry", Duration::from_secs(60), || {
        let got: HashSet<String> = b.received().iter().map(|r| subject(&r.data)).collect();
        subjects.is_subset(&got)
    })
    .await;
    assert!(bounces.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_never_sees_more_connections_than_the_gate_allows() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(b.port(), bounces.port(), "sluice_latency_target = 2s\n")).await;
    // Latency grows past 2 concurrent transactions; 421 past 6 connections.
    b.set_mode(Mode::Slow { base: Duration::from_millis(40), capacity: 2, overload_at: Some(6) }).await;
    let subjects = load(&h, "slow").await;
    eventually("everything is delivered", Duration::from_secs(60), || {
        let got: HashSet<String> = b.received().iter().map(|r| subject(&r.data)).collect();
        subjects.is_subset(&got)
    })
    .await;
    assert!(b.peak_connections() <= LIMIT, "peak {} > {LIMIT}", b.peak_connections());
    assert_eq!(b.refused_421(), 0, "never pushed past the server's refusal point");
    assert!(bounces.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_memory_waits_on_disk_and_nothing_is_lost() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    // At most 16 messages in memory, 4 waiting for this backend; the rest of
    // the backlog stays on disk, parked on the backend, and is called back
    // as it drains.
    let tuning = sluice::delivery::Tuning { backend_queue_limit: Some(4), ..Default::default() };
    let h =
        Harness::start_tuned(&main_cf(b.port(), bounces.port(), "qmgr_message_active_limit = 16\n"), tuning)
            .await;
    let name = backend_name(&b);
    b.set_mode(Mode::Slow { base: Duration::from_millis(30), capacity: 2, overload_at: None }).await;
    let mut subjects = HashSet::new();
    for i in 0..60 {
        let s = format!("backlog-{i}");
        h.enqueue("sender@remote.test", &["a@dev.test"], &message(&s)).await;
        subjects.insert(s);
    }
    let mut most_waiting = 0;
    eventually("the whole backlog is delivered", Duration::from_secs(120), || {
        if let Some(s) = h.handle.list().into_iter().find(|s| s.snapshot.name == name) {
            most_waiting = most_waiting.max(s.queued);
        }
        let got: HashSet<String> = b.received().iter().map(|r| subject(&r.data)).collect();
        subjects.is_subset(&got)
    })
    .await;
    assert!(most_waiting <= 4, "{most_waiting} deliveries waited in memory for the backend");
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert!(bounces.received().is_empty());
    h.stop().await;
}

/// `soft_bounce = yes`: a mailbox server's 5xx for a recipient defers it
/// (nothing is bounced, even past maximal_queue_lifetime, here zero), and
/// the mail goes out once the server takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounce_defers_what_would_bounce_until_the_server_takes_it() {
    let b = Backend::start(Proto::Lmtp).await;
    let bounces = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(
        b.port(),
        bounces.port(),
        "soft_bounce = yes\nmaximal_queue_lifetime = 0s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n",
    ))
    .await;
    b.set_mode(Mode::PerRecipient { pattern: "gone".into(), code: 550, text: "5.1.1 User unknown".into() })
        .await;
    for i in 0..3 {
        h.enqueue("sender@remote.test", &["ok@dev.test", "gone@dev.test"], &message(&format!("soft-{i}")))
            .await;
    }
    eventually("the other recipient gets every message", Duration::from_secs(30), || {
        b.received().iter().filter(|r| r.rcpts == ["ok@dev.test"]).count() >= 3
    })
    .await;
    // Refused again on retries (1 s apart), and still queued.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.queued().await, 3, "soft-bounced mail stays queued");
    assert!(bounces.received().is_empty(), "nothing is bounced under soft_bounce");

    b.set_mode(Mode::Normal).await;
    eventually(
        "the refused recipient gets its mail once the server takes it",
        Duration::from_secs(30),
        || b.received().iter().filter(|r| r.rcpts.iter().any(|a| a == "gone@dev.test")).count() >= 3,
    )
    .await;
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert!(bounces.received().is_empty());
    h.stop().await;
}
