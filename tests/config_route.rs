//! Routing (`Config::route`) and address lookups as transport(5),
//! access(5) and relay_recipient_maps define them, with every table type
//! loaded through main.cf.

use std::path::Path;

use sluice::config::{Config, NextHop, Protocol, Route};

fn load(dir: &Path, main: &str, master: &str) -> std::sync::Arc<Config> {
    match Config::from_texts(dir, main, master) {
        Ok(l) => l.config,
        Err(e) => panic!("config should load:\n{e}"),
    }
}

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

fn mx(d: &str, port: u16) -> NextHop {
    NextHop::Mx { domain: d.into(), port }
}

const MASTER: &str = "\
smtp      inet  n  -  y  -  -   smtpd
smtp      unix  -  -  n  -  -   smtp
relay     unix  -  -  n  -  -   smtp
lmtp      unix  -  -  n  -  -   lmtp
mbx       unix  -  -  n  -  20  lmtp
backup    unix  -  -  n  -  -   smtp
error     unix  -  -  n  -  -   error
discard   unix  -  -  n  -  -   discard
local     unix  -  n  n  -  -   local
";

#[test]
fn transport_5_result_forms() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("transport"),
        "\
# transport(5) forms
lmtp.example        lmtp:inet:127.0.0.1:24240
unix.example        lmtp:unix:/run/dovecot/lmtp
relunix.example     lmtp:unix:private/dovecot-lmtp
bracket.example     lmtp:[127.0.0.1]:24241
smtp.example        smtp:[192.0.2.10]:2525
mxlookup.example    smtp:mail.mxlookup.example
relay.example       relay:[gw.relay.example]
named.example       mbx:[10.0.0.5]
backup.example      backup:backup-mx.example:2525
gone.example        error:5.1.1 this domain no longer receives mail
trap.example        discard:silently
samenh.example      :[override.example]
resetnh.example     smtp:
nochange.example    :
user@mixed.example  lmtp:[127.0.0.1]:1
.sub.example        lmtp:[127.0.0.1]:2
",
    )
    .unwrap();
    // Results the load cannot check (built from match groups) and that
    // turn out wrong at delivery: the load refuses fixed ones like these
    // (tests/config_load.rs).
    std::fs::write(
        d.path().join("transport.re"),
        "/@(local)\\.example$/ ${1}:\n/@(nosuch)\\.example$/ $1:[127.0.0.1]\n/@list\\.(example)$/ smtp:[a.$1], [b.$1]\n",
    )
    .unwrap();
    let main = "\
relay_domains = relay.example, samenh.example, nochange.example, mixed.example
transport_maps = hash:$config_directory/transport, regexp:$config_directory/transport.re
queue_directory = /var/spool/sluice
relayhost = [smarthost.example]:587
";
    let c = load(d.path(), main, MASTER);
    let r = |a: &str| c.route(a);
    assert_eq!(r("u@lmtp.example").unwrap(), deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 24240)));
    assert_eq!(
        r("u@unix.example").unwrap(),
        deliver("lmtp", Protocol::Lmtp, NextHop::Unix("/run/dovecot/lmtp".into()))
    );
    assert_eq!(
        r("u@relunix.example").unwrap(),
        deliver("lmtp", Protocol::Lmtp, NextHop::Unix("/var/spool/sluice/private/dovecot-lmtp".into()))
    );
    assert_eq!(r("u@bracket.example").unwrap(), deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 24241)));
    assert_eq!(r("u@smtp.example").unwrap(), deliver("smtp", Protocol::Smtp, host("192.0.2.10", 2525)));
    assert_eq!(
        r("u@mxlookup.example").unwrap(),
        deliver("smtp", Protocol::Smtp, mx("mail.mxlookup.example", 25))
    );
    assert_eq!(r("u@relay.example").unwrap(), deliver("relay", Protocol::Smtp, host("gw.relay.example", 25)));
    // A named master.cf transport takes its protocol from its command.
    assert_eq!(r("u@named.example").unwrap(), deliver("mbx", Protocol::Lmtp, host("10.0.0.5", 24)));
    assert_eq!(
        r("u@backup.example").unwrap(),
        deliver("backup", Protocol::Smtp, mx("backup-mx.example", 2525))
    );
    assert_eq!(
        r("u@gone.example").unwrap(),
        Route::Error { text: "5.1.1 this domain no longer receives mail".into() }
    );
    assert_eq!(r("u@trap.example").unwrap(), Route::Discard { text: "silently".into() });
    // Empty transport: keep relay_transport, change the next hop.
    assert_eq!(
        r("u@samenh.example").unwrap(),
        deliver("relay", Protocol::Smtp, host("override.example", 25))
    );
    // Transport without next hop: the recipient domain, not relayhost.
    assert_eq!(r("u@resetnh.example").unwrap(), by_domain("smtp", Protocol::Smtp, mx("resetnh.example", 25)));
    // Both empty: as if the entry did not exist (relay_transport, relayhost).
    assert_eq!(
        r("u@nochange.example").unwrap(),
        deliver("relay", Protocol::Smtp, host("smarthost.example", 587))
    );
    // Not in relay_domains, no entry: default_transport with relayhost.
    assert_eq!(
        r("u@elsewhere.example").unwrap(),
        deliver("smtp", Protocol::Smtp, host("smarthost.example", 587))
    );
    // Transports sluice cannot deliver with are errors (the caller defers).
    assert!(r("u@local.example").unwrap_err().message.contains("transport \"local\" is not defined"));
    assert!(r("u@nosuch.example").is_err());
    assert!(r("u@list.example").unwrap_err().message.contains("list of next hops"));
    // Address entries win over the domain; .domain matches subdomains only.
    assert_eq!(r("user@mixed.example").unwrap(), deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 1)));
    assert_eq!(
        r("other@mixed.example").unwrap(),
        deliver("relay", Protocol::Smtp, host("smarthost.example", 587))
    );
    assert_eq!(r("u@a.b.sub.example").unwrap(), deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 2)));
    assert_eq!(r("u@sub.example").unwrap(), deliver("smtp", Protocol::Smtp, host("smarthost.example", 587)));
}

