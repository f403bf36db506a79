//! Directory tables: `ldap:`, `pgsql:`, `mysql:`, `sqlite:` (each with
//! the `.cf` file a Postfix server uses) and `socketmap:` — lookup tables
//! whose answers come from a server at lookup time instead of a file read
//! at load.
//!
//! Owns what every directory table shares: the answer cache (positive and
//! negative lifetimes), a breaker per server, the time bound of a lookup,
//! the order servers are tried in, the log lines of a failure, and opening
//! a table from its `.cf` file. Each protocol is a [`Source`] in its own
//! file (`ldap.rs`, `pgsql.rs`, `mysql.rs`, `sqlite.rs`, `socketmap.rs`).
//!
//! The one place under `config/` that opens sockets, and only at lookup
//! time: loading a configuration reads and checks the `.cf` files (every
//! parameter name, value and template) but never connects, so
//! `sluice config check` and a reload work while a directory is down.
//! Connections are made at the first lookup, pooled, and closed when idle
//! or when the configuration that opened them is replaced.
//!
//! A lookup is asynchronous ([`crate::config::Table::query`]); pure code
//! (restriction decisions) never waits for one: it asks for the answer as
//! a question and is decided again once it has it (see
//! [`crate::config::Known`]). A lookup that fails or times out is an
//! error, never "not found": the caller answers 451 or defers the mail.
//!
//! Crates, and why: `ldap3` (tokio, rustls); for SQL `tokio-postgres`,
//! `mysql_async` and `rusqlite` (bundled SQLite) rather than `sqlx`.
//! Built alike (about 30 s each on two cores; `cargo tree -d` grows by a
//! few hash crates either way), but these speak each server's text
//! protocol as Postfix's client libraries do, so every column comes back
//! as the text libpq/libmysqlclient/sqlite3 would give Postfix whatever
//! its SQL type, without a type-mapping layer in between; and they let
//! replies be bounded: tokio-postgres runs over a stream sluice hands it
//! (`bounded.rs` caps each server message), mysql_async enforces a
//! maximum packet size, SQLite a maximum value length.

mod bounded;
mod breaker;
mod cache;
mod cf;
mod ldap;
mod mysql;
mod pgsql;
mod pool;
mod socketmap;
mod sqlite;
mod template;
mod tls;

pub use tls::AnyCertificate;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::seq::SliceRandom;

use super::super::error::Diagnostic;
use super::super::{Table, TableError};
use super::Origin;
use crate::clock;
use breaker::{Admit, BreakerPolicy, Change, DirectoryBreaker};
use cache::{Cache, CachePolicy};
use cf::CfFile;
use template::{DomainFilter, DomainItem};

/// The directory table types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ldap,
    Pgsql,
    Mysql,
    Sqlite,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Ldap => "ldap",
            Kind::Pgsql => "pgsql",
            Kind::Mysql => "mysql",
            Kind::Sqlite => "sqlite",
        }
    }
}

/// main.cf's settings for every directory table (the `sluice_table_*`
/// parameters). Tables are shared by all master.cf services, so a `-o`
/// override of these has no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectorySettings {
    /// `sluice_table_timeout`: the longest a lookup may take (every server
    /// tried, connecting included), for tables without their own
    /// (LDAP's `timeout`).
    pub timeout: Duration,
    pub cache: CachePolicy,
    /// `sluice_table_breaker_*`.
    pub threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// `sluice_table_connection_limit`: connections per server.
    pub connections: usize,
    /// `sluice_table_reply_size_limit`: the largest result a lookup may
    /// return, and the largest message a server may send.
    pub reply_limit: usize,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DirectorySettings {
            timeout: Duration::from_secs(10),
            cache: CachePolicy {
                positive: Duration::from_secs(300),
                negative: Duration::from_secs(60),
                size: 50_000,
            },
            threshold: 3,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            connections: 8,
            reply_limit: 100_000,
        }
    }
}

