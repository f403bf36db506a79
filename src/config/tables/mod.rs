//! Lookup tables named as `type:name` in parameters: opening them (once per
//! load, shared by every service's configuration) and the address-key
//! sequences Postfix uses to query them.
//!
//! Owns table syntax and lookups. In-memory tables are read completely
//! when the configuration loads, so their lookups never touch the disk and
//! never fail for in-memory reasons; a reload re-reads them. Directory
//! tables (`directory/`) have their `.cf` files read and checked at load
//! and ask their servers at lookup time. Never writes a file.
//!
//! Supported types: `texthash`, and `hash`/`btree`/`lmdb`/`cdb`/`dbm`/`sdbm`
//! read from the SOURCE text file beside the indexed one (`hash:/etc/x`
//! reads `/etc/x`, never `/etc/x.db`), `inline:{...}`, `static:`,
//! `regexp:`, `pcre:`, `cidr:`; the directory tables `ldap:`, `pgsql:`,
//! `mysql:`, `sqlite:`, `socketmap:`; `proxy:` is transparent (sluice's
//! directory connections are already shared, as proxymap's are).

mod cidr;
pub(crate) mod directory;

pub use directory::AnyCertificate;
mod regexp;
mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Table;
use super::error::Diagnostic;

pub(crate) use cidr::parse_net;

/// Table types sluice reads.
const SUPPORTED_TYPES: &[&str] = &[
    "texthash",
    "hash",
    "btree",
    "lmdb",
    "cdb",
    "dbm",
    "sdbm",
    "inline",
    "static",
    "regexp",
    "pcre",
    "cidr",
    "proxy",
    "ldap",
    "pgsql",
    "mysql",
    "sqlite",
    "socketmap",
];

/// Table types Postfix has and sluice does not read.
const UNSUPPORTED_TYPES: &[&str] = &[
    "memcache", "tcp", "unix", "nis", "nisplus", "netinfo", "environ", "fail", "pipemap", "unionmap",
    "randmap", "internal", "mongodb",
];

/// True for a Postfix table type name (read by sluice or not).
pub(crate) fn is_table_type(t: &str) -> bool {
    SUPPORTED_TYPES.contains(&t) || UNSUPPORTED_TYPES.contains(&t)
}

/// Tables already opened during one load, by their `type:name`, so a table
/// named by several parameters or services is read once.
#[derive(Debug, Default)]
pub(crate) struct TableCache {
    opened: HashMap<String, Arc<dyn Table>>,
    /// main.cf's `sluice_table_*` settings for the directory tables opened.
    pub directory: directory::DirectorySettings,
}

/// Where a table reference was written, for messages about it.
#[derive(Debug, Clone)]
pub(crate) struct Origin<'a> {
    pub file: &'a Path,
    pub line: Option<usize>,
    pub param: &'a str,
}

impl Origin<'_> {
    pub(crate) fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::param(self.file, self.line, self.param, message)
    }
}

