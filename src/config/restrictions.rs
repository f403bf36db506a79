//! SMTP restriction lists (`smtpd_relay_restrictions`,
//! `smtpd_recipient_restrictions`, ...): parsed and checked at load into
//! [`Restriction`]s the SMTP server evaluates, and the access(5) results
//! of `check_*_access` tables as [`Access`].
//!
//! Owns the syntax only; what a restriction does at RCPT time is
//! `src/smtp/`'s job. A misspelt restriction is an error (Postfix would
//! answer 451 to every client at run time); a Postfix restriction sluice
//! does not implement is a warning and is left out of the list.

use super::Maps;
use super::error::Diagnostic;
use super::tables::{self, Origin, TableCache};
use super::values::{split_list, unbrace};
use std::path::Path;
use std::sync::Arc;

/// One restriction of a restriction list, in Postfix's words. `T` is what
/// a `check_*_access` restriction consults: the configuration's [`Maps`]
/// here; the SMTP server's policy uses its own access-table type.
#[derive(Debug, Clone)]
pub enum Restriction<T = Maps> {
    /// `permit`: stop, accept.
    Permit,
    /// `reject`: stop, refuse (5xx).
    Reject,
    /// `defer`: stop, refuse temporarily (4xx).
    Defer,
    /// `defer_if_permit`: if a later restriction permits, defer instead.
    DeferIfPermit,
    /// `defer_if_reject`: if a later restriction rejects, defer instead.
    DeferIfReject,
    /// `permit_mynetworks`: permit when the client is in mynetworks.
    PermitMynetworks,
    /// `permit_sasl_authenticated`: sluice has no SASL; never matches.
    PermitSaslAuthenticated,
    /// `reject_unauth_destination`: reject unless the recipient domain is in
    /// relay_domains (`relay_domains_reject_code`).
    RejectUnauthDestination,
    /// `defer_unauth_destination`: as above with a 4xx.
    DeferUnauthDestination,
    /// `permit_auth_destination`: permit when the recipient domain is in relay_domains.
    PermitAuthDestination,
    /// `reject_unlisted_recipient`: reject a relay_domains recipient that
    /// relay_recipient_maps does not list.
    RejectUnlistedRecipient,
    /// `reject_unverified_recipient`: reject a recipient its own mailbox
    /// server refuses at `RCPT TO` (a probe through the backend's gate,
    /// answered from a cache; `address_verify_*`).
    RejectUnverifiedRecipient,
    /// `reject_non_fqdn_recipient`.
    RejectNonFqdnRecipient,
    /// `reject_non_fqdn_sender`.
    RejectNonFqdnSender,
    /// `reject_unauth_pipelining`: reject a client that sends commands ahead
    /// of time where PIPELINING does not allow it.
    RejectUnauthPipelining,
    /// `reject_unknown_client_hostname` (formerly `reject_unknown_client`):
    /// reject a client without a forward-confirmed reverse name.
    RejectUnknownClientHostname,
    /// `reject_unknown_reverse_client_hostname`: reject a client address
    /// without a reverse (PTR) name.
    RejectUnknownReverseClientHostname,
    /// `reject_invalid_helo_hostname` (formerly `reject_invalid_hostname`):
    /// reject a HELO/EHLO name that is neither a host name nor an address
    /// literal.
    RejectInvalidHeloHostname,
    /// `reject_non_fqdn_helo_hostname` (formerly `reject_non_fqdn_hostname`):
    /// reject a HELO/EHLO name without a dot (address literals pass).
    RejectNonFqdnHeloHostname,
    /// `reject_unknown_sender_domain`: reject a sender whose domain has no
    /// MX and no address record, or a null MX (RFC 7505).
    RejectUnknownSenderDomain,
    /// `reject_unknown_helo_hostname` (formerly `reject_unknown_hostname`):
    /// reject a HELO/EHLO name that has no address and no MX record.
    RejectUnknownHeloHostname,
    /// `reject_rbl_client rbl_domain[=d.d.d.d]`: reject a client whose
    /// address the DNS blocklist lists.
    RejectRblClient(Dnsbl),
    /// `permit_dnswl_client dnswl_domain[=d.d.d.d]`: permit a client whose
    /// address the DNS allowlist lists (never past reject_unauth_destination).
    PermitDnswlClient(Dnsbl),
    /// `reject_rhsbl_{client,reverse_client,helo,sender,recipient}
    /// rbl_domain[=d.d.d.d]`: reject when the domain blocklist lists that
    /// name.
    RejectRhsbl(RhsblName, Dnsbl),
    /// `check_policy_service inet:host:port|unix:/path`: ask a policy
    /// server (Postfix's SMTPD policy delegation protocol); its `action=`
    /// is an access(5) result.
    CheckPolicyService(PolicyService),
    /// `check_client_access type:table`: client IP address (then its
    /// networks for cidr tables).
    CheckClientAccess(T),
    /// `check_helo_access type:table`: the HELO/EHLO name (domain keys).
    CheckHeloAccess(T),
    /// `check_sender_access type:table`: MAIL FROM address (address keys).
    CheckSenderAccess(T),
    /// `check_recipient_access type:table`: RCPT TO address (address keys).
    CheckRecipientAccess(T),
}

