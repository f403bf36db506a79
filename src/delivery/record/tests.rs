//! Recording results: the judgement alone (pure, with the jitter pinned),
//! and the whole recording against a real queue in a temporary directory,
//! on tokio's paused clock (nothing here may depend on waiting).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_queue::{Envelope, Filter, Notify, Options, Queue, Recipient};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::delivery::settings::{LiveSettings, Tuning};
use crate::reply::Status;
use crate::resolver::StaticResolver;

const MIN: Duration = Duration::from_secs(300);
const POLICY: Backoff = Backoff { min: MIN, max: Duration::from_secs(4000) };
const NOW: UnixMillis = 1_000_000_000;

fn attempted(verdict: Verdict, text: &str) -> Done {
    Done::Attempted {
        verdict,
        dsn: Status(if verdict == Verdict::Sent { 2 } else { 4 }, 0, 0),
        text: text.into(),
        diagnostic: None,
        remote: Some("mbx1[127.0.0.1]".into()),
        dsn_passed: false,
        lmtp: true,
        backend_trouble: false,
    }
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: "s@sender.test".into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        arrival: NOW - 1000,
        ..Envelope::default()
    }
}

fn done(index: usize, done: Done) -> RcptDone {
    RcptDone { index, done }
}

#[test]
fn a_deferral_waits_the_first_backoff_and_a_postponement_its_own_time() {
    let env = envelope(&["a@x.test", "b@x.test"]);
    let results = vec![
        done(0, attempted(Verdict::Deferred, "451 try later")),
        done(
            1,
            Done::Postponed { until: NOW + 10_000, reason: "breaker open".into(), park: true, shown: true },
        ),
    ];
    let j = judge(&env, results, &POLICY, false, NOW, &mut || 0.5);
    assert_eq!(
        j.outcomes,
        vec![
            (0, Outcome::Deferred { reply: "451 try later".into() }),
            (1, Outcome::Waiting { reply: "breaker open".into() }),
        ]
    );
    assert_eq!(j.next, Some(NOW + 10_000), "the earlier of the two due times");
    // Jitter 0 puts the first retry at exactly the minimal backoff (the
    // spread only ever lengthens it).
    let j = judge(&env, vec![done(0, attempted(Verdict::Deferred, "451"))], &POLICY, false, NOW, &mut || 0.0);
    assert_eq!(j.next, Some(NOW + MIN.as_millis() as u64));
    assert!(!j.expired_any && j.failed.is_empty());
}

#[test]
fn past_its_lifetime_a_deferral_bounces_with_its_reason() {
    let env = envelope(&["a@x.test", "b@x.test"]);
    let results = vec![
        done(0, attempted(Verdict::Deferred, "451 4.3.0 busy")),
        done(1, Done::Postponed { until: NOW, reason: "paused".into(), park: false, shown: false }),
    ];
    let j = judge(&env, results, &POLICY, true, NOW, &mut || 0.5);
    assert_eq!(
        j.outcomes,
        vec![
            (0, Outcome::Bounced { reply: "451 4.3.0 busy".into() }),
            (1, Outcome::Bounced { reply: "paused".into() })
        ]
    );
    assert!(j.expired_any);
    assert_eq!(j.next, None, "nothing left to retry");
    assert_eq!(j.failed.len(), 2, "both are in the bounce (NOTIFY not given: failures are reported)");
}

#[test]
fn success_is_reported_only_when_asked_and_abandoned_results_record_nothing() {
    let mut env = envelope(&["a@x.test", "b@x.test"]);
    env.recipients[0].notify = Notify { specified: true, success: true, ..Notify::default() };
    let results =
        vec![done(0, attempted(Verdict::Sent, "250 ok")), done(1, attempted(Verdict::Sent, "250 ok"))];
    let j = judge(&env, results, &POLICY, false, NOW, &mut || 0.5);
    assert_eq!(j.succeeded.len(), 1);
    assert_eq!(j.succeeded[0].action, Action::Delivered, "LMTP delivers, it does not relay");
    let j = judge(&env, vec![done(0, Done::Abandoned)], &POLICY, false, NOW, &mut || 0.5);
    assert!(j.abandoned && j.outcomes.is_empty());
}

