//! Behaviour of the queue through its public API, against a real RocksDB in
//! a temporary directory.

mod support;

use sluice_queue::{
    AcceptLimits, BackendRecord, BreakerPosition, Error, Filter, Options, Outcome, Queue, QueueId, RcptState,
    Recorded,
};
use support::{Rng, T0, assert_empty, delivered, envelope, open, reopen};

#[tokio::test]
async fn small_message_is_stored_and_due_at_commit_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut env = envelope("a@example.org", &["b@example.net", "c@example.net"]);
    env.arrival = T0;
    let id = q.enqueue(env.clone(), b"Subject: hi\r\n\r\nhello\r\n", T0).await.unwrap();

    let (stored, due) = q.envelope(id).await.unwrap().expect("stored");
    assert_eq!(due, Some(T0));
    assert_eq!(stored.size, 22, "size is set from the body");
    assert_eq!(stored.recipients, env.recipients);
    assert_eq!(q.body(id).await.unwrap(), b"Subject: hi\r\n\r\nhello\r\n");
    assert_eq!(q.next_due().await.unwrap(), Some(T0));

    let s = q.stats().await;
    assert_eq!((s.messages, s.bytes, s.held, s.recipients_pending), (1, 22, 0, 2));
    assert_eq!(s.oldest_arrival, Some(T0));
    let w = q.writer_stats();
    assert!(w.syncs >= 1 && w.changes >= 1, "{w:?}");
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 0, "a one-chunk body needs no draft marker");
    // The printed form parses back.
    assert_eq!(id.to_string().parse::<QueueId>().unwrap(), id);
}

#[tokio::test]
async fn fifty_megabyte_message_round_trips_intact() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), &Options::default(), T0).unwrap();
    let mut rng = Rng::new(50);
    let mut body = vec![0u8; 50 * 1024 * 1024];
    for b in body.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        b.copy_from_slice(&r[..b.len()]);
    }
    let mut draft = q.begin();
    // Odd-sized pieces, as a session reading from a socket would hand them.
    for piece in body.chunks(65_537) {
        draft.append(piece).await.unwrap();
    }
    assert_eq!(draft.len(), body.len() as u64);
    let id = draft.commit(envelope("big@example.org", &["x@example.net"]), T0).await.unwrap();
    assert!(q.body(id).await.unwrap() == body, "body differs before reopen");

    let q = reopen(q, dir.path(), T0).await;
    assert!(q.body(id).await.unwrap() == body, "body differs after reopen");
    assert_eq!(q.stats().await.bytes, body.len() as u64);
    let claimed = q.claim_due(T0, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(q.record(id, &[(0, delivered())], T0, T0).await.unwrap(), Recorded::Removed);
    assert!(matches!(q.body(id).await, Err(Error::NotFound(x)) if x == id));
    assert_empty(&q).await;
}

#[tokio::test]
async fn bodies_on_and_around_chunk_boundaries_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut ids = Vec::new();
    for (i, len) in [0usize, 1, 999, 1000, 1001, 2000, 2001, 5500].into_iter().enumerate() {
        let body: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let mut d = q.begin();
        // Appends of varied sizes, including empty ones.
        for piece in body.chunks(333) {
            d.append(piece).await.unwrap();
            d.append(&[]).await.unwrap();
        }
        let id = d.commit(envelope("", &["r@example.net"]), T0).await.unwrap();
        ids.push((id, body));
    }
    let q = reopen(q, dir.path(), T0).await;
    for (id, body) in &ids {
        assert_eq!(&q.body(*id).await.unwrap(), body, "length {}", body.len());
        assert_eq!(q.envelope(*id).await.unwrap().unwrap().0.size, body.len() as u64);
    }
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 0);
    let claimed = q.claim_due(T0, 100).await.unwrap();
    for m in &claimed {
        q.record(m.id, &[(0, delivered())], T0, T0).await.unwrap();
    }
    assert_empty(&q).await;
}