/// Every restriction name [`named`] knows, for the parameter reference.
pub const NAMES: &[&str] = &[
    "permit",
    "reject",
    "defer",
    "defer_if_permit",
    "defer_if_reject",
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit_auth_destination",
    "reject_unlisted_recipient",
    "reject_unverified_recipient",
    "reject_non_fqdn_recipient",
    "reject_non_fqdn_sender",
    "reject_unauth_pipelining",
    "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname",
    "reject_invalid_helo_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_unknown_sender_domain",
    "reject_unknown_helo_hostname",
    "reject_rbl_client",
    "permit_dnswl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo",
    "reject_rhsbl_sender",
    "reject_rhsbl_recipient",
    "check_policy_service",
    "check_client_access",
    "check_helo_access",
    "check_sender_access",
    "check_recipient_access",
];

/// A restriction name sluice implements, as [`named`] finds it.
#[derive(Debug)]
pub enum Named<T> {
    /// Complete as it is.
    Simple(Restriction<T>),
    /// A `check_*_access` that takes the next word as its table.
    WithTable(fn(T) -> Restriction<T>),
    /// A restriction that takes the next word as its argument.
    WithArg(fn(&str) -> Result<Restriction<T>, String>),
}

/// The restriction `name` (case-insensitive) stands for, if sluice
/// implements it: the one list of names every parser uses.
pub fn named<T>(name: &str) -> Option<Named<T>> {
    use Restriction as R;
    let simple = match name.to_ascii_lowercase().as_str() {
        "permit" => R::Permit,
        "reject" => R::Reject,
        "defer" => R::Defer,
        "defer_if_permit" => R::DeferIfPermit,
        "defer_if_reject" => R::DeferIfReject,
        "permit_mynetworks" => R::PermitMynetworks,
        "permit_sasl_authenticated" => R::PermitSaslAuthenticated,
        "reject_unauth_destination" => R::RejectUnauthDestination,
        "defer_unauth_destination" => R::DeferUnauthDestination,
        "permit_auth_destination" => R::PermitAuthDestination,
        "reject_unlisted_recipient" => R::RejectUnlistedRecipient,
        "reject_unverified_recipient" => R::RejectUnverifiedRecipient,
        "reject_non_fqdn_recipient" => R::RejectNonFqdnRecipient,
        "reject_non_fqdn_sender" => R::RejectNonFqdnSender,
        "reject_unauth_pipelining" => R::RejectUnauthPipelining,
        "reject_unknown_client_hostname" | "reject_unknown_client" => R::RejectUnknownClientHostname,
        "reject_unknown_reverse_client_hostname" => R::RejectUnknownReverseClientHostname,
        "reject_invalid_helo_hostname" | "reject_invalid_hostname" => R::RejectInvalidHeloHostname,
        "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => R::RejectNonFqdnHeloHostname,
        "reject_unknown_sender_domain" => R::RejectUnknownSenderDomain,
        "reject_unknown_helo_hostname" | "reject_unknown_hostname" => R::RejectUnknownHeloHostname,
        "reject_rbl_client" => return Some(Named::WithArg(|arg| Dnsbl::parse(arg).map(R::RejectRblClient))),
        "permit_dnswl_client" => {
            return Some(Named::WithArg(|arg| Dnsbl::parse(arg).map(R::PermitDnswlClient)));
        }
        "reject_rhsbl_client" => return Some(Named::WithArg(|a| rhsbl(RhsblName::Client, a))),
        "reject_rhsbl_reverse_client" => return Some(Named::WithArg(|a| rhsbl(RhsblName::ReverseClient, a))),
        "reject_rhsbl_helo" => return Some(Named::WithArg(|a| rhsbl(RhsblName::Helo, a))),
        "reject_rhsbl_sender" => return Some(Named::WithArg(|a| rhsbl(RhsblName::Sender, a))),
        "reject_rhsbl_recipient" => return Some(Named::WithArg(|a| rhsbl(RhsblName::Recipient, a))),
        "check_policy_service" => {
            return Some(Named::WithArg(|arg| PolicyService::parse(arg).map(R::CheckPolicyService)));
        }
        "check_client_access" => return Some(Named::WithTable(R::CheckClientAccess)),
        "check_helo_access" => return Some(Named::WithTable(R::CheckHeloAccess)),
        "check_sender_access" => return Some(Named::WithTable(R::CheckSenderAccess)),
        "check_recipient_access" => return Some(Named::WithTable(R::CheckRecipientAccess)),
        _ => return None,
    };
    Some(Named::Simple(simple))
}

