//! `ldap:/etc/sluice/file.cf` (ldap_table(5)): `server_host`,
//! `server_port`, `search_base`, `query_filter`, `scope`,
//! `result_attribute`, `special_result_attribute` (DN and LDAP URL
//! recursion, `recursion_limit`), `terminal_result_attribute`,
//! `leaf_result_attribute`, `result_format`, `domain`, `bind`/`bind_dn`/
//! `bind_pw` (simple binds), `start_tls`, `ldaps:`/`ldapi:` URLs, the
//! `tls_*` files, `tls_require_cert`, `timeout`, `size_limit`,
//! `expansion_limit`, `dereference`, `version`.
//!
//! Owns the LDAP side with ldap3: servers tried in the configured order;
//! the key quoted as RFC 2253 in the search base and RFC 2254 in the
//! filter; entries read in the order the server sends their attributes
//! (so multi-attribute results come out as Postfix's do); recursion
//! through DNs and URLs on the same connection, at most
//! `recursion_limit` deep and 1000 searches per lookup (a loop in the
//! directory cannot run for ever). `bind = sasl` is refused at load
//! (ldap3's SASL needs Kerberos libraries); `chase_referrals` is not
//! followed. Only LDAPv3 is spoken: `version = 2` still works against any
//! server that accepts v3 (all current ones).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ldap3::asn1::{PL, StructureTag};
use ldap3::{DerefAliases, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions};

use super::cf::CfFile;
use super::pool::Pool;
use super::template::{DomainFilter, Needs, Template};
use super::tls::{self, TlsFiles, Verify};
use super::{Collect, Failure, Open, Source, percent_decode};

/// Searches one lookup may make, recursion included.
const MAX_SEARCHES: usize = 1000;

#[derive(Debug)]
pub(crate) struct LdapSource {
    urls: Vec<String>,
    base: Template,
    filter: Template,
    needs: Needs,
    result: Template,
    domain: DomainFilter,
    scope: Scope,
    /// Terminal, leaf, ordinary and special attributes, in that order.
    attributes: Vec<String>,
    terminal: usize,
    leaf: usize,
    /// Terminal + leaf + ordinary.
    ordinary: usize,
    bind: Option<(String, String)>,
    start_tls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    size_limit: usize,
    expansion_limit: usize,
    recursion_limit: usize,
    deref: DerefAliases,
    reply_limit: usize,
    pools: Vec<Pool<Ldap>>,
}