#[test]
fn defaults_without_relayhost_go_to_the_domain_mx_and_unqualified_get_myorigin() {
    let d = tempfile::tempdir().unwrap();
    let c = load(d.path(), "relay_domains = example.com\nmyorigin = origin.example\n", "");
    // The next hop is the recipient's domain: chosen by its DNS, not by
    // the administrator (`sluice_mx_forbidden_networks` applies).
    assert_eq!(c.route("u@Example.COM").unwrap(), by_domain("relay", Protocol::Smtp, mx("example.com", 25)));
    assert_eq!(
        c.route("u@sub.example.com").unwrap(),
        by_domain("relay", Protocol::Smtp, mx("sub.example.com", 25))
    );
    assert_eq!(
        c.route("u@other.example").unwrap(),
        by_domain("smtp", Protocol::Smtp, mx("other.example", 25))
    );
    assert_eq!(c.route("postmaster").unwrap(), by_domain("smtp", Protocol::Smtp, mx("origin.example", 25)));
    // An address literal is the sender's choice too.
    assert_eq!(c.route("x@[10.0.0.5]").unwrap(), by_domain("smtp", Protocol::Smtp, host("10.0.0.5", 25)));
    // The built-in transports exist without master.cf lines.
    let names: Vec<&str> = c.transports().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["smtp", "relay", "lmtp"]);
}

#[test]
fn default_and_relay_transport_may_carry_a_next_hop() {
    let d = tempfile::tempdir().unwrap();
    let main = "relay_domains = example.com\nrelay_transport = lmtp:[127.0.0.1]:2424\ndefault_transport = error:no outbound mail here\nrelayhost = [ignored.example]\n";
    let c = load(d.path(), main, "");
    assert_eq!(c.route("u@example.com").unwrap(), deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 2424)));
    assert_eq!(c.route("u@else.example").unwrap(), Route::Error { text: "no outbound mail here".into() });
}

#[test]
fn bad_transport_parameters_are_load_errors() {
    let d = tempfile::tempdir().unwrap();
    let e =
        Config::from_texts(d.path(), "default_transport = nosuch\nrelayhost = 192.0.2.1\n", "").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("default_transport: transport \"nosuch\" is not defined in master.cf"), "{text}");
    assert!(text.contains("relayhost: \"192.0.2.1\": an IP address must be written in brackets"), "{text}");
}

