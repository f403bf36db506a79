//! The restriction decisions against Postfix's behaviour, with tables
//! and answers held in memory.

use std::collections::HashSet;

use super::*;
use crate::config::Known;
use crate::smtp::naming::{NameStatus, Naming};

fn words(s: &str) -> Vec<String> {
    s.split([',', ' ']).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn lookups() -> StaticLookups {
    StaticLookups {
        relay_domains: vec!["relay.example".to_owned()],
        relay_recipients: Some(HashSet::from([
            "user@relay.example".to_owned(),
            "blocked@relay.example".to_owned(),
            "later@relay.example".to_owned(),
            "custom@relay.example".to_owned(),
            "dunno@relay.example".to_owned(),
            "weird@relay.example".to_owned(),
            "maybe@relay.example".to_owned(),
            "@sub.relay.example".to_owned(),
        ])),
    }
}

/// The access tables restrictions in these tests may name.
fn table(name: &str) -> Option<Arc<dyn AccessTable>> {
    match name {
        "hash:/etc/sluice/rcpt_access" => Some(MemoryAccessTable::shared(
            name,
            [
                ("blocked@relay.example", "REJECT"),
                ("later@relay.example", "DEFER no space"),
                ("custom@relay.example", "550 5.7.9 go away"),
                ("ok@other.example", "OK"),
                ("dunno@relay.example", "DUNNO"),
                ("weird@relay.example", "FILTER smtp:x"),
                ("maybe@relay.example", "DEFER_IF_PERMIT not sure yet"),
                ("sub.relay.example", "421 closing"),
            ],
        )),
        "cidr:/etc/sluice/clients" => {
            Some(MemoryAccessTable::shared(name, [("192.0.2", "REJECT spam source")]))
        }
        "hash:/etc/sluice/senders" => Some(MemoryAccessTable::shared(name, [("spammer.example", "REJECT")])),
        "hash:/etc/sluice/helo" => {
            Some(MemoryAccessTable::shared(name, [("localhost", "REJECT you are not me")]))
        }
        _ => None,
    }
}

fn policy(relay: &str, recipient: &str) -> Policy {
    Policy {
        mynetworks: vec!["10.0.0.0/8".parse().unwrap()].into(),
        relay: parse_restrictions("smtpd_relay_restrictions", &words(relay), &table).unwrap(),
        recipient: parse_restrictions("smtpd_recipient_restrictions", &words(recipient), &table).unwrap(),
        lookups: Arc::new(lookups()),
        ..Policy::default()
    }
}

const OUTSIDE: Client<'static> = Client::unknown(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)));
const INSIDE: Client<'static> = Client::unknown(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));

fn reply(d: Decision) -> String {
    match d {
        Decision::Accept => "accept".to_owned(),
        Decision::Refuse(r) => r.to_one_line(),
        Decision::Ask(Question::Policy(s)) => format!("ask {}", s.name),
        Decision::Ask(q) => format!("ask {q:?}"),
    }
}

#[test]
fn relay_is_denied_as_postfix_words_it() {
    let p = policy("permit_mynetworks, reject_unauth_destination", "");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "a@elsewhere.example")),
        "554 5.7.1 <a@elsewhere.example>: Relay access denied"
    );
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
    assert_eq!(reply(p.check_recipient(OUTSIDE, "USER@Relay.Example")), "accept");
    // mynetworks may relay anywhere.
    assert_eq!(reply(p.check_recipient(INSIDE, "a@elsewhere.example")), "accept");
}

#[test]
fn postfix_default_relay_restrictions_defer_with_454() {
    let p = Policy { lookups: Arc::new(lookups()), ..Policy::default() };
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "a@elsewhere.example")),
        "454 4.7.1 <a@elsewhere.example>: Relay access denied"
    );
    p.validate().unwrap();
}

#[test]
fn sender_specified_routing_is_not_relayed() {
    let p = policy("permit_mynetworks, reject_unauth_destination", "");
    for rcpt in ["a%b@relay.example", "b!a@relay.example"] {
        assert!(reply(p.check_recipient(OUTSIDE, rcpt)).starts_with("554 5.7.1"), "{rcpt}");
    }
}

#[test]
fn unknown_relay_recipient_gets_550_even_from_mynetworks() {
    let p = policy("permit_mynetworks, reject_unauth_destination", "");
    let want =
        "550 5.1.1 <nobody@relay.example>: Recipient address rejected: User unknown in relay recipient table";
    assert_eq!(reply(p.check_recipient(OUTSIDE, "nobody@relay.example")), want);
    assert_eq!(reply(p.check_recipient(INSIDE, "nobody@relay.example")), want);
    // "@domain" keys accept a whole (sub)domain.
    assert_eq!(reply(p.check_recipient(OUTSIDE, "x@sub.relay.example")), "accept");
    let p = policy("reject_unauth_destination", "check_recipient_access hash:/etc/sluice/rcpt_access");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "x@sub.relay.example")),
        "421 4.7.1 <x@sub.relay.example>: Recipient address rejected: closing"
    );
}