#[tokio::test]
async fn aborted_dropped_and_crashed_drafts_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let body = vec![b'x'; 10_500];

    let mut aborted = q.begin();
    aborted.append(&body).await.unwrap();
    aborted.abort().await.unwrap();

    let mut dropped = q.begin();
    dropped.append(&body).await.unwrap();
    drop(dropped);

    let small = q.begin();
    drop(small);

    // A crash between chunk writes and commit: the draft's destructor never
    // runs, its chunks and marker stay on disk until recovery.
    let mut crashed = q.begin();
    crashed.append(&body).await.unwrap();
    crashed.debug_abandon();

    q.close().await.unwrap();
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 1, "only the forgotten draft is left");
    assert_eq!(q.debug_table_len("bodies").await.unwrap(), 10);
    drop(q);

    let q = open(dir.path(), T0);
    assert_empty(&q).await;
    assert_eq!(q.next_due().await.unwrap(), None);
}

/// Reads a draft's body back chunk by chunk, as a mail filter is fed it.
async fn read_back(d: &sluice_queue::Draft) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(c) = d.read_chunk(n).await.unwrap() {
        out.extend_from_slice(&c);
        n += 1;
    }
    out
}

#[tokio::test]
async fn a_head_slot_draft_commits_its_header_section_in_front() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    for len in [0usize, 10, 1000, 2500] {
        let body: Vec<u8> = (0..len).map(|j| b'a' + (j % 26) as u8).collect();
        let mut d = q.begin_with_head();
        for piece in body.chunks(300) {
            d.append(piece).await.unwrap();
        }
        assert_eq!(read_back(&d).await, body, "read back before commit ({len} bytes)");
        let head = b"Received: by mx\r\nSubject: edited\r\n\r\n".to_vec();
        let id = d.commit_with_head(head.clone(), envelope("a@x", &["b@y"]), T0).await.unwrap();
        let mut whole = head;
        whole.extend_from_slice(&body);
        assert_eq!(q.body(id).await.unwrap(), whole);
        assert_eq!(q.envelope(id).await.unwrap().unwrap().0.size, whole.len() as u64);
    }
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 0);
    // A plain draft has no slot for a header section.
    let plain = q.begin();
    assert!(plain.commit_with_head(b"X: y\r\n".to_vec(), envelope("a@x", &["b@y"]), T0).await.is_err());
}

#[tokio::test]
async fn a_replaced_body_leaves_nothing_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let old = vec![b'o'; 5500];
    let new = vec![b'n'; 1700];
    let mut d = q.begin_with_head();
    d.append(&old).await.unwrap();
    d.restart_body().await.unwrap();
    assert_eq!(d.len(), 0);
    assert_eq!(d.read_chunk(0).await.unwrap(), None);
    for piece in new.chunks(999) {
        d.append(piece).await.unwrap();
    }
    assert_eq!(read_back(&d).await, new);
    let id = d.commit_with_head(b"H: v\r\n\r\n".to_vec(), envelope("a@x", &["b@y"]), T0).await.unwrap();
    assert_eq!(q.body(id).await.unwrap(), [b"H: v\r\n\r\n".as_slice(), &new].concat());
    // Head, one full chunk, the last part: the old chunks are gone.
    assert_eq!(q.debug_table_len("bodies").await.unwrap(), 3);

    // Replaced, then dropped or left by a crash: nothing remains.
    let mut dropped = q.begin_with_head();
    dropped.append(&old).await.unwrap();
    dropped.restart_body().await.unwrap();
    dropped.append(&new).await.unwrap();
    drop(dropped);
    let mut crashed = q.begin_with_head();
    crashed.append(&old).await.unwrap();
    crashed.restart_body().await.unwrap();
    crashed.append(&new).await.unwrap();
    crashed.debug_abandon();
    q.close().await.unwrap();
    drop(q);
    let q = open(dir.path(), T0);
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 0);
    assert_eq!(q.debug_table_len("bodies").await.unwrap(), 3, "only the committed message's chunks");
}

