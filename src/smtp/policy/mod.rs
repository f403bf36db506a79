//! Relay control and recipient validation: Postfix's
//! `smtpd_client_restrictions`, `smtpd_helo_restrictions`,
//! `smtpd_sender_restrictions`, `smtpd_relay_restrictions` and
//! `smtpd_recipient_restrictions`, all evaluated at `RCPT` time (as Postfix
//! does with `smtpd_delay_reject = yes`), then the implicit
//! `smtpd_reject_unlisted_recipient` check.
//!
//! Pure: a decision is a function of the restriction lists, the request
//! (client, HELO name, sender, recipient, and the answers gathered so far)
//! and the lookup tables. It never touches the network, the queue or the
//! clock, and logs only a table result it cannot act on (the session logs
//! the reply). A restriction that needs a policy server or a DNS answer
//! the request lacks makes the decision [`Decision::Ask`]; the session
//! finds out and decides again, so nothing is asked that no restriction
//! reaches.
//!
//! The reply texts are Postfix's, word for word, so log parsers and the
//! humans who read bounces recognise them.

mod access;
mod request;
mod unlisted;
mod verify;

use std::net::IpAddr;
use std::sync::Arc;

pub use self::access::{
    AccessTable, Lookups, MemoryAccessTable, Networks, PolicyError, Restriction, StaticLookups, address_keys,
    client_keys, parse_restrictions,
};
pub use self::request::{Answers, Decision, DomainStatus, NO_ANSWERS, Question, Request};
pub use self::verify::{TempfailAction, VerifyReplies};
use super::naming::{Client, Listing, NameStatus, UNKNOWN, valid_hostname};
use crate::config::{LookupError, RhsblName};
use crate::reply::{Reply, Status};

/// The restriction lists and what they consult.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `mynetworks`.
    pub mynetworks: Networks,
    /// `smtpd_client_restrictions`.
    pub client: Vec<Restriction>,
    /// `smtpd_helo_restrictions`.
    pub helo: Vec<Restriction>,
    /// `smtpd_sender_restrictions`.
    pub sender: Vec<Restriction>,
    /// `smtpd_relay_restrictions`.
    pub relay: Vec<Restriction>,
    /// `smtpd_recipient_restrictions`.
    pub recipient: Vec<Restriction>,
    /// `smtpd_data_restrictions`, evaluated at `DATA` and at the first
    /// `BDAT` of a message.
    pub data: Vec<Restriction>,
    /// `smtpd_reject_unlisted_recipient`.
    pub reject_unlisted_recipient: bool,
    /// `unknown_client_reject_code`.
    pub unknown_client_reject_code: u16,
    /// `non_fqdn_reject_code`: the `reject_non_fqdn_*` restrictions.
    pub non_fqdn_reject_code: u16,
    /// `invalid_hostname_reject_code`: `reject_invalid_helo_hostname`.
    pub invalid_hostname_reject_code: u16,
    /// `unknown_hostname_reject_code`: `reject_unknown_helo_hostname`.
    pub unknown_hostname_reject_code: u16,
    /// `maps_rbl_reject_code`: `reject_rbl_client`, `reject_rhsbl_*`.
    pub rbl_reject_code: u16,
    /// `unknown_address_reject_code`: `reject_unknown_sender_domain`.
    pub unknown_address_reject_code: u16,
    /// `nullmx_reject_code`: a sender domain with a null MX.
    pub nullmx_reject_code: u16,
    /// `unverified_recipient_*`: `reject_unverified_recipient`'s replies.
    pub verify: VerifyReplies,
    /// The tables.
    pub lookups: Arc<dyn Lookups>,
}