#[test]
fn recipient_delimiter_extensions_in_transport_and_recipient_maps() {
    let d = tempfile::tempdir().unwrap();
    let main = "\
recipient_delimiter = +
relay_domains = example.com, example.net
transport_maps = inline:{ {user@example.com = lmtp:[127.0.0.1]:3}, {example.com = lmtp:[127.0.0.1]:4} }
relay_recipient_maps = inline:{ user@example.com=x, @example.net=x }
";
    let c = load(d.path(), main, "");
    assert_eq!(
        c.route("user+tag@example.com").unwrap(),
        deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 3))
    );
    assert_eq!(
        c.route("other+tag@example.com").unwrap(),
        deliver("lmtp", Protocol::Lmtp, host("127.0.0.1", 4))
    );
    let rr = c.maps("relay_recipient_maps");
    let valid = |a: &str| rr.lookup_address(&c, "relay_recipient_maps", a).unwrap().is_some();
    assert!(valid("user@example.com"));
    assert!(valid("USER+tag@EXAMPLE.COM"));
    assert!(!valid("other@example.com"));
    assert!(valid("anyone@example.net"), "@domain accepts every user");
    // No delimiter: no stripping.
    let c = load(d.path(), "relay_recipient_maps = inline:{ user@example.com=x }\n", "");
    let rr = c.maps("relay_recipient_maps");
    assert!(rr.lookup_address(&c, "relay_recipient_maps", "user+tag@example.com").unwrap().is_none());
}

#[test]
fn access_lookups_with_regexp_pcre_and_cidr_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("recipient_access.re"),
        "\
if /@example\\.com$/
/^abuse@/       OK
/^(.+)\\+spam@/  REJECT no spam for $1
endif
/^postmaster@/  OK
",
    )
    .unwrap();
    std::fs::write(
        d.path().join("sender_access.pcre"),
        "/^(?!.*@trusted\\.example$).*@.*\\.invalid$/ REJECT bad sender domain\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("clients.cidr"),
        "192.0.2.0/24 REJECT test net\n2001:db8::/32 REJECT doc net\n!198.51.100.0/24 DUNNO\n",
    )
    .unwrap();
    std::fs::write(d.path().join("access"), "example.org REJECT whole domain\nuser@ OK\n").unwrap();
    let main = "\
recipient_delimiter = +
smtpd_recipient_restrictions = check_recipient_access regexp:$config_directory/recipient_access.re,
  check_recipient_access hash:$config_directory/access,
  check_sender_access pcre:$config_directory/sender_access.pcre,
  check_client_access cidr:$config_directory/clients.cidr,
  reject_unauth_destination