#[tokio::test]
async fn claim_returns_due_messages_oldest_due_first_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut ids = Vec::new();
    for i in 0..5u64 {
        // Committed in this order but due in reverse.
        ids.push(q.enqueue(envelope("", &["r@example.net"]), b"x", T0 + 100 - i * 10).await.unwrap());
    }
    assert_eq!(q.claim_due(T0, 10).await.unwrap(), vec![], "nothing due yet");
    assert_eq!(q.next_due().await.unwrap(), Some(T0 + 60));

    let first = q.claim_due(T0 + 100, 3).await.unwrap();
    let got: Vec<_> = first.iter().map(|m| (m.id, m.due)).collect();
    assert_eq!(got, vec![(ids[4], T0 + 60), (ids[3], T0 + 70), (ids[2], T0 + 80)]);
    assert_eq!(q.next_due().await.unwrap(), Some(T0 + 90), "claimed ones leave the schedule");
    assert_eq!(q.envelope(ids[4]).await.unwrap().unwrap().1, None, "in flight: no due time");

    let second = q.claim_due(T0 + 1000, 10).await.unwrap();
    assert_eq!(second.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[1], ids[0]]);
    assert_eq!(q.claim_due(T0 + 1000, 10).await.unwrap(), vec![]);
    assert_eq!(q.next_due().await.unwrap(), None);
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 5);
    assert_eq!(q.claim_due(T0 + 1000, 0).await.unwrap(), vec![]);
}

#[tokio::test]
async fn record_reschedules_until_every_recipient_is_final_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q
        .enqueue(
            envelope("s@example.org", &["a@example.net", "b@example.net", "c@example.net"]),
            &[7; 3000],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(q.claim_due(T0, 10).await.unwrap().len(), 1);
    let results = [
        (0, delivered()),
        (1, Outcome::Deferred { reply: "451 4.3.0 try later".into() }),
        (2, Outcome::Postponed),
        (9, delivered()), // no such recipient: ignored
    ];
    let next = T0 + 60_000;
    assert_eq!(q.record(id, &results, next, T0 + 5).await.unwrap(), Recorded::Scheduled(next));

    let (env, due) = q.envelope(id).await.unwrap().unwrap();
    assert_eq!(due, Some(next));
    assert_eq!(env.recipients[0].state, RcptState::Delivered { at: T0 + 5, reply: "250 2.0.0 ok".into() });
    assert_eq!(env.recipients[1].state, RcptState::Deferred { reply: "451 4.3.0 try later".into() });
    assert_eq!(env.recipients[2].state, RcptState::Pending);
    assert_eq!(env.recipients.iter().map(|r| r.attempts).collect::<Vec<_>>(), vec![1, 1, 0]);
    assert_eq!(q.stats().await.recipients_pending, 2);
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 0);
    assert_eq!(q.claim_due(next - 1, 10).await.unwrap(), vec![]);

    let again = q.claim_due(next, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].envelope, env);
    let results = [(1, Outcome::Bounced { reply: "550 5.1.1 no".into() }), (2, delivered())];
    assert_eq!(q.record(id, &results, next + 1, next).await.unwrap(), Recorded::Removed);
    assert_eq!(q.envelope(id).await.unwrap(), None);
    assert!(matches!(q.record(id, &results, next, next).await, Err(Error::NotFound(_))));
    assert_empty(&q).await;
}