#[test]
fn unlisted_check_is_off_when_the_map_is_empty() {
    let mut l = lookups();
    l.relay_recipients = None;
    let p = Policy { lookups: Arc::new(l), ..policy("reject_unauth_destination", "") };
    assert_eq!(reply(p.check_recipient(OUTSIDE, "anyone@relay.example")), "accept");
}

#[test]
fn access_table_results_map_to_postfix_replies() {
    let p = policy(
        "permit_mynetworks, reject_unauth_destination",
        "check_recipient_access hash:/etc/sluice/rcpt_access",
    );
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "blocked@relay.example")),
        "554 5.7.1 <blocked@relay.example>: Recipient address rejected: Access denied"
    );
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "later@relay.example")),
        "450 4.7.1 <later@relay.example>: Recipient address rejected: no space"
    );
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "custom@relay.example")),
        "550 5.7.9 <custom@relay.example>: Recipient address rejected: go away"
    );
    assert_eq!(reply(p.check_recipient(OUTSIDE, "dunno@relay.example")), "accept");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "weird@relay.example")),
        "451 4.3.5 Server configuration error"
    );
}

#[test]
fn ok_in_an_access_table_ends_only_its_own_list() {
    // OK in the recipient list cannot override a relay-list rejection.
    let p = policy("reject_unauth_destination", "check_recipient_access hash:/etc/sluice/rcpt_access");
    assert!(reply(p.check_recipient(OUTSIDE, "ok@other.example")).starts_with("554 5.7.1"));
    // But OK in the relay list permits relaying.
    let p = policy("check_recipient_access hash:/etc/sluice/rcpt_access, reject_unauth_destination", "");
    assert_eq!(reply(p.check_recipient(OUTSIDE, "ok@other.example")), "accept");
}

#[test]
fn client_access_matches_networks() {
    let p = policy(
        "check_client_access cidr:/etc/sluice/clients, permit_mynetworks, reject_unauth_destination",
        "",
    );
    let spammer = Client::unknown("192.0.2.9".parse().unwrap());
    assert_eq!(
        reply(p.check_recipient(spammer, "user@relay.example")),
        "554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: spam source"
    );
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
}

#[test]
fn lookup_failure_is_a_temporary_error() {
    #[derive(Debug)]
    struct Broken;
    impl AccessTable for Broken {
        fn name(&self) -> &str {
            "hash:/broken"
        }
        fn lookup_address(&self, _: &str, _: &Known) -> Result<Option<String>, LookupError> {
            Err(LookupError::Failed(crate::config::TableError {
                table: "hash:/broken".into(),
                message: "gone".into(),
            }))
        }
        fn lookup_client(&self, _: IpAddr, _: &Known) -> Result<Option<String>, LookupError> {
            Ok(None)
        }
        fn lookup_domain(&self, _: &str, _: &Known) -> Result<Option<String>, LookupError> {
            Ok(None)
        }
    }
    let mut p = policy("reject_unauth_destination", "");
    p.relay.insert(0, Restriction::CheckRecipientAccess(Arc::new(Broken)));
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "user@relay.example")),
        "451 4.3.0 <user@relay.example>: Temporary lookup failure"
    );
}

#[test]
fn plain_reject_defer_and_permit() {
    let p = policy("reject_unauth_destination", "permit");
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
    let p = policy("reject_unauth_destination", "reject");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "user@relay.example")),
        "554 5.7.1 <user@relay.example>: Recipient address rejected: Access denied"
    );
    let p = policy("defer", "");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "user@relay.example")),
        "450 4.7.1 <user@relay.example>: Recipient address rejected: Try again later"
    );
}

#[test]
fn lists_that_allow_open_relay_are_refused() {
    assert_eq!(policy("permit_mynetworks", "permit").validate(), Err(PolicyError::OpenRelay));
    assert!(matches!(
        parse_restrictions("smtpd_relay_restrictions", &words("permit_mynetworks check_sender_mx_access x"), &table),
        Err(PolicyError::Unknown { name, .. }) if name == "check_sender_mx_access"
    ));
    assert!(matches!(
        parse_restrictions("smtpd_relay_restrictions", &words("reject_rbl_client nodot"), &table),
        Err(PolicyError::BadArgument { name, .. }) if name == "reject_rbl_client"
    ));
    assert!(matches!(
        parse_restrictions("smtpd_recipient_restrictions", &words("check_recipient_access"), &table),
        Err(PolicyError::MissingTable { .. })
    ));
    assert!(matches!(
        parse_restrictions(
            "smtpd_recipient_restrictions",
            &words("check_recipient_access hash:/nowhere"),
            &table
        ),
        Err(PolicyError::MissingTable { .. })
    ));
}

