//! Relay control and recipient validation: Postfix's
//! `smtpd_client_restrictions`, `smtpd_relay_restrictions` and
//! `smtpd_recipient_restrictions`, evaluated at `RCPT` time (as Postfix does
//! with `smtpd_delay_reject = yes`), then the implicit
//! `smtpd_reject_unlisted_recipient` check.
//!
//! Pure: a decision is a function of the restriction lists, the client, the
//! recipient and the lookup tables. It never touches the network, the queue
//! or the clock, and never writes logs (the session logs the reply).
//!
//! The reply texts are Postfix's, word for word, so log parsers and the
//! humans who read bounces recognise them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::TableError;
use crate::reply::{Reply, Status};

/// One element of a restriction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restriction {
    /// `permit`: ends the list, accepting.
    Permit,
    /// `reject`: `554 5.7.1 ... Access denied`.
    Reject,
    /// `defer`: `450 4.7.1 ... Try again later`.
    Defer,
    /// `permit_mynetworks`: accept clients in `mynetworks`.
    PermitMynetworks,
    /// `permit_sasl_authenticated`: sluice has no AUTH, so this never
    /// matches; accepted so Postfix's default list parses.
    PermitSaslAuthenticated,
    /// `reject_unauth_destination`: `554 5.7.1 <addr>: Relay access denied`
    /// unless the recipient domain is one of `relay_domains`.
    RejectUnauthDestination,
    /// `defer_unauth_destination`: the same with `454 4.7.1`.
    DeferUnauthDestination,
    /// `reject_unlisted_recipient`: `550 5.1.1` for a relay-domain address
    /// not in `relay_recipient_maps` (when that is set).
    RejectUnlistedRecipient,
    /// `check_recipient_access type:name`.
    CheckRecipientAccess(String),
    /// `check_client_access type:name`.
    CheckClientAccess(String),
}

impl Restriction {
    /// True for the restrictions that stop an open relay on their own
    /// (Postfix refuses to start without one of them in the relay or
    /// recipient list).
    fn guards_relay(&self) -> bool {
        matches!(
            self,
            Restriction::Reject
                | Restriction::Defer
                | Restriction::RejectUnauthDestination
                | Restriction::DeferUnauthDestination
        )
    }
}

/// A restriction list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name sluice does not implement.
    #[error("{param}: unsupported restriction \"{name}\"")]
    Unknown { param: String, name: String },
    /// `check_*_access` without its table.
    #[error("{param}: \"{name}\" needs a table argument")]
    MissingTable { param: String, name: String },
    /// Neither relay nor recipient restrictions can stop an open relay.
    #[error(
        "in smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one of \
         reject_unauth_destination, defer_unauth_destination, reject or defer"
    )]
    OpenRelay,
}

/// Parses a restriction list (the words of the parameter value, as
/// `Config::list` splits them). `param` names the parameter in errors.
pub fn parse_restrictions(param: &str, words: &[String]) -> Result<Vec<Restriction>, PolicyError> {
    let mut out = Vec::with_capacity(words.len());
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let name = w.to_ascii_lowercase();
        let r = match name.as_str() {
            "permit" => Restriction::Permit,
            "reject" => Restriction::Reject,
            "defer" => Restriction::Defer,
            "permit_mynetworks" => Restriction::PermitMynetworks,
            "permit_sasl_authenticated" => Restriction::PermitSaslAuthenticated,
            "reject_unauth_destination" => Restriction::RejectUnauthDestination,
            "defer_unauth_destination" => Restriction::DeferUnauthDestination,
            "reject_unlisted_recipient" => Restriction::RejectUnlistedRecipient,
            "check_recipient_access" | "check_client_access" => {
                let table = it.next().filter(|t| t.contains(':')).ok_or_else(|| {
                    PolicyError::MissingTable { param: param.to_owned(), name: name.clone() }
                })?;
                if name == "check_recipient_access" {
                    Restriction::CheckRecipientAccess(table.clone())
                } else {
                    Restriction::CheckClientAccess(table.clone())
                }
            }
            _ => return Err(PolicyError::Unknown { param: param.to_owned(), name: w.clone() }),
        };
        out.push(r);
    }
    Ok(out)
}

/// The tables a decision consults. Implemented over the loaded
/// configuration in `settings.rs`, and by [`StaticLookups`] over plain data.
pub trait Lookups: Send + Sync + fmt::Debug {
    /// `relay_domains` membership (subdomains as
    /// `parent_domain_matches_subdomains` says).
    fn is_relay_domain(&self, domain: &str) -> Result<bool, TableError>;
    /// `relay_recipient_maps`: `None` when the parameter is empty (every
    /// address in a relay domain is valid), else whether `address` is listed.
    fn relay_recipient(&self, address: &str) -> Result<Option<bool>, TableError>;
    /// The access table named `table` looked up for an email address, with
    /// Postfix's key order (`user@domain`, `domain`, parent domains, `user@`).
    fn access_address(&self, table: &str, address: &str) -> Result<Option<String>, TableError>;
    /// The access table named `table` looked up for each key in order
    /// (client address, then its networks); the first hit wins.
    fn access_keys(&self, table: &str, keys: &[String]) -> Result<Option<String>, TableError>;
}

