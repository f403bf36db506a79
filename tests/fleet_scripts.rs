//! The fleet's Redis scripts, run directly against a private
//! `redis-server`: leases (limit, release, expiry), the GCRA rate, the
//! breaker (fleet-wide threshold, one probe lease, recovery bumps the
//! epoch), pause and resume, fleets that share a Redis without mixing, and
//! the shared adaptive limit (samples, one owner, takeover, admission).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use sluice::delivery::gate::fleet::scripts::{
    Keys, SAMPLE_CAP, SAMPLE_TTL_MS, Scripts, Status, Steer, Verdict, hosts_key,
};

use common::redis::Redis;

struct Fixture {
    redis: Redis,
    conn: MultiplexedConnection,
    scripts: Scripts,
}

async fn fixture() -> Fixture {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    Fixture { redis, conn, scripts: Scripts::default() }
}

/// Admission parameters: limit, rate interval and tolerance (ms), lease ms.
#[derive(Clone, Copy)]
struct Ask {
    limit: u32,
    interval: u64,
    tolerance: u64,
    lease_ms: u64,
}

const PLAIN: Ask = Ask { limit: 2, interval: 0, tolerance: 0, lease_ms: 10_000 };

/// A kept lease's finish under PLAIN's limit, its turn not over.
const KEPT: Option<(u32, bool)> = Some((2, false));

impl Fixture {
    /// Admission with a fixed limit (the shared adaptive one not read).
    async fn admit(&mut self, k: &Keys, member: &str, a: Ask) -> Verdict {
        self.admit_adaptive(k, member, a, 0).await
    }

    /// Ends a delivery without a sample: threshold 2, cool-down 300 ms,
    /// longest 1 s.
    async fn finish(&mut self, k: &Keys, member: &str, outcome: &str) -> String {
        self.finish_sampled(k, member, outcome, -1, 0).await
    }

    async fn status(&mut self, k: &Keys) -> Status {
        self.scripts
            .status
            .key(&k.leases)
            .key(&k.breaker)
            .key(&k.pause)
            .key(&k.limit)
            .invoke_async(&mut self.conn)
            .await
            .unwrap()
    }

    /// Admission with the shared adaptive limit (`initial` > 0).
    async fn admit_adaptive(&mut self, k: &Keys, member: &str, a: Ask, initial: u32) -> Verdict {
        self.admit_offered(k, member, a, initial, false).await
    }

    /// Admission offering `member` again (an idle connection's lease);
    /// `turn_over`: it has had its turn.
    async fn admit_offered(
        &mut self,
        k: &Keys,
        member: &str,
        a: Ask,
        initial: u32,
        turn_over: bool,
    ) -> Verdict {
        self.scripts
            .admit
            .key(&k.leases)
            .key(&k.breaker)
            .key(&k.pause)
            .key(&k.rate)
            .key(&k.limit)
            .key(&k.wanted)
            .arg(member)
            .arg(a.lease_ms)
            .arg(a.limit)
            .arg(a.interval)
            .arg(a.tolerance)
            .arg(initial)
            .arg(turn_over as u8)
            .invoke_async(&mut self.conn)
            .await
            .unwrap()
    }

    /// Ends a delivery with a sample for the limit owner (`initial` > 0,
    /// `latency_us` ≥ 0); the breaker as in [`Fixture::finish`].
    async fn finish_sampled(
        &mut self,
        k: &Keys,
        member: &str,
        outcome: &str,
        latency_us: i64,
        initial: u32,
    ) -> String {
        self.finish_with(k, member, outcome, latency_us, initial, None).await
    }

