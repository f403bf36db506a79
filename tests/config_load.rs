//! Loading main.cf and master.cf from text: types, errors named by file,
//! line and parameter, warnings for names nothing reads, master.cf
//! services with their overrides, per-transport parameters, and the
//! refusal of a broken configuration on reload.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod common;

use common::config::{load, load_err, tmp};
use sluice::config::{Config, ConfigErrors, Protocol, Restriction};

#[test]
fn defaults_are_postfix_defaults_and_typed() {
    let d = tmp();
    let c = load(d.path(), "", "").config;
    assert_eq!(c.size("message_size_limit"), 10_240_000);
    assert_eq!(c.int("smtpd_recipient_limit"), 1000);
    assert_eq!(c.int("smtpd_hard_error_limit"), 20, "${{stress?{{1}}:{{20}}}} with stress empty");
    assert_eq!(c.time("smtpd_timeout"), Duration::from_secs(300));
    assert_eq!(c.time("maximal_queue_lifetime"), Duration::from_secs(5 * 86400));
    assert_eq!(c.time("bounce_queue_lifetime"), Duration::from_secs(5 * 86400));
    assert_eq!(c.time("minimal_backoff_time"), Duration::from_secs(300));
    assert_eq!(c.time("maximal_backoff_time"), Duration::from_secs(4000));
    assert_eq!(c.time("queue_run_delay"), Duration::from_secs(300));
    assert_eq!(c.time("delay_warning_time"), Duration::ZERO);
    assert_eq!(c.size("queue_minfree"), 0);
    assert_eq!(c.int("default_destination_concurrency_limit"), 20);
    assert_eq!(c.int("initial_destination_concurrency"), 5);
    assert_eq!(c.int("default_destination_recipient_limit"), 50);
    assert_eq!(c.int("default_destination_concurrency_failed_cohort_limit"), 1);
    assert_eq!(c.int("smtpd_client_connection_count_limit"), 50);
    assert_eq!(c.time("anvil_rate_time_unit"), Duration::from_secs(60));
    assert_eq!(c.string("smtpd_forbid_bare_newline"), "normalize");
    assert_eq!(c.int("hopcount_limit"), 50);
    assert_eq!(c.string("relay_domains"), "");
    assert_eq!(c.string("mynetworks_style"), "host");
    assert_eq!(c.string("recipient_delimiter"), "");
    // sluice differs from Postfix here: VRFY is off unless enabled.
    assert!(c.bool("disable_vrfy_command"));
    assert!(!c.bool("smtpd_helo_required"));
    assert_eq!(c.string("myorigin"), c.string("myhostname"));
    assert_eq!(c.string("smtpd_banner"), format!("{} ESMTP sluice", c.string("myhostname")));
    assert_eq!(c.rate("sluice_rate_limit"), None);
    assert_eq!(c.socket_addr("sluice_metrics_listen"), None);
    assert_eq!(c.string("sluice_admin_socket"), "/var/spool/sluice/admin.sock");
    assert_eq!(c.time("smtp_connect_timeout"), Duration::from_secs(30));
    assert_eq!(c.time("lmtp_connect_timeout"), Duration::ZERO);
    assert_eq!(c.time("lmtp_data_done_timeout"), Duration::from_secs(600));
    assert_eq!(c.string("config_directory"), d.path().display().to_string());
    let relay: Vec<&str> = c
        .restrictions("smtpd_relay_restrictions")
        .iter()
        .map(|r| match r {
            Restriction::PermitMynetworks => "permit_mynetworks",
            Restriction::PermitSaslAuthenticated => "permit_sasl_authenticated",
            Restriction::DeferUnauthDestination => "defer_unauth_destination",
            _ => "other",
        })
        .collect();
    assert_eq!(relay, vec!["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]);
    assert!(c.non_default().iter().all(|(n, _)| n == "config_directory"), "{:?}", c.non_default());
}

#[test]
fn the_default_configuration_is_not_an_open_relay() {
    let d = tmp();
    let c = load(d.path(), "", "").config;
    assert!(!c.is_relay_domain("example.com").unwrap());
    assert!(!c.in_mynetworks("198.51.100.7".parse().unwrap()));
    assert!(
        c.in_mynetworks("127.0.0.1".parse().unwrap()),
        "host style includes loopback: {:?}",
        c.mynetworks()
    );
}

#[test]
fn myhostname_and_mydomain_follow_the_host_name_as_postfix_does() {
    let d = tmp();
    let c = load(d.path(), "myhostname = mx1.a.example\n", "").config;
    assert_eq!(c.string("mydomain"), "a.example");
    let c = load(d.path(), "myhostname = single\n", "").config;
    assert_eq!(c.string("mydomain"), "localdomain");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let c = load(d.path(), "mydomain = example.org\n", "").config;
    if host.contains('.') {
        assert_eq!(c.string("myhostname"), host);
    } else {
        assert_eq!(c.string("myhostname"), format!("{host}.example.org"));
    }
}

#[test]
fn every_error_is_reported_at_once_with_file_line_and_parameter() {
    let d = tmp();
    let dir = d.path().display().to_string();
    let main = "\
message_size_limit = ten
smtpd_timeout = 5x
# a loop
myorigin = $mydomain
mydomain = x${myorigin}
transport_maps = memcache:/etc/x.cf
relay_recipient_maps = hash:/nonexistent/relay_recipients
smtpd_helo_required = maybe
sluice_rate_limit = fast
mynetworks = 10.0.0.1/8
smtpd_recipient_restrictions = permit_mynetwork
  ,reject_unauth_destination
";
    let master = "smtp inet n - y - - smtpd\nbroken line\n";
    let errors = load_err(d.path(), main, master);
    let expect = [
        format!("{dir}/main.cf:1: message_size_limit: bad size value \"ten\""),
        format!("{dir}/main.cf:2: smtpd_timeout: bad time value \"5x\""),
        format!("{dir}/main.cf:5: mydomain: expansion loop: $mydomain -> $myorigin -> $mydomain"),
        format!("{dir}/main.cf:6: transport_maps: table type memcache: is not supported"),
        format!(
            "{dir}/main.cf:7: relay_recipient_maps: cannot read table hash:/nonexistent/relay_recipients"
        ),
        format!("{dir}/main.cf:8: smtpd_helo_required: bad boolean value \"maybe\""),
        format!("{dir}/main.cf:9: sluice_rate_limit: bad rate \"fast\""),
        format!("{dir}/main.cf:10: mynetworks: non-null host address bits in \"10.0.0.1/8\""),
        format!("{dir}/main.cf:11: smtpd_recipient_restrictions: unknown restriction \"permit_mynetwork\""),
        format!("{dir}/master.cf:2: expected service type private unpriv"),
    ];
    for e in &expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e.as_str())),
            "missing {e:?} in\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    // Each problem once, even though main.cf is checked for every service.
    let mut sorted = errors.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), errors.len(), "{errors:#?}");
}