impl Default for Policy {
    /// Postfix's defaults: relay only for `mynetworks` (loopback here) and
    /// `relay_domains` (none), which is not an open relay.
    fn default() -> Self {
        Policy {
            mynetworks: Networks::List(vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ]),
            client: Vec::new(),
            helo: Vec::new(),
            sender: Vec::new(),
            relay: vec![
                Restriction::PermitMynetworks,
                Restriction::PermitSaslAuthenticated,
                Restriction::DeferUnauthDestination,
            ],
            recipient: Vec::new(),
            data: Vec::new(),
            reject_unlisted_recipient: true,
            unknown_client_reject_code: 450,
            non_fqdn_reject_code: 504,
            invalid_hostname_reject_code: 501,
            unknown_hostname_reject_code: 450,
            rbl_reject_code: 554,
            unknown_address_reject_code: 450,
            nullmx_reject_code: 556,
            verify: VerifyReplies::default(),
            lookups: Arc::new(StaticLookups::default()),
        }
    }
}

/// What one restriction or list decided.
enum Step {
    Permit,
    Refuse(Reply),
    Ask(Question),
}

/// What a refusal names, as Postfix words it.
#[derive(Clone, Copy)]
enum Class {
    Client,
    Helo,
    Sender,
    Recipient,
    Data,
}

/// `defer_if_permit` / `defer_if_reject` raised earlier in the evaluation.
#[derive(Default)]
struct Pending {
    if_permit: Option<Reply>,
    if_reject: bool,
    /// Headers an access result or policy server asked to `PREPEND`.
    prepend: Vec<String>,
}