/// A `reject_rhsbl_*` restriction asking about `which` name, from its
/// argument.
fn rhsbl<T>(which: RhsblName, arg: &str) -> Result<Restriction<T>, String> {
    Dnsbl::parse(arg).map(|d| Restriction::RejectRhsbl(which, d))
}

impl<T> Restriction<T> {
    /// The same restriction with its table (if any) turned into `f`'s.
    pub fn map_table<U>(&self, f: impl FnOnce(&T) -> U) -> Restriction<U> {
        use Restriction as R;
        match self {
            R::Permit => R::Permit,
            R::Reject => R::Reject,
            R::Defer => R::Defer,
            R::DeferIfPermit => R::DeferIfPermit,
            R::DeferIfReject => R::DeferIfReject,
            R::PermitMynetworks => R::PermitMynetworks,
            R::PermitSaslAuthenticated => R::PermitSaslAuthenticated,
            R::RejectUnauthDestination => R::RejectUnauthDestination,
            R::DeferUnauthDestination => R::DeferUnauthDestination,
            R::PermitAuthDestination => R::PermitAuthDestination,
            R::RejectUnlistedRecipient => R::RejectUnlistedRecipient,
            R::RejectUnverifiedRecipient => R::RejectUnverifiedRecipient,
            R::RejectNonFqdnRecipient => R::RejectNonFqdnRecipient,
            R::RejectNonFqdnSender => R::RejectNonFqdnSender,
            R::RejectUnauthPipelining => R::RejectUnauthPipelining,
            R::RejectUnknownClientHostname => R::RejectUnknownClientHostname,
            R::RejectUnknownReverseClientHostname => R::RejectUnknownReverseClientHostname,
            R::RejectInvalidHeloHostname => R::RejectInvalidHeloHostname,
            R::RejectNonFqdnHeloHostname => R::RejectNonFqdnHeloHostname,
            R::RejectUnknownSenderDomain => R::RejectUnknownSenderDomain,
            R::RejectUnknownHeloHostname => R::RejectUnknownHeloHostname,
            R::RejectRblClient(d) => R::RejectRblClient(d.clone()),
            R::PermitDnswlClient(d) => R::PermitDnswlClient(d.clone()),
            R::RejectRhsbl(n, d) => R::RejectRhsbl(*n, d.clone()),
            R::CheckPolicyService(p) => R::CheckPolicyService(p.clone()),
            R::CheckClientAccess(t) => R::CheckClientAccess(f(t)),
            R::CheckHeloAccess(t) => R::CheckHeloAccess(f(t)),
            R::CheckSenderAccess(t) => R::CheckSenderAccess(f(t)),
            R::CheckRecipientAccess(t) => R::CheckRecipientAccess(f(t)),
        }
    }

    /// True for the restrictions that stop an open relay on their own
    /// (Postfix refuses to start without one of them in the relay or
    /// recipient list).
    pub fn guards_relay(&self) -> bool {
        matches!(
            self,
            Restriction::Reject
                | Restriction::Defer
                | Restriction::RejectUnauthDestination
                | Restriction::DeferUnauthDestination
        )
    }
}