/// Opens `spec` (`type:name`). Relative file names resolve against `dir`.
/// Problems inside a table file name that file and line.
pub(crate) fn open(
    spec: &str,
    dir: &Path,
    origin: &Origin<'_>,
    cache: &mut TableCache,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Arc<dyn Table>> {
    if let Some(t) = cache.opened.get(spec) {
        return Some(t.clone());
    }
    let before = errors.len();
    let table = open_uncached(spec, dir, origin, cache, errors, warnings);
    match table {
        Some(t) if errors.len() == before => {
            cache.opened.insert(spec.to_owned(), t.clone());
            Some(t)
        }
        _ => None,
    }
}

fn open_uncached(
    spec: &str,
    dir: &Path,
    origin: &Origin<'_>,
    cache: &mut TableCache,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Arc<dyn Table>> {
    let Some((kind, name)) = spec.split_once(':') else {
        errors.push(origin.error(format!("\"{spec}\" is not a lookup table (expected type:name)")));
        return None;
    };
    match kind {
        "proxy" => {
            // proxymap only forwards lookups: the inner table means the same.
            let t = open_uncached(name, dir, origin, cache, errors, warnings)?;
            Some(t)
        }
        "texthash" | "hash" | "btree" | "lmdb" | "cdb" | "dbm" | "sdbm" => {
            let path = resolve(dir, name);
            if kind != "texthash" {
                check_index_age(kind, &path, origin, warnings);
            }
            let text = read(&path, origin, kind, errors)?;
            text::TextTable::from_source(spec, &path, &text, origin, errors, warnings).map(to_dyn)
        }
        "inline" => text::TextTable::inline(spec, name, origin, errors, warnings).map(to_dyn),
        "static" => {
            let value = super::values::unbrace(name).to_owned();
            Some(Arc::new(text::StaticTable { name: spec.to_owned(), value }))
        }
        "regexp" | "pcre" => {
            let engine = if kind == "regexp" { regexp::Engine::Regex } else { regexp::Engine::Pcre };
            let (file, lines) = source_lines(spec, name, dir, origin, kind, errors)?;
            regexp::RegexpTable::parse(spec, engine, &file, lines, origin.param, errors).map(to_dyn)
        }
        "cidr" => {
            let (file, lines) = source_lines(spec, name, dir, origin, kind, errors)?;
            cidr::CidrTable::parse(spec, &file, lines, origin.param, errors).map(to_dyn)
        }
        "ldap" | "pgsql" | "mysql" | "sqlite" | "socketmap" => {
            let settings = cache.directory;
            let mut inner_errors = Vec::new();
            let mut inner_warnings = Vec::new();
            let mut open_table =
                |t: &str| open(t, dir, origin, cache, &mut inner_errors, &mut inner_warnings);
            let mut o = directory::Open {
                origin,
                dir,
                settings: &settings,
                open_table: &mut open_table,
                errors: &mut *errors,
                warnings: &mut *warnings,
            };
            let table = match kind {
                "socketmap" => directory::open_socketmap(spec, name, &mut o),
                "ldap" => directory::open(directory::Kind::Ldap, spec, name, &mut o),
                "pgsql" => directory::open(directory::Kind::Pgsql, spec, name, &mut o),
                "mysql" => directory::open(directory::Kind::Mysql, spec, name, &mut o),
                _ => directory::open(directory::Kind::Sqlite, spec, name, &mut o),
            };
            errors.extend(inner_errors);
            warnings.extend(inner_warnings);
            table
        }
        k if UNSUPPORTED_TYPES.contains(&k) => {
            errors.push(origin.error(format!(
                "table type {kind}: is not supported by sluice (use texthash, hash, btree, lmdb, cdb, inline, static, regexp, pcre, cidr, ldap, pgsql, mysql, sqlite or socketmap)"
            )));
            None
        }
        _ => {
            errors.push(origin.error(format!("unknown table type \"{kind}\" in \"{spec}\"")));
            None
        }
    }
}

fn to_dyn<T: Table + 'static>(t: T) -> Arc<dyn Table> {
    Arc::new(t)
}

/// The logical lines of a pattern table: from its file, or from the
/// `{ {rule}, {rule} }` inline form (Postfix 3.7).
fn source_lines(
    spec: &str,
    name: &str,
    dir: &Path,
    origin: &Origin<'_>,
    kind: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<(PathBuf, Vec<super::main_cf::LogicalLine>)> {
    if name.starts_with('{') {
        let inner = super::values::unbrace(name);
        let items = match super::values::split_list(inner) {
            Ok(items) => items,
            Err(e) => {
                errors.push(origin.error(format!("{spec}: {e}")));
                return None;
            }
        };
        let line = origin.line.unwrap_or(0);
        let lines = items
            .iter()
            .map(|i| super::main_cf::LogicalLine { line, text: super::values::unbrace(i).to_owned() })
            .collect();
        return Some((origin.file.to_path_buf(), lines));
    }
    let path = resolve(dir, name);
    let text = read(&path, origin, kind, errors)?;
    let lines = super::main_cf::logical_lines(&text, &path, errors);
    Some((path, lines))
}

pub(crate) fn resolve(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() { p.to_path_buf() } else { dir.join(p) }
}

fn read(path: &Path, origin: &Origin<'_>, kind: &str, errors: &mut Vec<Diagnostic>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            let hint = match kind {
                "hash" | "btree" | "lmdb" | "cdb" | "dbm" | "sdbm" => {
                    " (sluice reads the source text file that postmap indexes, not the indexed file)"
                }
                _ => "",
            };
            errors.push(origin.error(format!("cannot read table {kind}:{}: {e}{hint}", path.display())));
            None
        }
    }
}

