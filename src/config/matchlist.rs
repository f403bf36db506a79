//! Postfix match lists: domain lists (`relay_domains`) and network lists
//! (`mynetworks`, `smtpd_forbid_bare_newline_exclusions`,
//! `smtpd_client_event_limit_exceptions`).
//!
//! Owns their syntax and matching: patterns, `/file/name` pattern files,
//! `type:table` lookups and `!pattern` negation, first match deciding, as
//! Postfix's `match_list`. Tables are opened through the load's table cache.
//! Host-name patterns in network lists are refused: sluice matches client
//! addresses, it does not look up client names.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

#[cfg(test)]
use super::NOTHING_KNOWN;
use super::error::Diagnostic;
use super::lookup::consult;
use super::tables::{self, Origin, TableCache};
use super::values::split_list;
use super::{Known, LookupError, Table, TableError};

/// Cap on `/file` patterns nested inside pattern files.
const MAX_FILE_DEPTH: usize = 8;

#[derive(Debug, Clone)]
enum DomainItem {
    Name(String),
    Table(Arc<dyn Table>),
}

/// A domain match list.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomainList {
    items: Vec<(bool, DomainItem)>,
    /// A name also matches its subdomains (parent_domain_matches_subdomains
    /// lists the feature); otherwise only `.name` patterns match subdomains.
    parent: bool,
}

impl DomainList {
    /// True when `domain` matches (case-insensitive); the first matching
    /// pattern decides, a negated one saying no.
    #[cfg(test)]
    pub fn matches(&self, domain: &str) -> Result<bool, TableError> {
        self.matches_in(domain, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// [`DomainList::matches`] with the directory answers known so far
    /// (a directory table's key without one is asked for).
    pub fn matches_in(&self, domain: &str, known: &Known) -> Result<bool, LookupError> {
        let domain = domain.trim_end_matches('.').to_lowercase();
        if domain.is_empty() {
            return Ok(false);
        }
        for (negate, item) in &self.items {
            let hit = match item {
                DomainItem::Name(pat) => {
                    if let Some(suffix) = pat.strip_prefix('.') {
                        domain.ends_with(pat.as_str()) && domain.len() > suffix.len()
                    } else {
                        domain == *pat
                            || (self.parent
                                && domain.len() > pat.len()
                                && domain.ends_with(pat.as_str())
                                && domain.as_bytes()[domain.len() - pat.len() - 1] == b'.')
                    }
                }
                DomainItem::Table(t) => {
                    let keys: Vec<String> = if t.is_pattern() {
                        vec![domain.clone()]
                    } else {
                        tables::domain_keys(&domain, self.parent)
                    };
                    let mut found = false;
                    for k in keys {
                        if consult(t, &k, known)?.is_some() {
                            found = true;
                            break;
                        }
                    }
                    found
                }
            };
            if hit {
                return Ok(!negate);
            }
        }
        Ok(false)
    }
}

#[derive(Debug, Clone)]
enum HostItem {
    Net(IpNet),
    Table(Arc<dyn Table>),
}

/// A network match list.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostList {
    items: Vec<(bool, HostItem)>,
}

impl HostList {
    /// The networks written as literals (or in pattern files) and not
    /// negated; tables are not included.
    pub fn networks(&self) -> Vec<IpNet> {
        self.items
            .iter()
            .filter_map(|(neg, i)| match i {
                HostItem::Net(n) if !neg => Some(*n),
                _ => None,
            })
            .collect()
    }