/// Postfix restrictions sluice does not implement that take no argument.
const UNSUPPORTED_SIMPLE: &[&str] = &[
    "reject_unknown_recipient_domain",
    "reject_unverified_sender",
    "reject_unlisted_sender",
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "reject_multi_recipient_bounce",
    "reject_plaintext_session",
    "reject_unknown_address",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
    "permit_mx_backup",
    "permit_inet_interfaces",
    "permit_naked_ip_address",
    "permit_auth_destination_unless_relay_recipient",
    "warn_if_reject",
];

/// Postfix restrictions sluice does not implement that take one argument.
const UNSUPPORTED_WITH_ARG: &[&str] = &[
    "reject_maps_rbl",
    "permit_rhswl_client",
    "check_client_a_access",
    "check_client_mx_access",
    "check_client_ns_access",
    "check_reverse_client_hostname_access",
    "check_reverse_client_hostname_a_access",
    "check_reverse_client_hostname_mx_access",
    "check_reverse_client_hostname_ns_access",
    "check_helo_a_access",
    "check_helo_mx_access",
    "check_helo_ns_access",
    "check_sender_a_access",
    "check_sender_mx_access",
    "check_sender_ns_access",
    "check_recipient_a_access",
    "check_recipient_mx_access",
    "check_recipient_ns_access",
    "check_ccert_access",
    "check_sasl_access",
    "check_etrn_access",
    "sleep",
];

/// Parses a restriction list, opening the tables of `check_*_access`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse(
    value: &str,
    origin: &Origin<'_>,
    dir: &Path,
    cache: &mut TableCache,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<Restriction> {
    let items = match split_list(value) {
        Ok(i) => i,
        Err(e) => {
            errors.push(origin.error(e));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut it = items.iter().map(|s| unbrace(s).to_owned());
    while let Some(word) = it.next() {
        // Braces group a restriction with its argument: `{ check_client_access hash:x }`.
        let mut parts = split_list(&word).unwrap_or_default().into_iter();
        let name = parts.next().unwrap_or_default();
        let inline_arg = parts.next();
        let name_lc = name.to_ascii_lowercase();
        let make = match named(&name) {
            Some(Named::Simple(r)) => {
                out.push(r);
                continue;
            }
            Some(Named::WithTable(make)) => Some(make),
            Some(Named::WithArg(make)) => {
                let Some(arg) = inline_arg.or_else(|| it.next()) else {
                    errors.push(origin.error(format!("{name} needs an argument")));
                    continue;
                };
                match make(&arg) {
                    Ok(r) => out.push(r),
                    Err(e) => errors.push(origin.error(format!("{name} {arg}: {e}"))),
                }
                continue;
            }
            None => None,
        };
        if let Some(make) = make {
            let Some(spec) = inline_arg.or_else(|| it.next()) else {
                errors.push(origin.error(format!("{name} needs a table argument (type:name)")));
                continue;
            };
            if let Some(t) = tables::open(&spec, dir, origin, cache, errors, warnings) {
                out.push(make(Maps { tables: vec![t as Arc<dyn super::Table>] }));
            }
            continue;
        }
        if UNSUPPORTED_SIMPLE.contains(&name_lc.as_str()) {
            warnings.push(
                origin.error(format!("restriction {name} is not implemented by sluice and is skipped")),
            );
            continue;
        }
        if UNSUPPORTED_WITH_ARG.contains(&name_lc.as_str()) {
            let arg = inline_arg.or_else(|| it.next()).unwrap_or_default();
            warnings.push(
                origin.error(format!("restriction {name} {arg} is not implemented by sluice and is skipped")),
            );
            continue;
        }
        errors.push(origin.error(format!("unknown restriction \"{name}\"")));
    }
    out
}

/// A policy server as `check_policy_service` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyService {
    /// As written (`inet:127.0.0.1:10023`): the key of its answers and the
    /// name in log lines.
    pub name: String,
    pub endpoint: PolicyEndpoint,
}

/// Where a policy server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEndpoint {
    /// `inet:host:port` or `host:port`.
    Inet { host: String, port: u16 },
    /// `unix:/path`; a relative path is under queue_directory (Postfix's
    /// `private/policy`), resolved by [`PolicyService::under`].
    Unix(std::path::PathBuf),
}