/// Postfix reads `x.db`; sluice reads `x`. When the index is older than the
/// text, the two would answer differently: say so.
fn check_index_age(kind: &str, path: &Path, origin: &Origin<'_>, warnings: &mut Vec<Diagnostic>) {
    let ext = match kind {
        "hash" | "btree" => "db",
        "lmdb" => "lmdb",
        "cdb" => "cdb",
        _ => return,
    };
    let mut index = path.as_os_str().to_owned();
    index.push(".");
    index.push(ext);
    let index = PathBuf::from(index);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(idx)) = (mtime(path), mtime(&index))
        && idx < src
    {
        warnings.push(origin.error(format!(
            "{} is older than {}: Postfix would still use the old index; sluice reads the text file",
            index.display(),
            path.display()
        )));
    }
}

/// How an address is turned into lookup keys, per the feature that looks
/// it up (Postfix uses different sequences for different features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressKeys {
    /// access(5): `user+ext@domain`, `user@domain`, `domain` and parents,
    /// `user+ext@`, `user@`.
    Access,
    /// transport(5): `user+ext@domain`, `user@domain`, `domain` and parents, `*`.
    Transport,
    /// relay_recipient_maps and other recipient lists:
    /// `user+ext@domain`, `user@domain`, `@domain`.
    Recipient,
}

/// One key to look up, and whether pattern tables (regexp, pcre, cidr) see
/// it: they only see the full address, as in Postfix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub key: String,
    pub full: bool,
}

/// The keys for `address`, in order. `delimiters` is recipient_delimiter;
/// `parent_matches` says whether a domain key also matches subdomains
/// (`example.com` for `a.example.com`) or `.domain` keys are used.
pub(crate) fn address_keys(
    address: &str,
    how: AddressKeys,
    delimiters: &str,
    parent_matches: bool,
) -> Vec<Key> {
    let mut keys = vec![Key { key: address.to_owned(), full: true }];
    let mut push = |k: String| {
        if !keys.iter().any(|x| x.key == k) {
            keys.push(Key { key: k, full: false });
        }
    };
    let (local, domain) = match address.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (address, None),
    };
    let base = strip_extension(local, delimiters);
    if let Some(base) = base {
        match domain {
            Some(d) => push(format!("{base}@{d}")),
            None => push(base.to_owned()),
        }
    }
    if let Some(domain) = domain {
        match how {
            AddressKeys::Access | AddressKeys::Transport => {
                if !domain.is_empty() {
                    for k in domain_keys(domain, parent_matches) {
                        push(k);
                    }
                }
                if how == AddressKeys::Access {
                    push(format!("{local}@"));
                    if let Some(base) = base {
                        push(format!("{base}@"));
                    }
                }
            }
            AddressKeys::Recipient => push(format!("@{domain}")),
        }
    }
    if how == AddressKeys::Transport {
        push("*".to_owned());
    }
    keys
}

/// `domain`, then its parents: `b.c`, `c` when parents match subdomains,
/// else `.b.c`, `.c`.
pub(crate) fn domain_keys(domain: &str, parent_matches: bool) -> Vec<String> {
    let domain = domain.trim_end_matches('.');
    let mut keys = vec![domain.to_owned()];
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        if parent.is_empty() {
            break;
        }
        keys.push(if parent_matches { parent.to_owned() } else { format!(".{parent}") });
        rest = parent;
    }
    keys
}

/// `user` from `user+ext` when recipient_delimiter is set. Any of the
/// delimiter characters splits, at its first occurrence; nothing is split
/// when that would leave an empty user, and with `-` the `owner-` and
/// `-request` forms are kept whole, as Postfix does.
pub(crate) fn strip_extension<'a>(local: &'a str, delimiters: &str) -> Option<&'a str> {
    if delimiters.is_empty() {
        return None;
    }
    if delimiters.contains('-') {
        let lower = local.to_ascii_lowercase();
        if lower.starts_with("owner-") || lower.ends_with("-request") {
            return None;
        }
    }
    let pos = local.find(|c: char| delimiters.contains(c))?;
    if pos == 0 { None } else { Some(&local[..pos]) }
}