impl Policy {
    /// Checks that the relay and recipient lists together stop an open
    /// relay, as Postfix insists before it starts.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.relay.iter().chain(&self.recipient).any(Restriction::guards_relay) {
            Ok(())
        } else {
            Err(PolicyError::OpenRelay)
        }
    }

    /// The DNS block- and allowlists the lists consult about the client's
    /// address (`reject_rbl_client`, `permit_dnswl_client`), each once: a
    /// session asks them about its client when it connects.
    pub fn dnsbl_domains(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for list in [&self.client, &self.helo, &self.sender, &self.relay, &self.recipient, &self.data] {
            for r in list.iter() {
                if let Restriction::RejectRblClient(bl) | Restriction::PermitDnswlClient(bl) = r
                    && !out.contains(&bl.domain)
                {
                    out.push(bl.domain.clone());
                }
            }
        }
        out
    }

    /// True when a list has `reject_unknown_sender_domain`: the session
    /// then asks DNS about the sender's domain at MAIL.
    pub fn checks_sender_domain(&self) -> bool {
        [&self.client, &self.helo, &self.sender, &self.relay, &self.recipient, &self.data]
            .iter()
            .any(|list| list.iter().any(|r| matches!(r, Restriction::RejectUnknownSenderDomain)))
    }

    /// Decides whether `recipient` is accepted from `client` (HELO name and
    /// sender unknown: for callers outside a session).
    pub fn check_recipient(&self, client: Client<'_>, recipient: &str) -> Decision {
        let req = Request {
            client,
            helo: None,
            sender: "",
            sender_domain: DomainStatus::Found,
            recipient,
            answers: &NO_ANSWERS,
        };
        self.check(&req)
    }

    /// Decides a recipient: the client, HELO, sender, relay and recipient
    /// lists in that order (each list ends at its first permit or refusal;
    /// a refusal ends everything), then the implicit unlisted-recipient
    /// check.
    pub fn check(&self, req: &Request<'_>) -> Decision {
        self.check_prepending(req).0
    }

    /// [`Policy::check`], with the headers to prepend to the message when
    /// the recipient is accepted (`PREPEND` results).
    pub fn check_prepending(&self, req: &Request<'_>) -> (Decision, Vec<String>) {
        let mut pending = Pending::default();
        match self.evaluate(req, &mut pending) {
            Ok(Decision::Accept) => (Decision::Accept, pending.prepend),
            Ok(d) => (d, Vec::new()),
            // A directory table's key without an answer yet: find out, then
            // decide again from the start (the decision is pure).
            Err(LookupError::Ask(q)) => (Decision::Ask(Question::Lookup(q)), Vec::new()),
            Err(LookupError::Failed(_)) => (
                Decision::Refuse(Reply::new(
                    451,
                    Status(4, 3, 0),
                    format!("<{}>: Temporary lookup failure", req.recipient),
                )),
                Vec::new(),
            ),
        }
    }

    /// Decides whether message content may follow (`DATA`, first `BDAT`):
    /// `smtpd_data_restrictions`, with `recipient` the last accepted one.
    pub fn check_data(&self, req: &Request<'_>) -> Decision {
        let mut pending = Pending::default();
        match self.list(&self.data, Class::Data, req, &mut pending) {
            Ok(Some(Step::Refuse(r))) => Decision::Refuse(soften(r, &pending)),
            Ok(Some(Step::Ask(s))) => Decision::Ask(s),
            Ok(_) => pending.if_permit.map_or(Decision::Accept, Decision::Refuse),
            Err(LookupError::Ask(q)) => Decision::Ask(Question::Lookup(q)),
            Err(LookupError::Failed(_)) => {
                Decision::Refuse(Reply::new(451, Status(4, 3, 0), "<DATA>: Temporary lookup failure"))
            }
        }
    }

    fn evaluate(&self, req: &Request<'_>, pending: &mut Pending) -> Result<Decision, LookupError> {
        for (list, class) in [
            (&self.client, Class::Client),
            (&self.helo, Class::Helo),
            (&self.sender, Class::Sender),
            (&self.relay, Class::Recipient),
            (&self.recipient, Class::Recipient),
        ] {
            match self.list(list, class, req, pending)? {
                Some(Step::Refuse(r)) => return Ok(Decision::Refuse(soften(r, pending))),
                Some(Step::Ask(s)) => return Ok(Decision::Ask(s)),
                _ => {}
            }
        }
        if self.reject_unlisted_recipient
            && let Some(r) = self.unlisted(req.recipient, &req.answers.tables)?
        {
            return Ok(Decision::Refuse(soften(r, pending)));
        }
        // The end of the lists is an implicit permit.
        Ok(match pending.if_permit.take() {
            Some(r) => Decision::Refuse(r),
            None => Decision::Accept,
        })
    }

    /// Evaluates one list; `None` when nothing in it decided.
    fn list(
        &self,
        list: &[Restriction],
        class: Class,
        req: &Request<'_>,
        pending: &mut Pending,
    ) -> Result<Option<Step>, LookupError> {
        let known = &req.answers.tables;
        let what = |class: Class| match class {
            Class::Client => format!("<{}[{}]>: Client host", req.client.name, req.client.addr),
            Class::Helo => format!("<{}>: Helo command", req.helo.unwrap_or("")),
            Class::Sender => format!("<{}>: Sender address", req.sender),
            Class::Recipient => format!("<{}>: Recipient address", req.recipient),
            Class::Data => "<DATA>: Data command".to_owned(),
        };
        let rcpt = req.recipient;
        for r in list {
            let step = match r {
                Restriction::Permit => Some(Step::Permit),
                Restriction::Reject => Some(Step::Refuse(Reply::new(
                    554,
                    Status(5, 7, 1),
                    format!("{} rejected: Access denied", what(class)),
                ))),
                Restriction::Defer => Some(Step::Refuse(Reply::new(
                    450,
                    Status(4, 7, 1),
                    format!("{} rejected: Try again later", what(class)),
                ))),
                Restriction::DeferIfPermit => {
                    pending.if_permit.get_or_insert_with(|| {
                        Reply::new(
                            450,
                            Status(4, 7, 1),
                            format!("{} rejected: defer_if_permit requested", what(class)),
                        )
                    });
                    None
                }
                Restriction::DeferIfReject => {
                    pending.if_reject = true;
                    None
                }
                Restriction::PermitMynetworks => {
                    self.mynetworks.contains(req.client.addr).then_some(Step::Permit)
                }
                Restriction::PermitSaslAuthenticated | Restriction::RejectUnauthPipelining => None,
                // Postfix's texts and codes (smtpd_check.c): the configured
                // code when the name is known to be missing or forged, 450
                // when a lookup only failed for now.
                Restriction::RejectUnknownClientHostname => {
                    let status = req.client.naming.name;
                    (status != NameStatus::Ok).then(|| {
                        let code =
                            if status >= NameStatus::Perm { self.unknown_client_reject_code } else { 450 };
                        Step::Refuse(Reply::new(
                            code,
                            Status(reply_class(code), 7, 25),
                            format!("Client host rejected: cannot find your hostname, [{}]", req.client.addr),
                        ))
                    })
                }
                Restriction::RejectUnknownReverseClientHostname => {
                    let status = req.client.naming.reverse;
                    (status != NameStatus::Ok).then(|| {
                        let code =
                            if status >= NameStatus::Perm { self.unknown_client_reject_code } else { 450 };
                        Step::Refuse(Reply::new(
                            code,
                            Status(reply_class(code), 7, 1),
                            format!(
                                "Client host rejected: cannot find your reverse hostname, [{}]",
                                req.client.addr
                            ),
                        ))
                    })
                }
                Restriction::PermitAuthDestination => self.authorized(rcpt, known)?.then_some(Step::Permit),
                Restriction::RejectUnauthDestination => (!self.authorized(rcpt, known)?).then(|| {
                    Step::Refuse(Reply::new(554, Status(5, 7, 1), format!("<{rcpt}>: Relay access denied")))
                }),
                Restriction::DeferUnauthDestination => (!self.authorized(rcpt, known)?).then(|| {
                    Step::Refuse(Reply::new(454, Status(4, 7, 1), format!("<{rcpt}>: Relay access denied")))
                }),
                Restriction::RejectUnlistedRecipient => self.unlisted(rcpt, known)?.map(Step::Refuse),
                Restriction::RejectUnverifiedRecipient => self.unverified(req, pending),
                Restriction::RejectNonFqdnRecipient => (!is_fqdn_address(rcpt)).then(|| {
                    Step::Refuse(Reply::new(
                        self.non_fqdn_reject_code,
                        Status(reply_class(self.non_fqdn_reject_code), 5, 2),
                        format!("{} rejected: need fully-qualified address", what(Class::Recipient)),
                    ))
                }),
                Restriction::RejectNonFqdnSender => (!req.sender.is_empty() && !is_fqdn_address(req.sender))
                    .then(|| {
                        Step::Refuse(Reply::new(
                            self.non_fqdn_reject_code,
                            Status(reply_class(self.non_fqdn_reject_code), 5, 2),
                            format!("{} rejected: need fully-qualified address", what(Class::Sender)),
                        ))
                    }),
                // Postfix checks the HELO name only once one was given.
                Restriction::RejectInvalidHeloHostname => {
                    req.helo.filter(|h| !valid_helo_name(h)).map(|_| {
                        let code = self.invalid_hostname_reject_code;
                        Step::Refuse(Reply::new(
                            code,
                            Status(reply_class(code), 5, 2),
                            format!("{} rejected: Invalid name", what(Class::Helo)),
                        ))
                    })
                }
                Restriction::RejectNonFqdnHeloHostname => {
                    req.helo.filter(|h| !h.starts_with('[') && !is_fqdn_host(h)).map(|_| {
                        let code = self.non_fqdn_reject_code;
                        Step::Refuse(Reply::new(
                            code,
                            Status(reply_class(code), 5, 2),
                            format!("{} rejected: need fully-qualified hostname", what(Class::Helo)),
                        ))
                    })
                }
                // Postfix's texts; a lookup that failed for now defers only
                // if nothing else rejects (unknown_address_tempfail_action
                // = defer_if_permit).
                Restriction::RejectUnknownSenderDomain if !req.sender.is_empty() => {
                    let domain = req.sender.rsplit_once('@').map_or("", |(_, d)| d);
                    let refuse = |code: u16, st: u16, text: String| {
                        Reply::new(
                            code,
                            Status(reply_class(code), 1, st),
                            format!("{} rejected: {text}", what(Class::Sender)),
                        )
                    };
                    match req.sender_domain {
                        DomainStatus::Found => None,
                        DomainStatus::NotFound => Some(Step::Refuse(refuse(
                            self.unknown_address_reject_code,
                            8,
                            "Domain not found".into(),
                        ))),
                        DomainStatus::NullMx => Some(Step::Refuse(refuse(
                            self.nullmx_reject_code,
                            10,
                            format!("Domain {domain} does not accept mail (nullMX)"),
                        ))),
                        DomainStatus::TryAgain => {
                            pending
                                .if_permit
                                .get_or_insert_with(|| refuse(450, 8, "Domain not found".into()));
                            None
                        }
                    }
                }
                Restriction::RejectUnknownSenderDomain => None,
                // Postfix's text; a lookup that failed for now defers only
                // if nothing else rejects (unknown_helo_hostname_tempfail_action
                // = defer_if_permit). Address literals are not looked up.
                Restriction::RejectUnknownHeloHostname => {
                    let refuse = |code: u16| {
                        Reply::new(
                            code,
                            Status(reply_class(code), 7, 1),
                            format!("{} rejected: Host not found", what(Class::Helo)),
                        )
                    };
                    match req.helo.filter(|h| !h.starts_with('[')) {
                        None => None,
                        Some(h) if !valid_helo_name(h) => {
                            Some(Step::Refuse(refuse(self.unknown_hostname_reject_code)))
                        }
                        Some(h) => {
                            let name = h.trim_end_matches('.').to_ascii_lowercase();
                            match req.answers.host(&name) {
                                None => Some(Step::Ask(Question::Host(name))),
                                Some(DomainStatus::NotFound) => {
                                    Some(Step::Refuse(refuse(self.unknown_hostname_reject_code)))
                                }
                                Some(DomainStatus::TryAgain) => {
                                    pending.if_permit.get_or_insert_with(|| refuse(450));
                                    None
                                }
                                Some(DomainStatus::Found | DomainStatus::NullMx) => None,
                            }
                        }
                    }
                }
                Restriction::CheckPolicyService(svc) => match req.answers.policy(&svc.name) {
                    Some(action) => access_action(&svc.name, action, &what(class), pending),
                    None => Some(Step::Ask(Question::Policy(svc.clone()))),
                },
                // Never past reject_unauth_destination: in the relay and
                // recipient lists it permits only mail for a destination
                // sluice relays to, as Postfix.
                Restriction::PermitDnswlClient(bl) => {
                    let listed = req
                        .client
                        .dnsbl
                        .iter()
                        .find(|(domain, _)| *domain == bl.domain)
                        .is_some_and(|(_, l)| l.answers.iter().any(|a| bl.allowlists(*a)));
                    let guarded = matches!(class, Class::Recipient) && !self.authorized(rcpt, known)?;
                    (listed && !guarded).then_some(Step::Permit)
                }
                Restriction::RejectRhsbl(which, bl) => {
                    let (subject, what_name, domain) = rhsbl_subject(*which, req);
                    match domain.map(|d| d.trim_end_matches('.')).filter(|d| valid_hostname(d)) {
                        None => None,
                        Some(d) => {
                            let domain = d.to_ascii_lowercase();
                            match req.answers.listing(&Question::listing_key(&domain, &bl.domain)) {
                                None => {
                                    Some(Step::Ask(Question::Listing { domain, list: bl.domain.clone() }))
                                }
                                Some(l) if l.by(bl) => Some(self.blocked(subject, what_name, bl, l)),
                                Some(_) => None,
                            }
                        }
                    }
                }
                Restriction::RejectRblClient(bl) => req
                    .client
                    .dnsbl
                    .iter()
                    .find(|(domain, l)| *domain == bl.domain && l.by(bl))
                    .map(|(_, l)| self.blocked("Client host", &req.client.addr.to_string(), bl, l)),
                Restriction::CheckRecipientAccess(t) => t
                    .lookup_address(rcpt, known)?
                    .and_then(|v| access_action(t.name(), &v, &what(Class::Recipient), pending)),
                Restriction::CheckSenderAccess(t) if !req.sender.is_empty() => t
                    .lookup_address(req.sender, known)?
                    .and_then(|v| access_action(t.name(), &v, &what(Class::Sender), pending)),
                Restriction::CheckSenderAccess(_) => None,
                Restriction::CheckClientAccess(t) => t
                    .lookup_client(req.client.addr, known)?
                    .and_then(|v| access_action(t.name(), &v, &what(Class::Client), pending)),
                Restriction::CheckHeloAccess(t) => match req.helo {
                    Some(h) => t
                        .lookup_domain(h, known)?
                        .and_then(|v| access_action(t.name(), &v, &what(Class::Helo), pending)),
                    None => None,
                },
            };
            if step.is_some() {
                return Ok(step);
            }
        }
        Ok(None)
    }

    /// The refusal of a DNS blocklist listing, in Postfix's words
    /// (default_rbl_reply): `subject` is what was listed (`Client host`,
    /// `Sender address`, ...) and `what` its value.
    fn blocked(&self, subject: &str, what: &str, bl: &crate::config::Dnsbl, listing: &Listing) -> Step {
        let code = self.rbl_reject_code;
        Step::Refuse(Reply::new(
            code,
            Status(reply_class(code), 7, 1),
            format!(
                "Service unavailable; {subject} [{what}] blocked using {}{}",
                bl.domain,
                listing.reason_suffix()
            ),
        ))
    }
}