impl DirectorySettings {
    /// The settings from the `sluice_table_*` values as `time`, `int` and
    /// `size` read them; a value that is missing or out of range keeps its
    /// default (the parameter's own check reports it).
    pub(crate) fn from_values(
        time: impl Fn(&str) -> Option<Duration>,
        int: impl Fn(&str) -> Option<i64>,
        size: impl Fn(&str) -> Option<u64>,
    ) -> DirectorySettings {
        let mut s = DirectorySettings::default();
        let pos = |name: &str| int(name).and_then(|i| usize::try_from(i).ok());
        s.timeout = time("sluice_table_timeout").filter(|t| !t.is_zero()).unwrap_or(s.timeout);
        s.cache.positive = time("sluice_table_cache_positive_lifetime").unwrap_or(s.cache.positive);
        s.cache.negative = time("sluice_table_cache_negative_lifetime").unwrap_or(s.cache.negative);
        s.cache.size = pos("sluice_table_cache_size").unwrap_or(s.cache.size);
        s.threshold = pos("sluice_table_breaker_failure_threshold")
            .filter(|i| *i > 0)
            .map_or(s.threshold, |i| u32::try_from(i).unwrap_or(u32::MAX));
        s.cooldown = time("sluice_table_breaker_cooldown").unwrap_or(s.cooldown);
        s.max_cooldown = time("sluice_table_breaker_max_cooldown").unwrap_or(s.max_cooldown);
        s.connections = pos("sluice_table_connection_limit").filter(|i| *i > 0).unwrap_or(s.connections);
        s.reply_limit = size("sluice_table_reply_size_limit")
            .map_or(s.reply_limit, |b| usize::try_from(b).unwrap_or(usize::MAX).max(1024));
        s
    }
}

/// Why a server gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server could not be asked (connecting, protocol, timeout): it
    /// counts against its breaker and the next server is tried.
    Server(String),
    /// The server answered but the answer cannot be used (more results
    /// than allowed, a missing search base, a `TEMP` reply): the lookup
    /// fails without blaming the server.
    Answer(String),
}

/// One directory protocol.
pub(crate) trait Source: Send + Sync + fmt::Debug {
    /// The servers, as logs name them, in the configured order.
    fn servers(&self) -> &[String];
    /// True when servers are tried in the configured order (LDAP), false
    /// for a random order (SQL, as Postfix spreads load over its hosts).
    fn ordered(&self) -> bool {
        false
    }
    /// True when keys are folded to lower case before the lookup (every
    /// type but socketmap, as Postfix's fixed-string tables).
    fn folds(&self) -> bool {
        true
    }
    /// True when `key` (folded) is never looked up: the `domain` list or
    /// the templates rule it out, so it is "not found" without asking.
    fn suppressed(&self, key: &str) -> bool;
    /// Asks server `server` about `key` (folded, not suppressed).
    fn ask<'a>(&'a self, server: usize, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Failure>>;
}

/// A directory table: a [`Source`] behind a cache and breakers.
#[derive(Debug)]
pub(crate) struct DirectoryTable {
    name: String,
    source: Box<dyn Source>,
    timeout: Duration,
    pattern: bool,
    cache: Mutex<Cache>,
    breakers: Vec<Mutex<DirectoryBreaker>>,
}

impl DirectoryTable {
    fn new(
        name: &str,
        source: Box<dyn Source>,
        timeout: Duration,
        pattern: bool,
        s: &DirectorySettings,
    ) -> Self {
        let policy = BreakerPolicy {
            threshold: s.threshold,
            cooldown: s.cooldown,
            max_cooldown: s.max_cooldown,
            probe_timeout: timeout,
        };
        let breakers = source.servers().iter().map(|_| Mutex::new(DirectoryBreaker::new(policy))).collect();
        DirectoryTable {
            name: name.to_owned(),
            source,
            timeout,
            pattern,
            cache: Mutex::new(Cache::new(s.cache)),
            breakers,
        }
    }

    fn fold<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        if self.source.folds() {
            std::borrow::Cow::Owned(key.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(key)
        }
    }

    /// A failed lookup: `why` is logged unless it was already (a server's
    /// own failure is logged as it happens), then the line Postfix logs.
    fn fail(&self, key: &str, why: String, logged: bool) -> TableError {
        if !logged {
            tracing::warn!(target: "proxymap", "{}: {why}", self.name);
        }
        tracing::warn!(target: "proxymap", "{} lookup error for \"{}\"", self.name, key.escape_debug());
        TableError { table: self.name.clone(), message: why }
    }

