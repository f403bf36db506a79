//! Gate behaviour: the three controls together, as the dispatcher sees them.

use super::*;
use crate::config::Protocol;

fn settings(initial: u32, max: u32) -> Arc<BackendSettings> {
    let mut s = BackendSettings::new(Protocol::Lmtp);
    s.initial_concurrency = initial;
    s.concurrency_limit = max;
    s.failure_threshold = 3;
    s.failed_cohort_limit = 1;
    s.cooldown = Duration::from_secs(5);
    s.max_cooldown = Duration::from_secs(40);
    Arc::new(s)
}

fn go(a: Admission) -> Permit {
    match a {
        Admission::Go(p) => p,
        other => panic!("expected Go, got {other:?}"),
    }
}

fn id(n: u64) -> QueueId {
    QueueId::from_micros(1_700_000_000_000_000 + n)
}

#[test]
fn never_more_permits_than_the_limit() {
    let g = Gate::new("lmtp:[127.0.0.1]:24", settings(2, 4), None, 0);
    let a = go(g.admit(0));
    let b = go(g.admit(0));
    assert!(matches!(g.admit(0), Admission::WaitSlot));
    // A completed delivery hands its slot back.
    let mono = crate::clock::instant() + Duration::from_millis(10);
    g.report(a, Report::Completed { latency: Some(Duration::from_millis(10)) }, 0, mono);
    let c = go(g.admit(0));
    assert!(matches!(g.admit(0), Admission::WaitSlot));
    assert_eq!(g.snapshot().in_flight, 2);
    drop((b, c));
    assert_eq!((g.snapshot().in_flight, g.snapshot().peak), (0, 2));
}

/// Runs deliveries through the gate against a server whose latency is
/// `shape(n)` for `n` in flight, for `rounds` completions, on synthetic
/// time; returns the limit at the end.
fn drive(g: &Gate, shape: impl Fn(u32) -> Duration, completions: usize) -> u32 {
    let mut t = crate::clock::instant();
    let mut running: Vec<(Instant, Permit)> = Vec::new();
    for _ in 0..completions {
        while let Admission::Go(mut p) = g.admit(0) {
            // Started on the synthetic clock.
            p.started = t;
            let n = running.len() as u32 + 1;
            running.push((t + shape(n), p));
        }
        running.sort_by_key(|(end, _)| *end);
        let (end, p) = running.remove(0);
        t = end;
        let latency = end.saturating_duration_since(p.started);
        g.report(p, Report::Completed { latency: Some(latency) }, 0, t);
    }
    g.snapshot().limit
}

#[test]
fn the_gate_follows_the_pace_its_backend_can_take_and_shows_why() {
    // Two deliveries are four times as slow as one: back to one.
    let g = Gate::new("b", settings(4, 10), None, 0);
    let limit = drive(&g, |n| Duration::from_millis(20 + 60 * u64::from(n - 1)), 400);
    assert_eq!(limit, 1);
    let snap = g.snapshot();
    assert_eq!(snap.baseline.map(|(n, _)| n), Some(1));
    let (gradient, lo, hi) = snap.gradient.expect("a gradient");
    assert!(gradient > 1.0 && (lo, hi) == (1, 2), "{:?}", snap.gradient);
    assert!(!snap.reason.is_empty());
    assert!(snap.curve.len() >= 2, "{:?}", snap.curve);

    // Flat up to 6 at once: climbs to 6 (a try at 7 now and then).
    let g = Gate::new("b", settings(2, 10), None, 0);
    let limit = drive(&g, |n| Duration::from_millis(50 * u64::from(n.max(6))) / 6, 600);
    assert!((6..=7).contains(&limit), "limit {limit}");
}

#[test]
fn failures_open_the_breaker_and_mail_is_postponed_to_the_probe() {
    let g = Gate::new("b", settings(5, 10), None, 0);
    let mono = crate::clock::instant();
    let mut persisted = None;
    for i in 0..3 {
        let p = go(g.admit(1000));
        let fb = g.report(
            p,
            Report::Failed { error: format!("connect to b: Connection refused #{i}") },
            1000,
            mono,
        );
        persisted = persisted.or(fb.persist);
    }
    let rec = persisted.expect("opening is persisted");
    assert_eq!(rec.breaker, BreakerPosition::Open);
    // The next event is the first connect probe, an interval (1 s) later.
    assert_eq!(rec.probe_at, Some(2000));
    match g.admit(1500) {
        Admission::Postpone { until, reason } => {
            assert_eq!(until, 2000);
            assert!(reason.starts_with("delivery temporarily suspended: connect to b"), "{reason}");
        }
        other => panic!("expected Postpone, got {other:?}"),
    }
    assert_eq!(g.snapshot().in_flight, 0, "no slot held while postponing");
}