#[tokio::test]
async fn recovery_makes_in_flight_mail_due_again_within_the_spread() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(q.enqueue(envelope("", &["r@example.net"]), b"body", T0).await.unwrap());
    }
    let held = q.enqueue(envelope("", &["h@example.net"]), b"held", T0).await.unwrap();
    let claimed = q.claim_due(T0, 100).await.unwrap();
    assert_eq!(claimed.len(), 11);
    q.hold(&[held]).await.unwrap();
    drop(q); // no close: as after a crash, the claims are all there is

    let t1 = T0 + 3_600_000;
    let q = open(dir.path(), t1);
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 0);
    let mut dues = Vec::new();
    for id in &ids {
        let (_, due) = q.envelope(*id).await.unwrap().unwrap();
        let due = due.expect("scheduled again");
        assert!((t1..=t1 + 10_000).contains(&due), "due {due} outside the spread");
        dues.push(due);
    }
    dues.sort_unstable();
    dues.dedup();
    assert!(dues.len() > 5, "spread over the window, not all at once: {dues:?}");
    let (env, due) = q.envelope(held).await.unwrap().unwrap();
    assert!(env.held && due.is_none(), "a held message stays held");
    assert!(q.next_due().await.unwrap().unwrap() >= t1);
    assert_eq!(q.claim_due(t1 + 10_000, 100).await.unwrap().len(), 10);
}

#[tokio::test]
async fn deleting_an_in_flight_message_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["a@example.net", "b@example.net"]), &[1; 4500], T0).await.unwrap();
    assert_eq!(q.claim_due(T0, 1).await.unwrap().len(), 1);
    assert_eq!(q.delete(&[id, id]).await.unwrap(), 1);
    let deferred = [(0, Outcome::Deferred { reply: "451".into() })];
    assert!(matches!(q.record(id, &deferred, T0 + 1, T0).await, Err(Error::NotFound(_))));
    assert!(matches!(q.update_envelope(id, |e| e.delay_warned = true).await, Err(Error::NotFound(_))));
    assert_eq!(q.envelope(id).await.unwrap(), None);
    assert_eq!(q.delete(&[id]).await.unwrap(), 0);
    assert_empty(&q).await;
}

#[tokio::test]
async fn corrupt_envelope_is_quarantined_and_the_others_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut good = Vec::new();
    for i in 0..3u8 {
        good.push(q.enqueue(envelope("", &["r@example.net"]), &[i; 10], T0).await.unwrap());
    }
    // Garbage under a new ID, in the schedule like any message.
    let bad = QueueId::from_micros(good[2].as_micros() + 1);
    q.debug_put_raw_envelope(bad, b"\x01\xff\xff garbage", Some(T0)).await.unwrap();
    assert_eq!(q.stats().await.messages, 4);

    let claimed = q.claim_due(T0, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), good);
    let s = q.stats().await;
    assert_eq!((s.messages, s.quarantined), (3, 1));
    let quarantined = q.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!((quarantined[0].table.as_str(), quarantined[0].key.clone()), ("envelopes", bad.to_string()));
    assert_eq!(quarantined[0].size, 11);
    assert_eq!(q.envelope(bad).await.unwrap(), None, "moved aside, not left in place");

    // A direct lookup reports it; a listing skips it; both move it aside.
    let bad2 = QueueId::from_micros(bad.as_micros() + 1);
    q.debug_put_raw_envelope(bad2, &[9, 9, 9], None).await.unwrap();
    assert!(matches!(q.envelope(bad2).await, Err(Error::Corrupt { key, .. }) if key == bad2.to_string()));
    let bad3 = QueueId::from_micros(bad.as_micros() + 2);
    q.debug_put_raw_envelope(bad3, &[], None).await.unwrap();
    let listed = q.list(Filter::default()).await.unwrap();
    assert_eq!(listed.iter().map(|l| l.0).collect::<Vec<_>>(), good);
    assert_eq!(q.quarantined(10).await.unwrap().len(), 3);
    assert_eq!(q.stats().await.messages, 3);
    for (i, id) in good.iter().enumerate() {
        assert_eq!(q.body(*id).await.unwrap(), vec![i as u8; 10]);
    }
}

