//! The `*.cf` files of directory tables (`ldap:/etc/sluice/users.cf`,
//! `pgsql:`, `mysql:`, `sqlite:`): `name = value` lines with main.cf's
//! logical-line rules, as Postfix's cfg_parser reads them (no `$name`
//! expansion; a later definition wins).
//!
//! Owns the syntax, the list of parameter names each table type knows
//! (ldap_table(5), pgsql_table(5), mysql_table(5), sqlite_table(5), plus
//! the undocumented ones Postfix reads), and typed reads that report a bad
//! value with the file, line and parameter. A name the type does not know
//! is an error, so a misspelt `serverhost` is found at load instead of
//! silently using `localhost`. Never connects anywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::super::error::Diagnostic;
use super::super::super::main_cf::{logical_lines, split_assignment};
use super::Kind;

/// Parameters of every SQL table type: the query and its results.
const SQL_COMMON: &[&str] = &[
    "query",
    "result_format",
    "expansion_limit",
    "domain",
    // Before Postfix 2.2 the query was built from these; still honoured
    // when `query` is not set.
    "select_field",
    "table",
    "where_field",
    "additional_conditions",
];

/// Names each type knows; anything else is an error.
fn known(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Ldap => &[
            "server_host",
            "server_port",
            "timeout",
            "search_base",
            "query_filter",
            "result_format",
            "result_filter",
            "domain",
            "result_attribute",
            "special_result_attribute",
            "terminal_result_attribute",
            "leaf_result_attribute",
            "scope",
            "bind",
            "bind_dn",
            "bind_pw",
            "cache",
            "cache_expiry",
            "cache_size",
            "recursion_limit",
            "expansion_limit",
            "size_limit",
            "dereference",
            "chase_referrals",
            "version",
            "debuglevel",
            "sasl_mechs",
            "sasl_realm",
            "sasl_authz_id",
            "sasl_minssf",
            "start_tls",
            "tls_ca_cert_dir",
            "tls_ca_cert_file",
            "tls_cert",
            "tls_key",
            "tls_require_cert",
            "tls_random_file",
            "tls_cipher_suite",
        ],
        Kind::Pgsql => &[
            "hosts",
            "user",
            "password",
            "dbname",
            "encoding",
            "retry_interval",
            "idle_interval",
            "select_function",
        ],
        Kind::Mysql => &[
            "hosts",
            "user",
            "password",
            "dbname",
            "charset",
            "retry_interval",
            "idle_interval",
            "option_file",
            "option_group",
            "tls_key_file",
            "tls_cert_file",
            "tls_CAfile",
            "tls_CApath",
            "tls_ciphers",
            "tls_verify_cert",
            "require_result_set",
        ],
        Kind::Sqlite => &["dbpath"],
    }
}

/// One parsed `.cf` file.
#[derive(Debug, Clone)]
pub(crate) struct CfFile {
    path: PathBuf,
    /// The main.cf parameter that named the table, for messages.
    param: String,
    /// Name → (value, line).
    values: HashMap<String, (String, usize)>,
}

impl CfFile {
    /// Parses `text` read from `path` for a table of type `kind`. Syntax
    /// errors and unknown names go to `errors` (all of them); a name
    /// defined twice is a warning (the later one is used, as in Postfix).
    pub fn parse(
        kind: Kind,
        path: &Path,
        text: &str,
        param: &str,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> CfFile {
        let mut values: HashMap<String, (String, usize)> = HashMap::new();
        let names = known(kind);
        let sql = kind != Kind::Ldap;
        for ll in logical_lines(text, path, errors) {
            let Some((name, value)) = split_assignment(&ll.text) else {
                errors.push(Diagnostic::at(
                    path,
                    ll.line,
                    format!("missing '=' after parameter name: \"{}\"", ll.text),
                ));
                continue;
            };
            if !(names.contains(&name) || sql && SQL_COMMON.contains(&name)) {
                errors.push(Diagnostic::param(
                    path,
                    Some(ll.line),
                    name,
                    format!(
                        "unknown parameter for a {} table (see {}_table(5))",
                        kind.as_str(),
                        kind.as_str()
                    ),
                ));
                continue;
            }
            if let Some((_, first)) = values.get(name) {
                warnings.push(Diagnostic::param(
                    path,
                    Some(ll.line),
                    name,
                    format!("overrides the earlier definition at line {first}"),
                ));
            }
            values.insert(name.to_owned(), (value.to_owned(), ll.line));
        }
        CfFile { path: path.to_path_buf(), param: param.to_owned(), values }
    }

    /// The value of `name` when the file sets it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(v, _)| v.as_str())
    }

