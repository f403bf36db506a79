//! The `%` templates of directory tables, as Postfix's db_common expands
//! them: LDAP's `search_base` and `query_filter`, SQL's `query`, and every
//! type's `result_format`; and the `domain` list that limits which keys
//! are looked up at all.
//!
//! Owns the expansion rules and the decision that a key is not looked up
//! (a suppressed lookup answers "not found" without asking the server):
//! `%s` the key, `%u` its local part (the whole key when it has no `@`),
//! `%d` its domain (no domain: suppressed), `%S %U %D` the same parts of
//! the key inside a result format, `%1`..`%9` the key's domain labels from
//! the right (too few: suppressed), `%%` a percent sign. An empty local
//! part suppresses a template using `%u`/`%U`. Quoting is the caller's
//! (RFC 2253/2254 for LDAP, SQL string escaping for SQL). Pure: no I/O.

use std::sync::Arc;

use super::super::super::Table;

/// What the templates of one table need from a key and from a result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    key_domain: bool,
    key_user: bool,
    value_domain: bool,
    value_user: bool,
    /// The highest `%1`..`%9` used.
    labels: usize,
}

/// A template that parsed: the text, and whether it depends on the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    text: String,
    dynamic: bool,
}

impl Template {
    /// Parses `text` as a query template (`query = true`: search_base,
    /// query_filter, query) or a result template, adding what it needs to
    /// `needs` (one `Needs` covers all templates of a table, as in Postfix).
    pub fn parse(text: &str, query: bool, needs: &mut Needs) -> Result<Template, String> {
        let mut dynamic = false;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                continue;
            }
            match chars.next() {
                Some('%') => {}
                Some('s' | 'S') => dynamic = true,
                Some('u') => {
                    dynamic = true;
                    if query {
                        needs.key_user = true;
                    } else {
                        needs.value_user = true;
                    }
                }
                Some('d') => {
                    dynamic = true;
                    if query {
                        needs.key_domain = true;
                    } else {
                        needs.value_domain = true;
                    }
                }
                Some('U') => {
                    dynamic = true;
                    needs.key_user = true;
                }
                Some('D') => {
                    dynamic = true;
                    needs.key_domain = true;
                }
                Some(d @ '1'..='9') => {
                    dynamic = true;
                    needs.key_domain = true;
                    needs.labels = needs.labels.max(d as usize - '0' as usize);
                }
                Some(other) => {
                    return Err(format!(
                        "invalid %{other} in \"{text}\" (expected %s, %u, %d, %S, %U, %D, %1-%9 or %%)"
                    ));
                }
                None => return Err(format!("\"{text}\" ends with a lone %")),
            }
        }
        Ok(Template { text: text.to_owned(), dynamic })
    }

    /// True when the template uses any part of the key.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Expands a query template for `key`, each part passed through
    /// `quote`; `None` when the key lacks what the templates need (the
    /// lookup is then not made and answers "not found").
    pub fn expand_query(
        &self,
        needs: &Needs,
        key: &str,
        quote: &dyn Fn(&str, &mut String),
    ) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        let parts = Parts::of(key, needs.key_domain, needs.key_user, needs.labels)?;
        let mut out = String::with_capacity(self.text.len() + key.len());
        self.expand(&parts, &parts, quote, &mut out);
        Some(out)
    }

    /// Expands a result template for one `value` found for `key`, appending
    /// it to `result` after a comma. False (and nothing appended) when the
    /// value is empty or lacks what the template needs.
    pub fn expand_result(&self, needs: &Needs, value: &str, key: &str, result: &mut String) -> bool {
        if value.is_empty() {
            return false;
        }
        let Some(v) = Parts::of(value, needs.value_domain, needs.value_user, 0) else { return false };
        let Some(k) = Parts::of(key, needs.key_domain, needs.key_user, needs.labels) else { return false };
        if !result.is_empty() {
            result.push(',');
        }
        self.expand(&v, &k, &|s, out| out.push_str(s), result);
        true
    }

    fn expand(
        &self,
        value: &Parts<'_>,
        key: &Parts<'_>,
        quote: &dyn Fn(&str, &mut String),
        out: &mut String,
    ) {
        let mut chars = self.text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('s') => quote(value.whole, out),
                Some('u') => quote(value.user, out),
                Some('d') => quote(value.domain.unwrap_or(""), out),
                Some('S') => quote(key.whole, out),
                Some('U') => quote(key.user, out),
                Some('D') => quote(key.domain.unwrap_or(""), out),
                Some(d @ '1'..='9') => {
                    let i = d as usize - '0' as usize;
                    quote(key.labels.get(i - 1).copied().unwrap_or(""), out);
                }
                // Parsing refused anything else.
                _ => {}
            }
        }
    }
}