/// `Name: value` on one line: what `PREPEND` may add.
fn is_header_line(text: &str) -> bool {
    let Some((name, _)) = text.split_once(':') else { return false };
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !text.contains(['\r', '\n'])
}

/// The enhanced status class that goes with a reply code (`4` for `450`).
fn reply_class(code: u16) -> u8 {
    if code >= 500 { 5 } else { 4 }
}

/// A HELO name Postfix's `reject_invalid_helo_hostname` lets through: a
/// host name, or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub(crate) fn valid_helo_name(name: &str) -> bool {
    if name.starts_with('[') {
        address_literal(name).is_some()
    } else {
        valid_hostname(name.strip_suffix('.').unwrap_or(name))
    }
}

/// The address of an address literal (RFC 5321 4.1.3): `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]` (the tag is optional here, as in Postfix).
pub(crate) fn address_literal(text: &str) -> Option<IpAddr> {
    let lit = text.strip_prefix('[')?.strip_suffix(']')?;
    let lit = lit.strip_prefix("IPv6:").or_else(|| lit.strip_prefix("ipv6:")).unwrap_or(lit);
    lit.parse().ok()
}

/// A host name with a dot in it, written as a valid host name.
fn is_fqdn_host(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.contains('.') && valid_hostname(name)
}