    /// Ends a delivery; `kept`: its lease stays with its idle connection
    /// (the ceiling, and whether the lease has had its turn).
    async fn finish_with(
        &mut self,
        k: &Keys,
        member: &str,
        outcome: &str,
        latency_us: i64,
        initial: u32,
        kept: Option<(u32, bool)>,
    ) -> String {
        let mut inv = self.scripts.finish.key(&k.leases);
        inv.key(&k.breaker)
            .key(&k.samples)
            .key(&k.limit)
            .key(&k.wanted)
            .arg(member)
            .arg(outcome)
            .arg(2)
            .arg(300)
            .arg(1000)
            .arg("421 4.3.2 too busy")
            .arg(latency_us)
            .arg(50)
            .arg(initial);
        match kept {
            Some((ceiling, turn_over)) => inv.arg(1).arg(ceiling).arg(turn_over as u8),
            None => inv.arg(0),
        };
        inv.invoke_async(&mut self.conn).await.unwrap()
    }

    /// Several kept leases' successful ends in one call (ceiling 3, an
    /// adaptive limit starting at 3), each `[member, latency µs, took ms,
    /// turn over]`; the members to give back.
    async fn finish_kept(&mut self, k: &Keys, kept: &[[String; 4]]) -> Vec<String> {
        let mut inv = self.scripts.finish_kept.key(&k.leases);
        inv.key(&k.breaker).key(&k.samples).key(&k.limit).key(&k.wanted).arg(3).arg(3);
        for entry in kept {
            inv.arg(entry);
        }
        inv.invoke_async(&mut self.conn).await.unwrap()
    }

    /// Renews `members`' leases; how many it set.
    async fn renew(&mut self, k: &Keys, lease_ms: u64, members: &[&str]) -> i64 {
        let mut inv = self.scripts.renew.key(&k.leases);
        inv.arg(lease_ms);
        for m in members {
            inv.arg(m);
        }
        inv.invoke_async(&mut self.conn).await.unwrap()
    }

    async fn steer(&mut self, k: &Keys, member: &str, lease_ms: u64, write: u32) -> Steer {
        self.steer_settled(k, member, lease_ms, write, 0).await
    }

    /// A step whose limiter settled at `settled` (`0`: not yet).
    async fn steer_settled(
        &mut self,
        k: &Keys,
        member: &str,
        lease_ms: u64,
        write: u32,
        settled: u32,
    ) -> Steer {
        self.scripts
            .steer
            .key(&k.owner)
            .key(&k.samples)
            .key(&k.limit)
            .key(&k.breaker)
            .arg(member)
            .arg(lease_ms)
            .arg(write)
            .arg(1)
            .arg(settled)
            .invoke_async(&mut self.conn)
            .await
            .unwrap()
    }

    async fn pause(&mut self, k: &Keys, ms: i64) {
        let _: i64 = self
            .scripts
            .pause
            .key(&k.pause)
            .key(&k.breaker)
            .arg(ms)
            .invoke_async(&mut self.conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn leases_hold_the_fleet_limit_and_come_back_on_release_or_expiry() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&k, "a|1", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "b|1", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "c|1", PLAIN).await, Verdict::Slot, "the third host finds the fleet full");
    assert_eq!(f.finish(&k, "a|1", "ok").await, "ok");
    assert_eq!(f.admit(&k, "c|1", PLAIN).await, Verdict::Go, "a released lease is free at once");
    let st = f.status(&k).await;
    assert_eq!(st.leases.len(), 2);

    // A host that dies stops renewing: its leases expire.
    let k = Keys::new("t", "lmtp:[other]:24");
    let short = Ask { lease_ms: 300, ..PLAIN };
    assert_eq!(f.admit(&k, "dead|1", short).await, Verdict::Go);
    assert_eq!(f.admit(&k, "dead|2", short).await, Verdict::Go);
    assert_eq!(f.admit(&k, "live|1", short).await, Verdict::Slot);
    // Renewal keeps one alive past the first expiry.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(f.renew(&k, 300, &["dead|2"]).await, 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(f.admit(&k, "live|1", short).await, Verdict::Go, "the unrenewed lease expired");
    assert_eq!(f.admit(&k, "live|2", short).await, Verdict::Slot, "the renewed one still counts");
}