#[tokio::test]
async fn damaged_body_is_reported_and_the_message_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["r@example.net"]), &[5; 2500], T0).await.unwrap();
    let other = q.enqueue(envelope("", &["r@example.net"]), &[6; 2500], T0).await.unwrap();
    q.debug_delete_chunk(id, 1).await.unwrap();
    assert!(matches!(q.body(id).await, Err(Error::Corrupt { .. })));
    assert_eq!(q.envelope(id).await.unwrap(), None);
    let s = q.stats().await;
    assert_eq!((s.messages, s.bytes, s.recipients_pending, s.quarantined), (1, 2500, 1, 1));
    assert_eq!(q.body(other).await.unwrap(), vec![6; 2500]);
    assert_eq!(q.claim_due(T0, 10).await.unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), vec![other]);
}

#[tokio::test]
async fn held_mail_is_not_scheduled_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["r@example.net"]), b"x", T0).await.unwrap();
    let other = q.enqueue(envelope("", &["r@example.net"]), b"y", T0 + 5).await.unwrap();
    assert_eq!(q.hold(&[id]).await.unwrap(), 1);
    assert_eq!(q.hold(&[id]).await.unwrap(), 0, "already held");
    assert_eq!(q.stats().await.held, 1);
    assert_eq!(q.next_due().await.unwrap(), Some(T0 + 5));
    let held = q.list(Filter { held: Some(true), ..Filter::default() }).await.unwrap();
    assert_eq!(held.iter().map(|h| (h.0, h.2)).collect::<Vec<_>>(), vec![(id, None)]);
    assert_eq!(q.claim_due(T0 + 10, 10).await.unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), vec![other]);

    // Release wakes the scheduler and makes it due at the release time.
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.changed().await });
    tokio::task::yield_now().await;
    assert_eq!(q.release(&[id, other], T0 + 20).await.unwrap(), 1);
    waiter.await.unwrap();
    assert_eq!(q.envelope(id).await.unwrap().unwrap().1, Some(T0 + 20));
    assert_eq!(q.stats().await.held, 0);
    assert_eq!(q.claim_due(T0 + 20, 10).await.unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
}

#[tokio::test]
async fn hold_during_delivery_keeps_the_result_out_of_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["a@example.net", "b@example.net"]), b"x", T0).await.unwrap();
    assert_eq!(q.claim_due(T0, 10).await.unwrap().len(), 1);
    assert_eq!(q.hold(&[id]).await.unwrap(), 1);
    let r = q.record(id, &[(0, delivered())], T0 + 100, T0).await.unwrap();
    assert_eq!(r, Recorded::Scheduled(T0 + 100));
    assert_eq!(q.next_due().await.unwrap(), None);
    assert_eq!(q.release(&[id], T0 + 50).await.unwrap(), 1);
    assert_eq!(q.envelope(id).await.unwrap().unwrap().1, Some(T0 + 50));
    assert_eq!(q.debug_table_len("schedule").await.unwrap(), 1);
}

#[tokio::test]
async fn requeue_makes_waiting_mail_due_now() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(q.enqueue(envelope("", &["r@example.net"]), b"x", T0).await.unwrap());
    }
    let due_now = q.enqueue(envelope("", &["r@example.net"]), b"x", T0).await.unwrap();
    for m in q.claim_due(T0, 3).await.unwrap() {
        let deferred = [(0, Outcome::Deferred { reply: "451".into() })];
        q.record(m.id, &deferred, T0 + 3_600_000, T0).await.unwrap();
    }
    assert_eq!(
        q.requeue(Some(&[ids[0], due_now]), T0 + 10).await.unwrap(),
        1,
        "already-due mail is not moved"
    );
    assert_eq!(q.envelope(ids[0]).await.unwrap().unwrap().1, Some(T0 + 10));
    assert_eq!(q.requeue(None, T0 + 20).await.unwrap(), 2);
    let due: Vec<_> = q.claim_due(T0 + 20, 10).await.unwrap().iter().map(|m| (m.id, m.due)).collect();
    assert_eq!(due, vec![(due_now, T0), (ids[0], T0 + 10), (ids[1], T0 + 20), (ids[2], T0 + 20)]);
    assert_eq!(q.requeue(None, T0 + 30).await.unwrap(), 0, "in-flight mail is not requeued");
}

