//! The queue's life across opens, writers and concurrency, through its
//! public API against a real RocksDB in a temporary directory: one writer
//! at a time and read-only access, IDs and counters across restarts,
//! commits waking the scheduler and sharing fsyncs, cancelled claims, and
//! the claim of recent mail beside the backlog, one synced batch per
//! recorded result, and the idle writer's sync of buffered changes.

mod support;

use std::time::Duration;

use sluice_queue::{Error, Filter, Outcome, Queue, QueueId, RcptState, Recorded};
use support::{T0, assert_empty, body_for, delivered, envelope, open, opts, reopen};

#[tokio::test]
async fn a_second_writer_is_locked_out_and_read_only_access_works() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["r@example.net"]), b"kept", T0).await.unwrap();
    assert!(matches!(Queue::open(dir.path(), &opts(), T0), Err(Error::Locked(_))));
    q.close().await.unwrap();
    assert!(matches!(q.enqueue(envelope("", &["r@example.net"]), b"late", T0).await, Err(Error::Closed)));
    q.close().await.unwrap();
    drop(q);

    let ro = Queue::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.list(Filter::default()).await.unwrap().len(), 1);
    assert_eq!(ro.body(id).await.unwrap(), b"kept");
    assert_eq!(ro.stats().await.messages, 1);
    assert!(matches!(ro.hold(&[id]).await, Err(Error::ReadOnly)));
    assert!(matches!(ro.claim_due(T0, 1).await, Err(Error::ReadOnly)));
    assert!(matches!(ro.enqueue(envelope("", &["r@example.net"]), b"x", T0).await, Err(Error::ReadOnly)));
    // A read-only open takes no lock: the daemon can start meanwhile.
    let q = open(dir.path(), T0);
    assert_eq!(q.stats().await.messages, 1);
}

#[tokio::test]
async fn ids_and_counters_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut last = QueueId::from_micros(0);
    for _ in 0..3 {
        let id = q.enqueue(envelope("", &["a@example.net", "b@example.net"]), &[3; 1500], T0).await.unwrap();
        assert!(id > last);
        last = id;
    }
    q.hold(&[last]).await.unwrap();
    let before = q.stats().await;
    let q = reopen(q, dir.path(), T0).await;
    assert_eq!(q.stats().await, before);
    // Remove everything: the next ID must still be larger than any issued.
    let all: Vec<_> = q.list(Filter::default()).await.unwrap().into_iter().map(|x| x.0).collect();
    assert_eq!(q.delete(&all).await.unwrap(), 3);
    let q = reopen(q, dir.path(), T0).await;
    assert_empty(&q).await;
    assert!(q.begin().id() > last);
}

#[tokio::test]
async fn commit_wakes_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.changed().await });
    tokio::task::yield_now().await;
    q.enqueue(envelope("", &["r@example.net"]), b"x", T0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiter).await.expect("woken").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..20 {
                let d = q.begin();
                let id = d.id();
                let body = body_for(id, 1000);
                let mut d = d;
                d.append(&body).await.unwrap();
                ids.push(d.commit(envelope("", &["r@example.net"]), T0).await.unwrap());
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(q.stats().await.messages, 640);
    let w = q.writer_stats();
    assert!(w.changes >= 640 && w.syncs <= w.changes, "{w:?}");
    for id in all {
        assert_eq!(q.body(id).await.unwrap(), body_for(id, 1000));
    }
}

#[tokio::test]
async fn a_cancelled_claim_puts_its_messages_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(q.enqueue(envelope("", &["r@example.net"]), b"x", T0).await.unwrap());
    }
    // Polled once, then dropped: the claim is under way (this test's
    // single-threaded runtime has not run it yet) and nobody is left to
    // receive its messages.
    let mut cancelled = Box::pin(q.claim_due(T0, 10));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(cancelled.as_mut().poll(&mut cx).is_pending());
    drop(cancelled);
    let got = q.claim_due(T0, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|m| (m.id, m.due)).collect::<Vec<_>>(),
        ids.iter().map(|id| (*id, T0)).collect::<Vec<_>>()
    );
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 5);
    assert_eq!(q.debug_table_len("schedule").await.unwrap(), 0);
}