#[tokio::test]
async fn leases_lost_with_a_redis_restart_come_back_at_the_next_renewal() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&k, "a|1", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "b|1", PLAIN).await, Verdict::Go);
    // Redis restarts without persistence while both deliveries run on.
    f.redis.stop();
    f.redis.resume();
    let client = redis::Client::open(f.redis.url()).unwrap();
    f.conn = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(f.admit(&k, "c|1", PLAIN).await, Verdict::Go, "the fleet forgot them");
    assert_eq!(f.finish(&k, "c|1", "ok").await, "ok");
    assert_eq!(f.renew(&k, 10_000, &["a|1", "b|1"]).await, 2);
    assert_eq!(f.admit(&k, "c|2", PLAIN).await, Verdict::Slot, "the running deliveries count again");
}

#[tokio::test]
async fn the_rate_is_a_gcra_schedule_shared_by_every_caller() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    // 10/s with a burst of 2: two at once, then one per 100 ms.
    let ask = Ask { limit: 100, interval: 100, tolerance: 100, lease_ms: 10_000 };
    assert_eq!(f.admit(&k, "a|1", ask).await, Verdict::Go);
    assert_eq!(f.admit(&k, "b|1", ask).await, Verdict::Go);
    match f.admit(&k, "c|1", ask).await {
        Verdict::Rate(ms) => assert!((1..=100).contains(&ms), "wait {ms} ms"),
        other => panic!("expected a rate wait, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(110)).await;
    assert_eq!(f.admit(&k, "c|1", ask).await, Verdict::Go);
    // A refused start takes no lease.
    assert_eq!(f.status(&k).await.leases.len(), 3);
}

#[tokio::test]
async fn the_breaker_opens_fleet_wide_and_hands_out_exactly_one_probe() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    let ask = Ask { limit: 10, ..PLAIN };
    assert_eq!(f.admit(&k, "a|1", ask).await, Verdict::Go);
    assert_eq!(f.admit(&k, "b|1", ask).await, Verdict::Go);
    // Two hosts each see one failure: the threshold (2) counts the fleet.
    assert_eq!(f.finish(&k, "a|1", "fail").await, "failed");
    assert_eq!(f.finish(&k, "b|1", "fail").await, "opened");
    match f.admit(&k, "c|1", ask).await {
        Verdict::Open(ms, error) => {
            assert!(ms <= 300);
            assert_eq!(error, "421 4.3.2 too busy");
        }
        other => panic!("expected open, got {other:?}"),
    }
    let epoch = f.status(&k).await.epoch;
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(f.admit(&k, "c|1", ask).await, Verdict::Probe, "one host gets the probe");
    assert_eq!(f.admit(&k, "a|2", ask).await, Verdict::ProbeWait, "the others wait for it");
    assert_eq!(f.admit(&k, "b|2", ask).await, Verdict::ProbeWait);
    // A failed probe reopens with a longer cool-down.
    assert_eq!(f.finish(&k, "c|1", "fail").await, "reopened");
    match f.admit(&k, "a|2", ask).await {
        Verdict::Open(ms, _) => assert!(ms > 300 && ms <= 600, "{ms}"),
        other => panic!("expected open, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(620)).await;
    assert_eq!(f.admit(&k, "a|2", ask).await, Verdict::Probe);
    assert_eq!(f.finish(&k, "a|2", "ok").await, "closed");
    let st = f.status(&k).await;
    assert!(!st.open);
    assert_eq!(st.epoch, epoch + 1, "closing bumps the epoch every host watches");
    assert_eq!(f.admit(&k, "b|2", ask).await, Verdict::Go);
}

#[tokio::test]
async fn a_probe_lost_with_its_host_is_handed_to_another_host() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    let ask = Ask { limit: 10, lease_ms: 300, ..PLAIN };
    for m in ["a|1", "b|1"] {
        assert_eq!(f.admit(&k, m, ask).await, Verdict::Go);
        f.finish(&k, m, "fail").await;
    }
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(f.admit(&k, "dead|1", ask).await, Verdict::Probe);
    assert_eq!(f.admit(&k, "b|2", ask).await, Verdict::ProbeWait);
    // The prober dies: its lease expires, the probe goes to someone else.
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(f.admit(&k, "b|2", ask).await, Verdict::Probe);
}

#[tokio::test]
async fn pause_and_resume_are_fleet_wide_and_resume_bumps_the_epoch() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    f.pause(&k, 0).await;
    assert_eq!(f.admit(&k, "a|1", PLAIN).await, Verdict::Paused(None));
    assert_eq!(f.status(&k).await.paused, Some(None));
    let epoch = f.status(&k).await.epoch;
    f.pause(&k, -1).await;
    assert_eq!(f.admit(&k, "a|1", PLAIN).await, Verdict::Go);
    assert_eq!(f.status(&k).await.epoch, epoch + 1);
    f.pause(&k, 5000).await;
    match f.admit(&k, "b|1", PLAIN).await {
        Verdict::Paused(Some(ms)) => assert!(ms > 4000 && ms <= 5000),
        other => panic!("expected a timed pause, got {other:?}"),
    }
}