#[test]
fn key_orders_follow_postfix() {
    assert_eq!(
        address_keys("User@Mail.Example.COM"),
        ["user@mail.example.com", "mail.example.com", ".example.com", "example.com", ".com", "com", "user@"]
    );
    assert_eq!(client_keys("192.0.2.9".parse().unwrap()), ["192.0.2.9", "192.0.2", "192.0", "192"]);
    assert_eq!(client_keys("2001:db8::1".parse().unwrap()), ["2001:db8::1", "2001:db8", "2001"]);
}

fn req<'a>(client: Client<'a>, helo: Option<&'a str>, sender: &'a str, recipient: &'a str) -> Request<'a> {
    Request { client, helo, sender, sender_domain: DomainStatus::Found, recipient, answers: &NO_ANSWERS }
}

#[test]
fn sender_and_helo_restrictions_apply_at_rcpt() {
    let mut p = policy("permit_mynetworks, reject_unauth_destination", "");
    p.sender = parse_restrictions(
        "smtpd_sender_restrictions",
        &words("reject_non_fqdn_sender check_sender_access hash:/etc/sluice/senders"),
        &table,
    )
    .unwrap();
    p.helo = parse_restrictions(
        "smtpd_helo_restrictions",
        &words("check_helo_access hash:/etc/sluice/helo"),
        &table,
    )
    .unwrap();
    let d = |helo, sender| reply(p.check(&req(OUTSIDE, helo, sender, "user@relay.example")));
    assert_eq!(d(Some("mx.source.example"), "a@source.example"), "accept");
    assert_eq!(d(Some("mx.source.example"), ""), "accept");
    assert_eq!(
        d(Some("mx.source.example"), "a@bad.spammer.example"),
        "554 5.7.1 <a@bad.spammer.example>: Sender address rejected: Access denied"
    );
    assert_eq!(
        d(Some("mx.source.example"), "a@nodot"),
        "504 5.5.2 <a@nodot>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(
        d(Some("localhost"), "a@source.example"),
        "554 5.7.1 <localhost>: Helo command rejected: you are not me"
    );
}

#[test]
fn defer_if_permit_and_defer_if_reject_soften_the_outcome() {
    // A table may ask for a deferral should the rest permit.
    let p = policy(
        "permit_mynetworks, reject_unauth_destination",
        "check_recipient_access hash:/etc/sluice/rcpt_access",
    );
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "maybe@relay.example")),
        "450 4.7.1 <maybe@relay.example>: Recipient address rejected: not sure yet"
    );
    // defer_if_permit in a list, then an explicit permit.
    let p = policy("defer_if_permit, permit_auth_destination, reject", "");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "user@relay.example")),
        "450 4.7.1 <user@relay.example>: Recipient address rejected: defer_if_permit requested"
    );
    // defer_if_reject turns a later 5xx into 450.
    let p = policy("defer_if_reject, reject_unauth_destination", "");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "x@elsewhere.example")),
        "450 4.7.1 <x@elsewhere.example>: Relay access denied"
    );
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
}

#[test]
fn non_fqdn_recipients_and_auth_destination() {
    let p = policy("reject_non_fqdn_recipient, permit_auth_destination, reject", "");
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
    assert_eq!(
        reply(p.check_recipient(OUTSIDE, "user@relay")),
        "504 5.5.2 <user@relay>: Recipient address rejected: need fully-qualified address"
    );
    assert!(reply(p.check_recipient(OUTSIDE, "user@elsewhere.example")).starts_with("554 5.7.1"));
}

#[test]
fn ipv4_mapped_clients_match_ipv4_networks() {
    let n = Networks::from(vec!["192.0.2.0/24".parse().unwrap()]);
    assert!(n.contains("::ffff:192.0.2.9".parse().unwrap()));
    assert!(!n.contains("2001:db8::1".parse().unwrap()));
}

#[test]
fn data_restrictions_apply_to_the_data_command() {
    let mut p = policy("permit_mynetworks, reject_unauth_destination", "");
    let r = |p: &Policy, addr: Client<'static>| {
        reply(p.check_data(&req(addr, Some("h.example"), "a@source.example", "user@relay.example")))
    };
    assert_eq!(r(&p, OUTSIDE), "accept");
    p.data = parse_restrictions(
        "smtpd_data_restrictions",
        &words("reject_unauth_pipelining permit_mynetworks reject"),
        &table,
    )
    .unwrap();
    assert_eq!(r(&p, OUTSIDE), "554 5.7.1 <DATA>: Data command rejected: Access denied");
    assert_eq!(r(&p, INSIDE), "accept");
}

