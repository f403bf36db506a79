//! Configuration checks of the later features, loaded from text: milters
//! per listener and their mistakes, sender authentication values, fleet
//! mode's Redis URLs and Sentinel settings, each error named by file, line
//! and parameter.

mod common;

use std::path::Path;
use std::time::Duration;

use common::config::{load, load_err, tmp};

#[test]
fn milters_per_listener_with_their_own_settings() {
    let d = tmp();
    let main = "smtpd_milters = inet:127.0.0.1:11332\nmilter_default_action = accept\nmilter_command_timeout = 10s\n";
    let master = "\
smtp inet n - y - - smtpd
2525 inet n - y - - smtpd
  -o { smtpd_milters = { inet:127.0.0.1:11332, default_action=tempfail }, unix:private/dkim }
2526 inet n - y - - smtpd -o smtpd_milters=
";
    let l = load(d.path(), main, master);
    let services = l.config.smtpd_services();
    let main_list = services[0].config.milters();
    assert_eq!(main_list.len(), 1);
    assert_eq!(main_list[0].name, "inet:127.0.0.1:11332");
    assert_eq!(main_list[0].default_action, sluice::config::MilterDefault::Accept);
    assert_eq!(main_list[0].command_timeout, Duration::from_secs(10));
    let own = services[1].config.milters();
    assert_eq!(own.len(), 2);
    assert_eq!(own[0].default_action, sluice::config::MilterDefault::Tempfail);
    assert_eq!(own[0].command_timeout, Duration::from_secs(10), "the global setting still applies");
    assert_eq!(
        own[1].endpoint,
        sluice::config::MilterEndpoint::Unix(
            Path::new(l.config.string("queue_directory")).join("private/dkim")
        )
    );
    assert!(services[2].config.milters().is_empty());
    // The macro lists keep their braces.
    assert_eq!(l.config.tokens("milter_rcpt_macros"), ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]);
}

#[test]
fn milter_mistakes_name_the_file_line_and_parameter() {
    let d = tmp();
    let dir = d.path().display();
    let main = "smtpd_milters = inet:11332@localhost, { inet:h:1, default_action=maybe }\nmilter_protocol = 5\nmilter_default_action = drop\n";
    let master = "smtp inet n - y - - smtpd -o smtpd_milters=smtp:x\n";
    let errors = load_err(d.path(), main, master);
    let want = [
        format!(
            "{dir}/main.cf:1: smtpd_milters: milter service \"inet:11332@localhost\": write inet:host:port"
        ),
        format!("{dir}/main.cf:1: smtpd_milters: milter inet:h:1: default_action: bad value \"maybe\""),
        format!("{dir}/main.cf:2: milter_protocol: bad protocol information \"5\""),
        format!("{dir}/main.cf:3: milter_default_action: bad value \"drop\""),
        format!("{dir}/master.cf:1: smtpd_milters: invalid transport name \"smtp\""),
    ];
    for w in &want {
        assert!(errors.iter().any(|e| e.starts_with(w.as_str())), "missing {w:?} in {errors:#?}");
    }
}

#[test]
fn sender_authentication_values_are_checked_with_file_and_line() {
    let d = tmp();
    let dir = d.path().display().to_string();
    let main = "sluice_auth_checks = spf, dkim, spam\n\
                sluice_dmarc_reject_policy = drop\n\
                sluice_dns_servers = ns.example.net\n\
                sluice_auth_timeout = soon\n\
                sluice_auth_exempt_clients = 10.0.0.1/8\n";
    let errors = load_err(d.path(), main, "");
    for want in [
        format!(
            "{dir}/main.cf:1: sluice_auth_checks: unknown word \"spam\" (expected any of spf, dkim, dmarc, arc)"
        ),
        format!(
            "{dir}/main.cf:2: sluice_dmarc_reject_policy: bad value \"drop\" (expected reject, hold, mark)"
        ),
        format!(
            "{dir}/main.cf:3: sluice_dns_servers: bad name server \"ns.example.net\" (expected an IP address, address:port or [ipv6]:port)"
        ),
        format!("{dir}/main.cf:4: sluice_auth_timeout: bad time value \"soon\""),
        format!("{dir}/main.cf:5: sluice_auth_exempt_clients: non-null host address bits in \"10.0.0.1/8\""),
    ] {
        assert!(errors.iter().any(|e| e.starts_with(&want)), "missing {want}\nin {errors:#?}");
    }
    // The defaults load, and follow what they refer to.
    let c = load(d.path(), "sluice_peername_lookup_timeout = 2s\nmynetworks = 192.0.2.0/24\n", "").config;
    assert_eq!(c.time("sluice_auth_timeout"), std::time::Duration::from_secs(2));
    assert!(c.matches_client("sluice_auth_exempt_clients", "192.0.2.9".parse().unwrap()));
    assert_eq!(c.list("sluice_auth_checks"), ["spf", "dkim", "dmarc", "arc"]);
}