    /// The value of `name`, or `default`.
    pub fn str<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// True when the file sets `name`.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A problem with `name`, at the line that sets it (or the file).
    pub fn diag(&self, name: &str, message: impl Into<String>) -> Diagnostic {
        let line = self.values.get(name).map(|(_, l)| *l);
        Diagnostic::param(&self.path, line, name, message)
    }

    /// A problem with the file as a whole, named by the main.cf parameter
    /// that uses it.
    pub fn file_diag(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::param(&self.path, None, self.param.clone(), message)
    }

    /// An integer (`cfg_get_int`): a decimal number of at least `min`.
    pub fn int(&self, name: &str, default: i64, min: i64, errors: &mut Vec<Diagnostic>) -> i64 {
        let Some(v) = self.get(name) else { return default };
        match v.trim().parse::<i64>() {
            Ok(i) if i >= min => i,
            Ok(i) => {
                errors.push(self.diag(name, format!("value {i} is below the minimum {min}")));
                default
            }
            Err(_) => {
                errors.push(self.diag(name, format!("bad numerical value \"{v}\"")));
                default
            }
        }
    }

    /// A boolean (`cfg_get_bool`): `yes` or `no`, in any case.
    pub fn bool(&self, name: &str, default: bool, errors: &mut Vec<Diagnostic>) -> bool {
        let Some(v) = self.get(name) else { return default };
        match v.trim().to_ascii_lowercase().as_str() {
            "yes" => true,
            "no" => false,
            _ => {
                errors.push(self.diag(name, format!("bad boolean value \"{v}\" (expected yes or no)")));
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: Kind, text: &str) -> (CfFile, Vec<String>, Vec<String>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let cf = CfFile::parse(
            kind,
            Path::new("/etc/sluice/t.cf"),
            text,
            "relay_recipient_maps",
            &mut errors,
            &mut warnings,
        );
        let s = |v: Vec<Diagnostic>| v.iter().map(|d| d.to_string()).collect();
        (cf, s(errors), s(warnings))
    }

    #[test]
    fn values_follow_main_cf_line_rules() {
        let (cf, errors, _) = parse(
            Kind::Ldap,
            "# users\nserver_host = ldap://a:389\n   ldap://b:389\nsearch_base = dc=example, dc=com\nbind = no\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(cf.get("server_host"), Some("ldap://a:389   ldap://b:389"));
        assert_eq!(cf.get("search_base"), Some("dc=example, dc=com"));
        assert_eq!(cf.str("scope", "sub"), "sub");
    }

    #[test]
    fn unknown_names_are_errors_with_file_line_and_name() {
        let (_, errors, _) = parse(Kind::Pgsql, "hosts = 127.0.0.1\nserver_host = x\nquery = SELECT 1\n");
        assert_eq!(
            errors,
            vec!["/etc/sluice/t.cf:2: server_host: unknown parameter for a pgsql table (see pgsql_table(5))"]
        );
        let (_, errors, _) = parse(Kind::Ldap, "query = x\n");
        assert_eq!(errors.len(), 1, "query is an SQL parameter, not LDAP's");
    }

    #[test]
    fn typed_values_report_bad_input() {
        let (cf, _, _) = parse(Kind::Ldap, "timeout = soon\nstart_tls = maybe\nsize_limit = -1\n");
        let mut errors = Vec::new();
        assert_eq!(cf.int("timeout", 10, 0, &mut errors), 10);
        assert!(!cf.bool("start_tls", false, &mut errors));
        assert_eq!(cf.int("size_limit", 0, 0, &mut errors), 0);
        let text: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "/etc/sluice/t.cf:1: timeout: bad numerical value \"soon\"",
                "/etc/sluice/t.cf:2: start_tls: bad boolean value \"maybe\" (expected yes or no)",
                "/etc/sluice/t.cf:3: size_limit: value -1 is below the minimum 0",
            ]
        );
    }

    #[test]
    fn a_later_definition_wins_with_a_warning() {
        let (cf, _, warnings) = parse(Kind::Sqlite, "dbpath = a\ndbpath = b\n");
        assert_eq!(cf.get("dbpath"), Some("b"));
        assert_eq!(warnings, vec!["/etc/sluice/t.cf:2: dbpath: overrides the earlier definition at line 1"]);
    }
}
