//! Fleet mode end to end: three `sluice` daemons sharing one private
//! `redis-server`, delivering to one switchable test backend. The backend's
//! concurrent connections stay within the fleet limit; a pause on one host
//! holds the mail of all three; a breaker opened by the failures of the
//! fleet stops all three and recovery wakes their backlogs; a host killed
//! with its slots held gives them back within the lease time; and a Redis
//! outage loses nothing (each host on its share), then shared mode resumes;
//! the adaptive limit is one for the fleet, steered by one host over every
//! host's samples, and another host takes over when it dies. `pause
//! --local` holds one host alone; a host on `rediss://` (a TLS-only
//! private `redis-server`, a CA made by the test) is shared only when it
//! trusts the server's certificate. An idle connection carries the
//! host's backlog holding its lease, gives it back when the backlog is
//! done, and hands it to a waiting host after its turn. A host with a
//! backlog asks for its admissions together, not one round trip each;
//! the host that steers the adaptive limit carries a backlog on its idle
//! connections without asking each time, and mail arriving one message at
//! a time reuses a connection lingering briefly. A host's own pause
//! outlives its restart and the fleet's resumes.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{Backend, Mode, Proto};
use common::clients::python;
use common::daemon::{Daemon, TestConfig};
use common::fleet::{DelayLine, all_delivered, logs, send_to_all, subjects};
use common::redis::Redis;
use common::wait_until;

const LIMIT: usize = 3;