    /// True when `addr` matches; an IPv4-mapped IPv6 address also matches
    /// the IPv4 patterns of its IPv4 form.
    pub fn matches(&self, addr: IpAddr) -> Result<bool, TableError> {
        let v4 = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for (negate, item) in &self.items {
            let hit = match item {
                HostItem::Net(n) => n.contains(&addr) || v4.is_some_and(|a| n.contains(&a)),
                HostItem::Table(t) => {
                    t.lookup(&addr.to_string())?.is_some()
                        || match v4 {
                            Some(a) => t.lookup(&a.to_string())?.is_some(),
                            None => false,
                        }
                }
            };
            if hit {
                return Ok(!negate);
            }
        }
        Ok(false)
    }
}

/// Context for building a list: where the parameter was written, the
/// configuration directory and the load's table cache.
pub(crate) struct Build<'a, 'b> {
    pub origin: Origin<'a>,
    pub dir: &'a Path,
    pub cache: &'b mut TableCache,
    pub errors: &'b mut Vec<Diagnostic>,
    pub warnings: &'b mut Vec<Diagnostic>,
}

impl Build<'_, '_> {
    /// Expands `value` into (negated, pattern) items, reading `/file`
    /// patterns, and opening `type:table` items.
    fn items(&mut self, value: &str, depth: usize, out: &mut Vec<(bool, Item)>) {
        let list = match split_list(value) {
            Ok(l) => l,
            Err(e) => {
                self.errors.push(self.origin.error(e));
                return;
            }
        };
        for raw in list {
            let (negate, pat) = match raw.strip_prefix('!') {
                Some(p) => (true, p.to_owned()),
                None => (false, raw.clone()),
            };
            if pat.starts_with('/') {
                if depth >= MAX_FILE_DEPTH {
                    self.errors.push(self.origin.error(format!("pattern files nested too deep at {pat}")));
                    continue;
                }
                match std::fs::read_to_string(&pat) {
                    Ok(text) => {
                        let mut errs = Vec::new();
                        let lines = super::main_cf::logical_lines(&text, Path::new(&pat), &mut errs);
                        self.errors.extend(errs);
                        let joined: Vec<String> = lines.into_iter().map(|l| l.text).collect();
                        let mut inner = Vec::new();
                        self.items(&joined.join(" "), depth + 1, &mut inner);
                        // `!/file` negates every pattern of the file.
                        out.extend(inner.into_iter().map(|(n, i)| (n != negate, i)));
                    }
                    Err(e) => {
                        self.errors.push(self.origin.error(format!("cannot read pattern file {pat}: {e}")))
                    }
                }
                continue;
            }
            if looks_like_table(&pat) {
                if let Some(t) =
                    tables::open(&pat, self.dir, &self.origin, self.cache, self.errors, self.warnings)
                {
                    out.push((negate, Item::Table(t)));
                }
                continue;
            }
            out.push((negate, Item::Pattern(pat)));
        }
    }

    pub fn domain_list(&mut self, value: &str, parent: bool) -> DomainList {
        let mut items = Vec::new();
        self.items(value, 0, &mut items);
        let mut list = DomainList { items: Vec::new(), parent };
        for (negate, item) in items {
            match item {
                Item::Table(t) => list.items.push((negate, DomainItem::Table(t))),
                Item::Pattern(p) => {
                    let name = p.trim_end_matches('.').to_lowercase();
                    let check = name.strip_prefix('.').unwrap_or(&name);
                    if check.is_empty() || check.contains(['@', '/', '[', ']', ':']) {
                        self.errors.push(self.origin.error(format!("\"{p}\" is not a domain name")));
                        continue;
                    }
                    list.items.push((negate, DomainItem::Name(name)));
                }
            }
        }
        list
    }

