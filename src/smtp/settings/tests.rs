//! Tests of the settings: Postfix main.cf values into typed settings,
//! the relay decisions they make, the client key of the per-client limits.

use super::*;
use crate::smtp::naming::Client;
use crate::smtp::policy::Decision;

fn load(main_cf: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Config>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write table");
    }
    let main_cf = main_cf.replace("$DIR", dir.path().to_str().expect("utf-8"));
    let loaded =
        Config::from_texts(dir.path(), &main_cf, "smtp inet n - n - - smtpd\n").expect("config loads");
    (dir, loaded.config)
}

fn decide(s: &Settings, addr: &str, rcpt: &str) -> String {
    let client = Client::unknown(addr.parse().expect("addr"));
    match s.policy.check_recipient(client, rcpt) {
        Decision::Accept => "accept".to_owned(),
        Decision::Refuse(r) => r.to_one_line(),
        Decision::Ask(q) => format!("ask {q:?}"),
    }
}

#[test]
fn directory_tables_are_asked_one_key_at_a_time() {
    use crate::smtp::policy::{Answers, DomainStatus, Question, Request};
    // The database does not exist: only the questions are looked at.
    let (_d, config) = load(
        "relay_domains = relay.example\nrelay_recipient_maps = sqlite:$DIR/users.cf\n",
        &[("users.cf", "dbpath = /nonexistent.db\nquery = SELECT 1 FROM users WHERE address='%s'\n")],
    );
    let s = Settings::from_config(&config).expect("settings");
    let decide = |answers: &Answers| {
        let req = Request {
            client: Client::unknown("192.0.2.1".parse().expect("addr")),
            helo: None,
            sender: "",
            sender_domain: DomainStatus::Found,
            recipient: "user@relay.example",
            answers,
        };
        s.policy.check(&req)
    };
    let mut answers = Answers::default();
    let Decision::Ask(Question::Lookup(q)) = decide(&answers) else { panic!("a lookup is asked for") };
    assert!(q.table().starts_with("sqlite:") && q.key() == "user@relay.example", "{q:?}");
    // Not found: relay_recipient_maps' next key is asked for.
    answers.tables.insert(&q, None);
    let Decision::Ask(Question::Lookup(q2)) = decide(&answers) else { panic!("the next key is asked for") };
    assert_eq!(q2.key(), "@relay.example");
    answers.tables.insert(&q2, None);
    assert!(matches!(decide(&answers), Decision::Refuse(r) if r.code() == 550));
    // Found: accepted.
    let mut answers = Answers::default();
    answers.tables.insert(&q, Some("ok".into()));
    assert_eq!(decide(&answers), Decision::Accept);
}