impl PolicyService {
    /// Parses `inet:host:port`, `host:port`, `[host]:port` or `unix:path`.
    pub fn parse(arg: &str) -> Result<PolicyService, String> {
        let name = arg.trim().to_owned();
        let endpoint = if let Some(path) = name.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            PolicyEndpoint::Unix(path.into())
        } else {
            let rest = name.strip_prefix("inet:").unwrap_or(&name);
            let (host, port) = super::values::split_host_port(rest)?;
            let host = host.unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']');
            PolicyEndpoint::Inet { host: host.to_owned(), port: super::values::parse_port(port)? }
        };
        Ok(PolicyService { name, endpoint })
    }

    /// The same server with a relative unix path made absolute under `dir`.
    pub fn under(&self, dir: &Path) -> PolicyService {
        match &self.endpoint {
            PolicyEndpoint::Unix(p) if p.is_relative() => {
                PolicyService { name: self.name.clone(), endpoint: PolicyEndpoint::Unix(dir.join(p)) }
            }
            _ => self.clone(),
        }
    }
}

/// The name a `reject_rhsbl_*` restriction asks a domain blocklist about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RhsblName {
    /// The client's forward-confirmed name (`reject_rhsbl_client`).
    Client,
    /// The client's reverse name, confirmed or not (`reject_rhsbl_reverse_client`).
    ReverseClient,
    /// The HELO/EHLO name (`reject_rhsbl_helo`).
    Helo,
    /// The sender's domain (`reject_rhsbl_sender`).
    Sender,
    /// The recipient's domain (`reject_rhsbl_recipient`).
    Recipient,
}

/// A DNS blocklist as `reject_rbl_client` names it: `domain`, or
/// `domain=d.d.d.d` where each octet is a number, `[n..m]` or `[a;b;c]`
/// and only an answer it matches means "listed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnsbl {
    pub domain: String,
    filter: Option<[Octets; 4]>,
}

/// One octet of a `reject_rbl_client` answer filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Octets {
    Range(u8, u8),
    Set(Vec<u8>),
}

impl Octets {
    fn parse(s: &str) -> Result<Octets, String> {
        let octet = |t: &str| t.trim().parse::<u8>().map_err(|_| format!("\"{t}\" is not an octet"));
        let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
            let n = octet(s)?;
            return Ok(Octets::Range(n, n));
        };
        if let Some((lo, hi)) = inner.split_once("..") {
            let (lo, hi) = (octet(lo)?, octet(hi)?);
            if lo > hi {
                return Err(format!("empty range [{inner}]"));
            }
            return Ok(Octets::Range(lo, hi));
        }
        inner.split(';').map(octet).collect::<Result<_, _>>().map(Octets::Set)
    }

    fn contains(&self, n: u8) -> bool {
        match self {
            Octets::Range(lo, hi) => (*lo..=*hi).contains(&n),
            Octets::Set(v) => v.contains(&n),
        }
    }
}

