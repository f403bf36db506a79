//! Looking things up in a parameter's tables: the key orders Postfix uses
//! per feature ([`Maps`]), and how a lookup that must ask a directory
//! server fits into code that cannot wait.
//!
//! Owns the lookup API the rest of sluice calls. Two ways in:
//!
//! - Async, for code that can wait (delivery routing, alias expansion,
//!   the SMTP session): [`Maps::lookup_address_async`],
//!   [`Config::route_async`], [`Config::is_relay_domain_async`], or
//!   [`resolve`] around any of the `_in` functions.
//! - Pure, for decisions that must not wait (restrictions): the `_in`
//!   functions take the directory answers [`Known`] so far, and return
//!   [`LookupError::Ask`] with the [`Query`] they need when they reach a
//!   directory table key they have no answer for. The caller asks it
//!   ([`Query::ask`]), adds the answer and decides again; in-memory tables
//!   answer at once, and keys a directory table never looks up (its
//!   `domain` list, its templates) answer "not found" without asking.
//!
//! The plain synchronous functions ([`Maps::lookup_address`], ...) are the
//! `_in` ones with nothing known: a directory table reached through them
//! fails the lookup, which callers treat as a temporary failure.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::tables::{self, AddressKeys};
use super::{Config, Maps, Route, Table, TableError};

/// The most directory lookups one [`resolve`] makes before giving up: a
/// decision asks a few keys per table, never this many.
pub const MAX_ASKS: usize = 100;

/// Directory answers gathered for one decision: (table, key) → result.
#[derive(Debug, Clone, Default)]
pub struct Known {
    answers: Vec<(String, String, Option<String>)>,
}

/// Nothing known yet.
pub static NOTHING_KNOWN: Known = Known::EMPTY;

impl Known {
    /// No answers.
    pub const EMPTY: Known = Known { answers: Vec::new() };

    /// The answer of table `table` (by name) for `key`, if asked.
    pub fn get(&self, table: &str, key: &str) -> Option<&Option<String>> {
        self.answers.iter().find(|(t, k, _)| t == table && k == key).map(|(_, _, a)| a)
    }

    /// Records the answer to `query`.
    pub fn insert(&mut self, query: &Query, answer: Option<String>) {
        if self.get(query.table.name(), &query.key).is_none() {
            self.answers.push((query.table.name().to_owned(), query.key.clone(), answer));
        }
    }

    /// How many answers are held.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// One directory lookup a decision needs: this key in this table.
#[derive(Clone)]
pub struct Query {
    table: Arc<dyn Table>,
    key: String,
}

impl Query {
    /// The table, as configured (`ldap:/etc/sluice/users.cf`).
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Asks the table (through its cache and breakers, within its
    /// timeout). An error is a failed lookup: never "not found".
    pub async fn ask(&self) -> Result<Option<String>, TableError> {
        self.table.query(&self.key).await
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Query({} {:?})", self.table.name(), self.key)
    }
}

impl PartialEq for Query {
    fn eq(&self, other: &Query) -> bool {
        self.table.name() == other.table.name() && self.key == other.key
    }
}

impl Eq for Query {}

/// Why a pure lookup has no answer yet.
#[derive(Debug, Clone)]
pub enum LookupError {
    /// A table failed: the caller answers 451 or defers the mail.
    Failed(TableError),
    /// A directory table must be asked first.
    Ask(Query),
}

impl From<TableError> for LookupError {
    fn from(e: TableError) -> Self {
        LookupError::Failed(e)
    }
}

impl LookupError {
    /// For synchronous callers: a lookup that needed a directory is a
    /// failure.
    pub fn into_failure(self) -> TableError {
        match self {
            LookupError::Failed(e) => e,
            LookupError::Ask(q) => TableError {
                table: q.table().to_owned(),
                message: format!("\"{}\" needs a directory lookup, which this caller cannot make", q.key()),
            },
        }
    }
}

/// Runs the pure `decide` until it has every directory answer it needs,
/// asking each [`Query`] it returns in turn. Fails when a lookup fails, or
/// after [`MAX_ASKS`] lookups.
pub async fn resolve<T>(mut decide: impl FnMut(&Known) -> Result<T, LookupError>) -> Result<T, TableError> {
    let mut known = Known::default();
    loop {
        match decide(&known) {
            Ok(v) => return Ok(v),
            Err(LookupError::Failed(e)) => return Err(e),
            Err(LookupError::Ask(q)) => {
                if known.len() >= MAX_ASKS || known.get(q.table(), q.key()).is_some() {
                    return Err(TableError {
                        table: q.table().to_owned(),
                        message: format!(
                            "lookup of \"{}\" asked again after {} answers",
                            q.key(),
                            known.len()
                        ),
                    });
                }
                let answer = q.ask().await?;
                known.insert(&q, answer);
            }
        }
    }
}

/// One key in one table: in-memory tables answer, directory tables answer
/// from `known` or ask.
pub(crate) fn consult(t: &Arc<dyn Table>, key: &str, known: &Known) -> Result<Option<String>, LookupError> {
    if !t.is_directory() {
        return Ok(t.lookup(key)?);
    }
    if t.skips(key) {
        return Ok(None);
    }
    match known.get(t.name(), key) {
        Some(a) => Ok(a.clone()),
        None => Err(LookupError::Ask(Query { table: t.clone(), key: key.to_owned() })),
    }
}

impl Maps {
    /// True when the parameter names no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// True when one of the tables is a directory table (its lookups must
    /// go through [`Maps::lookup_address_async`] or the `_in` functions).
    pub fn has_directory(&self) -> bool {
        self.tables.iter().any(|t| t.is_directory())
    }