/// What a `reject_rhsbl_*` restriction looks at: Postfix's name for it in
/// the reply, what the reply shows between brackets, and the domain to
/// ask about (none when there is nothing to ask: no HELO, the null
/// sender, an unknown client name, an address literal).
fn rhsbl_subject<'a>(which: RhsblName, req: &Request<'a>) -> (&'static str, &'a str, Option<&'a str>) {
    let known = |name: &'a str| (name != UNKNOWN).then_some(name);
    let domain_of =
        |address: &'a str| address.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.starts_with('['));
    match which {
        RhsblName::Client => ("Client host", req.client.name, known(req.client.name)),
        RhsblName::ReverseClient => {
            ("Unverified Client host", req.client.reverse_name, known(req.client.reverse_name))
        }
        RhsblName::Helo => {
            let helo = req.helo.unwrap_or("");
            ("Helo command", helo, req.helo.filter(|h| !h.starts_with('[')))
        }
        RhsblName::Sender => ("Sender address", req.sender, domain_of(req.sender)),
        RhsblName::Recipient => ("Recipient address", req.recipient, domain_of(req.recipient)),
    }
}

/// `user@host.domain`: a domain with a dot (or an address literal).
fn is_fqdn_address(address: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(_, d)| d.starts_with('[') || d.trim_end_matches('.').contains('.'))
}