#[test]
fn unknown_and_unsupported_names_are_warnings_with_reasons() {
    let d = tmp();
    let main = "messgae_size_limit = 1\nmydestination = $myhostname\nsmtpd_sasl_auth_enable = yes\nconfig_directory = /x\n";
    let l = load(d.path(), main, "");
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    let has = |s: &str| w.iter().any(|x| x.contains(s));
    assert!(has("main.cf:1: messgae_size_limit: unknown parameter"), "{w:#?}");
    assert!(
        has("main.cf:2: mydestination: not implemented by sluice: sluice has no local delivery"),
        "{w:#?}"
    );
    assert!(
        has("main.cf:3: smtpd_sasl_auth_enable: not implemented by sluice: SASL is not supported"),
        "{w:#?}"
    );
    assert!(has("main.cf:4: config_directory: is set with -c DIR"), "{w:#?}");
    assert_eq!(l.config.string("config_directory"), d.path().display().to_string());
}

#[test]
fn references_to_undefined_names_warn_and_expand_empty() {
    let d = tmp();
    let l = load(d.path(), "smtpd_banner = $myhostname $nosuchthing\n", "");
    assert!(
        l.warnings.iter().any(|w| w.to_string().contains("$nosuchthing is not defined")),
        "{:?}",
        l.warnings
    );
    assert!(l.config.string("smtpd_banner").ends_with(' '));
}

