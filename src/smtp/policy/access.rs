//! What restriction lists are made of and consult: the [`Restriction`]
//! type (the configuration's, over [`AccessTable`]s), parsing a list
//! written as text, the [`AccessTable`] and [`Lookups`] traits the
//! configuration's tables implement, in-memory ones for tools and tests,
//! the lookup keys Postfix's access tables are searched with, and
//! `mynetworks` ([`Networks`]).
//!
//! Never evaluates a restriction: that is `policy/mod.rs`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{Known, LookupError, Named, named};

/// One element of a restriction list: the configuration's restriction
/// (one list of names and meanings, `config::Restriction`), consulting
/// [`AccessTable`]s. What each does at RCPT time, with Postfix's reply
/// codes and texts, is [`Policy`]'s evaluation below.
pub type Restriction = crate::config::Restriction<Arc<dyn AccessTable>>;

/// A restriction list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name sluice does not implement.
    #[error("{param}: unsupported restriction \"{name}\"")]
    Unknown { param: String, name: String },
    /// `check_*_access` without its table, or a table that is not known.
    #[error("{param}: \"{name}\" needs a known table argument")]
    MissingTable { param: String, name: String },
    /// A restriction's argument is missing or wrong.
    #[error("{param}: {name}: {message}")]
    BadArgument { param: String, name: String, message: String },
    /// Neither relay nor recipient restrictions can stop an open relay.
    #[error(
        "in smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one of \
         reject_unauth_destination, defer_unauth_destination, reject or defer"
    )]
    OpenRelay,
}

/// Parses a restriction list written as text (the words of the parameter
/// value); `table` opens the table a `check_*_access` names. The loaded
/// configuration hands over lists it already parsed; this is for tools and
/// tests that build settings by hand.
pub fn parse_restrictions(
    param: &str,
    words: &[String],
    table: &dyn Fn(&str) -> Option<Arc<dyn AccessTable>>,
) -> Result<Vec<Restriction>, PolicyError> {
    let mut out = Vec::with_capacity(words.len());
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let r = match named(w) {
            Some(Named::Simple(r)) => r,
            Some(Named::WithTable(make)) => {
                let t = it.next().and_then(|t| table(t)).ok_or_else(|| PolicyError::MissingTable {
                    param: param.to_owned(),
                    name: w.to_ascii_lowercase(),
                })?;
                make(t)
            }
            Some(Named::WithArg(make)) => {
                let bad = |message: String| PolicyError::BadArgument {
                    param: param.to_owned(),
                    name: w.to_ascii_lowercase(),
                    message,
                };
                make(it.next().ok_or_else(|| bad("needs an argument".into()))?).map_err(bad)?
            }
            None => return Err(PolicyError::Unknown { param: param.to_owned(), name: w.clone() }),
        };
        out.push(r);
    }
    Ok(out)
}

/// An access(5) table as restrictions consult it. The key order is the
/// table's business (Postfix's, for the configuration's tables). `known`
/// holds the directory answers the decision has gathered: a directory
/// table's key without one is [`LookupError::Ask`]ed for, a failed table
/// is [`LookupError::Failed`] (a temporary failure, never "not found").
pub trait AccessTable: Send + Sync + fmt::Debug {
    /// `type:name` as configured, for logs.
    fn name(&self) -> &str;
    /// An email address: `user@domain`, `domain`, parent domains, `user@`.
    fn lookup_address(&self, address: &str, known: &Known) -> Result<Option<String>, LookupError>;
    /// A client address, then its networks.
    fn lookup_client(&self, addr: IpAddr, known: &Known) -> Result<Option<String>, LookupError>;
    /// A host name (HELO), then its parent domains.
    fn lookup_domain(&self, domain: &str, known: &Known) -> Result<Option<String>, LookupError>;
}

/// The tables a decision consults besides access tables. Implemented over
/// the loaded configuration in `settings.rs`, and by [`StaticLookups`].
/// `known` as for [`AccessTable`].
pub trait Lookups: Send + Sync + fmt::Debug {
    /// `relay_domains` membership (subdomains as
    /// `parent_domain_matches_subdomains` says).
    fn is_relay_domain(&self, domain: &str, known: &Known) -> Result<bool, LookupError>;
    /// `relay_recipient_maps`: `None` when the parameter is empty (every
    /// address in a relay domain is valid), else whether `address` is listed.
    fn relay_recipient(&self, address: &str, known: &Known) -> Result<Option<bool>, LookupError>;
    /// `virtual_alias_maps` has an entry for `address` (see
    /// `config::Config::is_virtual_alias_in`). None by default.
    fn is_virtual_alias(&self, _address: &str, _known: &Known) -> Result<bool, LookupError> {
        Ok(false)
    }
    /// When `domain` is one of `virtual_alias_domains`: the reply code for
    /// an address in it that is no alias (`unknown_virtual_alias_reject_code`).
    /// None by default.
    fn virtual_alias_domain(&self, _domain: &str, _known: &Known) -> Result<Option<u16>, LookupError> {
        Ok(None)
    }
}

