//! Key/value tables: `texthash:` and the indexed types read from their
//! source text (`key whitespace value` lines, as postmap(1) reads them),
//! `inline:{ key=value, ... }`, and `static:`.
//!
//! Keys are case-insensitive (folded to lower case at load and at lookup,
//! as Postfix folds fixed-string lookups). The first of duplicate keys wins,
//! with a warning, as postmap does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::error::Diagnostic;
use super::super::main_cf::logical_lines;
use super::super::values::{split_list, unbrace};
use super::super::{Table, TableError, WrittenAt};
use super::Origin;

#[derive(Debug)]
pub(crate) struct TextTable {
    name: String,
    /// The source file; `None` for `inline:`.
    file: Option<PathBuf>,
    /// Key to value and the line it came from (0 for `inline:`).
    map: HashMap<String, (String, usize)>,
}

impl TextTable {
    /// Reads a postmap source file: `key value` per logical line.
    pub fn from_source(
        spec: &str,
        path: &Path,
        text: &str,
        origin: &Origin<'_>,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> Option<TextTable> {
        let mut map = HashMap::new();
        let before = errors.len();
        for ll in logical_lines(text, path, errors) {
            let t = ll.text.trim();
            let Some(split) = t.find(char::is_whitespace) else {
                errors.push(Diagnostic::param(
                    path,
                    Some(ll.line),
                    origin.param,
                    format!("expected format: key whitespace value: \"{t}\""),
                ));
                continue;
            };
            let (key, value) = (&t[..split], t[split..].trim_start());
            let key = key.to_lowercase();
            if map.contains_key(&key) {
                warnings.push(Diagnostic::param(
                    path,
                    Some(ll.line),
                    origin.param,
                    format!("duplicate entry \"{key}\": the first one is used"),
                ));
                continue;
            }
            map.insert(key, (value.to_owned(), ll.line));
        }
        (errors.len() == before).then(|| TextTable {
            name: spec.to_owned(),
            file: Some(path.to_owned()),
            map,
        })
    }

    /// `inline:{ key=value, { key = value with spaces } }`.
    pub fn inline(
        spec: &str,
        body: &str,
        origin: &Origin<'_>,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> Option<TextTable> {
        let pairs = match parse_inline_pairs(body) {
            Ok(p) => p,
            Err(e) => {
                errors.push(origin.error(format!("{spec}: {e}")));
                return None;
            }
        };
        let mut map = HashMap::new();
        for (k, v) in pairs {
            let k = k.to_lowercase();
            if map.contains_key(&k) {
                warnings
                    .push(origin.error(format!("{spec}: duplicate entry \"{k}\": the first one is used")));
                continue;
            }
            map.insert(k, (v, 0));
        }
        Some(TextTable { name: spec.to_owned(), file: None, map })
    }
}

/// Parses the `{ ... }` of `inline:` into pairs. Postfix's rules: pairs are
/// separated by commas and/or white space; a pair containing white space or
/// commas is enclosed in braces, and then white space around `=` is ignored.
pub(crate) fn parse_inline_pairs(body: &str) -> Result<Vec<(String, String)>, String> {
    let inner = body.trim();
    let inner = inner
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("expected {{ key=value ... }}, got \"{body}\""))?;
    let mut out = Vec::new();
    for item in split_list(inner)? {
        let braced = item.starts_with('{');
        let text = unbrace(&item);
        let (k, v) = text.split_once('=').ok_or_else(|| format!("missing '=' in \"{item}\""))?;
        let (k, v) = if braced { (k.trim(), v.trim()) } else { (k, v) };
        if k.is_empty() {
            return Err(format!("empty key in \"{item}\""));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

impl Table for TextTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        Ok(self.map.get(&key.to_lowercase()).map(|(v, _)| v.clone()))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn each_result(&self, visit: &mut dyn FnMut(WrittenAt<'_>, &str)) {
        let mut entries: Vec<_> = self.map.values().collect();
        entries.sort_by_key(|(_, line)| *line);
        for (value, line) in entries {
            visit(self.file.as_deref().map(|f| (f, *line)), value);
        }
    }
}

/// `static:value`: every key finds `value`.
#[derive(Debug)]
pub(crate) struct StaticTable {
    pub name: String,
    pub value: String,
}

impl Table for StaticTable {
    fn lookup(&self, _key: &str) -> Result<Option<String>, TableError> {
        Ok(Some(self.value.clone()))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn each_result(&self, visit: &mut dyn FnMut(WrittenAt<'_>, &str)) {
        visit(None, &self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin { file: Path::new("main.cf"), line: Some(3), param: "transport_maps" }
    }

    #[test]
    fn source_file_keys_fold_case_values_keep_inner_space_first_duplicate_wins() {
        let mut e = Vec::new();
        let mut w = Vec::new();
        let text = "Key first\nkey second\nother   value with  spaces  \n  continued\n# comment\n";
        let t = TextTable::from_source("hash:t", Path::new("t"), text, &origin(), &mut e, &mut w).unwrap();
        assert!(e.is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, Some(2));
        assert_eq!(t.lookup("KEY").unwrap().as_deref(), Some("first"));
        assert_eq!(t.lookup("other").unwrap().as_deref(), Some("value with  spaces    continued"));
        assert_eq!(t.lookup("missing").unwrap(), None);
    }

    #[test]
    fn a_key_without_value_is_an_error_naming_the_line() {
        let mut e = Vec::new();
        let mut w = Vec::new();
        let r = TextTable::from_source(
            "hash:t",
            Path::new("/etc/sluice/t"),
            "a b\nnovalue\n",
            &origin(),
            &mut e,
            &mut w,
        );
        assert!(r.is_none());
        assert_eq!(
            e[0].to_string(),
            "/etc/sluice/t:2: transport_maps: expected format: key whitespace value: \"novalue\""
        );
    }

    #[test]
    fn inline_quoting_rules() {
        let p = parse_inline_pairs("{ a=1, b=2 c=3,{ d = four five }, {e=x,y} }").unwrap();
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into()),
                ("d".into(), "four five".into()),
                ("e".into(), "x,y".into()),
            ]
        );
        // A value may contain '=' and be empty.
        assert_eq!(
            parse_inline_pairs("{ k=a=b, z= }").unwrap(),
            vec![("k".into(), "a=b".into()), ("z".into(), "".into())]
        );
        assert!(parse_inline_pairs("{ novalue }").is_err());
        assert!(parse_inline_pairs("a=1").is_err());
        assert!(parse_inline_pairs("{ {a = 1 }").is_err());
        assert!(parse_inline_pairs("{ =x }").is_err());
    }

    #[test]
    fn inline_tables_are_case_insensitive() {
        let mut e = Vec::new();
        let mut w = Vec::new();
        let t = TextTable::inline(
            "inline:{...}",
            "{ Example.COM=lmtp:[127.0.0.1]:24 }",
            &origin(),
            &mut e,
            &mut w,
        )
        .unwrap();
        assert_eq!(t.lookup("example.com").unwrap().as_deref(), Some("lmtp:[127.0.0.1]:24"));
    }
}