/// A key or value split as the templates use it.
struct Parts<'a> {
    whole: &'a str,
    user: &'a str,
    domain: Option<&'a str>,
    /// Domain labels, rightmost first (`%1` is the top-level domain).
    labels: Vec<&'a str>,
}

impl<'a> Parts<'a> {
    /// `None` when `text` lacks what is needed: a non-empty domain, a
    /// non-empty local part (when it has an `@`), or enough non-empty
    /// domain labels.
    fn of(text: &'a str, need_domain: bool, need_user: bool, labels: usize) -> Option<Parts<'a>> {
        let (user, domain) = match text.rsplit_once('@') {
            Some((u, d)) => (u, Some(d)),
            None => (text, None),
        };
        if need_domain && domain.is_none_or(str::is_empty) {
            return None;
        }
        if need_user && domain.is_some() && user.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if labels > 0 {
            let all: Vec<&str> = domain.unwrap_or("").split('.').collect();
            if all.len() < labels {
                return None;
            }
            parts = all.into_iter().rev().collect();
            if parts[..labels].iter().any(|l| l.is_empty()) {
                return None;
            }
        }
        Some(Parts { whole: text, user, domain, labels: parts })
    }
}

/// The `domain` parameter: only `user@domain` keys with a non-empty user
/// and a listed domain are looked up. Names compare case-insensitively and
/// exactly (no subdomains, as Postfix's string lists); `!name` excludes;
/// in-memory tables are looked up with the domain as key.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomainFilter {
    items: Vec<(bool, DomainItem)>,
}

#[derive(Debug, Clone)]
pub(crate) enum DomainItem {
    Name(String),
    Table(Arc<dyn Table>),
}

impl DomainFilter {
    pub fn new(items: Vec<(bool, DomainItem)>) -> DomainFilter {
        DomainFilter { items }
    }

    /// True when `key` may be looked up. A table in the list that fails
    /// counts as no match: the key is then not looked up, which answers
    /// "not found" (Postfix answers a lookup error).
    pub fn admits(&self, key: &str) -> Result<bool, super::super::super::TableError> {
        if self.items.is_empty() {
            return Ok(true);
        }
        let Some((user, domain)) = key.rsplit_once('@') else { return Ok(false) };
        if user.is_empty() || domain.is_empty() {
            return Ok(false);
        }
        let domain = domain.to_lowercase();
        for (negate, item) in &self.items {
            let hit = match item {
                DomainItem::Name(n) => *n == domain,
                DomainItem::Table(t) => t.lookup(&domain)?.is_some(),
            };
            if hit {
                return Ok(!negate);
            }
        }
        Ok(false)
    }
}