#[test]
fn one_probe_then_close_restarts_concurrency_low_and_wakes_parked_mail() {
    let g = Gate::new("b", settings(3, 10), None, 0);
    let mono = crate::clock::instant();
    // Let the limit climb first (latency flat whatever the load).
    drive(&g, |_| Duration::from_millis(10), 300);
    assert!(g.snapshot().limit > 3);
    for n in 0..3 {
        let p = go(g.admit(0));
        g.report(p, Report::Failed { error: "lost connection".into() }, 0, mono + Duration::from_secs(n + 1));
        g.park(id(n));
    }
    g.park(id(0)); // parked once only
    assert_eq!(g.snapshot().breaker, BreakerPosition::Open);
    assert_eq!(g.snapshot().parked, 3);

    // The connect probe is answered: the oldest parked message is the trial.
    let cp = g.connect_probe(1000).expect("a connect probe is due");
    assert_eq!(g.connect_probe_done(cp, Ok(()), 1000), Some(id(0)));
    let probe = go(g.admit(1001));
    assert!(probe.is_probe());
    assert_eq!(g.snapshot().breaker, BreakerPosition::HalfOpen);
    assert!(matches!(g.admit(1002), Admission::WaitProbe));
    let fb = g.report(
        probe,
        Report::Completed { latency: Some(Duration::from_millis(10)) },
        1003,
        mono + Duration::from_secs(9),
    );
    assert_eq!(fb.persist.map(|r| r.breaker), Some(BreakerPosition::Closed));
    assert_eq!(fb.wake, vec![id(1), id(2)]);
    let snap = g.snapshot();
    assert_eq!((snap.breaker, snap.limit, snap.parked), (BreakerPosition::Closed, 3, 0));
}

#[test]
fn a_greeted_trial_that_fails_reopens_with_a_longer_cooldown() {
    let g = Gate::new("b", settings(3, 10), None, 0);
    let mono = crate::clock::instant();
    for _ in 0..3 {
        let p = go(g.admit(0));
        g.report(p, Report::Failed { error: "421 4.3.2 shutting down".into() }, 0, mono);
    }
    let cp = g.connect_probe(1000).expect("due");
    g.connect_probe_done(cp, Ok(()), 1000);
    let probe = go(g.admit(1000));
    let fb = g.report(probe, Report::Failed { error: "421 again".into() }, 1000, mono);
    let rec = fb.persist.unwrap();
    assert_eq!((rec.breaker, rec.failed_probes, rec.probe_at), (BreakerPosition::Open, 1, Some(11_000)));
    assert!(g.connect_probe(2000).is_none(), "no connect probes once a greeted trial failed");
    // An overloaded answer to the trial also counts as a failed trial.
    let probe = go(g.admit(11_000));
    let fb = g.report(probe, Report::Overloaded { error: "451 4.3.0 try later".into() }, 11_000, mono);
    assert_eq!(fb.persist.unwrap().probe_at, Some(31_000));
}

#[test]
fn recipient_level_trouble_neither_trips_the_breaker_nor_cuts_concurrency() {
    let g = Gate::new("b", settings(4, 4), None, 0);
    let mono = crate::clock::instant();
    for i in 0..50u64 {
        // A transaction whose recipients all got 452 4.2.2 is still a
        // completed transaction.
        let p = go(g.admit(0));
        let fb = g.report(
            p,
            Report::Completed { latency: Some(Duration::from_millis(5)) },
            0,
            mono + Duration::from_millis(i),
        );
        assert!(fb.persist.is_none());
    }
    let snap = g.snapshot();
    assert_eq!((snap.breaker, snap.limit), (BreakerPosition::Closed, 4));
}

#[test]
fn overload_answers_cut_concurrency_but_do_not_open_the_breaker() {
    let g = Gate::new("b", settings(8, 8), None, 0);
    let mono = crate::clock::instant();
    for i in 0..10u64 {
        let p = go(g.admit(0));
        g.report(p, Report::Overloaded { error: "451 4.3.0 busy".into() }, 0, mono + Duration::from_secs(i));
    }
    let snap = g.snapshot();
    assert_eq!((snap.breaker, snap.limit), (BreakerPosition::Closed, 1));
    assert_eq!(snap.last_error.as_deref(), Some("451 4.3.0 busy"));
}

#[test]
fn a_clean_delivery_after_trouble_wakes_parked_mail_without_a_breaker() {
    let g = Gate::new("b", settings(4, 4), None, 0);
    let mono = crate::clock::instant();
    let p = go(g.admit(0));
    g.report(p, Report::Overloaded { error: "451 4.3.0 busy".into() }, 0, mono);
    g.park(id(7));
    let p = go(g.admit(0));
    let fb = g.report(p, Report::Completed { latency: Some(Duration::from_millis(5)) }, 0, mono);
    assert_eq!(fb.wake, vec![id(7)]);
    let p = go(g.admit(0));
    assert!(
        g.report(p, Report::Completed { latency: Some(Duration::from_millis(5)) }, 0, mono).wake.is_empty()
    );
}

