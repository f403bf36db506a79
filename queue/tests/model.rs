//! The queue against a model: random sequences of enqueue, claim, record,
//! hold, release, delete, requeue, time passing and restarts, applied both
//! to a real queue and to a `BTreeMap`, compared after every step (sled's
//! approach). The model states the intended semantics plainly; any
//! difference is a bug in one of them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use sluice_queue::{Envelope, Filter, Options, Outcome, Queue, QueueId, Recorded};
use support::envelope;

const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { rcpts: usize, len: usize, held: bool, due_offset: u64 },
    Claim { limit: usize },
    Record { pick: usize, kinds: Vec<u8>, delay: u64 },
    Hold { pick: usize },
    Release { pick: usize },
    Delete { pick: usize },
    Requeue { pick: Option<usize> },
    Advance { ms: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4, 0usize..2500, prop::bool::weighted(0.1), 0u64..3)
            .prop_map(|(rcpts, len, held, due_offset)| Op::Enqueue { rcpts, len, held, due_offset }),
        4 => (0usize..5).prop_map(|limit| Op::Claim { limit }),
        4 => (any::<usize>(), prop::collection::vec(0u8..5, 1..4), 0u64..50)
            .prop_map(|(pick, kinds, delay)| Op::Record { pick, kinds, delay }),
        1 => any::<usize>().prop_map(|pick| Op::Hold { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => prop::option::of(any::<usize>()).prop_map(|pick| Op::Requeue { pick }),
        2 => (1u64..30).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows about one message.
#[derive(Debug, Clone)]
struct Msg {
    env: Envelope,
    body: Vec<u8>,
    due: u64,
    inflight: bool,
}

impl Msg {
    fn scheduled(&self) -> bool {
        !self.env.held && !self.inflight
    }
}

fn options() -> Options {
    // Zero spread: after a restart every in-flight message is due exactly
    // "now", which the model can state.
    Options { recovery_spread: Duration::ZERO, body_chunk: 700 }
}

fn outcome(kind: u8, step: usize) -> Outcome {
    match kind {
        0 => Outcome::Delivered { reply: format!("250 ok {step}") },
        1 => Outcome::Deferred { reply: format!("451 later {step}") },
        2 => Outcome::Bounced { reply: format!("550 no {step}") },
        3 => Outcome::Postponed,
        _ => Outcome::Waiting { reply: format!("delivery temporarily suspended {step}") },
    }
}

fn pick(model: &BTreeMap<QueueId, Msg>, i: usize) -> Option<QueueId> {
    if model.is_empty() { None } else { model.keys().nth(i % model.len()).copied() }
}

async fn check(q: &Queue, model: &BTreeMap<QueueId, Msg>, step: usize) -> Result<(), TestCaseError> {
    let listed = q.list(Filter::default()).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let expected: Vec<_> =
        model.iter().map(|(id, m)| (*id, m.env.clone(), m.scheduled().then_some(m.due))).collect();
    prop_assert_eq!(&listed, &expected, "list differs after step {}", step);

    let s = q.stats().await;
    let pending: usize = model.values().map(|m| m.env.pending()).sum();
    prop_assert_eq!(s.messages, model.len() as u64);
    prop_assert_eq!(s.bytes, model.values().map(|m| m.body.len() as u64).sum::<u64>());
    prop_assert_eq!(s.held, model.values().filter(|m| m.env.held).count() as u64);
    prop_assert_eq!(s.recipients_pending, pending as u64);

    let next = model.values().filter(|m| m.scheduled()).map(|m| m.due).min();
    prop_assert_eq!(q.next_due().await.map_err(|e| TestCaseError::fail(e.to_string()))?, next);
    Ok(())
}

async fn run(ops: Vec<Op>, dir: &Path) -> Result<(), TestCaseError> {
    let fail = |e: sluice_queue::Error| TestCaseError::fail(e.to_string());
    let mut now = T0;
    let mut q = Queue::open(dir, &options(), now).map_err(fail)?;
    let mut model: BTreeMap<QueueId, Msg> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Enqueue { rcpts, len, held, due_offset } => {
                let rcpts: Vec<String> = (0..rcpts).map(|i| format!("r{i}@d{}.example", step % 3)).collect();
                let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                let mut env = envelope("s@example.org", &rcpts);
                env.held = held;
                env.arrival = now;
                let body: Vec<u8> = (0..len).map(|i| (i + step) as u8).collect();
                // Committed "in the past" sometimes, so due order differs
                // from ID order.
                let due = now - due_offset;
                let id = q.enqueue(env.clone(), &body, due).await.map_err(fail)?;
                env.size = len as u64;
                prop_assert!(model.keys().next_back().is_none_or(|last| *last < id), "IDs increase");
                model.insert(id, Msg { env, body, due, inflight: false });
            }
            Op::Claim { limit } => {
                let got = q.claim_due(now, limit).await.map_err(fail)?;
                let mut due: Vec<_> = model
                    .iter()
                    .filter(|(_, m)| m.scheduled() && m.due <= now)
                    .map(|(id, m)| (m.due, *id))
                    .collect();
                due.sort();
                due.truncate(limit);
                let got_keys: Vec<_> = got.iter().map(|m| (m.due, m.id)).collect();
                prop_assert_eq!(&got_keys, &due, "claim differs at step {}", step);
                for m in got {
                    let mm = model.get_mut(&m.id).expect("claimed message is in the model");
                    prop_assert_eq!(&m.envelope, &mm.env);
                    mm.inflight = true;
                }
            }
            Op::Record { pick: p, kinds, delay } => {
                let Some(id) = pick(&model, p) else { continue };
                let results: Vec<(usize, Outcome)> =
                    kinds.iter().enumerate().map(|(i, k)| (i, outcome(*k, step))).collect();
                let next_due = now + delay;
                let got = q.record(id, &results, next_due, now).await.map_err(fail)?;
                let m = model.get_mut(&id).expect("picked from the model");
                for (i, o) in &results {
                    m.env.apply(*i, o, now);
                }
                if m.env.is_done() {
                    model.remove(&id);
                    prop_assert_eq!(got, Recorded::Removed);
                } else {
                    m.due = next_due;
                    m.inflight = false;
                    prop_assert_eq!(got, Recorded::Scheduled(next_due));
                }
            }
            Op::Hold { pick: p } => {
                let Some(id) = pick(&model, p) else { continue };
                let m = model.get_mut(&id).expect("picked");
                let n = q.hold(&[id]).await.map_err(fail)?;
                prop_assert_eq!(n, usize::from(!m.env.held));
                m.env.held = true;
            }
            Op::Release { pick: p } => {
                let Some(id) = pick(&model, p) else { continue };
                let m = model.get_mut(&id).expect("picked");
                let n = q.release(&[id], now).await.map_err(fail)?;
                prop_assert_eq!(n, usize::from(m.env.held));
                if m.env.held {
                    m.env.held = false;
                    m.due = now;
                }
            }
            Op::Delete { pick: p } => {
                let Some(id) = pick(&model, p) else { continue };
                prop_assert_eq!(q.delete(&[id]).await.map_err(fail)?, 1);
                model.remove(&id);
                prop_assert_eq!(q.delete(&[id]).await.map_err(fail)?, 0);
            }
            Op::Requeue { pick: p } => {
                let targets: Vec<QueueId> = match p {
                    Some(p) => pick(&model, p).into_iter().collect(),
                    None => model.keys().copied().collect(),
                };
                let ids = p.map(|_| targets.clone());
                let n = q.requeue(ids.as_deref(), now).await.map_err(fail)?;
                let mut expected = 0;
                for id in targets {
                    let m = model.get_mut(&id).expect("picked");
                    if m.scheduled() && m.due > now {
                        m.due = now;
                        expected += 1;
                    }
                }
                prop_assert_eq!(n, expected);
            }
            Op::Advance { ms } => now += ms,
            Op::Reopen => {
                q.close().await.map_err(fail)?;
                drop(q);
                q = Queue::open(dir, &options(), now).map_err(fail)?;
                for m in model.values_mut() {
                    if m.inflight {
                        m.inflight = false;
                        m.due = now;
                    }
                }
            }
        }
        check(&q, &model, step).await?;
    }
    for (id, m) in &model {
        prop_assert_eq!(&q.body(*id).await.map_err(fail)?, &m.body);
    }
    q.close().await.map_err(fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queue_behaves_like_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run(ops, dir.path()))?;
    }
}