/// A context over a fresh queue in `dir`, with the configuration of `main`.
fn context(dir: &std::path::Path, main: &str) -> Arc<Context> {
    let master = "smtp inet n - y - - smtpd\nlmtp unix - - n - - lmtp\n";
    let config = match Config::from_texts(dir, main, master) {
        Ok(l) => l.config,
        Err(e) => panic!("config should load:\n{e}"),
    };
    let queue = Queue::open(&dir.join("q"), &Options::default(), clock::unix_millis()).expect("queue");
    let settings = LiveSettings::new(Arc::new(ArcSwap::new(config)), Tuning::default());
    Arc::new(Context::new(
        queue,
        Arc::new(StaticResolver::new()),
        settings,
        CancellationToken::new(),
        Vec::new(),
    ))
}

/// Enqueues a message for `rcpts` and claims it, as the claim loop would.
async fn claimed(ctx: &Context, rcpts: &[&str]) -> Arc<InFlight> {
    let env = Envelope {
        sender: "s@sender.test".into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        arrival: clock::unix_millis(),
        ..Envelope::default()
    };
    let now = clock::unix_millis();
    ctx.queue.enqueue(env, b"Subject: t\r\n\r\nbody\r\n", now).await.expect("enqueue");
    let mut msgs = ctx.queue.claim_due(now + 1, 10).await.expect("claim");
    assert_eq!(msgs.len(), 1);
    let window = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("permit");
    Arc::new(InFlight::new(msgs.remove(0), now, window, 1))
}

#[tokio::test(start_paused = true)]
async fn a_deferred_recipient_is_recorded_with_an_attempt_and_its_retry_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), "minimal_backoff_time = 300s\nmaximal_backoff_time = 4000s\n");
    let msg = claimed(&ctx, &["a@x.test"]).await;
    let before = clock::unix_millis();
    let finished =
        msg.complete(None, vec![done(0, attempted(Verdict::Deferred, "451 busy"))]).expect("last share");
    record(&ctx, &msg, finished, &ctx.settings.current()).await;
    let (env, due) = ctx.queue.envelope(msg.id()).await.expect("read").expect("still queued");
    assert_eq!(env.recipients[0].state, RcptState::Deferred { reply: "451 busy".into() });
    assert_eq!(env.recipients[0].attempts, 1);
    // 300 s ± 20 %, kept at or above the minimum.
    let due = due.expect("scheduled");
    assert!(due >= before + 300_000 && due <= clock::unix_millis() + 360_000, "due {due} after {before}");
    assert_eq!(ctx.recorded(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_bounce_queues_the_notice_and_removes_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), "myhostname = mx.sluice.test\n");
    let msg = claimed(&ctx, &["a@x.test"]).await;
    let bounce = Done::Attempted {
        verdict: Verdict::Bounced,
        dsn: Status(5, 1, 1),
        text: "550 5.1.1 no such user".into(),
        diagnostic: Some("550 5.1.1 no such user".into()),
        remote: Some("mbx1[127.0.0.1]".into()),
        dsn_passed: false,
        lmtp: true,
        backend_trouble: false,
    };
    let finished = msg.complete(None, vec![done(0, bounce)]).expect("last share");
    record(&ctx, &msg, finished, &ctx.settings.current()).await;
    assert!(ctx.queue.envelope(msg.id()).await.expect("read").is_none(), "the bounced message left");
    let left = ctx.queue.list(Filter::default()).await.expect("list");
    assert_eq!(left.len(), 1, "one notice queued");
    let notice = &left[0].1;
    assert_eq!(notice.sender, "", "from the null sender");
    assert_eq!(notice.recipients[0].address, "s@sender.test");
    assert!(notice.is_notification);
}