#[test]
fn a_postfix_mx_relay_main_cf_maps_to_settings() {
    let main_cf = "myhostname = mx1.example.net\n\
        mynetworks = 127.0.0.0/8 [::1]/128 10.1.0.0/16\n\
        relay_domains = example.org\n\
        relay_recipient_maps = hash:$DIR/relay_recipients\n\
        smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
        smtpd_recipient_restrictions = check_recipient_access hash:$DIR/access\n\
        message_size_limit = 52428800\n\
        smtpd_recipient_limit = 200\n\
        smtpd_timeout = 60s\n\
        smtpd_forbid_bare_newline = reject\n\
        smtpd_forbid_bare_newline_exclusions = 10.1.0.0/16\n\
        smtpd_client_connection_rate_limit = 30\n\
        sluice_queue_high_water = 5000\n\
        queue_minfree = 1073741824\n";
    let files = [
        ("relay_recipients", "alice@example.org OK\nbob@example.org OK\n"),
        ("access", "bob@example.org REJECT moved away\n"),
    ];
    let (_dir, config) = load(main_cf, &files);
    let s = Settings::from_config(&config).expect("settings");
    assert_eq!(s.myhostname, "mx1.example.net");
    assert_eq!(s.banner, "mx1.example.net ESMTP sluice");
    assert_eq!(s.message_size_limit, 52_428_800);
    assert_eq!(s.recipient_limit, 200);
    assert_eq!(s.timeout, Duration::from_secs(60));
    assert_eq!(s.bare_newline, BareNewline::Reject);
    assert_eq!(s.bare_newline_for("10.1.2.3".parse().expect("addr")), BareNewline::Normalize);
    assert_eq!(s.bare_newline_for("192.0.2.1".parse().expect("addr")), BareNewline::Reject);
    assert_eq!(s.client_connection_rate_limit, 30);
    assert_eq!(s.accept_limits.max_messages, 5000);
    assert_eq!(s.accept_limits.min_free, 1 << 30);
    // Without queue_minfree, Postfix's 1.5 x message_size_limit.
    let (_dir, config) = load("message_size_limit = 10000000\n", &[]);
    assert_eq!(Settings::from_config(&config).expect("settings").accept_limits.min_free, 15_000_000);
    assert!(!s.vrfy, "{s:?}");
    assert!(s.forbid_unauth_pipelining);
    assert_eq!(s.tls_level, TlsLevel::None);

    assert_eq!(decide(&s, "192.0.2.1", "alice@example.org"), "accept");
    assert_eq!(
        decide(&s, "192.0.2.1", "bob@example.org"),
        "554 5.7.1 <bob@example.org>: Recipient address rejected: moved away"
    );
    assert_eq!(
        decide(&s, "192.0.2.1", "carol@example.org"),
        "550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown in relay recipient table"
    );
    assert_eq!(
        decide(&s, "192.0.2.1", "x@elsewhere.example"),
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    );
    assert_eq!(decide(&s, "10.1.9.9", "x@elsewhere.example"), "accept");
}

#[test]
fn postfix_defaults_are_not_an_open_relay() {
    let (_dir, config) = load("mynetworks = 127.0.0.0/8\nrelay_domains = example.org\n", &[]);
    let s = Settings::from_config(&config).expect("settings");
    assert_eq!(
        decide(&s, "192.0.2.1", "x@elsewhere.example"),
        "454 4.7.1 <x@elsewhere.example>: Relay access denied"
    );
    assert_eq!(decide(&s, "192.0.2.1", "anyone@example.org"), "accept");
    assert_eq!(s.bare_newline, BareNewline::Normalize);
}

#[test]
fn open_relay_lists_and_missing_certificates_are_refused() {
    let (_dir, config) =
        load("smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = permit_mynetworks\n", &[]);
    assert!(matches!(Settings::from_config(&config), Err(SettingsError::Policy(PolicyError::OpenRelay))));
    let (_dir, config) = load(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = $DIR/cert.pem\n",
        &[("cert.pem", "not a certificate\n")],
    );
    assert!(matches!(Settings::from_config(&config), Err(SettingsError::Tls(_))));
}

#[test]
fn client_name_parameters_map_to_settings() {
    let (_dir, config) = load("", &[]);
    let s = Settings::from_config(&config).expect("settings");
    assert!(s.peername_lookup);
    assert_eq!(s.peername_timeout, Duration::from_secs(5));
    assert_eq!(s.policy.unknown_client_reject_code, 450);
    let (_dir, config) = load(
        "smtpd_peername_lookup = no\n\
         sluice_peername_lookup_timeout = 1500ms\n\
         unknown_client_reject_code = 550\n\
         smtpd_client_restrictions = reject_unknown_client_hostname\n",
        &[],
    );
    let s = Settings::from_config(&config).expect("settings");
    assert!(!s.peername_lookup);
    assert_eq!(s.peername_timeout, Duration::from_millis(1500));
    assert!(matches!(s.policy.client[..], [Restriction::RejectUnknownClientHostname]));
    assert_eq!(
        decide(&s, "192.0.2.1", "anyone@example.org"),
        "550 5.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]"
    );
}