/// Three hosts of one fleet in front of `b`.
fn fleet(redis: &Redis, b: &Backend, extra: &str) -> Vec<(Arc<TestConfig>, Daemon)> {
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    (1..=3)
        .map(|i| {
            let cfg = Arc::new(TestConfig::new(
                &name,
                &format!(
                    "lmtp_destination_concurrency_limit = {LIMIT}\n\
                     initial_destination_concurrency = {LIMIT}\n\
                     sluice_fleet_redis = {url}\n\
                     sluice_fleet_host = mx{i}\n\
                     sluice_fleet_lease_time = 2s\n\
                     sluice_fleet_heartbeat_interval = 200ms\n\
                     sluice_fleet_call_timeout = 300ms\n\
                     {extra}",
                    url = redis.url()
                ),
            ));
            let d = Daemon::start(&cfg);
            (cfg, d)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_keep_one_limit_and_pause_together() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(300), capacity: 100, overload_at: None }).await;
    let hosts = fleet(&redis, &b, "");
    let sent = send_to_all(&hosts, "limit", 8).await;
    wait_until("all delivered", Duration::from_secs(60), || all_delivered(&b, &sent), || logs(&hosts));
    assert!(
        b.peak_connections() <= LIMIT,
        "three hosts opened {} connections at once (fleet limit {LIMIT})\n{}",
        b.peak_connections(),
        logs(&hosts)
    );

    // `backend list` on one host shows the fleet's hosts.
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let list = String::from_utf8_lossy(&hosts[0].0.sluice(&["backend", "list"]).stdout).into_owned();
    assert!(list.contains("fleet: ") && ["mx1", "mx2", "mx3"].iter().all(|h| list.contains(h)), "{list}");
    let status = String::from_utf8_lossy(&hosts[1].0.sluice(&["status"]).stdout).into_owned();
    assert!(status.contains("fleet: sluice as mx2: shared through redis"), "{status}");

    // A pause on mx1 holds the mail of mx2 and mx3 too.
    let out = hosts[0].0.sluice(&["backend", "pause", &name]);
    assert!(out.status.success(), "{out:?}");
    let before = b.received().len();
    let held = send_to_all(&hosts, "paused", 1).await;
    wait_until(
        "every host holds its mail for the pause",
        Duration::from_secs(20),
        || hosts.iter().all(|(c, _)| c.log().contains("status=deferred (delivery paused by administrator)")),
        || logs(&hosts),
    );
    assert_eq!(b.received().len(), before, "a paused backend got mail");
    let resumed = Instant::now();
    let out = hosts[0].0.sluice(&["backend", "resume", &name]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "the fleet's mail after resume",
        Duration::from_secs(20),
        || all_delivered(&b, &held),
        || logs(&hosts),
    );
    assert!(
        resumed.elapsed() < Duration::from_secs(10),
        "resume took {:?} to reach every host",
        resumed.elapsed()
    );

    // `--local` pauses mx1 alone: the others deliver, and mx1 stays held
    // through a fleet-wide resume until its own `resume --local`.
    let deferred =
        |c: &TestConfig| c.log().matches("status=deferred (delivery paused by administrator)").count();
    let mx1_before = deferred(&hosts[0].0);
    let out = hosts[0].0.sluice(&["backend", "pause", "--local", &name]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused on this host"), "{out:?}");
    let here = send_to_all(&hosts, "here", 1).await;
    let (mx1, others) = here.split_first().expect("three hosts");
    wait_until("mx2 and mx3 deliver", Duration::from_secs(20), || all_delivered(&b, others), || logs(&hosts));
    wait_until(
        "mx1 holds its mail",
        Duration::from_secs(20),
        || deferred(&hosts[0].0) > mx1_before,
        || logs(&hosts),
    );
    // A shorter fleet-wide pause sent from mx1 does not cut its own short.
    let out = hosts[0].0.sluice(&["backend", "pause", "--for", "1s", &name]);
    assert!(out.status.success(), "{out:?}");
    let out = hosts[1].0.sluice(&["backend", "resume", &name]);
    assert!(out.status.success(), "{out:?}");
    // Past a few heartbeats (200 ms): the fleet's wake-up reached mx1.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!subjects(&b).contains(mx1), "a fleet-wide resume ended mx1's own pause");
    let list = String::from_utf8_lossy(&hosts[0].0.sluice(&["backend", "list"]).stdout).into_owned();
    assert!(list.contains("paused until resumed"), "mx1's own pause ended with the fleet's:\n{list}");
    let out = hosts[0].0.sluice(&["backend", "resume", "--local", &name]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "mx1's mail after its own resume",
        Duration::from_secs(20),
        || all_delivered(&b, std::slice::from_ref(mx1)),
        || logs(&hosts),
    );

    // Fleet parameters are read at start: a reload says so.
    hosts[2].0.append_main_cf("sluice_fleet_user = other\n");
    hosts[2].1.signal("HUP");
    wait_until(
        "the reload's warning",
        Duration::from_secs(10),
        || {
            hosts[2]
                .0
                .log()
                .contains("sluice_fleet_user changed: fleet mode keeps its running settings until restart")
        },
        || logs(&hosts),
    );
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_carry_a_backlog_and_give_their_leases_back_when_it_is_done() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    // A long cache time: the connections must not wait it out.
    let hosts = fleet(&redis, &b, "lmtp_connection_cache_time_limit = 60s\n");
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let first = send_to_all(&hosts[..1], "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&hosts));
    // A backlog of 20 on mx1 (held by its own pause while it is sent).
    assert!(hosts[0].0.sluice(&["backend", "pause", "--local", &name]).status.success());
    let sent = send_to_all(&hosts[..1], "reuse", 20).await;
    let before = b.accepted_connections();
    assert!(hosts[0].0.sluice(&["backend", "resume", "--local", &name]).status.success());
    wait_until("all delivered", Duration::from_secs(60), || all_delivered(&b, &sent), || logs(&hosts));
    // The next mail went over the idle connections, not new ones.
    let opened = b.accepted_connections() - before;
    assert!(opened <= 10, "{opened} connections for 20 messages\n{}", logs(&hosts));
    assert!(b.peak_connections() <= LIMIT, "peak {} (fleet limit {LIMIT})", b.peak_connections());
    // With nothing left to send, the connections close and their leases
    // go back at once, not after the cache time.
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let key = format!("sluice:{{sluice|lmtp:[127.0.0.1]:{}}}:leases", b.port());
    let mut counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = b.connections();
        let leases: usize = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await.expect("ZCARD");
        counts.push((open, leases));
        if open == 0 && leases == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections and leases over time: {counts:?}\n{}", logs(&hosts));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_host_that_steers_carries_a_backlog_on_its_idle_connections_without_asking() {
    // One host, so it steers the adaptive limit: a backlog on its kept
    // connections asks the admission script once per lease and limit
    // change, not once per delivery. Counted by the commands the
    // admission script runs first (ZREMRANGEBYSCORE; the heartbeat runs
    // one too, five a second here).
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let cfg = Arc::new(TestConfig::new(
        &name,
        &format!(
            "lmtp_destination_concurrency_limit = 3\n\
             initial_destination_concurrency = 3\n\
             lmtp_connection_cache_time_limit = 60s\n\
             sluice_fleet_redis = {url}\n\
             sluice_fleet_host = mx1\n\
             sluice_fleet_heartbeat_interval = 200ms\n",
            url = redis.url()
        ),
    ));
    let d = Daemon::start(&cfg);
    let host = [(cfg, d)];
    let first = send_to_all(&host, "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&host));
    assert!(host[0].0.sluice(&["backend", "pause", "--local", &name]).status.success());
    let sent = send_to_all(&host, "backlog", 60).await;
    let asked = || -> u64 {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "INFO", "commandstats"])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("cmdstat_zremrangebyscore:calls="))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let (before, started) = (asked(), Instant::now());
    assert!(host[0].0.sluice(&["backend", "resume", "--local", &name]).status.success());
    wait_until("the backlog", Duration::from_secs(60), || all_delivered(&b, &sent), || logs(&host));
    let heartbeats = (started.elapsed().as_millis() / 200) as u64 + 2;
    let ran = asked() - before;
    let admissions = ran - heartbeats.min(ran);
    assert!(
        admissions < 30,
        "{admissions} admissions for 60 deliveries on kept connections\n{}",
        logs(&host)
    );
    let [(_, d)] = host;
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_arriving_one_message_at_a_time_reuses_a_lingering_connection() {
    // Thirty messages sent one after the other in one SMTP session
    // (smtplib): the queue empties between them, and a connection closed
    // as soon as no job waited (its lease given back) made one connection
    // and one admission per message. It lingers a poll interval instead,
    // and the next message takes it.
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    let cfg = host(&redis.url(), &b, 1);
    let d = Daemon::start(&cfg);
    let host = [(cfg, d)];
    let first = send_to_all(&host, "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&host));
    let before = b.accepted_connections();
    let out = python(host[0].0.smtp, ONE_SESSION, &[]).await;
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    let sent: Vec<String> = (0..30).map(|k| format!("trickle-{k}")).collect();
    wait_until("all delivered", Duration::from_secs(60), || all_delivered(&b, &sent), || logs(&host));
    let opened = b.accepted_connections() - before;
    assert!(opened < 10, "{opened} connections for 30 messages sent one at a time\n{}", logs(&host));
    // Quiet again: the connection closes soon, not after the cache time.
    wait_until("the connection closed", Duration::from_secs(5), || b.connections() == 0, || logs(&host));
    let [(_, d)] = host;
    assert!(d.stop().success());
}

/// Thirty messages, one transaction after the other in one SMTP session.
const ONE_SESSION: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.ehlo("client.test")
for k in range(30):
    s.sendmail("a@sender.test", ["alice@relay.test"],
               f"From: a@sender.test\r\nTo: alice@relay.test\r\nSubject: trickle-{k}\r\n\r\nbody\r\n")
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hosts_own_pause_outlives_its_restart_and_the_fleets_resume() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    let mut hosts = fleet(&redis, &b, "");
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    // Every host knows the backend once it had mail for it.
    let first = send_to_all(&hosts, "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&hosts));
    assert!(hosts[0].0.sluice(&["backend", "pause", "--local", &name]).status.success());
    // mx1 restarts (drained for maintenance, say) while paused on its own.
    let (cfg, d) = hosts.remove(0);
    assert!(d.stop().success());
    let d = Daemon::start(&cfg);
    hosts.insert(0, (cfg, d));
    let held = send_to_all(&hosts[..1], "held", 2).await;
    // A fleet-wide pause and resume from mx2: mx1's own pause stays.
    assert!(hosts[1].0.sluice(&["backend", "pause", &name]).status.success());
    assert!(hosts[1].0.sluice(&["backend", "resume", &name]).status.success());
    let others = send_to_all(&hosts[1..], "others", 1).await;
    wait_until(
        "mx2 and mx3 deliver",
        Duration::from_secs(20),
        || all_delivered(&b, &others),
        || logs(&hosts),
    );
    // Past a few heartbeats (200 ms): the fleet's wake-up reached mx1.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = subjects(&b);
    assert!(
        !held.iter().any(|s| got.contains(s)),
        "the fleet's resume ended mx1's own pause\n{}",
        logs(&hosts)
    );
    let list = String::from_utf8_lossy(&hosts[0].0.sluice(&["backend", "list"]).stdout).into_owned();
    assert!(list.contains("paused until resumed"), "mx1 after its restart:\n{list}");
    assert!(hosts[0].0.sluice(&["backend", "resume", "--local", &name]).status.success());
    wait_until("mx1's mail", Duration::from_secs(20), || all_delivered(&b, &held), || logs(&hosts));
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_asks_for_admissions_together_when_redis_is_far() {
    // Redis 100 ms away: asked one after the other, admissions would start
    // one delivery per 100 ms, each done (the backend answers at once)
    // before the next starts, one connection at a time. Asked together,
    // a backlog starts several deliveries per round trip.
    let redis = Redis::start();
    let far = DelayLine::start(redis.addr(), Duration::from_millis(100)).await;
    let b = Backend::start(Proto::Lmtp).await;
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let cfg = Arc::new(TestConfig::new(
        &name,
        &format!(
            "lmtp_destination_concurrency_limit = 8
\
             initial_destination_concurrency = 8
\
             sluice_fleet_redis = {url}
\
             sluice_fleet_host = mx1
\
             sluice_fleet_call_timeout = 2s
",
            url = far.url()
        ),
    ));
    let d = Daemon::start(&cfg);
    let host = [(cfg, d)];
    let first = send_to_all(&host, "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&host));
    // A backlog of 16, held by this host's own pause while it is sent.
    assert!(host[0].0.sluice(&["backend", "pause", "--local", &name]).status.success());
    let sent = send_to_all(&host, "together", 16).await;
    b.reset_peaks();
    assert!(host[0].0.sluice(&["backend", "resume", "--local", &name]).status.success());
    wait_until("all delivered", Duration::from_secs(60), || all_delivered(&b, &sent), || logs(&host));
    assert!(
        b.peak_connections() >= 4,
        "at most {} deliveries at once: admissions asked one after the other\n{}",
        b.peak_connections(),
        logs(&host)
    );
    assert!(b.peak_connections() <= 8, "peak {} (limit 8)", b.peak_connections());
    let [(_, d)] = host;
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_busy_on_its_idle_connection_hands_the_slot_to_a_waiting_host() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(100), capacity: 100, overload_at: None }).await;
    // One slot for the fleet: mx1's backlog would keep it on its idle
    // connection to the end, but its turn is over after a heartbeat
    // (200 ms) once mx2 waits.
    let hosts =
        fleet(&redis, &b, "lmtp_destination_concurrency_limit = 1\ninitial_destination_concurrency = 1\n");
    // A backlog on mx1: held by its own pause while it is sent (a backend
    // is known to a host once it had mail for it).
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let first = send_to_all(&hosts[..1], "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&hosts));
    assert!(hosts[0].0.sluice(&["backend", "pause", "--local", &name]).status.success());
    let backlog = send_to_all(&hosts[..1], "backlog", 30).await;
    assert!(hosts[0].0.sluice(&["backend", "resume", "--local", &name]).status.success());
    wait_until(
        "mx1 is delivering its backlog",
        Duration::from_secs(30),
        || backlog.iter().any(|s| subjects(&b).contains(s)),
        || logs(&hosts),
    );
    let waiting = send_to_all(&hosts[1..2], "waiting", 1).await;
    wait_until("mx2's message", Duration::from_secs(30), || all_delivered(&b, &waiting), || logs(&hosts));
    let got = subjects(&b);
    let left = backlog.iter().filter(|s| !got.contains(*s)).count();
    assert!(left >= 5, "mx2 waited for mx1's backlog ({left} left)\n{}", logs(&hosts));
    wait_until("the backlog", Duration::from_secs(60), || all_delivered(&b, &backlog), || logs(&hosts));
    assert_eq!(b.peak_connections(), 1, "one slot, one connection");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breaker_opened_by_the_fleet_stops_every_host_and_recovery_wakes_them() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    let hosts = fleet(
        &redis,
        &b,
        "lmtp_sluice_breaker_failure_threshold = 3\nlmtp_sluice_breaker_cooldown = 6s\nlmtp_sluice_breaker_max_cooldown = 6s\n",
    );
    b.set_mode(Mode::Greet421).await;
    let sent = send_to_all(&hosts, "outage", 3).await;
    wait_until(
        "the fleet breaker opens",
        Duration::from_secs(30),
        || logs(&hosts).contains("fleet circuit breaker open after"),
        || logs(&hosts),
    );
    // The breaker opened at or before `seen` (the log is polled, late on a
    // busy machine), so its probe is due no earlier than 6 s before `seen`
    // plus the cool-down. Within a second of the open, nobody starts
    // deliveries any more: no new connection from then until 3.5 s after
    // `seen`, which is before the probe unless the log was read more than
    // 2.5 s late (the 2 s cool-down this test had left 0.3 s).
    let seen = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let quiet = b.accepted_connections();
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(seen.elapsed())).await;
    assert_eq!(b.accepted_connections(), quiet, "a host kept connecting with the fleet breaker open");
    assert!(
        hosts.iter().all(|(c, _)| c.log().contains("delivery temporarily suspended")),
        "every host holds its mail back:\n{}",
        logs(&hosts)
    );

    let recovered = Instant::now();
    b.set_mode(Mode::Normal).await;
    wait_until(
        "every host's backlog delivered",
        Duration::from_secs(30),
        || all_delivered(&b, &sent),
        || logs(&hosts),
    );
    let took = recovered.elapsed();
    let all = logs(&hosts);
    assert_eq!(all.matches("fleet circuit breaker closed").count(), 1, "{all}");
    // What is left of the cool-down (at most 2.5 s), one probe, then
    // every host's backlog.
    assert!(took < Duration::from_secs(10), "backlog took {took:?} after recovery");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_killed_with_its_slots_gives_them_back_within_the_lease_time() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    // Deliveries that take long enough for mx1 to die holding every slot.
    b.set_mode(Mode::Slow { base: Duration::from_secs(30), capacity: 100, overload_at: None }).await;
    let mut hosts = fleet(&redis, &b, "");
    // Its mail stays in its queue (delivered when it restarts).
    send_to_all(&hosts[..1], "doomed", LIMIT).await;
    wait_until("mx1 holds every slot", Duration::from_secs(20), || b.connections() == LIMIT, || logs(&hosts));
    let (_, d1) = hosts.remove(0);
    d1.signal("KILL");
    drop(d1);
    b.set_mode(Mode::Normal).await;
    let killed = Instant::now();
    let later = send_to_all(&hosts, "after", 1).await;
    wait_until("mx2 and mx3 deliver", Duration::from_secs(20), || all_delivered(&b, &later), || logs(&hosts));
    let took = killed.elapsed();
    // Lease time 2 s, renewed up to the kill: back within 2 s plus a beat.
    assert!(took < Duration::from_secs(5), "slots came back after {took:?}");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_loses_nothing_and_shared_mode_resumes() {
    let mut redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(200), capacity: 100, overload_at: None }).await;
    let hosts = fleet(&redis, &b, "");
    let first = send_to_all(&hosts, "before", 4).await;
    wait_until("some delivered", Duration::from_secs(30), || b.received().len() >= 3, || logs(&hosts));
    redis.stop();
    let during = send_to_all(&hosts, "during", 4).await;
    wait_until(
        "every host on its local share",
        Duration::from_secs(20),
        || hosts.iter().all(|(c, _)| c.log().contains("fleet: redis unreachable; using local share 1 of 3")),
        || logs(&hosts),
    );
    wait_until(
        "everything delivered without redis",
        Duration::from_secs(60),
        || all_delivered(&b, &first) && all_delivered(&b, &during),
        || logs(&hosts),
    );
    redis.resume();
    wait_until(
        "shared mode again",
        Duration::from_secs(20),
        || hosts.iter().all(|(c, _)| c.log().contains("fleet: redis answers again")),
        || logs(&hosts),
    );
    let after = send_to_all(&hosts, "after", 4).await;
    wait_until(
        "delivered after redis returned",
        Duration::from_secs(60),
        || all_delivered(&b, &after),
        || logs(&hosts),
    );
    // The fleet limit, plus at most one host's share around the switches.
    assert!(b.peak_connections() <= LIMIT + 1, "peak {} connections (limit {LIMIT})", b.peak_connections());
    let all = logs(&hosts);
    assert!(!all.contains("status=bounced"), "{all}");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_host_steers_the_fleets_adaptive_limit_and_another_takes_over() {
    let redis = Redis::start();
    let b = Backend::start(Proto::Lmtp).await;
    // Every extra connection costs all of them 80 ms: one is best, and the
    // fleet's three hosts together should come down to it.
    b.set_mode(Mode::Retrograde {
        base: Duration::from_millis(20),
        per_connection: Duration::from_millis(80),
        overload_at: None,
    })
    .await;
    let mut hosts = fleet(&redis, &b, "");
    // A backlog on every host, released at once (an idle limit learns
    // nothing): held by a fleet-wide pause while it is sent.
    // (A backend is known to a host once it had mail for it.)
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    let first = send_to_all(&hosts, "first", 1).await;
    wait_until("first delivered", Duration::from_secs(30), || all_delivered(&b, &first), || logs(&hosts));
    let out = hosts[0].0.sluice(&["backend", "pause", &name]);
    assert!(out.status.success(), "{out:?}");
    let sent = send_to_all(&hosts, "pace", 15).await;
    assert!(hosts[0].0.sluice(&["backend", "resume", &name]).status.success());
    wait_until("all delivered", Duration::from_secs(90), || all_delivered(&b, &sent), || logs(&hosts));
    let all = logs(&hosts);
    let steering: Vec<usize> = (0..3)
        .filter(|&i| hosts[i].0.log().contains("this host steers the fleet's concurrency limit"))
        .collect();
    assert_eq!(steering.len(), 1, "one limit owner:\n{all}");
    // The fleet's limit came down from 3, on the samples of all three.
    assert!(all.contains("fleet concurrency 3 -> 2") || all.contains("fleet concurrency 3 -> 1"), "{all}");
    let list =
        String::from_utf8_lossy(&hosts[steering[0]].0.sluice(&["backend", "list"]).stdout).into_owned();
    assert!(list.contains("fleet"), "{list}");

    // The owner dies: another host steers within the lease time (2 s).
    let (_, owner) = hosts.remove(steering[0]);
    owner.signal("KILL");
    drop(owner);
    let killed = Instant::now();
    wait_until(
        "another host steers",
        Duration::from_secs(10),
        || hosts.iter().any(|(c, _)| c.log().contains("this host steers the fleet's concurrency limit")),
        || logs(&hosts),
    );
    assert!(killed.elapsed() < Duration::from_secs(5), "took over after {:?}", killed.elapsed());
    let more = send_to_all(&hosts, "after", 3).await;
    wait_until(
        "delivered after the takeover",
        Duration::from_secs(30),
        || all_delivered(&b, &more),
        || logs(&hosts),
    );
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

/// One fleet host on `url` in front of `b`.
fn host(url: &str, b: &Backend, i: u32) -> Arc<TestConfig> {
    let name = format!("lmtp:[127.0.0.1]:{}", b.port());
    Arc::new(TestConfig::new(
        &name,
        &format!(
            "sluice_fleet_redis = {url}\n\
             sluice_fleet_host = mx{i}\n\
             sluice_fleet_heartbeat_interval = 200ms\n\
             sluice_fleet_call_timeout = 1s\n"
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_over_rediss_checks_the_servers_certificate() {
    // A TLS-only redis-server with a certificate from a CA made here.
    let pki = common::inbound::TestPki::new();
    let redis = Redis::start_tls(&pki.cert_pem, &pki.key_pem);
    assert!(redis.url().starts_with("rediss://"));
    let roots = tempfile::tempdir().expect("temp dir");
    let ca = roots.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("ca");
    let b = Backend::start(Proto::Lmtp).await;
    // mx1 trusts the CA (the system's roots, as rustls reads them, point
    // at it); mx2 does not, so its handshake fails and it runs alone.
    let trusting = host(&redis.url(), &b, 1);
    let d1 = Daemon::start_with_env(&trusting, &[("SSL_CERT_FILE", ca.as_path())]);
    let other = host(&redis.url(), &b, 2);
    let d2 = Daemon::start_with_env(&other, &[("SSL_CERT_FILE", roots.path().join("none.pem").as_path())]);
    let status = |c: &TestConfig| String::from_utf8_lossy(&c.sluice(&["status"]).stdout).into_owned();
    wait_until(
        "mx1 shared through redis over TLS",
        Duration::from_secs(20),
        || status(&trusting).contains("fleet: sluice as mx1: shared through redis"),
        || format!("{}\n{}", status(&trusting), trusting.log()),
    );
    let mx1 = vec![(Arc::clone(&trusting), d1)];
    let sent = send_to_all(&mx1, "tls", 1).await;
    wait_until("delivered", Duration::from_secs(20), || all_delivered(&b, &sent), || trusting.log());
    // `backend list` shows the fleet's hosts, read from Redis.
    let list = String::from_utf8_lossy(&trusting.sluice(&["backend", "list"]).stdout).into_owned();
    assert!(list.contains("mx1"), "{list}");
    wait_until(
        "mx2 refuses the unknown CA and runs on its share",
        Duration::from_secs(20),
        || other.log().contains("redis unreachable"),
        || other.log(),
    );
    assert!(!status(&other).contains("shared through redis"), "{}", status(&other));
    assert!(d2.stop().success());
    for (_, d) in mx1 {
        assert!(d.stop().success());
    }
}