/// A permanent refusal becomes temporary after `defer_if_reject`.
fn soften(r: Reply, pending: &Pending) -> Reply {
    if pending.if_reject && r.code() >= 500 {
        let st = r.status().unwrap_or(Status(5, 7, 1));
        Reply::new(450, Status(4, st.1, st.2), r.lines().join(" "))
    } else {
        r
    }
}

/// Turns an access(5) table result into a step; `None` is `DUNNO` (go on
/// with the next restriction). `what` is `<thing>: Class`, e.g.
/// `<a@b>: Recipient address`.
fn access_action(table: &str, value: &str, what: &str, pending: &mut Pending) -> Option<Step> {
    let value = value.trim();
    let (word, text) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    let text = text.trim();
    let refuse = |code: u16, default: Status, default_text: &str| {
        // The text may start with its own enhanced status code.
        let (status, text) = match text.split_once(' ').map(|(h, t)| (Status::parse(h), t)) {
            Some((Some(s), t)) if u16::from(s.0) == code / 100 => (s, t),
            _ => match Status::parse(text) {
                Some(s) if u16::from(s.0) == code / 100 => (s, ""),
                _ => (default, text),
            },
        };
        let text = if text.is_empty() { default_text } else { text };
        Some(Step::Refuse(Reply::new(code, status, format!("{what} rejected: {text}"))))
    };
    match word.to_ascii_uppercase().as_str() {
        "OK" => Some(Step::Permit),
        "DUNNO" => None,
        "DEFER_IF_PERMIT" => {
            let text = if text.is_empty() { "defer_if_permit requested" } else { text };
            pending
                .if_permit
                .get_or_insert_with(|| Reply::new(450, Status(4, 7, 1), format!("{what} rejected: {text}")));
            None
        }
        "DEFER_IF_REJECT" => {
            pending.if_reject = true;
            None
        }
        // A header for the message if it is accepted (policyd-spf's
        // `Received-SPF:`); the only change sluice makes to mail, as it is
        // asked for by the administrator's own policy.
        "PREPEND" => {
            if is_header_line(text) {
                // A policy server quotes what the client said (policyd-spf's
                // Received-SPF: names the HELO and the sender): no control
                // character goes into the header.
                let text = crate::reply::printable(text, crate::reply::IN_TEXT);
                if !pending.prepend.iter().any(|h| *h == text) {
                    pending.prepend.push(text.into_owned());
                }
            } else {
                tracing::warn!("{table}: PREPEND result is not a header: \"{}\"", text.escape_debug());
            }
            None
        }
        "REJECT" => refuse(554, Status(5, 7, 1), "Access denied"),
        "DEFER" => refuse(450, Status(4, 7, 1), "Access denied"),
        w if w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) && matches!(&w[..1], "4" | "5") => {
            let code: u16 = w.parse().unwrap_or(554);
            let default = Status((code / 100) as u8, 7, 1);
            refuse(code, default, "Access denied")
        }
        // An all-numerical result other than a reply code means OK.
        w if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => Some(Step::Permit),
        _ => {
            tracing::warn!("access table {table}: unsupported result \"{value}\"");
            Some(Step::Refuse(Reply::new(451, Status(4, 3, 5), "Server configuration error")))
        }
    }
}

#[cfg(test)]
mod tests;