    async fn ask(&self, key: &str) -> Result<Option<String>, TableError> {
        let key = self.fold(key);
        let key = key.as_ref();
        if self.source.suppressed(key) {
            return Ok(None);
        }
        let start = clock::instant();
        if let Some(hit) = lock(&self.cache).get(key, start) {
            return Ok(hit);
        }
        let deadline = start + self.timeout;
        let servers = self.source.servers();
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if !self.source.ordered() {
            order.shuffle(&mut rand::rng());
        }
        let mut last: Option<String> = None;
        for i in order {
            let now = clock::instant();
            if now >= deadline {
                break;
            }
            if lock(&self.breakers[i]).admit(now) == Admit::Skip {
                continue;
            }
            let outcome = match tokio::time::timeout_at(deadline, self.source.ask(i, key)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Server(format!("timed out after {}s", self.timeout.as_secs_f32()))),
            };
            match outcome {
                Ok(answer) => {
                    self.report(i, lock(&self.breakers[i]).success());
                    lock(&self.cache).put(key, answer.clone(), clock::instant());
                    return Ok(answer);
                }
                Err(Failure::Answer(why)) => {
                    self.report(i, lock(&self.breakers[i]).success());
                    return Err(self.fail(key, format!("{}: {why}", servers[i]), false));
                }
                Err(Failure::Server(why)) => {
                    let change = lock(&self.breakers[i]).failure(clock::instant());
                    tracing::warn!(target: "proxymap", "{}: {}: {why}", self.name, servers[i]);
                    self.report(i, change);
                    last = Some(format!("{}: {why}", servers[i]));
                }
            }
        }
        let (why, logged) = match last {
            Some(w) => (w, true),
            None if clock::instant() >= deadline => {
                (format!("no answer within {}s", self.timeout.as_secs_f32()), false)
            }
            None => (format!("{} not asked: failing, retried after a cool-down", servers.join(", ")), false),
        };
        Err(self.fail(key, why, logged))
    }

    fn report(&self, server: usize, change: Option<Change>) {
        let name = &self.source.servers()[server];
        match change {
            Some(Change::Opened { cooldown }) => tracing::warn!(
                target: "proxymap",
                "{}: server {name} is failing: not asked for {}s",
                self.name,
                cooldown.as_secs_f32()
            ),
            Some(Change::Closed) => {
                tracing::info!(target: "proxymap", "{}: server {name} answers again", self.name)
            }
            None => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Table for DirectoryTable {
    /// Only the keys the table never asks about have a synchronous answer
    /// ("not found"); any other key must go through [`Table::query`].
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        if self.source.suppressed(&self.fold(key)) {
            return Ok(None);
        }
        Err(TableError {
            table: self.name.clone(),
            message: "a directory table is only looked up asynchronously".into(),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_pattern(&self) -> bool {
        self.pattern
    }

    fn is_directory(&self) -> bool {
        true
    }

    fn skips(&self, key: &str) -> bool {
        self.source.suppressed(&self.fold(key))
    }

    fn query<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, TableError>> {
        Box::pin(self.ask(key))
    }
}

/// What opening a directory table needs from the load.
pub(crate) struct Open<'a, 'b> {
    pub origin: &'a Origin<'a>,
    pub dir: &'a Path,
    pub settings: &'a DirectorySettings,
    /// Opens a table named inside a `.cf` file (the `domain` list).
    pub open_table: &'b mut dyn FnMut(&str) -> Option<Arc<dyn Table>>,
    pub errors: &'b mut Vec<Diagnostic>,
    pub warnings: &'b mut Vec<Diagnostic>,
}

/// Opens `kind:name` (`name` is the `.cf` file, relative to the
/// configuration directory). Reads and checks the file; never connects.
pub(crate) fn open(kind: Kind, spec: &str, name: &str, o: &mut Open<'_, '_>) -> Option<Arc<dyn Table>> {
    let path = super::resolve(o.dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let hint = if !name.contains('/') && !name.starts_with('.') {
                format!(
                    " (sluice reads {k} table parameters from a file, {k}:/etc/sluice/NAME.cf; the main.cf form {name}_* is not supported)",
                    k = kind.as_str()
                )
            } else {
                String::new()
            };
            o.errors.push(o.origin.error(format!(
                "cannot read table {}:{}: {e}{hint}",
                kind.as_str(),
                path.display()
            )));
            return None;
        }
    };
    let before = o.errors.len();
    let cf = CfFile::parse(kind, &path, &text, o.origin.param, o.errors, o.warnings);
    let source: Option<(Box<dyn Source>, Duration)> =
        match kind {
            Kind::Ldap => ldap::LdapSource::from_cf(&cf, o).map(|(s, t)| (Box::new(s) as Box<dyn Source>, t)),
            Kind::Pgsql => pgsql::PgsqlSource::from_cf(&cf, o)
                .map(|s| (Box::new(s) as Box<dyn Source>, o.settings.timeout)),
            Kind::Mysql => mysql::MysqlSource::from_cf(&cf, o)
                .map(|s| (Box::new(s) as Box<dyn Source>, o.settings.timeout)),
            Kind::Sqlite => sqlite::SqliteSource::from_cf(&cf, o)
                .map(|s| (Box::new(s) as Box<dyn Source>, o.settings.timeout)),
        };
    let (source, timeout) = source?;
    if o.errors.len() != before {
        return None;
    }
    Some(Arc::new(DirectoryTable::new(spec, source, timeout, false, o.settings)))
}

/// Opens `socketmap:inet:host:port:name` or `socketmap:unix:/path:name`.
pub(crate) fn open_socketmap(spec: &str, name: &str, o: &mut Open<'_, '_>) -> Option<Arc<dyn Table>> {
    match socketmap::SocketmapSource::parse(name, o.dir, o.settings) {
        Ok(s) => {
            let source: Box<dyn Source> = Box::new(s);
            // A socketmap sees whole keys only, as Postfix's pattern tables.
            Some(Arc::new(DirectoryTable::new(spec, source, o.settings.timeout, true, o.settings)))
        }
        Err(e) => {
            o.errors.push(o.origin.error(format!("{spec}: {e}")));
            None
        }
    }
}

/// The `domain` parameter of a `.cf` file: names, `!names`, `/file`
/// names (one pattern per word), and in-memory tables.
fn domain_filter(cf: &CfFile, o: &mut Open<'_, '_>) -> DomainFilter {
    let Some(value) = cf.get("domain") else { return DomainFilter::default() };
    let mut items = Vec::new();
    let mut words: Vec<(bool, String)> = Vec::new();
    match super::super::values::split_list(value) {
        Ok(list) => words.extend(list.into_iter().map(|w| (false, w))),
        Err(e) => {
            o.errors.push(cf.diag("domain", e));
            return DomainFilter::default();
        }
    }
    let mut depth = 0;
    while let Some((negated, word)) = (!words.is_empty()).then(|| words.remove(0)) {
        let (negate, pat) = match word.strip_prefix('!') {
            Some(p) => (!negated, p.to_owned()),
            None => (negated, word),
        };
        if pat.starts_with('/') {
            depth += 1;
            if depth > 64 {
                o.errors.push(cf.diag("domain", "too many pattern files"));
                break;
            }
            match std::fs::read_to_string(&pat) {
                Ok(text) => {
                    let inner: Vec<(bool, String)> = text
                        .split_whitespace()
                        .filter(|w| !w.starts_with('#'))
                        .map(|w| (negate, w.to_owned()))
                        .collect();
                    for (i, w) in inner.into_iter().enumerate() {
                        words.insert(i, w);
                    }
                }
                Err(e) => o.errors.push(cf.diag("domain", format!("cannot read pattern file {pat}: {e}"))),
            }
            continue;
        }
        if pat.split_once(':').is_some_and(|(t, _)| super::is_table_type(t)) {
            match (o.open_table)(&pat) {
                Some(t) if t.is_directory() => o.errors.push(cf.diag(
                    "domain",
                    format!("{pat}: the domain list must not be a directory table (it is asked before every lookup)"),
                )),
                Some(t) => items.push((negate, DomainItem::Table(t))),
                None => {}
            }
            continue;
        }
        items.push((negate, DomainItem::Name(pat.to_lowercase())));
    }
    DomainFilter::new(items)
}

/// The query of an SQL table: `query`, else the one built from the
/// pre-2.2 `select_field`, `table`, `where_field` and
/// `additional_conditions` (and PostgreSQL's `select_function`).
fn sql_query(cf: &CfFile, kind: Kind, errors: &mut Vec<Diagnostic>) -> Option<String> {
    if let Some(q) = cf.get("query") {
        return Some(q.to_owned());
    }
    if kind == Kind::Pgsql
        && let Some(f) = cf.get("select_function")
    {
        return Some(format!("SELECT {f}('%s')"));
    }
    let mut missing = Vec::new();
    for p in ["table", "select_field", "where_field"] {
        if cf.get(p).is_none_or(str::is_empty) {
            missing.push(p);
        }
    }
    if !missing.is_empty() {
        errors.push(cf.file_diag(format!(
            "no query: set query (or the older table, select_field and where_field; missing {})",
            missing.join(", ")
        )));
        return None;
    }
    Some(format!(
        "SELECT {} FROM {} WHERE {}='%s' {}",
        cf.str("select_field", ""),
        cf.str("table", ""),
        cf.str("where_field", ""),
        cf.str("additional_conditions", "")
    ))
}

/// The parsed templates, domain list and limits every SQL type shares.
#[derive(Debug, Clone)]
pub(crate) struct SqlQuery {
    query: template::Template,
    result: template::Template,
    needs: template::Needs,
    domain: DomainFilter,
    expansion_limit: usize,
    reply_limit: usize,
}

impl SqlQuery {
    fn from_cf(cf: &CfFile, kind: Kind, o: &mut Open<'_, '_>) -> Option<SqlQuery> {
        let query = sql_query(cf, kind, o.errors)?;
        let mut needs = template::Needs::default();
        let q = match template::Template::parse(&query, true, &mut needs) {
            Ok(t) => t,
            Err(e) => {
                o.errors.push(cf.diag(if cf.has("query") { "query" } else { "where_field" }, e));
                return None;
            }
        };
        if let Some(bad) = template::unquoted_expansion(&query) {
            o.warnings.push(cf.diag(
                "query",
                format!(
                    "{bad} is not inside '' quotes: only a quoted value is protected from the key's contents"
                ),
            ));
        }
        let r = match template::Template::parse(cf.str("result_format", "%s"), false, &mut needs) {
            Ok(t) => t,
            Err(e) => {
                o.errors.push(cf.diag("result_format", e));
                return None;
            }
        };
        let expansion_limit = cf.int("expansion_limit", 0, 0, o.errors) as usize;
        let domain = domain_filter(cf, o);
        Some(SqlQuery {
            query: q,
            result: r,
            needs,
            domain,
            expansion_limit,
            reply_limit: o.settings.reply_limit,
        })
    }

    /// True when `key` is never asked about.
    fn suppressed(&self, key: &str) -> bool {
        !self.domain.admits(key).unwrap_or(false)
            || self.query.expand_query(&self.needs, key, &|s, o| o.push_str(s)).is_none()
    }

    /// The query for `key`, each part escaped by `quote`.
    fn expand(&self, key: &str, quote: &dyn Fn(&str, &mut String)) -> Option<String> {
        self.query.expand_query(&self.needs, key, quote)
    }
}

/// Collects result values into the table's answer as every directory type
/// does: each value through `result_format`, comma-separated, at most
/// `expansion_limit` of them (more is an error, as in Postfix) and at most
/// `reply_limit` bytes.
#[derive(Debug)]
pub(crate) struct Collect<'a> {
    result: &'a template::Template,
    needs: &'a template::Needs,
    key: &'a str,
    expansion_limit: usize,
    reply_limit: usize,
    count: usize,
    out: String,
}

impl<'a> Collect<'a> {
    fn new(
        result: &'a template::Template,
        needs: &'a template::Needs,
        key: &'a str,
        expansion_limit: usize,
        reply_limit: usize,
    ) -> Self {
        Collect { result, needs, key, expansion_limit, reply_limit, count: 0, out: String::new() }
    }

    /// Adds one value (NULL and empty values are skipped, as in Postfix).
    fn push(&mut self, value: Option<&str>) -> Result<(), Failure> {
        let Some(v) = value else { return Ok(()) };
        if self.result.expand_result(self.needs, v, self.key, &mut self.out) {
            self.count += 1;
            if self.expansion_limit > 0 && self.count > self.expansion_limit {
                return Err(Failure::Answer(format!("expansion limit {} exceeded", self.expansion_limit)));
            }
            if self.out.len() > self.reply_limit {
                return Err(Failure::Answer(format!(
                    "result longer than {} bytes (sluice_table_reply_size_limit)",
                    self.reply_limit
                )));
            }
        }
        Ok(())
    }

    /// The answer: `None` when nothing was collected.
    fn finish(self) -> Option<String> {
        (!self.out.is_empty()).then_some(self.out)
    }
}

/// Decodes `%XX` escapes (URIs and LDAP URLs).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad %-escape in \"{s}\""))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape in \"{s}\""))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{s}\" is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests;
