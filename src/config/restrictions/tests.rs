//! Restriction names and arguments as Postfix spells them, and the
//! table results they act on.

use super::*;

fn run(value: &str) -> (Vec<Restriction>, Vec<String>, Vec<String>) {
    let mut cache = TableCache::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let origin = Origin { file: Path::new("main.cf"), line: Some(7), param: "smtpd_recipient_restrictions" };
    let r = parse(value, &origin, Path::new("/nonexistent"), &mut cache, &mut errors, &mut warnings);
    (r, errors.iter().map(|d| d.to_string()).collect(), warnings.iter().map(|d| d.to_string()).collect())
}

#[test]
fn a_typical_list_parses_with_table_arguments() {
    let (r, e, w) = run(
        "permit_mynetworks, check_recipient_access inline:{ abuse@example.com=OK }, reject_unauth_destination, reject_unlisted_recipient",
    );
    assert!(e.is_empty() && w.is_empty(), "{e:?} {w:?}");
    assert_eq!(r.len(), 4);
    assert!(matches!(r[1], Restriction::CheckRecipientAccess(_)));
    let (r, e, _) = run("{ check_client_access cidr:{ {192.0.2.0/24 REJECT} } }, permit");
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(r.len(), 2);
}

#[test]
fn misspelt_is_an_error_unsupported_is_a_warning_and_skipped() {
    let (r, e, w) = run("permit_mynetwork, check_sender_mx_access hash:mx, reject_unauth_destination");
    assert_eq!(e, vec!["main.cf:7: smtpd_recipient_restrictions: unknown restriction \"permit_mynetwork\""]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("check_sender_mx_access hash:mx"));
    assert_eq!(r.len(), 1);
    let (_, e, _) = run("check_recipient_access");
    assert!(e[0].contains("needs a table"));
    let (_, e, _) = run("reject_rbl_client");
    assert!(e[0].contains("reject_rbl_client needs an argument"), "{e:?}");
    let (_, e, _) = run("reject_rbl_client zen.example=127.0.0.[9..2]");
    assert!(e[0].ends_with("reject_rbl_client zen.example=127.0.0.[9..2]: empty range [9..2]"), "{e:?}");
}

#[test]
fn the_listed_names_are_the_implemented_ones() {
    for n in NAMES {
        assert!(named::<()>(n).is_some(), "{n} is listed but not implemented");
        assert!(!UNSUPPORTED_SIMPLE.contains(n) && !UNSUPPORTED_WITH_ARG.contains(n), "{n}");
    }
}

#[test]
fn header_check_actions() {
    assert_eq!(HeaderAction::parse("REJECT"), Ok(HeaderAction::Reject(None)));
    assert_eq!(
        HeaderAction::parse("reject  no exe files "),
        Ok(HeaderAction::Reject(Some("no exe files".into())))
    );
    assert_eq!(HeaderAction::parse("DISCARD"), Ok(HeaderAction::Discard(None)));
    assert_eq!(HeaderAction::parse("HOLD look at it"), Ok(HeaderAction::Hold(Some("look at it".into()))));
    assert_eq!(HeaderAction::parse("INFO x"), Ok(HeaderAction::Warn(Some("x".into()))));
    assert_eq!(HeaderAction::parse("ok"), Ok(HeaderAction::Dunno));
    assert_eq!(HeaderAction::parse("PREPEND X-Spam: yes"), Ok(HeaderAction::Unsupported("PREPEND".into())));
    assert!(HeaderAction::parse("REJCT").is_err());
}

#[test]
fn dnsbl_answers_and_filters() {
    let (r, e, _) =
        run("reject_invalid_helo_hostname, reject_non_fqdn_hostname, reject_rbl_client Zen.Example., \
         { reject_rbl_client bl.example=127.0.[0..1].[2;4;10] }");
    assert!(e.is_empty(), "{e:?}");
    assert!(matches!(r[0], Restriction::RejectInvalidHeloHostname));
    assert!(matches!(r[1], Restriction::RejectNonFqdnHeloHostname));
    let (Restriction::RejectRblClient(any), Restriction::RejectRblClient(some)) = (&r[2], &r[3]) else {
        panic!("{r:?}")
    };
    assert_eq!((any.domain.as_str(), some.domain.as_str()), ("zen.example", "bl.example"));
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    assert!(any.lists(ip("127.0.0.2")) && any.lists(ip("127.0.0.11")));
    // Blocklists' "query refused" codes and answers outside 127/8 are
    // not listings.
    assert!(!any.lists(ip("127.255.255.254")) && !any.lists(ip("192.0.2.1")));
    assert!(some.lists(ip("127.0.1.4")) && some.lists(ip("127.0.0.10")));
    assert!(!some.lists(ip("127.0.0.3")) && !some.lists(ip("127.0.2.2")));
    assert!(Dnsbl::parse("localhost").is_err());
    assert!(Dnsbl::parse("bl.example=127.0.0").is_err());
    assert!(Dnsbl::parse("bl.example=127.0.0.256").is_err());
}

#[test]
fn allowlists_and_domain_blocklists() {
    let (r, e, _) = run("permit_dnswl_client list.dnswl.example, reject_unknown_hostname, \
         reject_rhsbl_client dbl.example, reject_rhsbl_reverse_client dbl.example, \
         reject_rhsbl_helo dbl.example, reject_rhsbl_sender dbl.example=127.0.1.[2..99], \
         reject_rhsbl_recipient dbl.example");
    assert!(e.is_empty(), "{e:?}");
    let Restriction::PermitDnswlClient(wl) = &r[0] else { panic!("{r:?}") };
    assert!(matches!(r[1], Restriction::RejectUnknownHeloHostname));
    let names: Vec<RhsblName> = r[2..]
        .iter()
        .map(|x| match x {
            Restriction::RejectRhsbl(n, d) if d.domain == "dbl.example" => *n,
            other => panic!("{other:?}"),
        })
        .collect();
    use RhsblName::*;
    assert_eq!(names, [Client, ReverseClient, Helo, Sender, Recipient]);
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    assert!(wl.allowlists(ip("127.0.10.2")));
    // "Query refused" answers are no listing.
    assert!(!wl.allowlists(ip("127.0.0.255")) && !wl.allowlists(ip("127.255.255.254")));
    let filtered = Dnsbl::parse("list.dnswl.example=127.0.0.255").unwrap();
    assert!(filtered.allowlists(ip("127.0.0.255")), "an explicit filter is the administrator's word");
    let (_, e, _) = run("reject_rhsbl_sender");
    assert!(!e.is_empty(), "a domain blocklist restriction needs its list");
}

#[test]
fn access_results() {
    assert_eq!(Access::parse("OK"), Access::Ok);
    assert_eq!(Access::parse("ok"), Access::Ok);
    assert_eq!(Access::parse("12345"), Access::Ok);
    assert_eq!(Access::parse("REJECT"), Access::Reject(None));
    assert_eq!(Access::parse("REJECT  no thanks "), Access::Reject(Some("no thanks".into())));
    assert_eq!(
        Access::parse("450 4.7.1 try later"),
        Access::Reply { code: 450, text: "4.7.1 try later".into() }
    );
    assert_eq!(Access::parse("DUNNO"), Access::Dunno);
    assert_eq!(Access::parse("HOLD"), Access::Unsupported("HOLD".into()));
}