/// Lookups over in-memory data: what tests and tools without a config
/// directory use. Keys are compared case-insensitively, as Postfix's
/// indexed tables do.
#[derive(Debug, Clone, Default)]
pub struct StaticLookups {
    /// Relay domains; each also matches its subdomains.
    pub relay_domains: Vec<String>,
    /// `relay_recipient_maps` keys (`user@domain` or `@domain`); `None`
    /// when the parameter is empty.
    pub relay_recipients: Option<HashSet<String>>,
    /// Access tables by the name restrictions give them (`hash:/x`).
    pub access: HashMap<String, HashMap<String, String>>,
}

impl StaticLookups {
    fn table(&self, table: &str) -> Result<&HashMap<String, String>, TableError> {
        self.access
            .get(table)
            .ok_or_else(|| TableError { table: table.to_owned(), message: "no such table".to_owned() })
    }
}

impl Lookups for StaticLookups {
    fn is_relay_domain(&self, domain: &str) -> Result<bool, TableError> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        Ok(self.relay_domains.iter().any(|r| {
            let r = r.to_ascii_lowercase();
            d == r || d.strip_suffix(&r).is_some_and(|head| head.ends_with('.'))
        }))
    }

    fn relay_recipient(&self, address: &str) -> Result<Option<bool>, TableError> {
        let Some(set) = &self.relay_recipients else { return Ok(None) };
        let a = address.to_ascii_lowercase();
        let at_domain = a.rfind('@').map(|i| a[i..].to_owned());
        Ok(Some(set.contains(&a) || at_domain.is_some_and(|d| set.contains(&d))))
    }

    fn access_address(&self, table: &str, address: &str) -> Result<Option<String>, TableError> {
        let t = self.table(table)?;
        Ok(address_keys(address).into_iter().find_map(|k| t.get(&k).cloned()))
    }

    fn access_keys(&self, table: &str, keys: &[String]) -> Result<Option<String>, TableError> {
        let t = self.table(table)?;
        Ok(keys.iter().find_map(|k| t.get(&k.to_ascii_lowercase()).cloned()))
    }
}

/// Postfix's access-table keys for an address: `user@domain`, `domain`,
/// each parent domain as `.parent` and plain (`smtpd_access_maps` is in
/// `parent_domain_matches_subdomains` by default), then `user@`.
pub fn address_keys(address: &str) -> Vec<String> {
    let a = address.to_ascii_lowercase();
    let mut keys = vec![a.clone()];
    if let Some((user, domain)) = a.rsplit_once('@') {
        keys.push(domain.to_owned());
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            keys.push(parent.to_owned());
            rest = parent;
        }
        keys.push(format!("{user}@"));
    }
    keys
}

/// The keys `check_client_access` tries for an address: the address, then
/// the networks obtained by dropping least significant octets (IPv4) or
/// groups (IPv6), as Postfix does.
pub fn client_keys(addr: IpAddr) -> Vec<String> {
    let text = addr.to_string();
    let sep = if addr.is_ipv4() { '.' } else { ':' };
    let mut keys = vec![text.clone()];
    let mut rest = text.as_str();
    while let Some((head, _)) = rest.rsplit_once(sep) {
        let head = head.trim_end_matches(':');
        if head.is_empty() {
            break;
        }
        keys.push(head.to_owned());
        rest = head;
    }
    keys
}

/// The restriction lists and what they consult.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `mynetworks`.
    pub mynetworks: Vec<IpNet>,
    /// `smtpd_client_restrictions`.
    pub client: Vec<Restriction>,
    /// `smtpd_relay_restrictions`.
    pub relay: Vec<Restriction>,
    /// `smtpd_recipient_restrictions`.
    pub recipient: Vec<Restriction>,
    /// `smtpd_reject_unlisted_recipient`.
    pub reject_unlisted_recipient: bool,
    /// The tables.
    pub lookups: Arc<dyn Lookups>,
}

impl Default for Policy {
    /// Postfix's defaults: relay only for `mynetworks` (loopback here) and
    /// `relay_domains` (none), which is not an open relay.
    fn default() -> Self {
        Policy {
            mynetworks: vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")],
            client: Vec::new(),
            relay: vec![
                Restriction::PermitMynetworks,
                Restriction::PermitSaslAuthenticated,
                Restriction::DeferUnauthDestination,
            ],
            recipient: Vec::new(),
            reject_unlisted_recipient: true,
            lookups: Arc::new(StaticLookups::default()),
        }
    }
}

/// The SMTP client as restrictions see it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub addr: IpAddr,
    /// Reverse name, or `unknown`.
    pub name: &'a str,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Refuse with this reply (4xx: try later, 5xx: never).
    Refuse(Reply),
}