    pub fn host_list(&mut self, value: &str) -> HostList {
        let mut items = Vec::new();
        self.items(value, 0, &mut items);
        let mut list = HostList::default();
        for (negate, item) in items {
            match item {
                // Client addresses are matched where nothing may wait
                // (connection limits, mynetworks in every decision).
                Item::Table(t) if t.is_directory() => self.errors.push(
                    self.origin
                        .error(format!("{}: a directory table cannot be used in a network list", t.name())),
                ),
                Item::Table(t) => list.items.push((negate, HostItem::Table(t))),
                Item::Pattern(p) => match tables::parse_net(&p) {
                    Ok(n) => list.items.push((negate, HostItem::Net(n))),
                    Err(e) => {
                        let name_like = !p.contains([':', '/', '['])
                            && p.chars().any(|c| c.is_ascii_alphabetic())
                            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                        self.errors.push(self.origin.error(if name_like {
                            format!("\"{p}\": host name patterns are not supported (sluice matches client addresses only)")
                        } else {
                            e
                        }));
                    }
                },
            }
        }
        list
    }
}

enum Item {
    Pattern(String),
    Table(Arc<dyn Table>),
}

/// `type:name` for a table type Postfix knows, as opposed to an IPv6
/// address (`fd00::/64`) or `host:port`.
pub(crate) fn looks_like_table(s: &str) -> bool {
    s.split_once(':').is_some_and(|(t, _)| tables::is_table_type(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_domains(value: &str, parent: bool) -> (DomainList, Vec<Diagnostic>) {
        let mut cache = TableCache::default();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut b = Build {
            origin: Origin { file: Path::new("main.cf"), line: Some(1), param: "relay_domains" },
            dir: Path::new("/nonexistent"),
            cache: &mut cache,
            errors: &mut errors,
            warnings: &mut warnings,
        };
        let l = b.domain_list(value, parent);
        (l, errors)
    }

    fn build_hosts(value: &str) -> (HostList, Vec<Diagnostic>) {
        let mut cache = TableCache::default();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut b = Build {
            origin: Origin { file: Path::new("main.cf"), line: Some(1), param: "mynetworks" },
            dir: Path::new("/nonexistent"),
            cache: &mut cache,
            errors: &mut errors,
            warnings: &mut warnings,
        };
        let l = b.host_list(value);
        (l, errors)
    }

    #[test]
    fn domain_names_subdomains_and_negation() {
        let (l, e) =
            build_domains("!bad.example.com, example.com .example.net inline:{ example.org=x }", true);
        assert!(e.is_empty(), "{e:?}");
        assert!(l.matches("Example.COM").unwrap());
        assert!(l.matches("a.example.com").unwrap());
        assert!(!l.matches("bad.example.com").unwrap());
        assert!(!l.matches("x.bad.example.com").unwrap(), "negation also covers subdomains");
        assert!(!l.matches("example.net").unwrap());
        assert!(l.matches("a.example.net").unwrap());
        assert!(l.matches("example.org").unwrap());
        assert!(l.matches("sub.example.org").unwrap(), "table parent lookup");
        assert!(!l.matches("notexample.com").unwrap());
        let (l, _) = build_domains("example.com", false);
        assert!(!l.matches("a.example.com").unwrap());
    }

    #[test]
    fn networks_v4_v6_mapped_and_negation() {
        let (l, e) =
            build_hosts("!127.0.0.2 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128 2001:db8::/32 192.0.2.7");
        assert!(e.is_empty(), "{e:?}");
        assert!(l.matches("127.0.0.1".parse().unwrap()).unwrap());
        assert!(!l.matches("127.0.0.2".parse().unwrap()).unwrap());
        assert!(l.matches("::ffff:127.0.0.1".parse().unwrap()).unwrap());
        assert!(l.matches("::1".parse().unwrap()).unwrap());
        assert!(l.matches("2001:db8:1::1".parse().unwrap()).unwrap());
        assert!(l.matches("192.0.2.7".parse().unwrap()).unwrap());
        assert!(!l.matches("192.0.2.8".parse().unwrap()).unwrap());
        assert_eq!(l.networks().len(), 5);
    }

    #[test]
    fn bad_network_entries_are_errors() {
        let (_, e) = build_hosts("127.0.0.1/8 mail.example.com 10.0.0.0/40");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].message.contains("non-null host address bits"));
        assert!(e[1].message.contains("host name patterns"));
        assert!(e[2].message.contains("prefix"));
    }

    #[test]
    fn table_detection() {
        assert!(looks_like_table("hash:/etc/x"));
        assert!(looks_like_table("cidr:/etc/x"));
        assert!(!looks_like_table("[::1]/128"));
        assert!(!looks_like_table("2001:db8::/32"));
        assert!(!looks_like_table("fd00::/64"));
    }
}
