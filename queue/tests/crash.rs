//! The crash test: acknowledged mail survives `kill -9`.
//!
//! The parent re-runs this test executable as a child (selecting only
//! `crash_child`, which does nothing unless `SLUICE_QUEUE_CRASH_DIR` is
//! set). The child enqueues from several tasks as fast as it can, with
//! bodies derived from each message's queue ID (some spanning several
//! chunks), and prints `ACK <id>` only after the commit returned; a claimer
//! task meanwhile moves messages in flight and defers them (printing
//! `DEFER <id>` once `record` returned), so crashes also land between
//! claims and results. The parent SIGKILLs the child at a random moment,
//! reopens the queue, and checks that every acknowledged ID is there with
//! a byte-identical body, that every acknowledged deferral is there too
//! (the result is written on the writer thread, its own path), that
//! recovery left nothing in
//! flight or half-written, that the counters match the contents, and that
//! IDs never repeat across restarts.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng as _;
use sluice_queue::{Filter, Options, Outcome, Queue, QueueId, RcptState};
use support::{body_for, envelope, wall_millis};

const DIR_VAR: &str = "SLUICE_QUEUE_CRASH_DIR";
const CHUNK: usize = 16 * 1024;
const ROUNDS: usize = 24;
const WRITERS: usize = 8;

fn options() -> Options {
    Options { recovery_spread: Duration::from_secs(1), body_chunk: CHUNK }
}

/// The child: runs only when re-invoked by the parent with `DIR_VAR` set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let q = Queue::open(Path::new(&dir), &options(), wall_millis()).expect("child opens queue");
        for w in 0..WRITERS {
            let q = q.clone();
            tokio::spawn(async move {
                loop {
                    let mut d = q.begin();
                    let id = d.id();
                    let body = body_for(id, CHUNK);
                    for piece in body.chunks(5000) {
                        d.append(piece).await.expect("append");
                    }
                    let rcpt = format!("w{w}@example.net");
                    d.commit(envelope("crash@example.org", &[&rcpt]), wall_millis()).await.expect("commit");
                    // One write(2) per line, after the commit returned.
                    println!("ACK {id}");
                }
            });
        }
        loop {
            let now = wall_millis();
            for m in q.claim_due(now, 20).await.expect("claim") {
                let deferred = [(0, Outcome::Deferred { reply: "451 4.4.1 test".into() })];
                q.record(m.id, &deferred, now + 3_600_000, now).await.expect("record");
                // After `record` returned: the result is acknowledged.
                println!("DEFER {}", m.id);
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
}

/// Acknowledged IDs printed by the child, complete lines only.
fn acked(lines: &[Vec<u8>]) -> Vec<QueueId> {
    printed(lines, b"ACK ")
}

/// IDs of the complete lines starting with `prefix`.
fn printed(lines: &[Vec<u8>], prefix: &[u8]) -> Vec<QueueId> {
    lines
        .iter()
        .filter_map(|l| l.strip_suffix(b"\n"))
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|id| std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()).expect("well-formed line"))
        .collect()
}

async fn verify(dir: &Path, ids: &[QueueId], deferred: &[QueueId], round: usize) -> usize {
    let q = Queue::open(dir, &options(), wall_millis()).expect("reopen after kill");
    // An acknowledged result is as durable as an acknowledged message: its
    // recipient stays deferred, with the attempt counted, after the kill.
    for id in deferred {
        let (env, _) = q.envelope(*id).await.expect("envelope lookup").expect("deferred message is there");
        let r = &env.recipients[0];
        assert!(
            matches!(r.state, RcptState::Deferred { .. }) && r.attempts >= 1,
            "round {round}: the recorded deferral of {id} was lost: {r:?}"
        );
    }
    for id in ids {
        let found = q.envelope(*id).await.expect("envelope lookup");
        assert!(found.is_some(), "round {round}: acknowledged message {id} is missing");
        let body = q.body(*id).await.expect("body");
        assert!(body == body_for(*id, CHUNK), "round {round}: body of {id} differs ({} bytes)", body.len());
    }
    assert_eq!(q.debug_table_len("inflight").await.unwrap(), 0, "recovery leaves nothing in flight");
    assert_eq!(q.debug_table_len("drafts").await.unwrap(), 0, "recovery removes unfinished drafts");
    let listed = q.list(Filter::default()).await.unwrap();
    let s = q.stats().await;
    assert_eq!(s.messages, listed.len() as u64, "round {round}: counters match the contents");
    assert_eq!(s.bytes, listed.iter().map(|l| l.1.size).sum::<u64>());
    assert_eq!(s.quarantined, 0);
    assert_eq!(q.debug_table_len("schedule").await.unwrap(), listed.len(), "one schedule entry each");
    q.close().await.unwrap();
    listed.len()
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = rand::rng();
    let mut all: Vec<QueueId> = Vec::new();
    let mut multi_chunk = 0;
    let mut stored = 0;
    let mut recorded = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let out = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut lines = Vec::new();
        if round % 6 == 5 {
            // Now and then kill it early: during open, recovery or its
            // first commits.
            std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        } else {
            // Otherwise let it get going, then kill it mid-stream.
            loop {
                let line = rx.recv_timeout(Duration::from_secs(120)).expect("child acknowledges a message");
                let first_ack = line.starts_with(b"ACK ");
                lines.push(line);
                if first_ack {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(10..500)));
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("reader thread");
        lines.extend(rx.try_iter());

        let ids = acked(&lines);
        if let (Some(prev), Some(first)) = (all.iter().max(), ids.iter().min()) {
            assert!(first > prev, "round {round}: IDs repeat across restarts ({first} <= {prev})");
        }
        multi_chunk += ids.iter().filter(|id| body_for(**id, CHUNK).len() > CHUNK).count();
        let deferred = printed(&lines, b"DEFER ");
        recorded += deferred.len();
        stored = rt.block_on(verify(dir.path(), &ids, &deferred, round));
        all.extend(ids);
    }
    // Everything ever acknowledged is still there at the end.
    rt.block_on(verify(dir.path(), &all, &[], ROUNDS));
    assert!(stored >= all.len());
    assert!(all.len() >= ROUNDS - ROUNDS / 6, "each normal round acknowledged at least one message");
    assert!(multi_chunk > 0, "some acknowledged bodies spanned several chunks");
    assert!(recorded > 0, "some deferrals were recorded before a kill");
    eprintln!(
        "crash test: {} acknowledged messages over {ROUNDS} kills, {multi_chunk} multi-chunk, {recorded} recorded deferrals",
        all.len()
    );
}