/// What one list decided.
enum Step {
    Permit,
    Refuse(Reply),
}

/// Which list is being evaluated: it names the rejected thing in replies.
#[derive(Clone, Copy)]
enum Class {
    Client,
    Recipient,
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

    /// Decides whether `recipient` (without angle brackets) is accepted from
    /// `client`.
    pub fn check_recipient(&self, client: Client<'_>, recipient: &str) -> Decision {
        match self.evaluate(client, recipient) {
            Ok(d) => d,
            Err(_) => Decision::Refuse(Reply::new(
                451,
                Status(4, 3, 0),
                format!("<{recipient}>: Temporary lookup failure"),
            )),
        }
    }

    fn evaluate(&self, client: Client<'_>, rcpt: &str) -> Result<Decision, TableError> {
        for (list, class) in [
            (&self.client, Class::Client),
            (&self.relay, Class::Recipient),
            (&self.recipient, Class::Recipient),
        ] {
            if let Some(Step::Refuse(r)) = self.list(list, class, client, rcpt)? {
                return Ok(Decision::Refuse(r));
            }
        }
        if self.reject_unlisted_recipient
            && let Some(r) = self.unlisted(rcpt)?
        {
            return Ok(Decision::Refuse(r));
        }
        Ok(Decision::Accept)
    }

    /// Evaluates one list; `None` when nothing in it decided.
    fn list(
        &self,
        list: &[Restriction],
        class: Class,
        client: Client<'_>,
        rcpt: &str,
    ) -> Result<Option<Step>, TableError> {
        let what = match class {
            Class::Client => format!("<{}[{}]>: Client host", client.name, client.addr),
            Class::Recipient => format!("<{rcpt}>: Recipient address"),
        };
        for r in list {
            let step = match r {
                Restriction::Permit => Some(Step::Permit),
                Restriction::Reject => Some(Step::Refuse(Reply::new(
                    554,
                    Status(5, 7, 1),
                    format!("{what} rejected: Access denied"),
                ))),
                Restriction::Defer => Some(Step::Refuse(Reply::new(
                    450,
                    Status(4, 7, 1),
                    format!("{what} rejected: Try again later"),
                ))),
                Restriction::PermitMynetworks => {
                    self.mynetworks.iter().any(|n| n.contains(&client.addr)).then_some(Step::Permit)
                }
                Restriction::PermitSaslAuthenticated => None,
                Restriction::RejectUnauthDestination => (!self.authorized(rcpt)?).then(|| {
                    Step::Refuse(Reply::new(554, Status(5, 7, 1), format!("<{rcpt}>: Relay access denied")))
                }),
                Restriction::DeferUnauthDestination => (!self.authorized(rcpt)?).then(|| {
                    Step::Refuse(Reply::new(454, Status(4, 7, 1), format!("<{rcpt}>: Relay access denied")))
                }),
                Restriction::RejectUnlistedRecipient => self.unlisted(rcpt)?.map(Step::Refuse),
                Restriction::CheckRecipientAccess(table) => {
                    self.lookups.access_address(table, rcpt)?.and_then(|v| access_action(table, &v, &what))
                }
                Restriction::CheckClientAccess(table) => {
                    let what = format!("<{}[{}]>: Client host", client.name, client.addr);
                    self.lookups
                        .access_keys(table, &client_keys(client.addr))?
                        .and_then(|v| access_action(table, &v, &what))
                }
            };
            if step.is_some() {
                return Ok(step);
            }
        }
        Ok(None)
    }

    /// True when sluice relays for the recipient's domain: one of
    /// `relay_domains`, and no sender-specified routing in the local part
    /// (`user%other@domain`, `user!other@domain`), which a downstream
    /// server might honour and so turn us into an open relay.
    fn authorized(&self, rcpt: &str) -> Result<bool, TableError> {
        let Some((local, domain)) = rcpt.rsplit_once('@') else { return Ok(false) };
        if domain.is_empty() || local.contains(['%', '!', '@']) {
            return Ok(false);
        }
        self.lookups.is_relay_domain(domain)
    }

    /// The `reject_unlisted_recipient` verdict: a reply when the address is
    /// in a relay domain and `relay_recipient_maps` does not list it.
    fn unlisted(&self, rcpt: &str) -> Result<Option<Reply>, TableError> {
        let Some((_, domain)) = rcpt.rsplit_once('@') else { return Ok(None) };
        if !self.lookups.is_relay_domain(domain)? {
            return Ok(None);
        }
        Ok(match self.lookups.relay_recipient(rcpt)? {
            Some(false) => Some(Reply::new(
                550,
                Status(5, 1, 1),
                format!("<{rcpt}>: Recipient address rejected: User unknown in relay recipient table"),
            )),
            _ => None,
        })
    }
}

/// Turns an access(5) table result into a step; `None` is `DUNNO` (go on
/// with the next restriction). `what` is `<thing>: Class`, e.g.
/// `<a@b>: Recipient address`.
fn access_action(table: &str, value: &str, what: &str) -> Option<Step> {
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
