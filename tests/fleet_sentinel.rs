//! Fleet mode through Redis Sentinel, end to end: two `sluice` daemons
//! told only where a private `redis-server --sentinel` is and the master's
//! name, a private primary and its replica (passwords on the servers and
//! on the sentinel), the switchable test backend. The hosts take their
//! leases on the master the sentinel names; when that master is killed
//! (kill -9) mid-run, the sentinel promotes the replica, the hosts follow
//! it, and every message is delivered, the fleet's state then written to
//! the new master. A switchover (`SENTINEL FAILOVER`) leaves the old master
//! running as a replica that refuses the fleet's writes, and the hosts move
//! too; there the first sentinel URL is dead and the next one answers. A
//! sentinel that names another master while the old one still answers
//! (cut off from the sentinels, not from the host) is followed too. A
//! sentinel that knows no master of the configured name leaves the host
//! running on its local share, with a warning. With `rediss://` sentinel
//! URLs the host speaks TLS to the sentinel and to the master, checking
//! both certificates.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::daemon::{Daemon, TestConfig};
use common::fleet::{delivered, logs, send_to_all};
use common::redis::{Redis, Sentinel, SentinelTls};
use common::wait_until;
use sluice::delivery::gate::fleet::scripts::{Keys, Scripts, hosts_key};

const LIMIT: usize = 3;
const MASTER: &str = "fleetmaster";
/// The servers' password (and the sentinel's `auth-pass`), and the
/// sentinel's own: both come from files, as an operator would keep them.
const SERVER_PW: &str = "fleet-server-secret";
const SENTINEL_PW: &str = "fleet-sentinel-secret";

/// A host of the fleet `sluice` behind the sentinels `urls`, asking for
/// `master`.
fn host(urls: &str, master: &str, b: &Backend, i: u32, secrets: &std::path::Path) -> Arc<TestConfig> {
    Arc::new(TestConfig::new(
        &format!("lmtp:[127.0.0.1]:{}", b.port()),
        &format!(
            "lmtp_destination_concurrency_limit = {LIMIT}\n\
             initial_destination_concurrency = {LIMIT}\n\
             sluice_fleet_redis = {url}\n\
             sluice_fleet_sentinel_master = {master}\n\
             sluice_fleet_password_file = {dir}/server.pw\n\
             sluice_fleet_sentinel_password_file = {dir}/sentinel.pw\n\
             sluice_fleet_host = mx{i}\n\
             sluice_fleet_lease_time = 2s\n\
             sluice_fleet_heartbeat_interval = 200ms\n\
             sluice_fleet_call_timeout = 300ms\n",
            url = urls,
            dir = secrets.display(),
        ),
    ))
}

fn secrets() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    std::fs::write(d.path().join("server.pw"), format!("{SERVER_PW}\n")).expect("server.pw");
    std::fs::write(d.path().join("sentinel.pw"), format!("{SENTINEL_PW}\n")).expect("sentinel.pw");
    d
}

/// After a move to `master`: waits for every lease copied from the old
/// master to end (given back or expired), then sends `n` messages to each
/// host and sees their leases on `master` and the mail delivered within
/// `within`.
async fn deliver_through(
    master: &Redis,
    keys: &Keys,
    hosts: &[(Arc<TestConfig>, Daemon)],
    b: &Backend,
    n: usize,
    within: Duration,
) {
    wait_until(
        "no lease left from before",
        Duration::from_secs(10),
        || live_leases(master, &keys.leases) == 0,
        || logs(hosts),
    );
    let after = send_to_all(hosts, "after", n).await;
    wait_until(
        "leases on the new master",
        Duration::from_secs(20),
        || live_leases(master, &keys.leases) > 0,
        || logs(hosts),
    );
    wait_until("delivered after", within, || delivered(b, &after) == after.len(), || logs(hosts));
}

/// Leases in `key` on `server` that have not expired by its clock.
fn live_leases(server: &Redis, key: &str) -> usize {
    let mut conn = server.connection(Some(SERVER_PW));
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
    let now = secs * 1000 + micros / 1000;
    redis::cmd("ZCOUNT").arg(key).arg(format!("({now}")).arg("+inf").query(&mut conn).unwrap_or(0)
}