impl Dnsbl {
    /// Parses `domain[=pattern]`.
    pub fn parse(arg: &str) -> Result<Dnsbl, String> {
        let (domain, pattern) = match arg.split_once('=') {
            Some((d, p)) => (d.trim(), Some(p.trim())),
            None => (arg.trim(), None),
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || !domain.contains('.') {
            return Err(format!("\"{domain}\" is not a DNS blocklist domain"));
        }
        let filter = match pattern {
            None => None,
            Some(p) => {
                // Dots inside `[n..m]` do not separate octets.
                let mut parts = Vec::new();
                let (mut start, mut inside) = (0, false);
                for (i, c) in p.char_indices() {
                    match c {
                        '[' => inside = true,
                        ']' => inside = false,
                        '.' if !inside => {
                            parts.push(&p[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                parts.push(&p[start..]);
                let octets: Vec<Octets> = parts.into_iter().map(Octets::parse).collect::<Result<_, _>>()?;
                let octets: [Octets; 4] = octets.try_into().map_err(|_| format!("\"{p}\" is not d.d.d.d"))?;
                Some(octets)
            }
        };
        Ok(Dnsbl { domain, filter })
    }

    /// True when the blocklist's answer `a` means "listed": it matches
    /// the filter, or without one it is any address in 127.0.0.0/8 other
    /// than 127.255.255.0/24, where blocklists answer "error, query
    /// refused" (an open resolver, over quota), which must not block mail.
    pub fn lists(&self, a: std::net::Ipv4Addr) -> bool {
        let o = a.octets();
        match &self.filter {
            Some(f) => f.iter().zip(o).all(|(p, n)| p.contains(n)),
            None => o[0] == 127 && !(o[1] == 255 && o[2] == 255),
        }
    }

    /// True when a DNS allowlist's answer `a` means "listed"
    /// (`permit_dnswl_client`): as [`Dnsbl::lists`], and without a filter
    /// 127.0.0.255 is not a listing either: allowlists answer it when they
    /// refuse the query (over quota), which must not let a client through.
    pub fn allowlists(&self, a: std::net::Ipv4Addr) -> bool {
        self.lists(a) && (self.filter.is_some() || a != std::net::Ipv4Addr::new(127, 0, 0, 255))
    }
}

/// What a `header_checks` result says (header_checks(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderAction {
    /// `REJECT [text]`: refuse the whole message; inspection stops.
    Reject(Option<String>),
    /// `DISCARD [text]`: claim delivery and drop it; inspection stops.
    Discard(Option<String>),
    /// `HOLD [text]`: queue it on hold (`sluice queue release` frees it).
    Hold(Option<String>),
    /// `WARN [text]` / `INFO [text]`: log, and go on.
    Warn(Option<String>),
    /// `DUNNO`, `OK`: nothing; the next header is inspected.
    Dunno,
    /// A Postfix action that would change the message or its route
    /// (`IGNORE`, `PREPEND`, `REPLACE`, `REDIRECT`, `FILTER`, ...): sluice
    /// relays mail unchanged, so it is taken as `DUNNO`, with a warning.
    Unsupported(String),
}

impl HeaderAction {
    /// Parses a header_checks result; an unknown action word is an error.
    pub fn parse(result: &str) -> Result<HeaderAction, String> {
        let r = result.trim();
        let (word, text) = match r.split_once(char::is_whitespace) {
            Some((w, t)) => (w, Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            None => (r, None),
        };
        Ok(match word.to_ascii_uppercase().as_str() {
            "REJECT" => HeaderAction::Reject(text),
            "DISCARD" => HeaderAction::Discard(text),
            "HOLD" => HeaderAction::Hold(text),
            "WARN" | "INFO" => HeaderAction::Warn(text),
            "DUNNO" | "OK" => HeaderAction::Dunno,
            "IGNORE" | "PREPEND" | "REPLACE" | "REDIRECT" | "FILTER" | "BCC" | "STRIP" | "PASS" => {
                HeaderAction::Unsupported(word.to_ascii_uppercase())
            }
            _ => return Err(format!("unknown header_checks action \"{word}\"")),
        })
    }
}

/// What an access(5) table's result says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `OK`, or an all-numeric result: accept (stop evaluating this list).
    Ok,
    /// `DUNNO`: as if not found, go on with the next restriction.
    Dunno,
    /// `REJECT [text]`: access_map_reject_code with the text.
    Reject(Option<String>),
    /// `DEFER [text]`: access_map_defer_code with the text.
    Defer(Option<String>),
    /// `4NN text` / `5NN text`: this reply code and text.
    Reply {
        code: u16,
        text: String,
    },
    /// `DEFER_IF_PERMIT [text]`, `DEFER_IF_REJECT [text]`.
    DeferIfPermit(Option<String>),
    DeferIfReject(Option<String>),
    /// A result sluice does not act on (`HOLD`, `FILTER`, `REDIRECT`,
    /// `PREPEND`, `WARN`, restriction names, ...): ignored like `DUNNO`;
    /// the SMTP server should log it.
    Unsupported(String),
}

impl Access {
    /// Parses an access table result.
    pub fn parse(result: &str) -> Access {
        let r = result.trim();
        let (word, rest) = match r.find(char::is_whitespace) {
            Some(i) => (&r[..i], Some(r[i..].trim()).filter(|t| !t.is_empty()).map(str::to_owned)),
            None => (r, None),
        };
        if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
            if word.len() == 3
                && (word.starts_with('4') || word.starts_with('5'))
                && let Ok(code) = word.parse()
            {
                return Access::Reply { code, text: rest.unwrap_or_default() };
            }
            return Access::Ok;
        }
        match word.to_ascii_uppercase().as_str() {
            "OK" => Access::Ok,
            "DUNNO" => Access::Dunno,
            "REJECT" => Access::Reject(rest),
            "DEFER" => Access::Defer(rest),
            "DEFER_IF_PERMIT" => Access::DeferIfPermit(rest),
            "DEFER_IF_REJECT" => Access::DeferIfReject(rest),
            "PERMIT" => Access::Ok,
            _ => Access::Unsupported(r.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests;