";
    let c = load(d.path(), main, "");
    let maps: Vec<&sluice::config::Maps> = c
        .restrictions("smtpd_recipient_restrictions")
        .iter()
        .filter_map(|r| match r {
            sluice::config::Restriction::CheckRecipientAccess(m)
            | sluice::config::Restriction::CheckSenderAccess(m)
            | sluice::config::Restriction::CheckClientAccess(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(maps.len(), 4);
    let q = |m: &sluice::config::Maps, a: &str| m.lookup_address(&c, "smtpd_access_maps", a).unwrap();
    assert_eq!(q(maps[0], "Abuse@Example.com").as_deref(), Some("OK"));
    assert_eq!(q(maps[0], "joe+spam@example.com").as_deref(), Some("REJECT no spam for joe"));
    assert_eq!(q(maps[0], "joe+spam@example.net"), None, "outside the if block");
    assert_eq!(q(maps[0], "postmaster@example.net").as_deref(), Some("OK"));
    // hash: the domain and its subdomains (smtpd_access_maps is in
    // parent_domain_matches_subdomains), then user@.
    assert_eq!(q(maps[1], "x@sub.example.org").as_deref(), Some("REJECT whole domain"));
    assert_eq!(q(maps[1], "user+ext@elsewhere.example").as_deref(), Some("OK"));
    assert_eq!(q(maps[2], "a@spam.invalid").as_deref(), Some("REJECT bad sender domain"));
    assert_eq!(q(maps[2], "a@trusted.example"), None);
    assert_eq!(maps[3].lookup("192.0.2.9").unwrap().as_deref(), Some("REJECT test net"));
    assert_eq!(maps[3].lookup("2001:db8::25").unwrap().as_deref(), Some("REJECT doc net"));
    assert_eq!(maps[3].lookup("203.0.113.1").unwrap().as_deref(), Some("DUNNO"));
    assert_eq!(maps[3].lookup("198.51.100.1").unwrap(), None);
    assert_eq!(
        maps[3].lookup_client("::ffff:192.0.2.9".parse().unwrap()).unwrap().as_deref(),
        Some("REJECT test net")
    );
}

#[test]
fn client_lookups_try_shorter_ipv4_prefixes_in_text_tables() {
    let d = tempfile::tempdir().unwrap();
    let main = "smtpd_client_restrictions = check_client_access inline:{ { 192.0.2 = REJECT net }, 198.51.100.7=OK, 10=DUNNO }\n";
    let c = load(d.path(), main, "");
    let sluice::config::Restriction::CheckClientAccess(m) = &c.restrictions("smtpd_client_restrictions")[0]
    else {
        panic!("check_client_access")
    };
    let q = |a: &str| m.lookup_client(a.parse().unwrap()).unwrap();
    assert_eq!(q("192.0.2.200").as_deref(), Some("REJECT net"));
    assert_eq!(q("198.51.100.7").as_deref(), Some("OK"));
    assert_eq!(q("198.51.100.8"), None);
    assert_eq!(q("10.1.2.3").as_deref(), Some("DUNNO"));
    assert_eq!(q("2001:db8::1"), None);
}

#[test]
fn table_errors_name_the_table_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.re"), "/ok/ fine\n/(unclosed/ bad\nif /x/\n").unwrap();
    std::fs::write(d.path().join("t.cidr"), "10.0.0.0/8 ok\n10.1.2.3/16 bad\n").unwrap();
    let main = "transport_maps = regexp:$config_directory/t.re\nrelay_domains = example.com\nmynetworks = cidr:$config_directory/t.cidr\n";
    let e = Config::from_texts(d.path(), main, "").unwrap_err();
    let lines: Vec<String> = e.0.iter().map(|d| d.to_string()).collect();
    let dir = d.path().display();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{dir}/t.re:2: transport_maps: bad regular expression"))),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{dir}/t.re:3: transport_maps: if without matching endif"))),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{dir}/t.cidr:2: mynetworks: non-null host address bits"))),
        "{lines:#?}"
    );
}

#[test]
fn mynetworks_with_tables_files_and_negation() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("nets"), "# trusted\n10.0.0.0/8\n  !10.9.0.0/16\n").unwrap();
    std::fs::write(d.path().join("more.cidr"), "203.0.113.0/24 ok\n").unwrap();
    let main = format!(
        "mynetworks = !10.9.9.9, {}/nets, cidr:$config_directory/more.cidr, [::ffff:127.0.0.0]/104 [::1]/128 127.0.0.0/8\n",
        d.path().display()
    );
    let c = load(d.path(), &main, "");
    let yes = |a: &str| c.in_mynetworks(a.parse().unwrap());
    assert!(yes("10.1.2.3"));
    assert!(!yes("10.9.9.9"));
    assert!(yes("10.9.1.1"), "the file's own negation comes after 10.0.0.0/8, first match wins");
    assert!(yes("203.0.113.5"));
    assert!(yes("::ffff:127.0.0.1"));
    assert!(yes("::ffff:10.1.1.1"), "IPv4-mapped addresses match IPv4 patterns");
    assert!(!yes("192.0.2.1"));
    // smtpd_forbid_bare_newline_exclusions defaults to $mynetworks.
    assert!(c.matches_client("smtpd_forbid_bare_newline_exclusions", "10.1.2.3".parse().unwrap()));
    assert!(!c.matches_client("smtpd_forbid_bare_newline_exclusions", "192.0.2.1".parse().unwrap()));
}