/// True when a `%` expansion in `query` stands outside single quotes:
/// the escaping of `%s` only protects a value inside '...', so anything
/// else lets a key change the query.
pub(crate) fn unquoted_expansion(query: &str) -> Option<String> {
    let mut quote: Option<char> = None;
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        if quote == Some('\'') {
            continue;
        }
        if c == '%' {
            match chars.peek() {
                Some('%') => {
                    chars.next();
                }
                Some(n) if n.is_ascii_alphanumeric() => return Some(format!("%{n}")),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(query: &str, result: &str) -> (Template, Template, Needs) {
        let mut needs = Needs::default();
        let q = Template::parse(query, true, &mut needs).expect("query");
        let r = Template::parse(result, false, &mut needs).expect("result");
        (q, r, needs)
    }

    fn plain(s: &str, out: &mut String) {
        out.push_str(s);
    }

    #[test]
    fn query_expansions_as_db_common() {
        let (q, _, n) = both("u=%u d=%d s=%s 1=%1 2=%2 %%", "%s");
        assert_eq!(
            q.expand_query(&n, "joe@mail.example.com", &plain).as_deref(),
            Some("u=joe d=mail.example.com s=joe@mail.example.com 1=com 2=example %")
        );
        // %d without a domain, or too few labels: no query.
        assert_eq!(q.expand_query(&n, "joe", &plain), None);
        assert_eq!(q.expand_query(&n, "joe@localhost", &plain), None);
        assert_eq!(q.expand_query(&n, "joe@example..", &plain), None);
        // %u with an empty local part: no query.
        assert_eq!(q.expand_query(&n, "@example.com", &plain), None);
        assert_eq!(q.expand_query(&n, "", &plain), None);
    }

    #[test]
    fn u_without_domain_is_the_whole_key() {
        let (q, _, n) = both("%u", "%s");
        assert_eq!(q.expand_query(&n, "postmaster", &plain).as_deref(), Some("postmaster"));
        assert_eq!(q.expand_query(&n, "example.com", &plain).as_deref(), Some("example.com"));
    }

    #[test]
    fn result_format_uses_value_and_key_parts() {
        let (_, r, n) = both("%s", "smtp:[%d] for %U");
        let mut out = String::new();
        assert!(r.expand_result(&n, "box@mx1.example", "joe@example.com", &mut out));
        assert!(r.expand_result(&n, "box@mx2.example", "joe@example.com", &mut out));
        assert!(!r.expand_result(&n, "unqualified", "joe@example.com", &mut out));
        assert!(!r.expand_result(&n, "", "joe@example.com", &mut out));
        assert_eq!(out, "smtp:[mx1.example] for joe,smtp:[mx2.example] for joe");
        // A result template needing the key's domain suppresses the query.
        let (q, _, n) = both("%s", "%D");
        assert_eq!(q.expand_query(&n, "joe", &plain), None);
    }

    #[test]
    fn quoting_applies_to_each_part() {
        let (q, _, n) = both("(mail=%s)", "%s");
        let quote = |s: &str, out: &mut String| out.push_str(&s.replace('*', "\\2a"));
        assert_eq!(q.expand_query(&n, "*@example.com", &quote).as_deref(), Some("(mail=\\2a@example.com)"));
    }

    #[test]
    fn bad_templates_are_refused() {
        let mut n = Needs::default();
        assert!(Template::parse("%x", true, &mut n).is_err());
        assert!(Template::parse("trailing %", true, &mut n).is_err());
        assert!(!Template::parse("uid=fixed", true, &mut n).unwrap().is_dynamic());
    }

    #[test]
    fn domain_filter_needs_user_and_listed_domain() {
        let f = DomainFilter::new(vec![
            (true, DomainItem::Name("no.example".into())),
            (false, DomainItem::Name("example.com".into())),
        ]);
        assert!(f.admits("joe@Example.COM").unwrap());
        assert!(!f.admits("@example.com").unwrap());
        assert!(!f.admits("example.com").unwrap());
        assert!(!f.admits("joe@sub.example.com").unwrap());
        assert!(!f.admits("joe@no.example").unwrap());
        assert!(DomainFilter::default().admits("anything").unwrap());
    }

    #[test]
    fn unquoted_expansions_are_found() {
        assert_eq!(unquoted_expansion("SELECT a FROM t WHERE k='%s'"), None);
        assert_eq!(unquoted_expansion("SELECT a FROM t WHERE k=%s").as_deref(), Some("%s"));
        assert_eq!(unquoted_expansion("SELECT a FROM t WHERE k=\"%u\"").as_deref(), Some("%u"));
        assert_eq!(unquoted_expansion("SELECT '100%%' FROM t WHERE k='%s'"), None);
    }
}