#[test]
fn master_cf_listeners_with_ports_addresses_and_overrides() {
    let d = tmp();
    let main = "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nsmtpd_banner = main banner\n";
    let master = "\
smtp            inet  n - y - - smtpd
2525            inet  n - n - 7 smtpd
  -o { smtpd_banner = $myhostname ESMTP on $service_name }
  -o smtpd_client_connection_count_limit=3
127.0.0.2:2526  inet  n - n - - smtpd
[::1]:2527      inet  n - n - - smtpd -o inet_protocols=all
pickup          unix  n - y 60 1 pickup
";
    let l = load(d.path(), main, master);
    let c = &l.config;
    let s = c.smtpd_services();
    assert_eq!(s.len(), 4);
    let addrs = |i: usize| s[i].addrs.clone();
    let sa = |t: &str| t.parse::<SocketAddr>().unwrap();
    assert_eq!(addrs(0), vec![sa("127.0.0.1:25")]);
    assert_eq!(addrs(1), vec![sa("127.0.0.1:2525")]);
    assert_eq!(addrs(2), vec![sa("127.0.0.2:2526")]);
    assert_eq!(addrs(3), vec![sa("[::1]:2527")]);
    assert_eq!(s[1].maxproc, Some(7));
    assert_eq!(s[0].maxproc, None);
    // Overrides apply to that service only; $service_name expands in them.
    assert_eq!(s[1].config.string("smtpd_banner"), format!("{} ESMTP on 2525", c.string("myhostname")));
    assert_eq!(s[1].config.int("smtpd_client_connection_count_limit"), 3);
    assert_eq!(s[0].config.string("smtpd_banner"), "main banner");
    assert_eq!(c.string("smtpd_banner"), "main banner");
    assert_eq!(c.int("smtpd_client_connection_count_limit"), 50);
    assert!(s[1].config.is_set("smtpd_banner"));
    assert!(
        s[1].config.non_default().iter().any(|(n, v)| n == "smtpd_banner" && v.contains("$service_name"))
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.to_string().contains("service pickup (unix pickup) is not used by sluice"))
    );
}

#[test]
fn inet_interfaces_all_listens_on_the_wildcards_per_protocol() {
    let d = tmp();
    let l = load(d.path(), "", "smtp inet n - y - - smtpd\n");
    let addrs = &l.config.smtpd_services()[0].addrs;
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    assert_eq!(ips, vec!["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]);
    assert!(addrs.iter().all(|a| a.port() == 25));
    let l = load(d.path(), "inet_protocols = ipv4\n", "smtp inet n - y - - smtpd\n");
    assert_eq!(l.config.smtpd_services()[0].addrs, vec!["0.0.0.0:25".parse::<SocketAddr>().unwrap()]);
}

#[test]
fn bad_override_values_name_the_master_cf_line() {
    let d = tmp();
    let dir = d.path().display().to_string();
    let master = "smtp inet n - y - - smtpd\nmbx unix - - n - 10 lmtp\n  -o lmtp_connect_timeout=soon\n";
    let errors = load_err(d.path(), "", master);
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with(&format!("{dir}/master.cf:2: lmtp_connect_timeout: bad time value \"soon\""))),
        "{errors:#?}"
    );
}

