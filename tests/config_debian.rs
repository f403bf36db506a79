//! A realistic MX relay configuration, written the way a Debian
//! administrator writes it for Postfix (Debian's default main.cf and
//! master.cf plus relay_domains, relay_recipient_maps and transport_maps in
//! hash: tables), loaded by sluice without edits: it must load with
//! warnings only for what sluice does not implement, and resolve addresses
//! to the transports Postfix would use.

#[path = "config_debian/fixture.rs"]
mod fixture;

use std::process::Command;
use std::time::Duration;

use sluice::config::{Config, NextHop, Protocol, Route};

fn deliver(transport: &str, protocol: Protocol, nexthop: NextHop) -> Route {
    Route::Deliver { transport: transport.into(), protocol, nexthop, by_domain: false }
}

/// A route whose next hop is the recipient's domain (no next hop was
/// configured for it).
fn by_domain(transport: &str, protocol: Protocol, nexthop: NextHop) -> Route {
    Route::Deliver { transport: transport.into(), protocol, nexthop, by_domain: true }
}

fn host(h: &str, port: u16) -> NextHop {
    NextHop::Host { host: h.into(), port }
}

#[test]
fn debian_mx_relay_config_loads_unedited() {
    let dir = fixture::debian_mx();
    let loaded = match Config::load(dir.path()) {
        Ok(l) => l,
        Err(e) => panic!("the Debian-style configuration must load:\n{e}"),
    };
    let warned: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    // What sluice does not implement is named, with a reason.
    for name in [
        "biff",
        "append_dot_mydomain",
        "readme_directory",
        "smtp_tls_session_cache_database",
        "alias_maps",
        "alias_database",
        "mydestination",
        "mailbox_size_limit",
    ] {
        assert!(
            warned.iter().any(|w| w.contains(&format!(": {name}: not implemented by sluice: "))),
            "no warning for {name}:\n{warned:#?}"
        );
    }
    for service in ["pickup", "cleanup", "qmgr", "local", "virtual", "maildrop", "uucp", "retry"] {
        assert!(
            warned.iter().any(|w| w.contains(&format!("service {service} ("))),
            "no warning for service {service}"
        );
    }
    // Nothing sluice supports is warned about.
    for name in [
        "relay_domains",
        "relay_recipient_maps",
        "transport_maps",
        "mbx_destination_concurrency_limit",
        "smtpd_relay_restrictions",
        "message_size_limit",
    ] {
        assert!(!warned.iter().any(|w| w.contains(&format!(": {name}:"))), "{name} warned:\n{warned:#?}");
    }
    let c = &loaded.config;
    assert_eq!(c.string("myhostname"), "mx1.example.com");
    assert_eq!(c.string("smtpd_banner"), "mx1.example.com ESMTP sluice (Debian/GNU)");
    assert_eq!(c.size("message_size_limit"), 52_428_800);
    assert_eq!(c.time("maximal_queue_lifetime"), Duration::from_secs(3 * 86400));
    assert_eq!(c.time("minimal_backoff_time"), Duration::from_secs(120));
    assert_eq!(c.string("smtpd_tls_security_level"), "may");
    assert!(c.in_mynetworks("127.0.0.1".parse().unwrap()));
    assert!(c.in_mynetworks("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!c.in_mynetworks("192.0.2.1".parse().unwrap()));

    let services = c.smtpd_services();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "smtp");
    assert!(services[0].addrs.iter().all(|a| a.port() == 25 && a.ip().is_unspecified()));

    let t: Vec<(&str, Protocol, Option<u32>)> =
        c.transports().iter().map(|t| (t.name.as_str(), t.protocol, t.maxproc)).collect();
    assert_eq!(
        t,
        vec![
            ("smtp", Protocol::Smtp, None),
            ("relay", Protocol::Smtp, None),
            ("lmtp", Protocol::Lmtp, None),
            ("mbx", Protocol::Lmtp, Some(50))
        ]
    );
    assert_eq!(c.transport_int("mbx", "destination_concurrency_limit"), 40);
    assert_eq!(c.transport_int("mbx", "destination_recipient_limit"), 20);
    assert_eq!(c.transport_int("lmtp", "destination_concurrency_limit"), 10);
    assert_eq!(c.transport_int("relay", "destination_concurrency_limit"), 20);
    assert_eq!(c.transport_time("mbx", "data_done_timeout"), Duration::from_secs(120));
    assert_eq!(c.transport_time("lmtp", "data_done_timeout"), Duration::from_secs(600));
    assert_eq!(c.transport_time("mbx", "connect_timeout"), Duration::from_secs(10));
}

#[test]
fn debian_mx_relay_config_routes_and_validates_recipients() {
    let dir = fixture::debian_mx();
    let c = Config::load(dir.path()).expect("loads").config;
    let lmtp10 = deliver("lmtp", Protocol::Lmtp, host("10.0.1.10", 24));
    let cases: &[(&str, Route)] = &[
        ("alice@example.com", lmtp10.clone()),
        ("Alice+Newsletters@Example.COM", lmtp10.clone()),
        ("x@eu.example.com", lmtp10.clone()),
        ("carol@example.net", deliver("mbx", Protocol::Lmtp, host("10.0.1.20", 24))),
        ("list@lists.example.com", deliver("smtp", Protocol::Smtp, host("10.0.1.30", 25))),
        (
            "postmaster@example.org",
            by_domain("relay", Protocol::Smtp, NextHop::Mx { domain: "example.org".into(), port: 25 }),
        ),
        ("u@old.example.org", Route::Error { text: "5.1.2 this domain no longer receives mail".into() }),
        (
            "bounce-to@sender.example",
            by_domain("smtp", Protocol::Smtp, NextHop::Mx { domain: "sender.example".into(), port: 25 }),
        ),
    ];
    for (rcpt, want) in cases {
        assert_eq!(&c.route(rcpt).unwrap(), want, "route of {rcpt}");
    }
    for (domain, relay) in [
        ("example.com", true),
        ("eu.example.com", true),
        ("example.net", true),
        ("example.org", true),
        ("sub.example.org", true),
        ("lists.example.com", true),
        ("example.edu", false),
        ("mx1.example.com", true),
    ] {
        assert_eq!(c.is_relay_domain(domain).unwrap(), relay, "relay_domains and {domain}");
    }
    let rr = c.maps("relay_recipient_maps");
    let valid = |a: &str| rr.lookup_address(&c, "relay_recipient_maps", a).unwrap().is_some();
    assert!(valid("alice@example.com"));
    assert!(valid("bob+tag@example.com"));
    assert!(!valid("mallory@example.com"));
    assert!(valid("anyone@example.net"));
    assert!(!valid("anyone@example.org"));
    assert!(valid("postmaster@example.org"));
    let access = c
        .restrictions("smtpd_recipient_restrictions")
        .iter()
        .find_map(|r| match r {
            sluice::config::Restriction::CheckRecipientAccess(m) => Some(m),
            _ => None,
        })
        .expect("check_recipient_access");
    assert_eq!(
        access.lookup_address(&c, "smtpd_access_maps", "all-staff@example.com").unwrap().as_deref(),
        Some("REJECT internal list")
    );
}

/// The hash: tables are read from their source text: every key postmap
/// indexes gives the same answer to an exact lookup.
#[test]
fn source_text_tables_answer_as_postmap_does() {
    let postmap = fixture::postfix_tool("postmap")
        .expect("postmap is not installed (Debian package postfix; scripts/bootstrap test installs it)");
    let dir = fixture::debian_mx();
    for t in fixture::HASH_TABLES {
        // `-c`: postmap reads main.cf, and a machine whose postfix package
        // was installed with "No configuration" has no /etc/postfix/main.cf.
        let status = Command::new(&postmap)
            .arg("-c")
            .arg(dir.path())
            .arg(format!("hash:{}", dir.path().join(t).display()))
            .status()
            .expect("run postmap");
        assert!(status.success(), "postmap {t}");
    }
    let loaded = Config::load(dir.path()).expect("loads with the .db files beside the text");
    assert!(
        !loaded.warnings.iter().any(|w| w.message.contains("is older than")),
        "fresh indexes are not stale"
    );
    let c = loaded.config;
    let tables = [("transport", "transport_maps"), ("relay_recipients", "relay_recipient_maps")];
    for (file, param) in tables {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for key in keys.iter().copied().chain(["nosuchkey", "ALICE@EXAMPLE.COM"]) {
            let out = Command::new(&postmap)
                .arg("-c")
                .arg(dir.path())
                .arg("-q")
                .arg(key)
                .arg(format!("hash:{}", dir.path().join(file).display()))
                .output()
                .unwrap();
            let theirs = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
            let ours = c.maps(param).lookup(key).unwrap().unwrap_or_default();
            assert_eq!(ours, theirs, "{file}: key {key}");
        }
    }
}