impl LdapSource {
    /// Reads the `.cf` file; also returns the lookup timeout (`timeout`).
    pub fn from_cf(cf: &CfFile, o: &mut Open<'_, '_>) -> Option<(LdapSource, Duration)> {
        let errors_before = o.errors.len();
        for p in ["cache", "cache_expiry", "cache_size"] {
            if cf.has(p) {
                o.warnings
                    .push(cf.diag(p, "ignored (as by Postfix); sluice caches with sluice_table_cache_*"));
            }
        }
        if cf.get("tls_cipher_suite").is_some_and(|c| !c.is_empty()) {
            o.warnings.push(
                cf.diag("tls_cipher_suite", "not used: rustls chooses among its own safe cipher suites"),
            );
        }
        if cf.bool("chase_referrals", false, o.errors) {
            o.warnings.push(cf.diag("chase_referrals", "referrals are not followed by sluice"));
        }
        match cf.int("version", 2, 2, o.errors) {
            2 => {}
            3 => {}
            v => o.errors.push(cf.diag("version", format!("unknown LDAP version {v} (2 or 3)"))),
        }
        let bind = match cf.str("bind", "yes").to_ascii_lowercase().as_str() {
            "yes" | "simple" => Some((cf.str("bind_dn", "").to_owned(), cf.str("bind_pw", "").to_owned())),
            "no" | "none" => None,
            "sasl" => {
                o.errors.push(cf.diag(
                    "bind",
                    "SASL binds are not supported by sluice (use bind = yes with bind_dn and bind_pw)",
                ));
                None
            }
            other => {
                o.errors
                    .push(cf.diag("bind", format!("unsupported value \"{other}\" (yes, no, simple, none)")));
                None
            }
        };
        let scope = match cf.str("scope", "sub").to_ascii_lowercase().as_str() {
            "sub" => Scope::Subtree,
            "one" => Scope::OneLevel,
            "base" => Scope::Base,
            other => {
                o.warnings.push(
                    cf.diag("scope", format!("unrecognized value \"{other}\": using sub (as Postfix)")),
                );
                Scope::Subtree
            }
        };
        let deref = match cf.int("dereference", 0, 0, o.errors) {
            0 => DerefAliases::Never,
            1 => DerefAliases::Searching,
            2 => DerefAliases::Finding,
            3 => DerefAliases::Always,
            v => {
                o.errors.push(cf.diag("dereference", format!("value {v} is not 0, 1, 2 or 3")));
                DerefAliases::Never
            }
        };
        let timeout = Duration::from_secs(cf.int("timeout", 10, 1, o.errors) as u64);
        let expansion_limit = cf.int("expansion_limit", 0, 0, o.errors) as usize;
        let size_limit = cf.int("size_limit", expansion_limit as i64, 0, o.errors) as usize;
        let recursion_limit = cf.int("recursion_limit", 1000, 1, o.errors) as usize;

        let mut needs = Needs::default();
        let mut parse = |param: &str, text: &str, query: bool, needs: &mut Needs| match Template::parse(
            text, query, needs,
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                o.errors.push(cf.diag(param, e));
                None
            }
        };
        let base = parse("search_base", cf.str("search_base", ""), true, &mut needs);
        let filter_text = cf.str("query_filter", "(mailacceptinggeneralid=%s)");
        let filter = parse("query_filter", filter_text, true, &mut needs);
        let (result_param, result_text) = match cf.get("result_format") {
            Some(r) => ("result_format", r),
            None => ("result_filter", cf.str("result_filter", "%s")),
        };
        let result = parse(result_param, result_text, false, &mut needs);
        if let Some(f) = &filter {
            if !f.is_dynamic() {
                o.warnings.push(
                    cf.diag("query_filter", format!("fixed query_filter {} is probably useless", f.as_str())),
                );
            }
            // A filter that cannot parse fails every lookup: say so now.
            if let Some(sample) =
                f.expand_query(&needs, "user@mail.example.com", &|s, out| rfc2254_quote(s, out))
                && ldap3::parse_filter(wrap_filter(&sample).as_ref()).is_err()
            {
                o.errors
                    .push(cf.diag("query_filter", format!("\"{filter_text}\" is not a valid LDAP filter")));
            }
        }
        let domain = super::domain_filter(cf, o);

        let list = |name: &str, default: &str| -> Vec<String> {
            cf.str(name, default)
                .split([',', ' ', '\t'])
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut attributes = list("terminal_result_attribute", "");
        let terminal = attributes.len();
        attributes.extend(list("leaf_result_attribute", ""));
        let leaf = attributes.len() - terminal;
        attributes.extend(list("result_attribute", "maildrop"));
        let ordinary = attributes.len();
        attributes.extend(list("special_result_attribute", ""));

        let port = cf.int("server_port", 389, 1, o.errors);
        let mut urls = Vec::new();
        for h in cf.str("server_host", "localhost").split([',', ' ', '\t']).filter(|h| !h.is_empty()) {
            match server_url(h, port) {
                Ok(u) => urls.push(u),
                Err(e) => o.errors.push(cf.diag("server_host", format!("\"{h}\": {e}"))),
            }
        }
        let start_tls = cf.bool("start_tls", false, o.errors);
        let needs_tls = start_tls || urls.iter().any(|u| u.starts_with("ldaps://"));
        let tls = if needs_tls {
            let verify =
                if cf.bool("tls_require_cert", false, o.errors) { Verify::Full } else { Verify::None };
            let file = |n: &str| cf.get(n).filter(|v| !v.is_empty()).map(|v| super::super::resolve(o.dir, v));
            let files = TlsFiles {
                ca_file: file("tls_ca_cert_file"),
                ca_dir: file("tls_ca_cert_dir"),
                cert: file("tls_cert"),
                key: file("tls_key"),
            };
            match tls::client_config(verify, &files) {
                Ok(c) => Some(c),
                Err(e) => {
                    o.errors.push(cf.diag(if start_tls { "start_tls" } else { "server_host" }, e));
                    None
                }
            }
        } else {
            None
        };
        if o.errors.len() != errors_before {
            return None;
        }
        let pools = urls.iter().map(|_| Pool::new(o.settings.connections, Duration::from_secs(60))).collect();
        Some((
            LdapSource {
                urls,
                base: base?,
                filter: filter?,
                needs,
                result: result?,
                domain,
                scope,
                attributes,
                terminal,
                leaf,
                ordinary,
                bind,
                start_tls,
                tls,
                timeout,
                size_limit,
                expansion_limit,
                recursion_limit,
                deref,
                reply_limit: o.settings.reply_limit,
                pools,
            },
            timeout,
        ))
    }