#[tokio::test]
async fn two_fleets_on_one_redis_never_mix() {
    let mut f = fixture().await;
    let a = Keys::new("east", "lmtp:[mbx]:24");
    let b = Keys::new("west", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&a, "a|1", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&a, "a|2", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&b, "b|1", PLAIN).await, Verdict::Go, "the other fleet has its own slots");
    f.pause(&a, 0).await;
    assert_eq!(f.admit(&b, "b|2", PLAIN).await, Verdict::Go, "and its own pause");
    let hosts: Vec<String> = f
        .scripts
        .heartbeat
        .key(hosts_key("east"))
        .arg("mx1")
        .arg(3000)
        .invoke_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(hosts, vec!["mx1".to_owned()]);
    let west: Vec<String> = f
        .scripts
        .heartbeat
        .key(hosts_key("west"))
        .arg("mx9")
        .arg(3000)
        .invoke_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(west, vec!["mx9".to_owned()]);
}

#[tokio::test]
async fn admission_holds_the_shared_adaptive_limit_below_the_ceiling() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    let ceiling = Ask { limit: 5, ..PLAIN };
    // None written yet: the initial concurrency (2) holds.
    assert_eq!(f.admit_adaptive(&k, "a|1", ceiling, 2).await, Verdict::Go);
    assert_eq!(f.admit_adaptive(&k, "b|1", ceiling, 2).await, Verdict::Go);
    assert_eq!(f.admit_adaptive(&k, "c|1", ceiling, 2).await, Verdict::Slot);
    // The owner raises it to 3; then past the ceiling, the ceiling holds.
    assert!(f.steer(&k, "a|owner", 10_000, 3).await.owner);
    assert_eq!(f.admit_adaptive(&k, "c|1", ceiling, 2).await, Verdict::Go);
    assert_eq!(f.admit_adaptive(&k, "c|2", ceiling, 2).await, Verdict::Slot);
    f.steer(&k, "a|owner", 10_000, 50).await;
    for m in ["c|2", "c|3"] {
        assert_eq!(f.admit_adaptive(&k, m, ceiling, 2).await, Verdict::Go);
    }
    assert_eq!(f.admit_adaptive(&k, "c|4", ceiling, 2).await, Verdict::Slot, "ceiling 5");
    // A fixed limit (initial 0) ignores the shared one.
    let fixed = Keys::new("t", "lmtp:[fixed]:24");
    f.steer(&fixed, "a|owner", 10_000, 1).await;
    assert_eq!(f.admit_adaptive(&fixed, "a|1", ceiling, 0).await, Verdict::Go);
    assert_eq!(f.admit_adaptive(&fixed, "a|2", ceiling, 0).await, Verdict::Go);
    assert_eq!(f.status(&k).await.limit, Some(50));
}