/// Whether `server` has the fleet's admission script cached.
fn has_admit_script(server: &Redis) -> bool {
    let mut conn = server.connection(Some(SERVER_PW));
    let hash = Scripts::default().admit.get_hash().to_owned();
    let exists: Vec<bool> = redis::cmd("SCRIPT").arg("EXISTS").arg(hash).query(&mut conn).expect("SCRIPT");
    exists == [true]
}

/// The hosts registered on `server`.
fn registered(server: &Redis) -> Vec<String> {
    let mut conn = server.connection(Some(SERVER_PW));
    redis::cmd("ZRANGE").arg(hosts_key("sluice")).arg(0).arg(-1).query(&mut conn).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_follows_the_master_the_sentinel_names_through_a_failover() {
    let auth = ["--requirepass", SERVER_PW, "--masterauth", SERVER_PW];
    let mut primary = Redis::start_with(&auth);
    let replica_of = primary.port().to_string();
    let replica = Redis::start_with(&[&auth[..], &["--replicaof", "127.0.0.1", &replica_of]].concat());
    let sentinel = Sentinel::start(MASTER, primary.addr(), Some((SERVER_PW, SENTINEL_PW)));
    sentinel.wait_replicas(MASTER, 1);

    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(300), capacity: 100, overload_at: None }).await;
    let keys = Keys::new("sluice", &format!("lmtp:[127.0.0.1]:{}", b.port()));
    let secrets = secrets();
    let hosts: Vec<_> = (1..=2)
        .map(|i| {
            let cfg = host(&sentinel.url(), MASTER, &b, i, secrets.path());
            let d = Daemon::start(&cfg);
            (cfg, d)
        })
        .collect();

    // The hosts find the primary through the sentinel and share one limit
    // there: their leases are in the primary's keys.
    let before = send_to_all(&hosts, "before", 4).await;
    wait_until(
        "leases on the primary",
        Duration::from_secs(20),
        || live_leases(&primary, &keys.leases) > 0,
        || logs(&hosts),
    );
    wait_until(
        "all delivered",
        Duration::from_secs(30),
        || delivered(&b, &before) == before.len(),
        || logs(&hosts),
    );
    assert!(b.peak_connections() <= LIMIT, "peak {} connections (fleet limit {LIMIT})", b.peak_connections());
    let found = format!("fleet: sentinels name master {MASTER} at 127.0.0.1:{}", primary.port());
    assert!(hosts.iter().all(|(c, _)| c.log().contains(&found)), "{}", logs(&hosts));
    let mut on_primary = registered(&primary);
    on_primary.sort();
    assert_eq!(on_primary, ["mx1", "mx2"]);
    let status = String::from_utf8_lossy(&hosts[0].0.sluice(&["status"]).stdout).into_owned();
    let named = format!("shared through redis (master 127.0.0.1:{}, named by the sentinels)", primary.port());
    assert!(status.contains(&named), "{status}");

    // Kill the primary while mail is on its way; the sentinel promotes the
    // replica and the hosts move there.
    let during = send_to_all(&hosts, "during", 4).await;
    wait_until("some delivered", Duration::from_secs(20), || delivered(&b, &during) >= 2, || logs(&hosts));
    // Scripts are not replicated: the new master will get them from the
    // hosts' EVALSHA, then EVAL on NOSCRIPT.
    assert!(has_admit_script(&primary) && !has_admit_script(&replica));
    let old = primary.port();
    primary.stop();
    wait_until(
        "the sentinel promotes the replica",
        Duration::from_secs(30),
        || sentinel.master_port(MASTER) == Some(replica.port()),
        || logs(&hosts),
    );
    let moved = format!("fleet: master {MASTER} moved from 127.0.0.1:{old} to 127.0.0.1:{}", replica.port());
    wait_until(
        "every host follows the new master, shared again",
        Duration::from_secs(20),
        || {
            hosts.iter().all(|(c, _)| {
                let log = c.log();
                log.contains(&moved) && log.contains("fleet: redis answers again")
            })
        },
        || logs(&hosts),
    );
    wait_until(
        "mail sent around the failover delivered",
        Duration::from_secs(60),
        || delivered(&b, &during) == during.len(),
        || logs(&hosts),
    );

    // Leases taken from now on are the new master's: first wait for every
    // lease copied from the old primary to end (given back or expired),
    // then new deliveries show up there.
    deliver_through(&replica, &keys, &hosts, &b, 4, Duration::from_secs(60)).await;
    assert!(has_admit_script(&replica), "the new master never got the admission script");
    let mut on_new = registered(&replica);
    on_new.sort();
    assert_eq!(on_new, ["mx1", "mx2"]);
    let all = logs(&hosts);
    assert!(!all.contains("status=bounced"), "{all}");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_without_the_named_master_is_a_warning_and_the_local_share() {
    let auth = ["--requirepass", SERVER_PW];
    let primary = Redis::start_with(&auth);
    let sentinel = Sentinel::start(MASTER, primary.addr(), Some((SERVER_PW, SENTINEL_PW)));
    let b = Backend::start(Proto::Lmtp).await;
    let secrets = secrets();
    let cfg = host(&sentinel.url(), "nosuchmaster", &b, 1, secrets.path());
    let hosts = vec![(Arc::clone(&cfg), Daemon::start(&cfg))];
    let sent = send_to_all(&hosts, "local", 3).await;
    wait_until(
        "delivered on the local share",
        Duration::from_secs(30),
        || delivered(&b, &sent) == sent.len(),
        || logs(&hosts),
    );
    let log = cfg.log();
    assert!(
        log.contains("fleet: sentinels: none names a master nosuchmaster that answers as master"),
        "{log}"
    );
    let status = String::from_utf8_lossy(&cfg.sluice(&["status"]).stdout).into_owned();
    assert!(status.contains("redis unreachable, on the local share"), "{status}");
    assert!(registered(&primary).is_empty(), "a host registered without a master of its name");
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_demotes_the_master_and_the_fleet_moves_with_it() {
    let auth = ["--requirepass", SERVER_PW, "--masterauth", SERVER_PW];
    let primary = Redis::start_with(&auth);
    let replica_of = primary.port().to_string();
    let replica = Redis::start_with(&[&auth[..], &["--replicaof", "127.0.0.1", &replica_of]].concat());
    let sentinel = Sentinel::start(MASTER, primary.addr(), Some((SERVER_PW, SENTINEL_PW)));
    sentinel.wait_replicas(MASTER, 1);
    let b = Backend::start(Proto::Lmtp).await;
    b.set_mode(Mode::Slow { base: Duration::from_millis(200), capacity: 100, overload_at: None }).await;
    let keys = Keys::new("sluice", &format!("lmtp:[127.0.0.1]:{}", b.port()));
    let secrets = secrets();
    // The first sentinel listed is down: the next one is asked.
    let urls = format!("redis://127.0.0.1:{}, {}", common::free_port(), sentinel.url());
    let cfg = host(&urls, MASTER, &b, 1, secrets.path());
    let hosts = vec![(Arc::clone(&cfg), Daemon::start(&cfg))];
    let before = send_to_all(&hosts, "before", 3).await;
    wait_until(
        "delivered",
        Duration::from_secs(30),
        || delivered(&b, &before) == before.len(),
        || logs(&hosts),
    );
    assert_eq!(registered(&primary), ["mx1"]);

    // The old master stays up, demoted: the fleet's writes there fail
    // (READONLY) and the host asks the sentinel again, unless its periodic
    // check asks first.
    let _: String = sentinel.ask(&["failover", MASTER]).expect("SENTINEL FAILOVER");
    wait_until(
        "the sentinel names the replica",
        Duration::from_secs(30),
        || sentinel.master_port(MASTER) == Some(replica.port()),
        || logs(&hosts),
    );
    let moved = format!(
        "fleet: master {MASTER} moved from 127.0.0.1:{} to 127.0.0.1:{}",
        primary.port(),
        replica.port()
    );
    wait_until("the host follows", Duration::from_secs(20), || cfg.log().contains(&moved), || logs(&hosts));
    deliver_through(&replica, &keys, &hosts, &b, 3, Duration::from_secs(30)).await;
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinels_and_master_over_tls() {
    // A TLS-only master and sentinel with certificates from a CA made here.
    let pki = common::inbound::TestPki::new();
    let primary = Redis::start_tls(&pki.cert_pem, &pki.key_pem);
    let tls = SentinelTls { cert_pem: &pki.cert_pem, key_pem: &pki.key_pem, ca_pem: &pki.ca_pem };
    let sentinel = Sentinel::start_with(MASTER, primary.addr(), None, Some(tls));
    assert!(sentinel.url().starts_with("rediss://"));
    let roots = tempfile::tempdir().expect("temp dir");
    let ca = roots.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("ca");
    let b = Backend::start(Proto::Lmtp).await;
    // No passwords here: empty files.
    let secrets = tempfile::tempdir().expect("temp dir");
    for f in ["server.pw", "sentinel.pw"] {
        std::fs::write(secrets.path().join(f), "").expect("pw");
    }
    let cfg = host(&sentinel.url(), MASTER, &b, 1, secrets.path());
    let hosts = vec![(Arc::clone(&cfg), Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", ca.as_path())]))];
    let sent = send_to_all(&hosts, "tls", 2).await;
    wait_until("delivered", Duration::from_secs(30), || delivered(&b, &sent) == sent.len(), || logs(&hosts));
    let found = format!("fleet: sentinels name master {MASTER} at 127.0.0.1:{}", primary.port());
    wait_until(
        "the master found over TLS",
        Duration::from_secs(20),
        || cfg.log().contains(&found),
        || logs(&hosts),
    );
    let status = String::from_utf8_lossy(&cfg.sluice(&["status"]).stdout).into_owned();
    assert!(status.contains("shared through redis"), "{status}\n{}", logs(&hosts));
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_the_sentinel_replaced_is_left_while_it_still_answers() {
    // Two unrelated servers, both masters: the sentinel first watches `a`,
    // then is told the master is `b`, while `a` keeps taking writes (as a
    // master cut off from the sentinels would).
    let auth = ["--requirepass", SERVER_PW];
    let a = Redis::start_with(&auth);
    let b_redis = Redis::start_with(&auth);
    let sentinel = Sentinel::start(MASTER, a.addr(), Some((SERVER_PW, SENTINEL_PW)));
    let b = Backend::start(Proto::Lmtp).await;
    let secrets = secrets();
    let cfg = host(&sentinel.url(), MASTER, &b, 1, secrets.path());
    let hosts = vec![(Arc::clone(&cfg), Daemon::start(&cfg))];
    wait_until("registered on a", Duration::from_secs(20), || registered(&a) == ["mx1"], || logs(&hosts));

    let port = b_redis.port().to_string();
    let _: String = sentinel.ask(&["remove", MASTER]).expect("SENTINEL REMOVE");
    let _: String = sentinel.ask(&["monitor", MASTER, "127.0.0.1", &port, "1"]).expect("SENTINEL MONITOR");
    let _: String = sentinel.ask(&["set", MASTER, "auth-pass", SERVER_PW]).expect("SENTINEL SET");
    let moved = format!("fleet: master {MASTER} moved from 127.0.0.1:{} to 127.0.0.1:{port}", a.port());
    // Checked every 10 heartbeats of 200 ms while shared.
    wait_until(
        "the host leaves the replaced master",
        Duration::from_secs(15),
        || cfg.log().contains(&moved) && registered(&b_redis) == ["mx1"],
        || logs(&hosts),
    );
    assert!(!cfg.log().contains("redis unreachable"), "the old master answered throughout\n{}", logs(&hosts));
    let sent = send_to_all(&hosts, "moved", 2).await;
    wait_until("delivered", Duration::from_secs(30), || delivered(&b, &sent) == sent.len(), || logs(&hosts));
    for (_, d) in hosts {
        assert!(d.stop().success());
    }
}
