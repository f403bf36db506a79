//! Virtual alias expansion as Postfix's cleanup does it
//! (`virtual_alias_maps`, virtual(5)): one address to many, recursively,
//! within `virtual_alias_recursion_limit` and
//! `virtual_alias_expansion_limit`, with `recipient_delimiter` extensions
//! propagated per `propagate_unmatched_extensions`; and the membership
//! questions the RCPT restrictions ask (is the address an alias, is the
//! domain a `virtual_alias_domains` domain).
//!
//! Owns the algorithm and the key order; never decides a reply, never logs
//! (the SMTP wing words both as Postfix does). Sluice has no local
//! domains (no `mydestination`), so the bare `user` keys Postfix tries for
//! local domains never apply: the keys are `user+ext@domain`,
//! `user@domain`, `@domain`, and pattern tables (regexp, pcre) see only
//! the first, as in Postfix.

use std::collections::HashSet;

use super::lookup::consult;
use super::tables::{self, AddressKeys};
use super::{Config, Known, LookupError, Maps, TableError};

/// Why an address could not be expanded. Postfix defers the message in
/// each case ("4.6.0 Alias expansion error" for the limits).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AliasError {
    /// A table failed (or a directory server did not answer in time).
    #[error("{0}")]
    Lookup(TableError),
    /// More than `virtual_alias_expansion_limit` addresses.
    #[error("unreasonable virtual_alias_maps map expansion size")]
    Size,
    /// One address rewritten more than `virtual_alias_recursion_limit`
    /// times (an alias loop).
    #[error("unreasonable virtual_alias_maps map nesting")]
    Nesting,
}

impl Config {
    /// True when `virtual_alias_maps` names a table.
    pub fn has_virtual_aliases(&self) -> bool {
        !self.maps("virtual_alias_maps").is_empty()
    }

    /// True when `virtual_alias_maps` has an entry for `address` (any of
    /// its keys): what Postfix's `reject_unlisted_recipient` asks first,
    /// so an alias is a known recipient whatever its domain's class.
    pub fn is_virtual_alias_in(&self, address: &str, known: &Known) -> Result<bool, LookupError> {
        let maps = self.maps("virtual_alias_maps");
        Ok(maps.lookup_address_in(self, "virtual_alias_maps", address, known)?.is_some())
    }

    /// True when `domain` matches `virtual_alias_domains` (by default the
    /// domain names listed as keys of `virtual_alias_maps`).
    pub fn is_virtual_alias_domain_in(&self, domain: &str, known: &Known) -> Result<bool, LookupError> {
        match self.domain_lists.get("virtual_alias_domains") {
            Some(l) => l.matches_in(domain, known),
            None => Ok(false),
        }
    }