/// Lookups over in-memory data, for tools and tests without a
/// configuration directory. Keys are compared case-insensitively, as
/// Postfix's indexed tables do.
#[derive(Debug, Clone, Default)]
pub struct StaticLookups {
    /// Relay domains; each also matches its subdomains.
    pub relay_domains: Vec<String>,
    /// `relay_recipient_maps` keys (`user@domain` or `@domain`); `None`
    /// when the parameter is empty.
    pub relay_recipients: Option<HashSet<String>>,
}

impl Lookups for StaticLookups {
    fn is_relay_domain(&self, domain: &str, _: &Known) -> Result<bool, LookupError> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        Ok(self.relay_domains.iter().any(|r| {
            let r = r.to_ascii_lowercase();
            d == r || d.strip_suffix(&r).is_some_and(|head| head.ends_with('.'))
        }))
    }

    fn relay_recipient(&self, address: &str, _: &Known) -> Result<Option<bool>, LookupError> {
        let Some(set) = &self.relay_recipients else { return Ok(None) };
        let a = address.to_ascii_lowercase();
        let at_domain = a.rfind('@').map(|i| a[i..].to_owned());
        Ok(Some(set.contains(&a) || at_domain.is_some_and(|d| set.contains(&d))))
    }
}

/// An access table over in-memory data, with Postfix's key orders (for
/// tools and tests; the configuration's tables are `config::tables`').
#[derive(Debug, Clone, Default)]
pub struct MemoryAccessTable {
    name: String,
    /// Lower-case keys to results (private: a key with capitals would
    /// never be found).
    entries: HashMap<String, String>,
}

impl MemoryAccessTable {
    /// A shareable table named `name` holding `entries` (keys are lower-cased).
    pub fn shared<'a>(
        name: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Arc<dyn AccessTable> {
        Arc::new(MemoryAccessTable {
            name: name.to_owned(),
            entries: entries.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect(),
        })
    }

    fn first(&self, keys: Vec<String>) -> Option<String> {
        keys.into_iter().find_map(|k| self.entries.get(&k).cloned())
    }
}

impl AccessTable for MemoryAccessTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn lookup_address(&self, address: &str, _: &Known) -> Result<Option<String>, LookupError> {
        Ok(self.first(address_keys(address)))
    }

    fn lookup_client(&self, addr: IpAddr, _: &Known) -> Result<Option<String>, LookupError> {
        Ok(self.first(client_keys(addr)))
    }

    fn lookup_domain(&self, domain: &str, _: &Known) -> Result<Option<String>, LookupError> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut keys = vec![d.clone()];
        let mut rest = d.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            keys.push(parent.to_owned());
            rest = parent;
        }
        Ok(self.first(keys))
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

/// A client address list in `mynetworks` syntax.
#[derive(Clone)]
pub enum Networks {
    /// Literal networks.
    List(Vec<IpNet>),
    /// A network-list parameter of a loaded configuration, with its tables,
    /// negations and pattern files (`mynetworks`,
    /// `smtpd_forbid_bare_newline_exclusions`, ...).
    Param { config: Arc<crate::config::Config>, name: &'static str },
}

impl Networks {
    /// True when `addr` is in the list (an IPv4-mapped IPv6 address
    /// matches as its IPv4 form).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Networks::List(nets) => {
                let v4 = match addr {
                    IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
                    IpAddr::V4(_) => None,
                };
                nets.iter().any(|n| n.contains(&addr) || v4.is_some_and(|a| n.contains(&a)))
            }
            Networks::Param { config, name } => config.matches_client(name, addr),
        }
    }
}

impl From<Vec<IpNet>> for Networks {
    fn from(nets: Vec<IpNet>) -> Networks {
        Networks::List(nets)
    }
}

impl Default for Networks {
    fn default() -> Networks {
        Networks::List(Vec::new())
    }
}

impl fmt::Debug for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Networks::List(n) => f.debug_tuple("List").field(n).finish(),
            Networks::Param { name, .. } => write!(f, "Param({name})"),
        }
    }
}