#[test]
fn transports_and_per_transport_parameters() {
    let d = tmp();
    let main = "\
default_destination_concurrency_limit = 30
mbx_destination_concurrency_limit = 8
mbx_sluice_rate_limit = 50/s
sluice_rate_limit = 600/m
relay_destination_rate_delay = 1s
lmtp_lhlo_timeout = 100s
maildrop_destination_recipient_limit = 1
relay_delivery_slot_cost = 5
";
    let master = "\
mbx       unix  -  -  n  -  12  lmtp
  -o lmtp_connect_timeout=7s
relay     unix  -  -  n  -  -   smtp
maildrop  unix  -  n  n  -  -   pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
";
    let l = load(d.path(), main, master);
    let c = &l.config;
    let names: Vec<(&str, Protocol, Option<u32>)> =
        c.transports().iter().map(|t| (t.name.as_str(), t.protocol, t.maxproc)).collect();
    assert_eq!(
        names,
        vec![
            ("mbx", Protocol::Lmtp, Some(12)),
            ("relay", Protocol::Smtp, None),
            ("smtp", Protocol::Smtp, None),
            ("lmtp", Protocol::Lmtp, None)
        ]
    );
    assert_eq!(c.transport_param("mbx", "destination_concurrency_limit"), "8");
    assert_eq!(c.transport_int("relay", "destination_concurrency_limit"), 30);
    assert_eq!(c.transport_int("lmtp", "destination_recipient_limit"), 50);
    assert_eq!(c.transport_time("relay", "destination_rate_delay"), Duration::from_secs(1));
    assert_eq!(c.transport_time("mbx", "destination_rate_delay"), Duration::ZERO);
    assert_eq!(c.transport_rate("mbx", "sluice_rate_limit").unwrap().to_string(), "50/s");
    assert_eq!(c.transport_rate("relay", "sluice_rate_limit").unwrap().to_string(), "600/m");
    // Protocol parameters come from the transport's own -o overrides.
    assert_eq!(c.transport_time("mbx", "connect_timeout"), Duration::from_secs(7));
    assert_eq!(c.transport_time("lmtp", "connect_timeout"), Duration::ZERO);
    assert_eq!(c.transport_time("relay", "connect_timeout"), Duration::from_secs(30));
    // helo_timeout means lhlo_timeout for LMTP.
    assert_eq!(c.transport_time("mbx", "helo_timeout"), Duration::from_secs(100));
    assert_eq!(c.transport_param_name("mbx", "helo_timeout"), "lmtp_lhlo_timeout");
    assert_eq!(c.transport_time("relay", "helo_timeout"), Duration::from_secs(300));
    // The transport's own configuration answers the same.
    let mbx = &c.transports()[0].config;
    assert_eq!(mbx.service(), Some("mbx"));
    assert_eq!(mbx.transport_int("mbx", "destination_concurrency_limit"), 8);
    assert_eq!(mbx.time("lmtp_connect_timeout"), Duration::from_secs(7));
    assert_eq!(c.time("lmtp_connect_timeout"), Duration::ZERO);
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter().any(|x| x.contains(
            "maildrop_destination_recipient_limit: maildrop is a master.cf service sluice does not use"
        )),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|x| x
            .contains("relay_delivery_slot_cost: not implemented by sluice: Postfix queue-manager tuning")),
        "{w:#?}"
    );
}

#[test]
fn transport_map_typos_are_errors_naming_the_table_line() {
    let d = tmp();
    std::fs::write(
        d.path().join("transport"),
        "# a comment\n\
         good.test      lmtp:[127.0.0.1]:24\n\
         keep.test      :[127.0.0.1]:2424\n\
         gone.test      error:5.1.2 gone\n\
         typo.test      lmpt:[127.0.0.1]:24\n\
         port.test      smtp:[127.0.0.1]:smtpx\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("transport.re"),
        "/^(.*)@dyn\\.test$/ lmtp:[$1]:24\n\
         if /@sub\\./\n\
         /^x/ smtp:192.0.2.1\n\
         endif\n",
    )
    .unwrap();
    let main = "transport_maps = hash:transport, regexp:transport.re,\n    inline:{ in.test=mbx:[::1]:24 }\n";
    let t = d.path().join("transport").display().to_string();
    let re = d.path().join("transport.re").display().to_string();
    let main_cf = d.path().join("main.cf").display().to_string();
    assert_eq!(
        load_err(d.path(), main, ""),
        [
            format!(
                "{t}:5: transport_maps: \"lmpt:[127.0.0.1]:24\": transport \"lmpt\" is not defined in master.cf"
            ),
            format!(
                "{t}:6: transport_maps: \"smtp:[127.0.0.1]:smtpx\": bad port \"smtpx\" (expected a number or one of smtp, lmtp, submission, submissions, smtps)"
            ),
            format!(
                "{re}:3: transport_maps: \"smtp:192.0.2.1\": \"192.0.2.1\": an IP address must be written in brackets, [192.0.2.1]"
            ),
            format!(
                "{main_cf}:1: transport_maps: inline:{{ in.test=mbx:[::1]:24 }}: \"mbx:[::1]:24\": transport \"mbx\" is not defined in master.cf"
            ),
        ]
    );
    // The same tables load once master.cf defines mbx and the entries are fixed.
    std::fs::write(d.path().join("transport"), "good.test lmtp:[127.0.0.1]:24\n").unwrap();
    std::fs::write(d.path().join("transport.re"), "/^(.*)@dyn\\.test$/ lmtp:[$1]:24\n").unwrap();
    load(d.path(), main, "mbx unix - - n - - lmtp\n");
}