    async fn connect(&self, url: &str) -> Result<Ldap, Failure> {
        let mut settings =
            LdapConnSettings::new().set_conn_timeout(self.timeout).set_starttls(self.start_tls);
        if let Some(c) = &self.tls {
            settings = settings.set_config(c.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| Failure::Server(format!("connect: {e}")))?;
        // The connection task ends when the last handle is dropped.
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        if let Some((dn, pw)) = &self.bind {
            let r = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| Failure::Server(format!("bind: {e}")))?;
            if r.rc != 0 {
                return Err(Failure::Server(format!("bind as \"{dn}\" failed: {} ({})", r.text, r.rc)));
            }
        }
        Ok(ldap)
    }

    async fn lookup(&self, server: usize, key: &str) -> Result<Option<String>, Failure> {
        let Some(base) = self.base.expand_query(&self.needs, key, &rfc2253_quote) else { return Ok(None) };
        let Some(filter) = self.filter.expand_query(&self.needs, key, &rfc2254_quote) else {
            return Ok(None);
        };
        let filter = wrap_filter(&filter).into_owned();
        let mut slot = self.pools[server].slot().await;
        let reused = slot.take().filter(|l| {
            let mut l = l.clone();
            !l.is_closed()
        });
        let was_reused = reused.is_some();
        let mut ldap = match reused {
            Some(l) => l,
            None => self.connect(&self.urls[server]).await?,
        };
        let answer = match self.search_all(&mut ldap, &base, &filter, key).await {
            // A reused connection the server dropped: one fresh try.
            Err(Failure::Server(_)) if was_reused => {
                ldap = self.connect(&self.urls[server]).await?;
                self.search_all(&mut ldap, &base, &filter, key).await?
            }
            other => other?,
        };
        slot.release(ldap);
        Ok(answer)
    }

    async fn search_all(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        key: &str,
    ) -> Result<Option<String>, Failure> {
        let mut walk = Walk {
            source: self,
            collect: Collect::new(&self.result, &self.needs, key, self.expansion_limit, self.reply_limit),
            searches: 0,
        };
        let attrs: Vec<&str> = self.attributes.iter().map(String::as_str).collect();
        let dynamic_base = self.base.is_dynamic();
        match walk.search(ldap, base, self.scope, filter, &attrs).await? {
            Searched::Entries(entries) => walk.entries(ldap, entries, 1).await?,
            Searched::NoSuchObject if dynamic_base => {}
            Searched::NoSuchObject => {
                return Err(Failure::Answer(format!("search base \"{base}\" not found")));
            }
        }
        Ok(walk.collect.finish())
    }
}

/// One lookup's traversal: its result so far and how many searches it made.
struct Walk<'a> {
    source: &'a LdapSource,
    collect: Collect<'a>,
    searches: usize,
}

enum Searched {
    Entries(Vec<Vec<(String, Vec<String>)>>),
    NoSuchObject,
}