#[tokio::test]
async fn every_hosts_samples_reach_the_one_limit_owner_and_another_takes_over() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    let ask = Ask { limit: 5, ..PLAIN };
    for m in ["mx1|1", "mx2|1", "mx3|1"] {
        assert_eq!(f.admit_adaptive(&k, m, ask, 3).await, Verdict::Go);
    }
    assert_eq!(f.finish_sampled(&k, "mx1|1", "ok", 45_000, 3).await, "ok");
    assert_eq!(f.finish_sampled(&k, "mx2|1", "overload", -1, 3).await, "ok");
    // No latency (the transaction ended before the body): no sample.
    assert_eq!(f.finish_sampled(&k, "mx3|1", "ok", -1, 3).await, "ok");
    let owner = f.steer(&k, "mx1|steer", 400, 0).await;
    assert!(owner.owner);
    assert_eq!(owner.limit, None);
    assert_eq!(owner.samples.len(), 2, "{owner:?}");
    let (ok, over) = (owner.samples[0], owner.samples[1]);
    assert_eq!((ok.latency, ok.in_flight, ok.overload), (Duration::from_millis(45), 3, false));
    assert_eq!((over.in_flight, over.overload), (2, true));
    assert!(
        ok.started <= owner.now && owner.now - ok.started >= 50,
        "started {} now {}",
        ok.started,
        owner.now
    );
    // Taken once: the next step sees none.
    assert!(f.steer(&k, "mx1|steer", 400, 2).await.samples.is_empty());
    // Another host is told who steers, and the limit.
    let other = f.steer(&k, "mx2|steer", 400, 4).await;
    assert!(!other.owner);
    assert_eq!(other.limit, Some(2), "a non-owner's write is ignored");
    // The owner stops renewing (it died): the next asker takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = f.steer(&k, "mx2|steer", 400, 0).await;
    assert!(taken.owner);
    assert_eq!(taken.limit, Some(2), "it starts from the limit last written");
    assert!(!f.steer(&k, "mx1|steer", 400, 0).await.owner);
}

#[tokio::test]
async fn the_fleet_breaker_closing_restarts_the_shared_limit() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    let ask = Ask { limit: 8, ..PLAIN };
    f.steer(&k, "mx1|steer", 10_000, 6).await;
    for m in ["a|1", "a|2"] {
        assert_eq!(f.admit_adaptive(&k, m, ask, 2).await, Verdict::Go);
        f.finish_sampled(&k, m, "fail", -1, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(f.admit_adaptive(&k, "b|1", ask, 2).await, Verdict::Probe);
    assert_eq!(f.finish_sampled(&k, "b|1", "ok", 30_000, 2).await, "closed");
    assert_eq!(f.status(&k).await.limit, Some(2), "nothing settled: the initial 2");
    // The owner's limiter settled at 1 before the next outage (and the
    // failures cut the limit written to 1 too): it restarts at 1.
    f.steer_settled(&k, "mx1|steer", 10_000, 1, 1).await;
    for m in ["a|3", "a|4"] {
        assert_eq!(f.admit_adaptive(&k, m, ask, 2).await, Verdict::Go);
        f.finish_sampled(&k, m, "fail", -1, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.admit_adaptive(&k, "b|2", ask, 2).await, Verdict::Probe);
    assert_eq!(f.finish_sampled(&k, "b|2", "ok", 30_000, 2).await, "closed");
    assert_eq!(f.status(&k).await.limit, Some(1));
    // Settled above the initial level: the initial level.
    f.steer_settled(&k, "mx1|steer", 10_000, 1, 6).await;
    for m in ["a|5", "a|6"] {
        assert_eq!(f.admit_adaptive(&k, m, ask, 2).await, Verdict::Go);
        f.finish_sampled(&k, m, "fail", -1, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.admit_adaptive(&k, "b|3", ask, 2).await, Verdict::Probe);
    assert_eq!(f.finish_sampled(&k, "b|3", "ok", 30_000, 2).await, "closed");
    assert_eq!(f.status(&k).await.limit, Some(2));
}

#[tokio::test]
async fn samples_waiting_for_the_owner_are_capped_and_the_newest_kept() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    // Nobody steers while more than the cap arrive (latency i µs).
    for i in 0..SAMPLE_CAP + 10 {
        f.finish_sampled(&k, "a|1", "ok", i as i64, 2).await;
    }
    let taken = f.steer(&k, "mx1|steer", 10_000, 0).await;
    assert_eq!(taken.samples.len(), SAMPLE_CAP, "the owner's reply is bounded");
    assert_eq!(taken.samples[0].latency, Duration::from_micros(10), "the oldest went first");
    assert_eq!(taken.samples[SAMPLE_CAP - 1].latency, Duration::from_micros((SAMPLE_CAP + 9) as u64));
    // They expire when nobody takes them.
    f.finish_sampled(&k, "a|1", "ok", 1, 2).await;
    let ttl: i64 = redis::cmd("PTTL").arg(&k.samples).query_async(&mut f.conn).await.unwrap();
    assert!(ttl > 0 && ttl <= SAMPLE_TTL_MS as i64, "ttl {ttl}");
}

#[tokio::test]
async fn an_idle_connections_lease_stays_counted_and_is_offered_again() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&k, "mx1|a", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "mx1|b", PLAIN).await, Verdict::Go);
    // a's delivery ends; its connection stays open, idle, with the lease.
    assert_eq!(f.finish_with(&k, "mx1|a", "ok", -1, 0, KEPT).await, "ok");
    assert_eq!(f.status(&k).await.leases.len(), 2, "the idle connection is still counted");
    assert_eq!(f.admit(&k, "mx2|c", PLAIN).await, Verdict::Slot);
    // Offered again, it goes through without being counted twice.
    assert_eq!(f.admit_offered(&k, "mx1|a", PLAIN, 0, false).await, Verdict::Go);
    assert_eq!(f.status(&k).await.leases.len(), 2);
    // Failures reported with the lease kept still open the breaker.
    assert_eq!(f.finish_with(&k, "mx1|a", "fail", -1, 0, KEPT).await, "failed");
    assert_eq!(f.finish_with(&k, "mx1|b", "fail", -1, 0, KEPT).await, "opened");
    assert_eq!(f.status(&k).await.leases.len(), 2, "kept leases stay through failures");
    // A lease given back (keep 0) leaves the set.
    f.finish(&k, "mx1|b", "abandon").await;
    assert_eq!(f.status(&k).await.leases, ["mx1|a"]);
}

