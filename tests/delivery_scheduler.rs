//! The scheduler end to end: mail put in the queue (as the inbound server
//! does) arrives in Dovecot mailboxes byte-exact; bounces, expiry, delay
//! warnings, pauses, multi-backend messages and breaker state across a
//! restart.

mod common;

use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::delivery::{Harness, eventually, eventually_async, main_cf, message, subject};
use common::dovecot::{Dovecot, User};
use mail_parser::{MessageParser, MimeHeaders};

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

fn strip_return_path(stored: &[u8]) -> &[u8] {
    let nl = stored.iter().position(|&b| b == b'\n').unwrap_or(0);
    &stored[nl + 1..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_reaches_dovecot_byte_exact_and_over_quota_bounces_to_the_sender() {
    Dovecot::require();
    let dc = Dovecot::start(
        &[User::new("alice"), User::new("bob"), User::with_quota("full", "*:storage=1K")],
        false,
    );
    let sender_mx = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(dc.lmtp_port, sender_mx.port(), "")).await;

    let single = message("single");
    let mut multi = message("multi");
    multi.extend(std::iter::repeat_n(b'x', 2000));
    multi.extend_from_slice(b"\r\n");
    h.enqueue("sender@remote.test", &["alice@dev.test"], &single).await;
    let id =
        h.enqueue("sender@remote.test", &["alice@dev.test", "bob@dev.test", "full@dev.test"], &multi).await;

    eventually("alice has both messages", Duration::from_secs(30), || dc.maildir("alice").len() == 2).await;
    eventually("bob has his", Duration::from_secs(30), || dc.maildir("bob").len() == 1).await;
    let alice: Vec<Vec<u8>> = dc.maildir("alice").iter().map(|m| strip_return_path(m).to_vec()).collect();
    assert!(alice.contains(&lf(&single)), "single-recipient message byte-exact");
    assert!(alice.contains(&lf(&multi)), "multi-recipient message byte-exact");
    assert_eq!(strip_return_path(&dc.maildir("bob")[0]), lf(&multi).as_slice());
    let over_imap = dc.imap_fetch_all("bob", "pw");
    let crlf = String::from_utf8_lossy(&over_imap[0]).into_owned();
    assert_eq!(&crlf.as_bytes()[crlf.find("\r\n").unwrap() + 2..], multi.as_slice(), "byte-exact over IMAP");
    assert!(dc.maildir("full").is_empty());

    // Dovecot answered 552 5.2.2 for the full mailbox: a bounce goes to the
    // sender's MX, as an RFC 3464 report from the null sender.
    eventually("the bounce reaches the sender's MX", Duration::from_secs(30), || {
        !sender_mx.received().is_empty()
    })
    .await;
    let dsn = &sender_mx.received()[0];
    assert_eq!(dsn.from, "");
    assert_eq!(dsn.rcpts, ["sender@remote.test"]);
    let msg = MessageParser::default().parse(&dsn.data).expect("report parses");
    let ct = msg.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status"))
    );
    let status = std::str::from_utf8(msg.parts[2].contents()).unwrap();
    assert!(status.contains("Final-Recipient: rfc822; full@dev.test"), "{status}");
    assert!(status.contains("Action: failed") && status.contains("Status: 5.2.2"), "{status}");
    assert!(!status.contains("alice@dev.test"), "delivered recipients are not reported");
    assert!(status.contains(&format!("X-Sluice-Queue-ID: {id}")));
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    assert_eq!(sender_mx.received().len(), 1, "one bounce, no bounce of the bounce");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_two_backends_stays_until_both_are_done() {
    let a = Backend::start(Proto::Lmtp).await;
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let extra = format!(
        "transport_maps = inline:{{ dev.test=lmtp:[127.0.0.1]:{}, other.test=lmtp:[127.0.0.1]:{} }}\nrelay_domains = dev.test, other.test\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n",
        a.port(),
        b.port()
    );
    let h = Harness::start(&main_cf(a.port(), sender_mx.port(), &extra)).await;
    b.set_mode(Mode::Refuse).await;
    let id = h.enqueue("sender@remote.test", &["u@dev.test", "v@other.test"], &message("split")).await;
    eventually("the first backend has it", Duration::from_secs(30), || a.received().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (env, _) = h.queue.envelope(id).await.unwrap().expect("still queued for the other backend");
    assert!(env.recipients[0].state.is_final());
    assert!(!env.recipients[1].state.is_final());
    b.set_mode(Mode::Normal).await;
    eventually("the second backend has it", Duration::from_secs(30), || b.received().len() == 1).await;
    eventually_async("then it leaves the queue", Duration::from_secs(30), || async { h.queued().await == 0 })
        .await;
    assert_eq!(a.received().len(), 1, "the first recipient was not delivered twice");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_recipient_bounces_and_null_sender_gets_no_bounce() {
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(b.port(), sender_mx.port(), "")).await;
    // The test backend rejects local parts starting with "unknown".
    h.enqueue("sender@remote.test", &["unknown1@dev.test", "known@dev.test"], &message("bounce-me")).await;
    h.enqueue("", &["unknown2@dev.test"], &message("from-null")).await;
    eventually_async("the queue is empty", Duration::from_secs(30), || async { h.queued().await == 0 }).await;
    let reports = sender_mx.received();
    assert_eq!(reports.len(), 1, "one report, for the message with a sender");
    let text = String::from_utf8_lossy(&reports[0].data);
    assert!(text.contains("unknown1@dev.test") && !text.contains("unknown2@dev.test"));
    assert!(text.contains("Status: 5.1.1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_past_its_lifetime_bounces_and_a_delay_warning_goes_out_once() {
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let extra = "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\ndelay_warning_time = 1s\nmaximal_queue_lifetime = 4s\n";
    let h = Harness::start(&main_cf(b.port(), sender_mx.port(), extra)).await;
    b.set_mode(Mode::PerRecipient { pattern: "@".into(), code: 452, text: "4.2.2 Mailbox full".into() })
        .await;
    h.enqueue("sender@remote.test", &["late@dev.test"], &message("late")).await;
    eventually_async("the message expires and leaves the queue", Duration::from_secs(60), || async {
        h.queued().await == 0
    })
    .await;
    eventually("two notices arrive", Duration::from_secs(30), || sender_mx.received().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let subjects: Vec<String> = sender_mx.received().iter().map(|r| subject(&r.data)).collect();
    assert_eq!(
        subjects.iter().filter(|s| s.starts_with("Delayed Mail")).count(),
        1,
        "exactly one delay warning: {subjects:?}"
    );
    let bounce = sender_mx
        .received()
        .into_iter()
        .find(|r| subject(&r.data).starts_with("Undelivered"))
        .expect("bounce");
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("Action: failed") && text.contains("Status: 4.2.2"), "{text}");
    assert!(b.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_backend_gets_nothing_until_resumed_and_then_everything() {
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(b.port(), sender_mx.port(), "")).await;
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    h.enqueue("sender@remote.test", &["first@dev.test"], &message("first")).await;
    eventually("the backend is known", Duration::from_secs(30), || b.received().len() == 1).await;
    h.handle.pause(&name, None, false).expect("known backend");
    for i in 0..5 {
        h.enqueue("sender@remote.test", &["p@dev.test"], &message(&format!("paused-{i}"))).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.received().len(), 1, "nothing while paused");
    let snap = h.handle.list().into_iter().find(|s| s.snapshot.name == name).unwrap();
    assert_eq!(snap.snapshot.paused_until, Some(u64::MAX));
    h.handle.resume(&name, false).expect("resume");
    eventually("everything after resume", Duration::from_secs(30), || b.received().len() == 6).await;
    assert!(h.handle.pause("lmtp:[192.0.2.1]:24", None, false).is_err(), "unknown backend");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_survives_a_restart_and_probes_its_backend_with_one_connection() {
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let cf = main_cf(
        b.port(),
        sender_mx.port(),
        "sluice_breaker_cooldown = 60s\nsluice_breaker_max_cooldown = 60s\n",
    );
    let h = Harness::start(&cf).await;
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    b.set_mode(Mode::Refuse).await;
    for i in 0..6 {
        h.enqueue("sender@remote.test", &["x@dev.test"], &message(&format!("r{i}"))).await;
    }
    eventually("the breaker opens", Duration::from_secs(30), || h.breaker(&name) == Some("open")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (dir, cf) = h.stop().await;

    // The restarted MX remembers the backend was sick: its breaker comes
    // back open. The backend is reachable again, so the first connect
    // probe (due at once after a restart: it costs one connection and no
    // message) lets a trial through, and the backlog follows within
    // seconds, not at the trial time stored a minute ahead.
    let h = Harness::start_in(dir, &cf).await;
    let snap = h.handle.list().into_iter().find(|s| s.snapshot.name == name).expect("restored");
    assert_eq!(snap.breaker_name(), "open");
    b.set_mode(Mode::Normal).await;
    eventually("the backlog delivered", Duration::from_secs(15), || b.received().len() == 6).await;
    assert_eq!(h.breaker(&name), Some("closed"));
    assert!(b.peak_connections() <= 4, "peak {} connections", b.peak_connections());
    eventually_async("an empty queue", Duration::from_secs(10), || async { h.queued().await == 0 }).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_deliveries_in_flight_finish_and_records_them() {
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let h = Harness::start(&main_cf(b.port(), sender_mx.port(), "")).await;
    // Each delivery takes a second: the stop comes while some are under way
    // and the rest wait for a slot.
    b.set_mode(Mode::Slow { base: Duration::from_millis(1000), capacity: 100, overload_at: None }).await;
    for i in 0..6 {
        h.enqueue("sender@remote.test", &["x@dev.test"], &message(&format!("stop-{i}"))).await;
    }
    eventually("deliveries are under way", Duration::from_secs(30), || b.peak_transactions() > 0).await;
    let (dir, cf) = h.stop().await;
    let finished = b.received().len();
    assert!(finished >= 1, "the deliveries in flight were let finish");
    assert!(finished < 6, "the waiting ones were not started after the stop");

    b.set_mode(Mode::Normal).await;
    let h = Harness::start_in(dir, &cf).await;
    eventually_async("the rest is delivered after the restart", Duration::from_secs(30), || async {
        h.queued().await == 0
    })
    .await;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in b.received() {
        *seen.entry(subject(&r.data)).or_default() += 1;
    }
    for i in 0..6 {
        assert_eq!(seen.get(&format!("stop-{i}")), Some(&1), "stop-{i} delivered exactly once: {seen:?}");
    }
    h.stop().await;
}

/// New mail is not starved by a drain: with a backlog parked on a slow
/// backend (its in-memory queue full, the rest waiting on disk), a message
/// that arrives is called back ahead of the backlog parked before it, as
/// Postfix's qmgr takes turns between incoming and deferred mail. Counted
/// in deliveries, not in time: in plain parking order it would come after
/// most of the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_mail_during_a_drain_is_delivered_within_the_first_deliveries() {
    const OLD: usize = 150;
    const WITHIN: usize = 30;
    let b = Backend::start(Proto::Lmtp).await;
    let sender_mx = Backend::start(Proto::Smtp).await;
    let tuning = sluice::delivery::Tuning { backend_queue_limit: Some(4), ..Default::default() };
    let h = Harness::start_tuned(
        &main_cf(b.port(), sender_mx.port(), "qmgr_message_active_limit = 16\n"),
        tuning,
    )
    .await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(20), capacity: 1, overload_at: None }).await;
    for i in 0..OLD {
        h.enqueue("sender@remote.test", &["old@dev.test"], &message(&format!("old-{i}"))).await;
    }
    eventually("the drain is under way", Duration::from_secs(30), || b.received().len() >= 4).await;
    let before = b.received().len();
    h.enqueue("sender@remote.test", &["new@dev.test"], &message("new")).await;
    eventually("the new message arrives", Duration::from_secs(120), || {
        b.received().iter().any(|r| subject(&r.data) == "new")
    })
    .await;
    let at = b.received().iter().position(|r| subject(&r.data) == "new").expect("delivered");
    let ahead = at.saturating_sub(before);
    let left = OLD - at.min(OLD);
    assert!(
        ahead <= WITHIN,
        "{ahead} deliveries went before the new message ({left} of the backlog were still queued behind it)"
    );
    eventually_async("the backlog drains too", Duration::from_secs(120), || async { h.queued().await == 0 })
        .await;
    assert_eq!(b.received().len(), OLD + 1, "each message once");
    h.stop().await;
}