#[tokio::test]
async fn claim_recent_takes_only_what_became_due_lately() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    // A backlog due long ago, then new mail.
    let mut old = Vec::new();
    for i in 0..5 {
        old.push(q.enqueue(envelope("old@example.org", &["r@example.net"]), b"old", T0 + i).await.unwrap());
    }
    let new1 = q.enqueue(envelope("new@example.org", &["r@example.net"]), b"new", T0 + 10_000).await.unwrap();
    let new2 = q.enqueue(envelope("new@example.org", &["r@example.net"]), b"new", T0 + 10_001).await.unwrap();
    let ids = |v: Vec<sluice_queue::QueuedMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let now = T0 + 20_000;

    assert_eq!(ids(q.claim_recent(T0 + 9_000, now, 1).await.unwrap()), [new1]);
    // The oldest due still come first for claim_due; a recent claim did
    // not move the floor past them.
    assert_eq!(ids(q.claim_due(now, 2).await.unwrap()), old[..2]);
    assert_eq!(ids(q.claim_recent(T0 + 9_000, now, 10).await.unwrap()), [new2]);
    assert_eq!(ids(q.claim_recent(T0 + 9_000, now, 10).await.unwrap()), []);
    assert_eq!(ids(q.claim_due(now, 10).await.unwrap()), old[2..]);
    assert_eq!(q.claim_due(now, 10).await.unwrap(), vec![]);
}

/// A delivery's result is written on the writer thread (a job) rather than
/// through `mutate`: it must still be exactly one synced batch, answered
/// only once written, whether it reschedules or removes the message. A
/// claim is buffered: the writer syncs it by itself once it has had
/// nothing to write for a second, and then syncs no more.
#[tokio::test]
async fn each_recorded_result_is_one_synced_batch_and_an_idle_writer_syncs_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let keep =
        q.enqueue(envelope("a@example.org", &["b@example.net", "c@example.net"]), b"x", T0).await.unwrap();
    // Three chunks of `opts().body_chunk`.
    let gone = q.enqueue(envelope("a@example.org", &["d@example.net"]), &[b'y'; 2500], T0).await.unwrap();
    // Changes, batches and fsyncs since `before`.
    let since = |before: sluice_queue::WriterStats| {
        let now = q.writer_stats();
        (now.changes - before.changes, now.writes - before.writes, now.syncs - before.syncs)
    };
    let before = q.writer_stats();
    assert_eq!(q.claim_due(T0, 10).await.unwrap().len(), 2);
    assert_eq!(since(before), (1, 1, 0), "a claim, not fsynced for itself");
    assert_eq!(idle_sync(&q, before).await, 1, "the writer syncs it once idle");
    // Once synced, an idle writer syncs no more.
    let synced = q.writer_stats();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(q.writer_stats(), synced, "nothing written, nothing synced");
    let deferred = Outcome::Deferred { reply: "451 4.3.0 later".into() };

    let before = q.writer_stats();
    assert_eq!(
        q.record(keep, &[(0, delivered()), (1, deferred)], T0 + 60_000, T0).await.unwrap(),
        Recorded::Scheduled(T0 + 60_000)
    );
    assert_eq!(since(before), (1, 1, 1), "a rescheduling result");

    let before = q.writer_stats();
    assert_eq!(q.record(gone, &[(0, delivered())], T0 + 60_000, T0).await.unwrap(), Recorded::Removed);
    assert_eq!(since(before), (1, 1, 1), "a removing result");

    // A result for a message deleted meanwhile writes nothing.
    let before = q.writer_stats();
    assert!(matches!(q.record(gone, &[(0, delivered())], T0, T0).await, Err(Error::NotFound(_))));
    assert_eq!(q.writer_stats(), before, "nothing to write");

    let q = reopen(q, dir.path(), T0 + 1).await;
    let (env, due) = q.envelope(keep).await.unwrap().expect("kept");
    assert_eq!(due, Some(T0 + 60_000));
    assert!(matches!(env.recipients[0].state, RcptState::Delivered { .. }), "{:?}", env.recipients[0]);
    assert!(matches!(env.recipients[1].state, RcptState::Deferred { .. }), "{:?}", env.recipients[1]);
    assert_eq!(q.envelope(gone).await.unwrap(), None);
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 0);
    assert_eq!(q.debug_table_len("schedule").await.unwrap(), 1);
    assert_eq!(q.debug_table_len("bodies").await.unwrap(), 1, "the removed message's chunks went with it");
}

/// Waits (at most 10 s) until the writer has synced since `before`, and
/// says how many syncs it did by the time it had.
async fn idle_sync(q: &Queue, before: sluice_queue::WriterStats) -> u64 {
    for _ in 0..500 {
        let now = q.writer_stats();
        if now.syncs > before.syncs {
            return now.syncs - before.syncs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no sync of the buffered change within 10 s");
}