#[test]
fn tls_needs_readable_files() {
    let d = tmp();
    let errors = load_err(d.path(), "smtpd_tls_security_level = may\n", "");
    assert!(
        errors
            .iter()
            .any(|e| e
                .contains("smtpd_tls_cert_file: smtpd_tls_security_level = may needs smtpd_tls_cert_file")),
        "{errors:?}"
    );
    let cert = d.path().join("cert.pem");
    std::fs::write(&cert, "not checked here").unwrap();
    let main = format!("smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = {}\n", cert.display());
    let c = load(d.path(), &main, "").config;
    assert_eq!(c.string("smtpd_tls_key_file"), cert.display().to_string(), "key defaults to the cert file");
    let errors = load_err(d.path(), "smtpd_tls_security_level = sometimes\n", "");
    assert!(errors[0].contains("expected empty, none, may, encrypt"), "{errors:?}");

    // Chain files replace the pairs; each must be readable.
    let dir = d.path().display();
    let main = format!("smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}\n", cert.display());
    load(d.path(), &main, "");
    let errors =
        load_err(d.path(), "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = /nonexistent.pem\n", "");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with(&format!("{dir}/main.cf:2: smtpd_tls_chain_files: cannot read /nonexistent.pem"))
    );
    let main = format!(
        "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {0}, /nonexistent-rsa.pem\n",
        cert.display()
    );
    let errors = load_err(d.path(), &main, "");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("smtpd_tls_chain_files: cannot read /nonexistent-rsa.pem"), "{errors:?}");
    load(
        d.path(),
        &format!("smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {0}, {0}\n", cert.display()),
        "",
    );

    // An ECDSA pair beside the RSA one, or alone; its key defaults to its
    // certificate file.
    let main = format!("smtpd_tls_security_level = may\nsmtpd_tls_eccert_file = {}\n", cert.display());
    let c = load(d.path(), &main, "").config;
    assert_eq!(c.string("smtpd_tls_eckey_file"), cert.display().to_string());
    let main = format!(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_eccert_file = {}\nsmtpd_tls_eckey_file = /nonexistent-ec.key\n",
        cert.display(),
        cert.display()
    );
    let errors = load_err(d.path(), &main, "");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("smtpd_tls_eckey_file: cannot read /nonexistent-ec.key"), "{errors:?}");
}

#[test]
fn tls_protocols_in_postfix_syntax() {
    let d = tmp();
    let dir = d.path().display();
    let c = load(
        d.path(),
        "smtpd_tls_protocols = >=TLSv1.2\nsmtpd_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1\n",
        "",
    )
    .config;
    assert_eq!(c.string("smtpd_tls_protocols"), ">=TLSv1.2");
    let errors = load_err(
        d.path(),
        "smtpd_tls_protocols = >=TLSv1.2\nsmtpd_tls_mandatory_protocols = <=TLSv1.1\n",
        "",
    );
    assert_eq!(
        errors,
        [format!(
            "{dir}/main.cf:2: smtpd_tls_mandatory_protocols: leaves neither TLSv1.2 nor TLSv1.3, the versions sluice speaks"
        )]
    );
    let errors = load_err(d.path(), "smtpd_tls_protocols = !SSLv2, !TLS1.2\n", "");
    assert!(
        errors[0]
            .starts_with(&format!("{dir}/main.cf:1: smtpd_tls_protocols: unknown TLS protocol \"TLS1.2\"")),
        "{errors:?}"
    );
}

#[test]
fn a_reload_with_errors_is_refused_and_the_old_config_stays() {
    let d = tmp();
    std::fs::write(d.path().join("main.cf"), "relay_domains = example.com\n").unwrap();
    std::fs::write(d.path().join("master.cf"), "smtp inet n - y - - smtpd\n").unwrap();
    let running = Config::load(d.path()).expect("first load").config;
    std::fs::write(d.path().join("main.cf"), "relay_domains = example.com\nmessage_size_limit = ten\n")
        .unwrap();
    let reload = Config::load(d.path());
    let Err(ConfigErrors(errors)) = reload else { panic!("a broken config must be refused") };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[0].param.as_deref(), Some("message_size_limit"));
    // The caller keeps serving with what it had.
    assert!(running.is_relay_domain("example.com").unwrap());
    std::fs::write(d.path().join("main.cf"), "relay_domains = example.net\n").unwrap();
    let new = Config::load(d.path()).expect("fixed").config;
    assert!(new.is_relay_domain("example.net").unwrap());
    assert!(!new.is_relay_domain("example.com").unwrap());
}