#[test]
fn unknown_client_names_are_refused_permanently_or_for_now() {
    let mut p = policy("permit_mynetworks, reject_unauth_destination", "");
    p.client = parse_restrictions(
        "smtpd_client_restrictions",
        &words("reject_unknown_reverse_client_hostname, reject_unknown_client_hostname"),
        &table,
    )
    .unwrap();
    let addr: IpAddr = "198.51.100.7".parse().unwrap();
    let client = |name: NameStatus, reverse: NameStatus| Client {
        addr,
        name: "x",
        reverse_name: "x",
        naming: Naming { name, reverse },
        dnsbl: &[],
    };
    let rcpt = "user@relay.example";
    use NameStatus::*;
    assert_eq!(p.check_recipient(client(Ok, Ok), rcpt), Decision::Accept);
    let hostname = "Client host rejected: cannot find your hostname, [198.51.100.7]";
    let reverse = "Client host rejected: cannot find your reverse hostname, [198.51.100.7]";
    // No PTR at all: the reverse check refuses first, with the configured code.
    assert_eq!(reply(p.check_recipient(client(Perm, Perm), rcpt)), format!("450 4.7.1 {reverse}"));
    p.unknown_client_reject_code = 550;
    assert_eq!(reply(p.check_recipient(client(Perm, Perm), rcpt)), format!("550 5.7.1 {reverse}"));
    // A PTR that does not confirm: only the stricter check refuses.
    assert_eq!(reply(p.check_recipient(client(Forged, Ok), rcpt)), format!("550 5.7.25 {hostname}"));
    // Temporary failures always answer 450, whatever the configured code.
    assert_eq!(reply(p.check_recipient(client(Temp, Ok), rcpt)), format!("450 4.7.25 {hostname}"));
    assert_eq!(reply(p.check_recipient(client(Temp, Temp), rcpt)), format!("450 4.7.1 {reverse}"));
    // The pre-2.3 name still means reject_unknown_client_hostname.
    p.client =
        parse_restrictions("smtpd_client_restrictions", &words("reject_unknown_client"), &table).unwrap();
    assert_eq!(reply(p.check_recipient(client(Forged, Ok), rcpt)), format!("550 5.7.25 {hostname}"));
    // Unknown as an address-only client is: no lookup, a certain "no".
    assert_eq!(reply(p.check_recipient(Client::unknown(addr), rcpt)), format!("550 5.7.25 {hostname}"));
}

#[test]
fn unverified_recipients_get_postfix_codes_and_tempfail_actions() {
    use crate::verify::Verdict;
    let mut p = policy("reject_unauth_destination", "reject_unverified_recipient");
    p.verify.reject_code = 550;
    let rcpt = "user@relay.example";
    let with = |p: &Policy, v: Option<Verdict>| {
        let answers = Answers {
            verified: v.map(|v| vec![(rcpt.to_owned(), v)]).unwrap_or_default(),
            ..Answers::default()
        };
        let r = Request { answers: &answers, ..req(OUTSIDE, None, "", rcpt) };
        reply(p.check(&r))
    };
    assert_eq!(with(&p, None), "ask Verify(\"user@relay.example\")");
    assert_eq!(with(&p, Some(Verdict::Deliverable)), "accept");
    assert_eq!(
        with(&p, Some(Verdict::Undeliverable("host x said: 550 5.1.1 no".into()))),
        "550 5.1.1 <user@relay.example>: Recipient address rejected: undeliverable address: host x said: 550 5.1.1 no"
    );
    assert_eq!(
        with(&p, Some(Verdict::Unverified("host x said: 451 4.3.0 later".into()))),
        "450 4.1.1 <user@relay.example>: Recipient address rejected: unverified address: host x said: 451 4.3.0 later"
    );
    let busy = || Some(Verdict::Tempfail("backend lmtp:x is paused".into()));
    let deferred = "450 4.1.1 <user@relay.example>: Recipient address rejected: unverified address: backend lmtp:x is paused";
    assert_eq!(with(&p, busy()), deferred);
    p.verify.tempfail_action = TempfailAction::DeferIfReject;
    assert_eq!(with(&p, busy()), "accept");
    p.verify.tempfail_action = TempfailAction::Reject;
    assert!(with(&p, busy()).starts_with("550 5.1.1 "));
    // A later rejection wins over defer_if_permit.
    p.verify.tempfail_action = TempfailAction::DeferIfPermit;
    p.recipient.push(Restriction::Reject);
    assert!(with(&p, busy()).starts_with("554 5.7.1 "));
    p.verify.reject_reason = "no such user here".into();
    p.recipient.pop();
    assert_eq!(
        with(&p, Some(Verdict::Undeliverable("x".into()))),
        "550 5.1.1 <user@relay.example>: Recipient address rejected: no such user here"
    );
}