#[tokio::test]
async fn an_idle_lease_is_taken_back_below_the_limit_or_after_its_turn_when_a_host_waits() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&k, "mx1|a", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "mx1|b", PLAIN).await, Verdict::Go);
    // The fleet's limit falls to 1 while both are held: the next one
    // offered again is taken back, the other goes on.
    let one = Ask { limit: 1, ..PLAIN };
    assert_eq!(f.admit_offered(&k, "mx1|a", one, 0, false).await, Verdict::Shed);
    // Still counted until the host has closed the connection and gives
    // the lease back.
    assert_eq!(f.status(&k).await.leases.len(), 2);
    f.finish(&k, "mx1|a", "abandon").await;
    assert_eq!(f.status(&k).await.leases, ["mx1|b"]);
    assert_eq!(f.admit_offered(&k, "mx1|b", one, 0, false).await, Verdict::Go);
    // Another host waits for the slot: before its turn is over the lease
    // stays, after it the lease goes (and mx2 gets it).
    assert_eq!(f.admit(&k, "mx2|c", one).await, Verdict::Slot);
    assert_eq!(f.admit_offered(&k, "mx1|b", one, 0, false).await, Verdict::Go);
    assert_eq!(f.admit_offered(&k, "mx1|b", one, 0, true).await, Verdict::Shed);
    assert_eq!(f.admit(&k, "mx2|c", one).await, Verdict::Slot, "not before mx1 gave it back");
    f.finish(&k, "mx1|b", "abandon").await;
    assert_eq!(f.admit(&k, "mx2|c", one).await, Verdict::Go);
    // Only this host waiting (mx2 now holds and itself waited): mx2's
    // lease is not taken back for its own wait.
    assert_eq!(f.admit(&k, "mx2|d", one).await, Verdict::Slot);
    assert_eq!(f.admit_offered(&k, "mx2|c", one, 0, true).await, Verdict::Go);
}