#[tokio::test]
async fn list_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let a = q.enqueue(envelope("", &["x@Example.NET"]), b"1", T0).await.unwrap();
    let b = q.enqueue(envelope("", &["y@other.org", "z@example.net"]), b"2", T0).await.unwrap();
    let c = q.enqueue(envelope("", &["w@other.org"]), b"3", T0).await.unwrap();
    let claimed = q.claim_due(T0, 1).await.unwrap();
    assert_eq!(claimed[0].id, a);
    q.record(a, &[(0, Outcome::Deferred { reply: "451".into() })], T0 + 9, T0).await.unwrap();

    let ids = |v: Vec<(QueueId, _, _)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
    let by_domain = Filter { rcpt_domain: Some("example.net".into()), ..Filter::default() };
    assert_eq!(ids(q.list(by_domain).await.unwrap()), vec![a, b]);
    assert_eq!(ids(q.list(Filter { deferred_only: true, ..Filter::default() }).await.unwrap()), vec![a]);
    let page1 = q.list(Filter { limit: Some(2), ..Filter::default() }).await.unwrap();
    assert_eq!(page1.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(), vec![(a, Some(T0 + 9)), (b, Some(T0))]);
    let page2 = q.list(Filter { after: Some(b), limit: Some(2), ..Filter::default() }).await.unwrap();
    assert_eq!(ids(page2), vec![c]);
    assert_eq!(ids(q.list(Filter { held: Some(true), ..Filter::default() }).await.unwrap()), vec![]);
}

#[tokio::test]
async fn update_envelope_changes_flags_but_not_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let id = q.enqueue(envelope("", &["r@example.net"]), b"abc", T0 + 7).await.unwrap();
    q.update_envelope(id, |e| {
        e.delay_warned = true;
        e.size = 999; // not the caller's to change
    })
    .await
    .unwrap();
    let (env, due) = q.envelope(id).await.unwrap().unwrap();
    assert!(env.delay_warned);
    assert_eq!((env.size, due), (3, Some(T0 + 7)));
    assert_eq!(q.debug_table_len("schedule").await.unwrap(), 1);
}

#[tokio::test]
async fn backend_records_persist() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    let open_rec = BackendRecord {
        breaker: BreakerPosition::Open,
        failed_probes: 3,
        opened_at: Some(T0),
        probe_at: Some(T0 + 30_000),
        paused_until: None,
        last_error: Some("421 4.3.2 busy".into()),
        paused_here: false,
    };
    q.put_backend("lmtp:mbox1", &BackendRecord::default()).await.unwrap();
    q.put_backend("lmtp:mbox2", &open_rec).await.unwrap();
    let own_pause = BackendRecord { paused_until: Some(u64::MAX), paused_here: true, ..Default::default() };
    q.put_backend("lmtp:mbox1", &own_pause).await.unwrap();
    let q = reopen(q, dir.path(), T0).await;
    let got = q.backends().await.unwrap();
    assert_eq!(got, vec![("lmtp:mbox1".to_owned(), own_pause), ("lmtp:mbox2".to_owned(), open_rec),]);
}

#[tokio::test]
async fn admit_applies_high_water_marks_and_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), T0);
    q.admit(&AcceptLimits::default()).unwrap();
    q.enqueue(envelope("", &["r@example.net"]), &[0; 100], T0).await.unwrap();
    assert!(matches!(
        q.admit(&AcceptLimits { max_messages: 1, ..AcceptLimits::default() }),
        Err(Error::Full { messages: 1, bytes: 100 })
    ));
    assert!(matches!(
        q.admit(&AcceptLimits { max_bytes: 100, ..AcceptLimits::default() }),
        Err(Error::Full { .. })
    ));
    q.admit(&AcceptLimits { max_messages: 2, max_bytes: 101, min_free: 1 }).unwrap();
    assert!(matches!(
        q.admit(&AcceptLimits { min_free: u64::MAX, ..AcceptLimits::default() }),
        Err(Error::DiskLow { .. })
    ));
}