#[test]
fn pause_postpones_until_resumed_and_resume_wakes() {
    let g = Gate::new("b", settings(2, 2), None, 0);
    let fb = g.pause(None);
    assert_eq!(fb.persist.unwrap().paused_until, Some(u64::MAX));
    match g.admit(1_000) {
        Admission::Postpone { until, .. } => assert_eq!(until, 1_000 + PAUSE_RECHECK.as_millis() as u64),
        other => panic!("{other:?}"),
    }
    g.park(id(1));
    let fb = g.resume();
    assert_eq!(fb.wake, vec![id(1)]);
    assert_eq!(fb.persist.unwrap().paused_until, None);
    assert!(matches!(g.admit(1_000), Admission::Go(_)));
    // A timed pause ends by itself.
    g.pause(Some(5_000));
    assert!(matches!(g.admit(4_999), Admission::Postpone { until: 5_000, .. }));
    assert!(matches!(g.admit(5_000), Admission::Go(_)));
}

#[test]
fn breaker_state_is_restored_from_the_stored_record() {
    let rec = BackendRecord {
        breaker: BreakerPosition::Open,
        failed_probes: 2,
        opened_at: Some(100),
        probe_at: Some(50_000),
        paused_until: None,
        last_error: Some("connect to b: Connection refused".into()),
        paused_here: false,
    };
    let g = Gate::new("b", settings(2, 2), Some(&rec), 10_000);
    // Connect-probed at once after the restart.
    assert!(matches!(g.admit(10_000), Admission::Postpone { until: 10_000, .. }));
    assert_eq!(g.record(), BackendRecord { probe_at: Some(10_000), ..rec.clone() });
    let cp = g.connect_probe(10_000).expect("a connect probe");
    assert_eq!(g.connect_probe_done(cp, Err("Connection refused".into()), 10_050), None);
    assert!(matches!(g.admit(10_100), Admission::Postpone { until: 11_000, .. }));
    let cp = g.connect_probe(11_000).expect("the next one");
    g.connect_probe_done(cp, Ok(()), 11_000);
    let probe = go(g.admit(11_000));
    let fb = g.report(probe, Report::Failed { error: "lost".into() }, 11_000, crate::clock::instant());
    // Third failed trial: 5 s × 2³ = 40 s (the cap).
    assert_eq!(fb.persist.unwrap().probe_at, Some(51_000));
}