#[tokio::test]
async fn a_kept_leases_finish_says_when_the_fleet_wants_it_back() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    assert_eq!(f.admit(&k, "mx1|a", PLAIN).await, Verdict::Go);
    assert_eq!(f.admit(&k, "mx1|b", PLAIN).await, Verdict::Go);
    assert_eq!(f.finish_with(&k, "mx1|a", "ok", -1, 0, KEPT).await, "ok");
    // The limit fell to 1 with two held: the kept one must go back, and
    // stays counted until the host gives it back.
    assert_eq!(f.finish_with(&k, "mx1|a", "ok", -1, 0, Some((1, false))).await, "shed");
    assert_eq!(f.status(&k).await.leases.len(), 2);
    f.finish(&k, "mx1|a", "abandon").await;
    // Another host waits: before the turn is over the lease stays; after
    // it, it must go back; a wait of this host's own does not count.
    assert_eq!(f.admit(&k, "mx2|c", Ask { limit: 1, ..PLAIN }).await, Verdict::Slot);
    assert_eq!(f.finish_with(&k, "mx1|b", "ok", -1, 0, KEPT).await, "ok");
    assert_eq!(f.finish_with(&k, "mx1|b", "ok", -1, 0, Some((2, true))).await, "shed");
    let k2 = Keys::new("t", "lmtp:[other]:24");
    assert_eq!(f.admit(&k2, "mx1|x", Ask { limit: 1, ..PLAIN }).await, Verdict::Go);
    assert_eq!(f.admit(&k2, "mx1|y", Ask { limit: 1, ..PLAIN }).await, Verdict::Slot);
    assert_eq!(f.finish_with(&k2, "mx1|x", "ok", -1, 0, Some((1, true))).await, "ok");
}

#[tokio::test]
async fn kept_leases_successes_go_in_one_call_that_says_which_to_give_back() {
    let mut f = fixture().await;
    let k = Keys::new("t", "lmtp:[mbx]:24");
    for m in ["mx1|a", "mx1|b", "mx2|c"] {
        assert_eq!(f.admit_adaptive(&k, m, Ask { limit: 3, ..PLAIN }, 3).await, Verdict::Go);
    }
    // A failure counted before: the successes reset the count.
    assert_eq!(f.finish_with(&k, "mx2|c", "fail", -1, 3, Some((3, false))).await, "failed");
    // Three successes in one call, their samples for the limit owner; the
    // fleet's limit (shared, 2) is one below the three held: one lease
    // goes back, and the others stay.
    let _: () = redis::cmd("SET").arg(&k.limit).arg(2).query_async(&mut f.conn).await.unwrap();
    let kept =
        |member: &'static str, turn: u8| [member.to_owned(), "1500".into(), "20".into(), turn.to_string()];
    let shed = f.finish_kept(&k, &[kept("mx1|a", 0), kept("mx1|b", 0)]).await;
    assert_eq!(shed, ["mx1|a"]);
    assert_eq!(f.status(&k).await.leases.len(), 3, "counted until the host gives them back");
    let samples: Vec<String> =
        redis::cmd("LRANGE").arg(&k.samples).arg(0).arg(-1).query_async(&mut f.conn).await.unwrap();
    // After the failure's own sample (`over`).
    assert_eq!(samples.len(), 3, "{samples:?}");
    assert!(
        samples[0].ends_with(" over") && samples[1..].iter().all(|s| s.ends_with(" 1500 3 ok")),
        "{samples:?}"
    );
    let failures: Option<i64> =
        redis::cmd("HGET").arg(&k.breaker).arg("failures").query_async(&mut f.conn).await.unwrap();
    assert_eq!(failures, Some(0));
    // Within the limit now; another host waits: only a lease whose turn
    // is over goes back.
    f.finish(&k, "mx1|a", "abandon").await;
    assert_eq!(f.admit(&k, "mx3|d", Ask { limit: 2, ..PLAIN }).await, Verdict::Slot);
    let shed = f.finish_kept(&k, &[kept("mx1|b", 0), kept("mx2|c", 1)]).await;
    assert_eq!(shed, ["mx2|c"]);
}