    /// Expands `address` through `virtual_alias_maps`: `None` when it is
    /// not an alias (nothing matched), else the final recipients in order,
    /// each once (compared without regard to case). An address that maps
    /// to itself (`a@x  a@x, b@x`) is kept and not expanded again.
    ///
    /// Directory tables are asked as the expansion reaches them, through
    /// their cache and breakers; their answers are added to `known`, so a
    /// decision that looked the same keys up already does not ask again.
    pub async fn expand_virtual_alias(
        &self,
        address: &str,
        known: &mut Known,
    ) -> Result<Option<Vec<String>>, AliasError> {
        let maps = self.maps("virtual_alias_maps");
        if maps.is_empty() {
            return Ok(None);
        }
        let recursion = self.int("virtual_alias_recursion_limit").max(1) as usize;
        let expansion = self.int("virtual_alias_expansion_limit").max(1) as usize;
        let propagate =
            self.list("propagate_unmatched_extensions").iter().any(|w| w.eq_ignore_ascii_case("virtual"));
        // Postfix's cleanup_map1n: the first result replaces the address
        // in its slot and is looked up again; the others are appended and
        // expanded in their turn.
        let mut addrs = vec![address.to_owned()];
        let mut fixed: HashSet<String> = HashSet::new();
        let mut matched = false;
        let mut slot = 0;
        while slot < addrs.len() {
            if addrs.len() > expansion {
                return Err(AliasError::Size);
            }
            let mut count = 0;
            loop {
                if fixed.contains(&addrs[slot].to_ascii_lowercase()) {
                    break;
                }
                if count >= recursion {
                    return Err(AliasError::Nesting);
                }
                let Some(results) = self.alias_lookup(maps, &addrs[slot], propagate, known).await? else {
                    break;
                };
                matched = true;
                let lhs = addrs[slot].clone();
                for (i, r) in results.into_iter().enumerate() {
                    if r.eq_ignore_ascii_case(&lhs) {
                        fixed.insert(lhs.to_ascii_lowercase());
                    }
                    if i == 0 {
                        addrs[slot] = r;
                    } else {
                        addrs.push(r);
                    }
                }
                count += 1;
            }
            slot += 1;
        }
        if !matched {
            return Ok(None);
        }
        let mut seen = HashSet::new();
        addrs.retain(|a| seen.insert(a.to_ascii_lowercase()));
        Ok(Some(addrs))
    }

    /// One address's entry (Postfix's mail_addr_map): the keys in order,
    /// each in every table; a match on `user@domain` for `user+ext@domain`
    /// carries the extension into each result when `propagate` says so.
    async fn alias_lookup(
        &self,
        maps: &Maps,
        address: &str,
        propagate: bool,
        known: &mut Known,
    ) -> Result<Option<Vec<String>>, AliasError> {
        let delimiters = self.string("recipient_delimiter");
        let keys = tables::address_keys(address, AddressKeys::Recipient, delimiters, false);
        let (local, _) = address.rsplit_once('@').unwrap_or((address, ""));
        let extension = tables::strip_extension(local, delimiters).map(|base| &local[base.len()..]);
        for (i, k) in keys.iter().enumerate() {
            for t in &maps.tables {
                if !k.full && t.is_pattern() {
                    continue;
                }
                let value = loop {
                    match consult(t, &k.key, known) {
                        Ok(v) => break v,
                        Err(LookupError::Failed(e)) => return Err(AliasError::Lookup(e)),
                        Err(LookupError::Ask(q)) => {
                            let answer = q.ask().await.map_err(AliasError::Lookup)?;
                            known.insert(&q, answer);
                        }
                    }
                };
                let Some(value) = value else { continue };
                // The stripped key is the second one only when an
                // extension was stripped; `@domain` never propagates.
                let ext = if i == 1 && propagate && !k.key.starts_with('@') { extension } else { None };
                let results = self.alias_results(&value, ext);
                if results.is_empty() {
                    return Err(AliasError::Lookup(TableError {
                        table: t.name().to_owned(),
                        message: format!("\"{}\" maps to no address", k.key),
                    }));
                }
                return Ok(Some(results));
            }
        }
        Ok(None)
    }