fn bounced() -> Done {
    Done::Attempted {
        verdict: Verdict::Bounced,
        dsn: Status(5, 1, 1),
        text: "550 5.1.1 no such user".into(),
        diagnostic: Some("550 5.1.1 no such user".into()),
        remote: Some("mbx1[127.0.0.1]".into()),
        dsn_passed: false,
        lmtp: true,
        backend_trouble: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_bounce_that_cannot_be_queued_leaves_the_original_deferred() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), "myhostname = mx.sluice.test\nminimal_backoff_time = 300s\n");
    let msg = claimed(&ctx, &["a@x.test", "b@x.test"]).await;
    // b asked for no failure notice: it bounces whatever happens to a's.
    let mut never = msg.envelope().clone();
    never.recipients[1].notify = Notify { specified: true, never: true, ..Notify::default() };
    ctx.queue.update_envelope(msg.id(), |e| e.recipients[1].notify = never.recipients[1].notify).await.unwrap();
    let msg = {
        // Claim again so the in-flight copy carries the NOTIFY change.
        let finished = msg.complete(None, vec![done(0, Done::Abandoned)]);
        drop(finished);
        let now = clock::unix_millis();
        ctx.queue.requeue(Some(&[msg.id()]), now).await.unwrap();
        let mut msgs = ctx.queue.claim_due(now + 1, 10).await.expect("claim");
        let window = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("permit");
        Arc::new(InFlight::new(msgs.remove(0), now, window, 1))
    };
    ctx.queue.debug_fail_commits(true);
    let finished = msg.complete(None, vec![done(0, bounced()), done(1, bounced())]).expect("last share");
    record(&ctx, &msg, finished, &ctx.settings.current()).await;
    let (env, due) = ctx.queue.envelope(msg.id()).await.expect("read").expect("the original is still queued");
    assert!(
        matches!(&env.recipients[0].state, RcptState::Deferred { reply } if reply.contains("550 5.1.1 no such user") && reply.contains("bounce not sent")),
        "{:?}",
        env.recipients[0].state
    );
    assert!(matches!(env.recipients[1].state, RcptState::Bounced { .. }), "no notice was due for b");
    assert!(due.is_some(), "retried later");
    assert_eq!(ctx.queue.list(Filter::default()).await.unwrap().len(), 1, "no notice, the original kept");

    // Once notices can be queued again, the next attempt bounces it for good.
    ctx.queue.debug_fail_commits(false);
    let now = clock::unix_millis();
    ctx.queue.requeue(Some(&[msg.id()]), now).await.unwrap();
    let mut msgs = ctx.queue.claim_due(now + 1, 10).await.expect("claim");
    let window = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("permit");
    let again = Arc::new(InFlight::new(msgs.remove(0), now, window, 1));
    let finished = again.complete(None, vec![done(0, bounced())]).expect("last share");
    record(&ctx, &again, finished, &ctx.settings.current()).await;
    assert!(ctx.queue.envelope(msg.id()).await.unwrap().is_none(), "bounced and removed");
    let left = ctx.queue.list(Filter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].1.is_notification);
}

#[tokio::test(start_paused = true)]
async fn a_bounce_is_never_sent_without_the_original_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), "myhostname = mx.sluice.test\n");
    let msg = claimed(&ctx, &["a@x.test"]).await;
    // The stored body is damaged: the queue moves it to the quarantine
    // when the notice tries to read it.
    ctx.queue.debug_delete_chunk(msg.id(), 0).await.unwrap();
    let finished = msg.complete(None, vec![done(0, bounced())]).expect("last share");
    record(&ctx, &msg, finished, &ctx.settings.current()).await;
    let left = ctx.queue.list(Filter::default()).await.unwrap();
    assert!(left.iter().all(|(_, e, _)| !e.is_notification), "no notice with an empty copy: {left:?}");
    assert_eq!(ctx.queue.stats().await.quarantined, 1, "the damaged message is kept aside, not lost");
}

#[tokio::test(start_paused = true)]
async fn a_notice_returns_the_headers_of_a_large_original_without_reading_it_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options { body_chunk: 1000, ..Options::default() };
    let queue = Queue::open(&dir.path().join("q"), &opts, clock::unix_millis()).expect("queue");
    let mut body = b"Subject: big\r\nX-A: 1\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 50_000));
    let env = Envelope { sender: "s@x.test".into(), recipients: vec![Recipient::new("r@x.test")], ..Envelope::default() };
    let id = queue.enqueue(env, &body, clock::unix_millis()).await.unwrap();
    assert_eq!(returned_part(&queue, id, false).await.unwrap(), b"Subject: big\r\nX-A: 1\r\n");
    assert_eq!(returned_part(&queue, id, true).await.unwrap(), body);
    // A header section without end is cut at a line end.
    let mut endless = Vec::new();
    while endless.len() < RETURNED_HEADERS_MAX + 5000 {
        endless.extend_from_slice(b"X-Filler: 0123456789\r\n");
    }
    let env = Envelope { sender: "s@x.test".into(), recipients: vec![Recipient::new("r@x.test")], ..Envelope::default() };
    let id = queue.enqueue(env, &endless, clock::unix_millis()).await.unwrap();
    let part = returned_part(&queue, id, false).await.unwrap();
    assert!(part.len() <= RETURNED_HEADERS_MAX && part.ends_with(b"\r\n"), "{}", part.len());
}