impl Walk<'_> {
    async fn search(
        &mut self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Searched, Failure> {
        self.searches += 1;
        if self.searches > MAX_SEARCHES {
            return Err(Failure::Answer(format!("more than {MAX_SEARCHES} searches for one lookup")));
        }
        let s = self.source;
        let limit = i32::try_from(s.size_limit).unwrap_or(i32::MAX);
        let opts = SearchOptions::new()
            .sizelimit(limit)
            .timelimit(i32::try_from(s.timeout.as_secs()).unwrap_or(i32::MAX))
            .deref(s.deref);
        let mut stream = ldap
            .with_timeout(s.timeout)
            .with_search_options(opts)
            .streaming_search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(|e| Failure::Server(format!("search: {e}")))?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        loop {
            let next = stream.next().await.map_err(|e| Failure::Server(format!("search: {e}")))?;
            let Some(entry) = next else { break };
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let parsed = parse_entry(entry.0)
                .ok_or_else(|| Failure::Server("malformed search result entry".into()))?;
            bytes +=
                parsed.iter().map(|(a, v)| a.len() + v.iter().map(String::len).sum::<usize>()).sum::<usize>();
            if bytes > s.reply_limit {
                return Err(Failure::Answer(format!(
                    "search results longer than {} bytes (sluice_table_reply_size_limit)",
                    s.reply_limit
                )));
            }
            entries.push(parsed);
            if s.size_limit > 0 && entries.len() > s.size_limit {
                return Err(Failure::Answer(format!("query size limit ({}) exceeded", s.size_limit)));
            }
        }
        let done = stream.finish().await;
        match done.rc {
            0 => Ok(Searched::Entries(entries)),
            32 => Ok(Searched::NoSuchObject),
            // The server works; the search cannot be answered.
            3 | 4 | 10 | 11 => Err(Failure::Answer(format!("search failed: {} ({})", done.text, done.rc))),
            rc => Err(Failure::Server(format!("search failed: {} ({rc})", done.text))),
        }
    }

    /// Collects the values of `entries` at recursion depth `depth`, as
    /// Postfix's dict_ldap_get_values does.
    fn entries<'s>(
        &'s mut self,
        ldap: &'s mut Ldap,
        entries: Vec<Vec<(String, Vec<String>)>>,
        depth: usize,
    ) -> BoxFuture<'s, Result<(), Failure>> {
        Box::pin(async move {
            let s = self.source;
            for entry in entries {
                let present = |range: std::ops::Range<usize>| {
                    entry.iter().any(|(a, v)| {
                        !v.is_empty() && s.attributes[range.clone()].iter().any(|c| subtype(c, a))
                    })
                };
                let terminal = s.terminal > 0 && present(0..s.terminal);
                let leaf = s.leaf == 0 || !present(s.ordinary..s.attributes.len());
                for (attr, values) in &entry {
                    let Some(i) = s.attributes.iter().position(|c| subtype(c, attr)) else { continue };
                    if i < s.ordinary || terminal {
                        let skip = (terminal && i >= s.terminal)
                            || (!leaf && i >= s.terminal && i < s.terminal + s.leaf);
                        if !skip {
                            for v in values {
                                self.collect.push(Some(v))?;
                            }
                        }
                    } else if depth < s.recursion_limit {
                        for v in values {
                            self.special(ldap, v, depth).await?;
                        }
                    } else {
                        return Err(Failure::Answer(format!(
                            "recursion limit exceeded for special attribute {attr}={}",
                            values.first().map_or("", String::as_str)
                        )));
                    }
                }
            }
            Ok(())
        })
    }

    /// Follows one DN or LDAP URL value of a special attribute.
    async fn special(&mut self, ldap: &mut Ldap, value: &str, depth: usize) -> Result<(), Failure> {
        let s = self.source;
        let found = if let Some(url) = LdapUrl::parse(value) {
            let url = url.map_err(|e| Failure::Answer(format!("malformed URL {value}: {e}")))?;
            let attrs = url_attrs(&url.attrs, &s.attributes);
            if attrs.is_empty() {
                return Ok(());
            }
            let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
            self.search(ldap, &url.dn, url.scope, &wrap_filter(&url.filter), &attrs).await?
        } else {
            let attrs: Vec<&str> = s.attributes.iter().map(String::as_str).collect();
            self.search(ldap, value, Scope::Base, "(objectclass=*)", &attrs).await?
        };
        match found {
            Searched::Entries(entries) => self.entries(ldap, entries, depth + 1).await,
            Searched::NoSuchObject => {
                tracing::warn!(target: "proxymap", "DN {value} not found, skipping");
                Ok(())
            }
        }
    }
}

/// Postfix's attrdesc_subtype: `returned` is `configured` or one of its
/// `;option` subtypes (names compare case-insensitively).
fn subtype(configured: &str, returned: &str) -> bool {
    let n = configured.len();
    returned.len() >= n
        && returned.as_bytes()[..n].eq_ignore_ascii_case(configured.as_bytes())
        && (returned.len() == n || returned.as_bytes()[n] == b';')
}

