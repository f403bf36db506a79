use super::*;

fn words(s: &str) -> Vec<String> {
    s.split([',', ' ']).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn lookups() -> StaticLookups {
    let mut access = HashMap::new();
    access.insert(
        "hash:/etc/sluice/rcpt_access".to_owned(),
        HashMap::from([
            ("blocked@relay.example".to_owned(), "REJECT".to_owned()),
            ("later@relay.example".to_owned(), "DEFER no space".to_owned()),
            ("custom@relay.example".to_owned(), "550 5.7.9 go away".to_owned()),
            ("ok@other.example".to_owned(), "OK".to_owned()),
            ("dunno@relay.example".to_owned(), "DUNNO".to_owned()),
            ("weird@relay.example".to_owned(), "FILTER smtp:x".to_owned()),
            ("sub.relay.example".to_owned(), "421 closing".to_owned()),
        ]),
    );
    access.insert(
        "cidr:/etc/sluice/clients".to_owned(),
        HashMap::from([("192.0.2".to_owned(), "REJECT spam source".to_owned())]),
    );
    StaticLookups {
        relay_domains: vec!["relay.example".to_owned()],
        relay_recipients: Some(HashSet::from([
            "user@relay.example".to_owned(),
            "blocked@relay.example".to_owned(),
            "later@relay.example".to_owned(),
            "custom@relay.example".to_owned(),
            "dunno@relay.example".to_owned(),
            "weird@relay.example".to_owned(),
            "@sub.relay.example".to_owned(),
        ])),
        access,
    }
}

fn policy(relay: &str, recipient: &str) -> Policy {
    Policy {
        mynetworks: vec!["10.0.0.0/8".parse().unwrap()],
        client: Vec::new(),
        relay: parse_restrictions("smtpd_relay_restrictions", &words(relay)).unwrap(),
        recipient: parse_restrictions("smtpd_recipient_restrictions", &words(recipient)).unwrap(),
        reject_unlisted_recipient: true,
        lookups: Arc::new(lookups()),
    }
}

const OUTSIDE: Client<'static> =
    Client { addr: IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)), name: "unknown" };
const INSIDE: Client<'static> =
    Client { addr: IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)), name: "unknown" };

fn reply(d: Decision) -> String {
    match d {
        Decision::Accept => "accept".to_owned(),
        Decision::Refuse(r) => r.to_one_line(),
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
    let spammer = Client { addr: "192.0.2.9".parse().unwrap(), name: "unknown" };
    assert_eq!(
        reply(p.check_recipient(spammer, "user@relay.example")),
        "554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: spam source"
    );
    assert_eq!(reply(p.check_recipient(OUTSIDE, "user@relay.example")), "accept");
}

#[test]
fn lookup_failure_is_a_temporary_error() {
    let p = policy("check_recipient_access hash:/missing, reject_unauth_destination", "");
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
    assert_eq!(
        parse_restrictions("smtpd_relay_restrictions", &words("permit_mynetworks reject_rbl_client x")),
        Err(PolicyError::Unknown {
            param: "smtpd_relay_restrictions".into(),
            name: "reject_rbl_client".into()
        })
    );
    assert!(matches!(
        parse_restrictions("smtpd_recipient_restrictions", &words("check_recipient_access")),
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