    /// First result of a plain key across the tables.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        self.lookup_in(key, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// [`Maps::lookup`] with directory answers.
    pub fn lookup_in(&self, key: &str, known: &Known) -> Result<Option<String>, LookupError> {
        for t in &self.tables {
            if let Some(v) = consult(t, key, known)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Looks up an email address the way Postfix's address lookups do:
    /// `user+ext@domain`, `user@domain`, then `domain` (and parent domains
    /// when `parent_domain_matches_subdomains` names the calling feature, or
    /// `.domain` keys otherwise), then `user+ext@`, `user@`. `feature` is the
    /// parameter name used to consult `parent_domain_matches_subdomains`.
    ///
    /// The key sequence follows the feature, as in Postfix: access tables
    /// (any `feature` not below; use `smtpd_access_maps` for
    /// `check_*_access`) as above; `transport_maps` as transport(5), without
    /// the `user@` keys and with `*` last; `*_recipient_maps` as
    /// relay_recipient_maps: `user+ext@domain`, `user@domain`, `@domain`.
    /// Each key is tried in every table before the next key; regexp, pcre,
    /// cidr and socketmap tables see only the full address.
    pub fn lookup_address(
        &self,
        config: &Config,
        feature: &str,
        address: &str,
    ) -> Result<Option<String>, TableError> {
        self.lookup_address_in(config, feature, address, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// [`Maps::lookup_address`] with directory answers.
    pub fn lookup_address_in(
        &self,
        config: &Config,
        feature: &str,
        address: &str,
        known: &Known,
    ) -> Result<Option<String>, LookupError> {
        if self.tables.is_empty() {
            return Ok(None);
        }
        let how = if feature == "transport_maps" {
            AddressKeys::Transport
        } else if feature.ends_with("_recipient_maps") || feature == "virtual_alias_maps" {
            AddressKeys::Recipient
        } else {
            AddressKeys::Access
        };
        let keys = tables::address_keys(
            address,
            how,
            config.string("recipient_delimiter"),
            config.parent_matches(feature),
        );
        for k in keys {
            for t in &self.tables {
                if !k.full && t.is_pattern() {
                    continue;
                }
                if let Some(v) = consult(t, &k.key, known)? {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// [`Maps::lookup_address`], asking directory tables as needed.
    pub async fn lookup_address_async(
        &self,
        config: &Config,
        feature: &str,
        address: &str,
    ) -> Result<Option<String>, TableError> {
        resolve(|known| self.lookup_address_in(config, feature, address, known)).await
    }

    /// Looks up a client IP address as access(5) does for
    /// `check_client_access`: the address, then for IPv4 its shorter
    /// network prefixes (`192.0.2.1`, `192.0.2`, `192.0`, `192`) in the
    /// text tables; cidr (and regexp) tables see the address only. Client
    /// host names are not looked up (sluice does no reverse DNS here).
    pub fn lookup_client(&self, addr: IpAddr) -> Result<Option<String>, TableError> {
        self.lookup_client_in(addr, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// [`Maps::lookup_client`] with directory answers.
    pub fn lookup_client_in(&self, addr: IpAddr, known: &Known) -> Result<Option<String>, LookupError> {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        let mut keys = vec![addr.to_string()];
        if let IpAddr::V4(a) = addr {
            let o = a.octets();
            keys.push(format!("{}.{}.{}", o[0], o[1], o[2]));
            keys.push(format!("{}.{}", o[0], o[1]));
            keys.push(format!("{}", o[0]));
        }
        for (i, k) in keys.iter().enumerate() {
            for t in &self.tables {
                if i > 0 && t.is_pattern() {
                    continue;
                }
                if let Some(v) = consult(t, k, known)? {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// Looks up a domain name (HELO names, `check_helo_access`): the name,
    /// then parent domains per `parent_domain_matches_subdomains` for
    /// `feature`.
    pub fn lookup_domain(
        &self,
        config: &Config,
        feature: &str,
        domain: &str,
    ) -> Result<Option<String>, TableError> {
        self.lookup_domain_in(config, feature, domain, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// [`Maps::lookup_domain`] with directory answers.
    pub fn lookup_domain_in(
        &self,
        config: &Config,
        feature: &str,
        domain: &str,
        known: &Known,
    ) -> Result<Option<String>, LookupError> {
        let mut first = true;
        for k in tables::domain_keys(domain, config.parent_matches(feature)) {
            for t in &self.tables {
                if !first && t.is_pattern() {
                    continue;
                }
                if let Some(v) = consult(t, &k, known)? {
                    return Ok(Some(v));
                }
            }
            first = false;
        }
        Ok(None)
    }
}

impl Config {
    /// Opens the table `spec` (`ldap:/etc/sluice/users.cf`,
    /// `hash:/etc/sluice/transport`, ...) as this configuration would:
    /// relative names under its directory, directory tables with its
    /// `sluice_table_*` settings. What `sluice config query` (postmap -q)
    /// looks keys up in. Errors name the table's file and line.
    pub fn open_table(&self, spec: &str) -> Result<Arc<dyn Table>, super::ConfigErrors> {
        let mut cache = tables::TableCache::default();
        cache.directory = self.directory_settings();
        let file = self.dir.join("main.cf");
        let origin = tables::Origin { file: &file, line: None, param: "table" };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let table = tables::open(spec, &self.dir, &origin, &mut cache, &mut errors, &mut warnings);
        match table {
            Some(t) if errors.is_empty() => Ok(t),
            _ => Err(super::ConfigErrors(errors)),
        }
    }

    /// The `sluice_table_*` settings as directory tables take them.
    pub(crate) fn directory_settings(&self) -> tables::directory::DirectorySettings {
        tables::directory::DirectorySettings::from_values(
            |n| Some(self.time(n)),
            |n| Some(self.int(n)),
            |n| Some(self.size(n)),
        )
    }

    /// [`Config::route`] with directory answers (transport_maps and
    /// relay_domains may be directory tables).
    pub fn route_in(&self, recipient: &str, known: &Known) -> Result<Route, LookupError> {
        self.resolve_route(recipient, known)
    }

    /// [`Config::route`], asking directory tables as needed: what delivery
    /// calls. An error defers the recipient.
    pub async fn route_async(&self, recipient: &str) -> Result<Route, TableError> {
        resolve(|known| self.route_in(recipient, known)).await
    }

    /// [`Config::is_relay_domain`] with directory answers.
    pub fn is_relay_domain_in(&self, domain: &str, known: &Known) -> Result<bool, LookupError> {
        match self.domain_lists.get("relay_domains") {
            Some(l) => l.matches_in(domain, known),
            None => Ok(false),
        }
    }

    /// [`Config::is_relay_domain`], asking directory tables as needed.
    pub async fn is_relay_domain_async(&self, domain: &str) -> Result<bool, TableError> {
        resolve(|known| self.is_relay_domain_in(domain, known)).await
    }
}