#[test]
fn missing_files_are_errors() {
    let d = tmp();
    let Err(ConfigErrors(errors)) = Config::load(d.path()) else { panic!("must fail") };
    assert_eq!(errors.len(), 2);
    assert!(errors[0].to_string().contains("main.cf: cannot read"));
}

#[test]
fn tables_named_relative_to_the_config_directory_and_via_config_directory() {
    let d = tmp();
    std::fs::write(d.path().join("relay_domains"), "example.com OK\n").unwrap();
    std::fs::write(d.path().join("transport"), "example.net lmtp:[127.0.0.1]:24\n").unwrap();
    let main = "relay_domains = hash:relay_domains\ntransport_maps = texthash:$config_directory/transport\n";
    let c = load(d.path(), main, "").config;
    assert!(c.is_relay_domain("example.com").unwrap());
    assert!(
        c.is_relay_domain("sub.example.com").unwrap(),
        "relay_domains is in parent_domain_matches_subdomains"
    );
    assert_eq!(
        c.maps("transport_maps").lookup("EXAMPLE.NET").unwrap().as_deref(),
        Some("lmtp:[127.0.0.1]:24")
    );
}

#[test]
fn a_stale_postmap_index_is_pointed_out() {
    let d = tmp();
    let src = d.path().join("transport");
    let db = d.path().join("transport.db");
    std::fs::write(&db, "old index").unwrap();
    std::fs::write(&src, "example.net lmtp:[127.0.0.1]:24\n").unwrap();
    // Make the index older than the text.
    let old = std::fs::File::options().write(true).open(&db).unwrap();
    old.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)).unwrap();
    let l = load(d.path(), "transport_maps = hash:$config_directory/transport\n", "");
    assert!(l.warnings.iter().any(|w| w.message.contains("is older than")), "{:?}", l.warnings);
}

/// The names `src/smtp`, `src/delivery` and `src/admin` read (their
/// accessors panic on a name missing from params.rs, so this list guards
/// the contract between the modules).
#[test]
fn every_parameter_the_other_modules_read_exists() {
    let d = tmp();
    let c = load(d.path(), "", "mbx unix - - n - - lmtp\n").config;
    for name in [
        "myhostname",
        "mail_name",
        "smtpd_banner",
        "message_size_limit",
        "smtpd_recipient_limit",
        "line_length_limit",
        "header_size_limit",
        "hopcount_limit",
        "smtpd_timeout",
        "smtpd_starttls_timeout",
        "smtpd_min_data_rate",
        "smtpd_hard_error_limit",
        "smtpd_soft_error_limit",
        "smtpd_error_sleep_time",
        "smtpd_junk_command_limit",
        "smtpd_helo_required",
        "disable_vrfy_command",
        "smtputf8_enable",
        "smtpd_forbid_bare_newline",
        "smtpd_forbid_bare_newline_exclusions",
        "smtpd_forbid_bare_newline_reject_code",
        "smtpd_forbid_unauth_pipelining",
        "smtpd_tls_security_level",
        "smtpd_tls_cert_file",
        "smtpd_tls_key_file",
        "default_process_limit",
        "smtpd_client_connection_count_limit",
        "smtpd_client_connection_rate_limit",
        "smtpd_client_message_rate_limit",
        "anvil_rate_time_unit",
        "smtpd_client_event_limit_exceptions",
        "sluice_queue_high_water",
        "sluice_queue_high_water_bytes",
        "queue_minfree",
        "smtpd_reject_unlisted_recipient",
        "smtpd_client_restrictions",
        "smtpd_relay_restrictions",
        "smtpd_recipient_restrictions",
        "relay_domains_reject_code",
        "unknown_relay_recipient_reject_code",
        "access_map_reject_code",
        "access_map_defer_code",
        "minimal_backoff_time",
        "maximal_backoff_time",
        "maximal_queue_lifetime",
        "bounce_queue_lifetime",
        "delay_warning_time",
        "queue_run_delay",
        "qmgr_message_active_limit",
        "initial_destination_concurrency",
        "sluice_shutdown_grace",
        "sluice_log_format",
        "maillog_file",
        "sluice_admin_socket",
        "sluice_metrics_listen",
        "queue_directory",
        "relayhost",
    ] {
        let _ = c.string(name);
    }
    let _ = c.maps("relay_recipient_maps");
    let _ = c.list("smtpd_relay_restrictions");
    for transport in ["mbx", "lmtp", "smtp", "relay"] {
        for suffix in [
            "destination_recipient_limit",
            "destination_concurrency_limit",
            "sluice_breaker_failure_threshold",
            "destination_concurrency_failed_cohort_limit",
            "sluice_rate_burst",
            "destination_rate_delay",
            "sluice_latency_target",
            "sluice_breaker_cooldown",
            "sluice_breaker_max_cooldown",
            "connection_cache_time_limit",
            "connection_reuse_time_limit",
            "connect_timeout",
            "helo_timeout",
            "mail_timeout",
            "rcpt_timeout",
            "data_init_timeout",
            "data_xfer_timeout",
            "data_done_timeout",
            "rset_timeout",
            "quit_timeout",
            "sluice_rate_limit",
            "helo_name",
            "initial_destination_concurrency",
        ] {
            let _ = c.transport_param(transport, suffix);
        }
    }
}