/// The attributes to ask an LDAP URL for: those both the URL and the
/// table name (the more specific of two that differ in options); all
/// the table's when the URL names none.
fn url_attrs(url: &[String], table: &[String]) -> Vec<String> {
    if url.is_empty() {
        return table.to_vec();
    }
    let mut out = Vec::new();
    for a1 in url {
        for a2 in table {
            if subtype(a1, a2) {
                out.push(a2.clone());
            } else if subtype(a2, a1) {
                out.push(a1.clone());
            }
        }
    }
    out
}

/// The parts of an RFC 2255 LDAP URL a recursion uses (the host is
/// ignored: the search runs on the same connection, as Postfix's).
#[derive(Debug, Clone, PartialEq)]
struct LdapUrl {
    dn: String,
    attrs: Vec<String>,
    scope: Scope,
    filter: String,
}

impl LdapUrl {
    /// `None` when `text` is not an LDAP URL at all (it is a DN).
    fn parse(text: &str) -> Option<Result<LdapUrl, String>> {
        let t = text.trim();
        let t = t.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(t);
        let t = if t.len() >= 4 && t[..4].eq_ignore_ascii_case("url:") { &t[4..] } else { t };
        let (scheme, rest) = t.split_once("://")?;
        if !["ldap", "ldaps", "ldapi"].iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
            return None;
        }
        Some(Self::parts(rest))
    }

    fn parts(rest: &str) -> Result<LdapUrl, String> {
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        let mut fields = path.splitn(5, '?');
        let dn = percent_decode(fields.next().unwrap_or(""))?;
        let attrs = fields
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|a| !a.is_empty())
            .map(percent_decode)
            .collect::<Result<Vec<_>, _>>()?;
        let scope = match fields.next().unwrap_or("") {
            "" | "base" => Scope::Base,
            "one" => Scope::OneLevel,
            "sub" => Scope::Subtree,
            other => return Err(format!("bad scope \"{other}\"")),
        };
        let filter = match fields.next().unwrap_or("") {
            "" => "(objectClass=*)".to_owned(),
            f => percent_decode(f)?,
        };
        Ok(LdapUrl { dn, attrs, scope, filter })
    }
}

/// An entry's attributes in the order the server sent them, without
/// panicking on malformed input (ldap3's SearchEntry would).
fn parse_entry(tag: StructureTag) -> Option<Vec<(String, Vec<String>)>> {
    if tag.id != 4 {
        return None;
    }
    let PL::C(parts) = tag.payload else { return None };
    let mut parts = parts.into_iter();
    let _dn = parts.next()?;
    let PL::C(attrs) = parts.next()?.payload else { return None };
    let mut out = Vec::with_capacity(attrs.len());
    for a in attrs {
        let PL::C(pair) = a.payload else { return None };
        let mut pair = pair.into_iter();
        let PL::P(name) = pair.next()?.payload else { return None };
        let PL::C(vals) = pair.next()?.payload else { return None };
        let mut values = Vec::with_capacity(vals.len());
        for v in vals {
            let PL::P(bytes) = v.payload else { return None };
            // Postfix reads a value as a C string: up to a NUL.
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            values.push(String::from_utf8_lossy(&bytes[..end]).into_owned());
        }
        out.push((String::from_utf8_lossy(&name).into_owned(), values));
    }
    Some(out)
}

/// `server_host` words: LDAP URLs as they are, `host` and `host:port`
/// as `ldap://host:port`.
fn server_url(h: &str, port: i64) -> Result<String, String> {
    let lower = h.to_ascii_lowercase();
    if lower.starts_with("ldap://") || lower.starts_with("ldaps://") || lower.starts_with("ldapi://") {
        let (scheme, rest) = h.split_once("://").unwrap_or(("ldap", h));
        let hostport = rest.split('/').next().unwrap_or("");
        return Ok(format!("{}://{hostport}", scheme.to_ascii_lowercase()));
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') || host.starts_with('[') => {
            (host, p.parse::<u16>().map_err(|_| format!("bad port \"{p}\""))?)
        }
        Some(_) => return Err("write an IPv6 address in brackets, [address]:port".into()),
        None => (h, u16::try_from(port).map_err(|_| format!("bad server_port {port}"))?),
    };
    Ok(format!("ldap://{host}:{port}"))
}