#[test]
fn rate_limit_makes_the_dispatcher_wait_and_keeps_the_probe() {
    let mut s = (*settings(2, 2)).clone();
    s.rate_delay = Duration::from_secs(1);
    let g = Gate::new("b", Arc::new(s), None, 0);
    let p = go(g.admit(0));
    drop(p);
    assert!(matches!(g.admit(0), Admission::WaitRate(d) if d <= Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_sends_its_trial_after_a_connect_probe_on_the_paused_clock() {
    // Wall-clock milliseconds are derived from tokio's paused clock, so the
    // test sleeps through cool-downs in no real time.
    let start = crate::clock::instant();
    let now = || start.elapsed().as_millis() as u64;
    let g = Arc::new(Gate::new("b", settings(2, 4), None, 0));
    for _ in 0..3 {
        let p = go(g.admit(now()));
        g.report(p, Report::Failed { error: "timeout".into() }, now(), crate::clock::instant());
    }
    let Admission::Postpone { until, .. } = g.admit(now()) else { panic!("open") };
    tokio::time::sleep(Duration::from_millis(until - now())).await;
    let cp = g.connect_probe(now()).expect("a connect probe is due");
    g.connect_probe_done(cp, Ok(()), now());
    let probe = go(g.admit(now()));
    assert!(probe.is_probe());
    // A waiter on the probe is woken when it reports.
    let g2 = Arc::clone(&g);
    let waiter = tokio::spawn(async move {
        loop {
            match g2.admit(start.elapsed().as_millis() as u64) {
                Admission::WaitProbe => g2.changed().await,
                Admission::Go(p) => return p.is_probe(),
                other => panic!("{other:?}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    g.report(
        probe,
        Report::Completed { latency: Some(Duration::from_millis(30)) },
        now(),
        crate::clock::instant(),
    );
    assert!(!waiter.await.unwrap(), "after the probe, ordinary deliveries go");
    assert_eq!(start.elapsed(), Duration::from_millis(1030));
}

#[test]
fn a_quiet_troubled_backend_offers_one_parked_message_per_cooldown_as_probe() {
    let g = Gate::new("b", settings(2, 2), None, 0);
    let mono = crate::clock::instant();
    assert_eq!(g.probe_candidate(100_000), None, "nothing parked");
    let p = go(g.admit(1_000));
    g.report(p, Report::Failed { error: "refused".into() }, 1_000, mono);
    g.park(id(1));
    g.park(id(2));
    assert_eq!(g.probe_candidate(2_000), None, "not quiet for a cool-down yet");
    assert_eq!(g.probe_candidate(6_000), Some(id(1)));
    assert_eq!(g.probe_candidate(6_001), None, "one per cool-down");
    assert_eq!(g.probe_candidate(11_001), Some(id(2)));
    assert_eq!(g.snapshot().parked, 0);
}

#[test]
fn after_a_greeted_trial_failed_parked_mail_is_the_next_trial_at_the_probe_time() {
    let g = Gate::new("b", settings(2, 2), None, 0);
    let mono = crate::clock::instant();
    for _ in 0..3 {
        let p = go(g.admit(0));
        g.report(p, Report::Failed { error: "421 4.3.2 busy".into() }, 0, mono);
    }
    g.park(id(8));
    g.park(id(9));
    let cp = g.connect_probe(1_000).expect("due");
    assert_eq!(g.connect_probe_done(cp, Ok(()), 1_000), Some(id(8)));
    let trial = go(g.admit(1_000));
    g.report(trial, Report::Failed { error: "421 4.3.2 busy".into() }, 1_000, mono);
    // Cool-down of 5 s × 2 after one failed trial.
    assert_eq!(g.probe_candidate(10_999), None);
    assert_eq!(g.probe_candidate(11_000), Some(id(9)));
}

#[test]
fn an_unreachable_backend_is_connect_probed_and_an_answer_sends_a_parked_trial() {
    let g = Gate::new("b", settings(2, 4), None, 0);
    let mono = crate::clock::instant();
    for _ in 0..3 {
        let p = go(g.admit(0));
        g.report(p, Report::Unreachable { error: "connect to b: Connection refused".into() }, 0, mono);
    }
    g.park(id(1));
    g.park(id(2));
    assert_eq!(g.snapshot().breaker, BreakerPosition::Open);
    // Probes every second (settings: 1 s), one at a time, none before.
    assert!(g.connect_probe(999).is_none());
    assert_eq!(g.next_connect_probe(), Some(1_000));
    let cp = g.connect_probe(1_000).expect("due");
    assert!(g.connect_probe(1_001).is_none(), "one at a time");
    assert_eq!(g.snapshot().in_flight, 1, "the probe's connection holds a slot");
    assert_eq!(g.connect_probe_done(cp, Err("Connection refused".into()), 1_010), None);
    // The cool-down (5 s) brings no trial delivery while probes fail.
    assert!(matches!(g.admit(6_000), Admission::Postpone { .. }));
    assert!(g.probe_candidate(6_000).is_none());
    let cp = g.connect_probe(6_000).expect("due");
    assert_eq!(g.connect_probe_done(cp, Ok(()), 6_020), Some(id(1)), "the first parked message is the trial");
    let trial = go(g.admit(6_030));
    assert!(trial.is_probe());
    let fb = g.report(trial, Report::Completed { latency: Some(Duration::from_millis(5)) }, 6_040, mono);
    assert_eq!(fb.wake, vec![id(2)]);
    assert_eq!(g.snapshot().breaker, BreakerPosition::Closed);
    assert!(g.connect_probe(10_000).is_none());
}

#[test]
fn the_breaker_closing_restarts_at_a_lower_level_held_before() {
    // The backend was found to take one delivery at a time before it went
    // away: it comes back at 1, not at the starting level of 5.
    let g = Gate::new("b", settings(5, 10), None, 0);
    assert_eq!(drive(&g, |n| Duration::from_millis(20 + 60 * u64::from(n - 1)), 400), 1);
    let mono = crate::clock::instant() + Duration::from_secs(3600);
    for n in 0..3 {
        let p = go(g.admit(0));
        g.report(p, Report::Failed { error: "lost connection".into() }, 0, mono + Duration::from_secs(n));
    }
    assert_eq!(g.snapshot().breaker, BreakerPosition::Open);
    let cp = g.connect_probe(6000).expect("a connect probe is due");
    g.connect_probe_done(cp, Ok(()), 6000);
    let probe = go(g.admit(6001));
    let latency = Some(Duration::from_millis(10));
    g.report(probe, Report::Completed { latency }, 6002, mono + Duration::from_secs(20));
    let snap = g.snapshot();
    assert_eq!((snap.breaker, snap.limit), (BreakerPosition::Closed, 1));
}