#[test]
fn zero_timeouts_and_retry_intervals_are_refused_as_postfix_does() {
    // A zero smtpd_timeout would time out every client at its first
    // command: the MX would refuse all mail while `config check` said ok.
    let d = tmp();
    let dir = d.path().display().to_string();
    let main = "smtpd_timeout = 0\nqueue_run_delay = 0s\nminimal_backoff_time = 0m\n";
    let master = "smtp inet n - y - - smtpd -o smtpd_starttls_timeout=0\n\
                  mbx unix - - n - 10 lmtp -o lmtp_data_done_timeout=0\n";
    let errors = load_err(d.path(), main, master);
    for e in [
        format!("{dir}/main.cf:1: smtpd_timeout: time value \"0\" must be greater than zero"),
        format!("{dir}/main.cf:2: queue_run_delay: time value \"0s\" must be greater than zero"),
        format!("{dir}/main.cf:3: minimal_backoff_time: time value \"0m\" must be greater than zero"),
        format!("{dir}/master.cf:1: smtpd_starttls_timeout: time value \"0\" must be greater than zero"),
        format!("{dir}/master.cf:2: lmtp_data_done_timeout: time value \"0\" must be greater than zero"),
    ] {
        assert!(errors.iter().any(|got| got.starts_with(&e)), "missing {e:?} in\n{}", errors.join("\n"));
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
    // Where zero means something (no limit, the system default), it stays allowed.
    let l = load(
        d.path(),
        "lmtp_connect_timeout = 0\nsmtpd_error_sleep_time = 0\nmaximal_queue_lifetime = 0\n",
        "",
    );
    assert_eq!(l.config.time("lmtp_connect_timeout"), Duration::ZERO);
    assert_eq!(l.config.time("maximal_queue_lifetime"), Duration::ZERO);
}

#[test]
fn invisible_characters_in_a_parameter_name_are_errors_that_show_them() {
    // Saved by an editor that writes a byte order mark, or pasted with a
    // zero-width space: the setting would be an "unknown parameter" whose
    // name looks right, and myhostname would silently stay the default.
    let d = tmp();
    let dir = d.path().display().to_string();
    let errors =
        load_err(d.path(), "\u{feff}myhostname = mx.example.com\nrelay\u{200b}_domains = example.com\n", "");
    let expect = [
        format!(
            "{dir}/main.cf:1: parameter name \"\\u{{feff}}myhostname\" contains the character U+FEFF \
             (the file starts with a UTF-8 byte order mark; save it without one)"
        ),
        format!("{dir}/main.cf:2: parameter name \"relay\\u{{200b}}_domains\" contains the character U+200B"),
    ];
    assert_eq!(errors, expect);
}