#[test]
fn exclusions_spare_the_refusal_never_the_normalization() {
    let excluded = |mode| Settings {
        bare_newline: mode,
        bare_newline_exclusions: vec!["10.0.0.0/8".parse().expect("net")].into(),
        ..Settings::default()
    };
    let (inside, outside) = ("10.1.1.1".parse().expect("addr"), "192.0.2.1".parse().expect("addr"));
    let s = excluded(BareNewline::Reject);
    assert_eq!(s.bare_newline_for(inside), BareNewline::Normalize);
    assert_eq!(s.bare_newline_for(outside), BareNewline::Reject);
    assert_eq!(excluded(BareNewline::Normalize).bare_newline_for(inside), BareNewline::Normalize);
    assert_eq!(excluded(BareNewline::No).bare_newline_for(outside), BareNewline::No);
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn clients_are_keyed_by_their_network_of_the_configured_prefix() {
    let s = Settings::default();
    assert_eq!(s.client_prefix, (32, 84), "Postfix 3.8's defaults");
    // One IPv6 /84 is one client: a host picking addresses from its /84
    // (2^44 of them) still counts once.
    let a = s.client_key(ip("2001:db8:1:2:3:4:5:6"));
    assert_eq!(a, ip("2001:db8:1:2:3::"));
    assert_eq!(s.client_key(ip("2001:db8:1:2:3:fff:ffff:ffff")), a);
    assert_ne!(s.client_key(ip("2001:db8:1:2:3:1000::")), a, "the next /84 is another client");
    assert_eq!(s.client_key(ip("::1")), ip("::"));
    // IPv4 addresses count one by one, also when they come mapped.
    assert_eq!(s.client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    assert_eq!(s.client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    let wide = Settings { client_prefix: (24, 0), ..Settings::default() };
    assert_eq!(wide.client_key(ip("192.0.2.7")), ip("192.0.2.0"));
    assert_eq!(wide.client_key(ip("2001:db8::1")), ip("::"));
    let exact = Settings { client_prefix: (0, 128), ..Settings::default() };
    assert_eq!(exact.client_key(ip("192.0.2.7")), ip("0.0.0.0"));
    assert_eq!(exact.client_key(ip("2001:db8::1")), ip("2001:db8::1"));
}

#[test]
fn prefix_lengths_are_read_and_checked() {
    let (_dir, config) =
        load("smtpd_client_ipv4_prefix_length = 24\nsmtpd_client_ipv6_prefix_length = 64\n", &[]);
    assert_eq!(Settings::from_config(&config).expect("settings").client_prefix, (24, 64));
    let (_dir, config) = load("smtpd_client_ipv4_prefix_length = 33\n", &[]);
    let e = Settings::from_config(&config).expect_err("33 bits");
    assert_eq!(e.to_string(), "smtpd_client_ipv4_prefix_length: 33 is not a prefix length (0 to 32)");
}

#[test]
fn a_listener_has_its_settings_under_stress_as_postfix_expands_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = "smtpd_timeout = ${stress?{7}:{60}}s\n";
    let master = "smtp inet n - n - 3 smtpd\n  -o smtpd_junk_command_limit=${stress?{2}:{50}}\n";
    let loaded = Config::from_texts(dir.path(), main, master).expect("config loads");
    let s = Settings::from_service(&loaded.config.smtpd_services()[0]).expect("settings");
    assert_eq!((s.timeout, s.hard_error_limit, s.junk_command_limit), (Duration::from_secs(60), 20, 50));
    let st = s.stress.as_ref().expect("stress twin");
    assert_eq!((st.timeout, st.hard_error_limit, st.junk_command_limit), (Duration::from_secs(7), 1, 2));
    assert_eq!(st.starttls_timeout, Duration::from_secs(10));
    assert_eq!((s.max_sessions, st.max_sessions), (3, 3));
    assert!(st.stress.is_none());
    assert_eq!(s.service, "smtp");
}