/// OpenLDAP accepts a filter without its outer parentheses; ldap3 does not.
fn wrap_filter(f: &str) -> std::borrow::Cow<'_, str> {
    if f.trim_start().starts_with('(') { f.into() } else { format!("({f})").into() }
}

/// Quotes a key for the search base (RFC 2253), as Postfix: white space,
/// `"`, `#`, `+`, `,`, `;`, `<`, `>` and `\` as `\XX`.
fn rfc2253_quote(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            ' ' | '\t' | '"' | '#' | '+' | ',' | ';' | '<' | '>' | '\\' | '\0' => {
                out.push_str(&format!("\\{:02X}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
}

/// Quotes a key for the filter (RFC 2254), as Postfix: `*`, `(`, `)`,
/// `\` (and NUL) as `\XX`.
fn rfc2254_quote(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => out.push_str(&format!("\\{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
}

impl Source for LdapSource {
    fn servers(&self) -> &[String] {
        &self.urls
    }

    fn ordered(&self) -> bool {
        true
    }

    fn suppressed(&self, key: &str) -> bool {
        !self.domain.admits(key).unwrap_or(false)
            || self.base.expand_query(&self.needs, key, &|s, o| o.push_str(s)).is_none()
            || self.filter.expand_query(&self.needs, key, &|s, o| o.push_str(s)).is_none()
    }

    fn ask<'a>(&'a self, server: usize, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Failure>> {
        Box::pin(self.lookup(server, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_as_postfix() {
        let mut f = String::new();
        rfc2254_quote("a*b(c)\\d@x", &mut f);
        assert_eq!(f, "a\\2Ab\\28c\\29\\5Cd@x");
        let mut b = String::new();
        rfc2253_quote("Smith, John #1+é", &mut b);
        assert_eq!(b, "Smith\\2C\\20John\\20\\231\\2Bé");
    }

    #[test]
    fn server_host_words_become_urls() {
        assert_eq!(server_url("ldap.example.com", 389).unwrap(), "ldap://ldap.example.com:389");
        assert_eq!(server_url("127.0.0.1:1389", 389).unwrap(), "ldap://127.0.0.1:1389");
        assert_eq!(server_url("ldaps://ldap.example.com:636", 389).unwrap(), "ldaps://ldap.example.com:636");
        assert_eq!(
            server_url("LDAPI://%2Frun%2Fslapd%2Fldapi", 389).unwrap(),
            "ldapi://%2Frun%2Fslapd%2Fldapi"
        );
        assert_eq!(server_url("[::1]:1389", 389).unwrap(), "ldap://[::1]:1389");
        assert!(server_url("::1:1389", 389).is_err());
    }

    #[test]
    fn attribute_subtypes() {
        assert!(subtype("mail", "MAIL"));
        assert!(subtype("mail", "mail;lang-en"));
        assert!(!subtype("mail", "mailhost"));
        assert!(!subtype("mail;lang-en", "mail"));
        assert_eq!(
            url_attrs(&["mail;x".into(), "cn".into()], &["mail".into(), "uid".into()]),
            vec!["mail;x"]
        );
        assert_eq!(url_attrs(&[], &["mail".into()]), vec!["mail"]);
    }

    #[test]
    fn ldap_urls_for_recursion() {
        let u = LdapUrl::parse("ldap:///ou=people,dc=example,dc=com?mail?sub?(memberOf=cn%3Dstaff)")
            .unwrap()
            .unwrap();
        assert_eq!(u.dn, "ou=people,dc=example,dc=com");
        assert_eq!(u.attrs, vec!["mail"]);
        assert_eq!(u.scope, Scope::Subtree);
        assert_eq!(u.filter, "(memberOf=cn=staff)");
        let u = LdapUrl::parse("ldap://host/cn=x").unwrap().unwrap();
        assert_eq!((u.scope, u.filter.as_str()), (Scope::Base, "(objectClass=*)"));
        assert!(LdapUrl::parse("cn=x,dc=example").is_none());
    }

    #[test]
    fn filters_get_their_parentheses() {
        assert_eq!(wrap_filter("mail=x"), "(mail=x)");
        assert_eq!(wrap_filter("(&(a=b)(c=d))"), "(&(a=b)(c=d))");
    }
}