/// The `if` / `endif` nesting of `regexp:`, `pcre:` and `cidr:` tables
/// while they are parsed: a stack of open blocks, each with its line, its
/// condition (`C`) and the rules (`R`) read so far.
pub(crate) struct Nesting<C, R> {
    stack: Vec<(usize, Option<C>, Vec<R>)>,
}

impl<C, R> Nesting<C, R> {
    pub(crate) fn new() -> Self {
        Nesting { stack: vec![(0, None, Vec::new())] }
    }

    /// Opens an `if` block at `line`; `cond` is `None` when the condition
    /// did not parse (reported by the caller), so later `endif`s still
    /// pair up.
    pub(crate) fn open(&mut self, line: usize, cond: Option<C>) {
        self.stack.push((line, cond, Vec::new()));
    }

    /// Closes the innermost `if`, turning it into a rule with `make(line,
    /// condition, body)`; an error when no `if` is open.
    pub(crate) fn close(&mut self, make: impl FnOnce(usize, C, Vec<R>) -> R) -> Result<(), String> {
        if self.stack.len() == 1 {
            return Err("endif without if".into());
        }
        let (line, cond, body) = self.stack.pop().expect("an if is open");
        if let Some(cond) = cond {
            self.push(make(line, cond, body));
        }
        Ok(())
    }

    /// Adds a rule to the innermost block.
    pub(crate) fn push(&mut self, rule: R) {
        self.stack.last_mut().expect("the outermost block stays").2.push(rule);
    }

    /// The top-level rules; `unclosed(line)` is called for each `if`
    /// still open.
    pub(crate) fn finish(mut self, mut unclosed: impl FnMut(usize)) -> Vec<R> {
        while self.stack.len() > 1 {
            let (line, _, _) = self.stack.pop().expect("an if is open");
            unclosed(line);
        }
        self.stack.pop().map(|(_, _, rules)| rules).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(a: &str, how: AddressKeys, delim: &str, parents: bool) -> Vec<String> {
        address_keys(a, how, delim, parents).into_iter().map(|k| k.key).collect()
    }

    #[test]
    fn access_keys_as_access_5() {
        assert_eq!(
            keys("user+ext@a.example.com", AddressKeys::Access, "+", true),
            vec![
                "user+ext@a.example.com",
                "user@a.example.com",
                "a.example.com",
                "example.com",
                "com",
                "user+ext@",
                "user@"
            ]
        );
        assert_eq!(
            keys("user+ext@a.example.com", AddressKeys::Access, "", false),
            vec!["user+ext@a.example.com", "a.example.com", ".example.com", ".com", "user+ext@"]
        );
    }

    #[test]
    fn transport_keys_as_transport_5() {
        assert_eq!(
            keys("u+x@sub.example.org", AddressKeys::Transport, "+", false),
            vec!["u+x@sub.example.org", "u@sub.example.org", "sub.example.org", ".example.org", ".org", "*"]
        );
    }

    #[test]
    fn recipient_keys_end_with_at_domain() {
        assert_eq!(
            keys("u+x@example.org", AddressKeys::Recipient, "+", true),
            vec!["u+x@example.org", "u@example.org", "@example.org"]
        );
    }

    #[test]
    fn only_the_full_address_goes_to_pattern_tables() {
        let k = address_keys("u@example.org", AddressKeys::Transport, "", false);
        assert!(k[0].full);
        assert!(k[1..].iter().all(|k| !k.full));
    }

    #[test]
    fn extension_stripping_rules() {
        assert_eq!(strip_extension("user+ext", "+"), Some("user"));
        assert_eq!(strip_extension("user-ext+x", "+-"), Some("user"));
        assert_eq!(strip_extension("+ext", "+"), None);
        assert_eq!(strip_extension("owner-list", "-"), None);
        assert_eq!(strip_extension("list-request", "-"), None);
        assert_eq!(strip_extension("user+ext", ""), None);
    }
}