#[test]
fn fleet_redis_urls_are_checked_with_file_line_and_parameter() {
    let d = tmp();
    let dir = d.path().display().to_string();
    for (value, why) in [
        ("http://redis.example:6379", "expected redis:// or rediss://"),
        ("redis://:6379", "missing or malformed host"),
        ("redis://redis.example:0", "the port must be 1 to 65535"),
        ("redis://redis.example:99999", "the port must be 1 to 65535"),
        ("redis://10.0.0.1:6379 rediss://bad..host:6380", "missing or malformed host"),
        ("redis://redis.example/db1", "the path must be a database number"),
    ] {
        let errors =
            load_err(d.path(), &format!("myhostname = mx.example\nsluice_fleet_redis = {value}\n"), "");
        let want = format!("{dir}/main.cf:2: sluice_fleet_redis: bad Redis URL");
        assert!(
            errors.iter().any(|e| e.starts_with(&want) && e.contains(why)),
            "{value}: missing {want} ... {why}\nin {errors:#?}"
        );
    }
    let ok = "sluice_fleet_redis = redis://127.0.0.1:6379/0, rediss://sluice:secret@redis.example.org:6380 \
              redis://[::1]:6379 redis://redis-2.example\n";
    let c = load(d.path(), ok, "").config;
    assert_eq!(c.list("sluice_fleet_redis").len(), 4);
}

#[test]
fn fleet_sentinel_settings_are_checked_with_file_line_and_parameter() {
    let d = tmp();
    let dir = d.path().display().to_string();
    for (main, line, param, why) in [
        (
            "sluice_fleet_sentinel_master = mymaster\n",
            2,
            "sluice_fleet_sentinel_master",
            "needs sluice_fleet_redis",
        ),
        (
            "sluice_fleet_redis = redis://127.0.0.1:26379\nsluice_fleet_sentinel_master = my master\n",
            3,
            "sluice_fleet_sentinel_master",
            "bad master name \"my master\"",
        ),
        (
            "sluice_fleet_redis = redis://10.0.0.1:26379, redis://s2.example\nsluice_fleet_sentinel_master = m\n",
            2,
            "sluice_fleet_redis",
            "sentinel URL \"redis://s2.example\" has no port",
        ),
        (
            "sluice_fleet_redis = redis://[::1]/0\nsluice_fleet_sentinel_master = m\n",
            2,
            "sluice_fleet_redis",
            "has no port",
        ),
    ] {
        let errors = load_err(d.path(), &format!("myhostname = mx.example\n{main}"), "");
        let want = format!("{dir}/main.cf:{line}: {param}: ");
        assert!(
            errors.iter().any(|e| e.starts_with(&want) && e.contains(why)),
            "{main}: missing {want}... {why}\nin {errors:#?}"
        );
    }
    // The same URLs without a port are Redis servers' when no master is named.
    load(d.path(), "sluice_fleet_redis = redis://s2.example\n", "");
    let ok = "sluice_fleet_redis = redis://10.0.0.1:26379, rediss://[::1]:26380/2 redis://s3.example:26379\n\
              sluice_fleet_sentinel_master = mail-fleet\n";
    let c = load(d.path(), ok, "").config;
    assert_eq!(c.string("sluice_fleet_sentinel_master"), "mail-fleet");
}