    /// A table value as addresses (Postfix's mail_addr_crunch): split on
    /// commas and white space, `<>` removed, an unqualified name completed
    /// with `@$myorigin`, the extension put back before the `@`.
    fn alias_results(&self, value: &str, extension: Option<&str>) -> Vec<String> {
        value
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(|a| a.trim().trim_start_matches('<').trim_end_matches('>'))
            .filter(|a| !a.is_empty())
            .map(|a| {
                let (local, domain) = match a.rsplit_once('@') {
                    Some((l, d)) => (l.to_owned(), d.to_owned()),
                    None => (a.to_owned(), self.string("myorigin").to_owned()),
                };
                match extension {
                    Some(ext) => format!("{local}{ext}@{domain}"),
                    None => format!("{local}@{domain}"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(main: &str, aliases: &str) -> (tempfile::TempDir, std::sync::Arc<Config>) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("virtual"), aliases).expect("write table");
        let main = format!("virtual_alias_maps = texthash:virtual\nmyorigin = origin.test\n{main}");
        let loaded = Config::from_texts(dir.path(), &main, "").expect("config loads");
        (dir, loaded.config)
    }

    fn expand(c: &Config, a: &str) -> Result<Option<Vec<String>>, AliasError> {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(c.expand_virtual_alias(a, &mut Known::default()))
    }

    fn list(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn one_to_many_recursive_with_duplicates_once() {
        let (_d, c) = config(
            "",
            "team@x.test  a@x.test, b@x.test b@x.test\nb@x.test  bob@y.test\nsales@x.test team@x.test, bob@y.test\n",
        );
        assert_eq!(expand(&c, "team@x.test").unwrap(), list(&["a@x.test", "bob@y.test"]));
        assert_eq!(expand(&c, "sales@x.test").unwrap(), list(&["a@x.test", "bob@y.test"]));
        assert_eq!(expand(&c, "nobody@x.test").unwrap(), None);
    }

    #[test]
    fn self_mapping_address_is_kept() {
        let (_d, c) = config("", "a@x.test  a@x.test, copy@y.test\n");
        assert_eq!(expand(&c, "A@x.test").unwrap(), list(&["a@x.test", "copy@y.test"]));
    }

    #[test]
    fn catch_all_and_unqualified_results() {
        let (_d, c) = config("", "@x.test  postmaster\nexact@x.test  e@y.test\n");
        assert_eq!(expand(&c, "exact@x.test").unwrap(), list(&["e@y.test"]));
        assert_eq!(expand(&c, "anyone@x.test").unwrap(), list(&["postmaster@origin.test"]));
    }

    #[test]
    fn extension_is_looked_up_then_propagated() {
        let (_d, c) = config(
            "recipient_delimiter = +",
            "u+list@x.test  l@y.test\nu@x.test  v@y.test\n@z.test  all@y.test\n",
        );
        assert_eq!(expand(&c, "u+list@x.test").unwrap(), list(&["l@y.test"]));
        assert_eq!(expand(&c, "u+other@x.test").unwrap(), list(&["v+other@y.test"]));
        // A catch-all does not carry the extension.
        assert_eq!(expand(&c, "w+e@z.test").unwrap(), list(&["all@y.test"]));
        let (_d, c) = config(
            "recipient_delimiter = +\npropagate_unmatched_extensions = canonical",
            "u@x.test  v@y.test\n",
        );
        assert_eq!(expand(&c, "u+other@x.test").unwrap(), list(&["v@y.test"]));
    }

    #[test]
    fn limits_defer_as_postfix() {
        let (_d, c) = config("virtual_alias_recursion_limit = 5", "a@x.test  b@x.test\nb@x.test  a@x.test\n");
        assert!(matches!(expand(&c, "a@x.test"), Err(AliasError::Nesting)));
        let (_d, c) = config(
            "virtual_alias_expansion_limit = 3",
            "big@x.test  1@y.test 2@y.test 3@y.test 4@y.test\nok@x.test  1@y.test 2@y.test 3@y.test\n",
        );
        assert!(matches!(expand(&c, "big@x.test"), Err(AliasError::Size)));
        assert_eq!(expand(&c, "ok@x.test").unwrap().map(|v| v.len()), Some(3));
    }

    #[test]
    fn alias_domains_default_to_the_alias_table_keys() {
        let (_d, c) = config("", "x.test  anything\nu@x.test  v@y.test\n");
        assert!(c.is_virtual_alias_domain_in("x.test", &Known::default()).unwrap());
        assert!(!c.is_virtual_alias_domain_in("y.test", &Known::default()).unwrap());
        assert!(c.is_virtual_alias_in("u@x.test", &Known::default()).unwrap());
        assert!(!c.is_virtual_alias_in("w@x.test", &Known::default()).unwrap());
    }
}
