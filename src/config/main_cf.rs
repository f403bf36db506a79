//! The `main.cf` reader: Postfix's logical-line rules and `name = value`
//! entries, producing raw name → (value, file:line). Also the logical-line
//! reader shared by lookup-table source files, which follow the same rules.
//!
//! Owns syntax only: no expansion, no types, no knowledge of which names
//! exist (that is `params.rs` and the loader). Never fails on the first
//! problem; every syntax error is reported with its file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::Diagnostic;

/// One logical line: physical lines joined (continuations), with the number
/// of the first physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    pub line: usize,
    pub text: String,
}

/// Splits `text` into logical lines as Postfix's `readllines()` does:
/// empty lines, white-space-only lines and lines whose first non-white-space
/// character is `#` are ignored (also between a line and its continuation);
/// a line that starts with white space continues the previous logical line.
/// The newline is removed and the rest kept as written, as Postfix does
/// (postconf prints values with white space runs collapsed; so does
/// `sluice config`). A continuation with nothing to continue is an error
/// (Postfix only warns and drops it, which would silently ignore a setting).
pub(crate) fn logical_lines(text: &str, file: &Path, errors: &mut Vec<Diagnostic>) -> Vec<LogicalLine> {
    let mut out: Vec<LogicalLine> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let body = line.trim_start();
        if body.trim_end().is_empty() || body.starts_with('#') {
            continue;
        }
        if line.len() != body.len() {
            // Starts with white space: a continuation.
            match out.last_mut() {
                Some(prev) => prev.text.push_str(line),
                None => errors.push(Diagnostic::at(
                    file,
                    lineno,
                    format!("logical line must not start with white space: \"{}\"", line.trim_end()),
                )),
            }
            continue;
        }
        out.push(LogicalLine { line: lineno, text: line.to_owned() });
    }
    for l in &mut out {
        l.text.truncate(l.text.trim_end().len());
    }
    out
}

/// Collapses runs of white space to one space, as postconf prints values.
pub fn normalize_space(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value as written in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawValue {
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// Parsed `main.cf`: each name's last definition (later definitions win, as
/// in Postfix), in name order.
#[derive(Debug, Clone, Default)]
pub(crate) struct MainCf {
    pub params: BTreeMap<String, RawValue>,
}

/// Parses `main.cf` text. Syntax errors go to `errors`; a name defined twice
/// is a warning naming both lines (Postfix warns "overriding earlier entry").
pub(crate) fn parse(
    text: &str,
    file: &Path,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> MainCf {
    let mut params: BTreeMap<String, RawValue> = BTreeMap::new();
    for ll in logical_lines(text, file, errors) {
        match split_assignment(&ll.text) {
            Some((name, _)) if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) => {
                // A byte order mark from a Windows editor, or a non-breaking
                // space pasted from a web page: the name would be unknown,
                // and the warning would show nothing wrong with it.
                let hint = if c == '\u{feff}' && ll.line == 1 {
                    " (the file starts with a UTF-8 byte order mark; save it without one)"
                } else {
                    ""
                };
                errors.push(Diagnostic::at(
                    file,
                    ll.line,
                    format!(
                        "parameter name \"{}\" contains the character U+{:04X}{hint}",
                        name.escape_default(),
                        u32::from(c)
                    ),
                ));
            }
            Some((name, value)) => {
                if let Some(prev) = params.get(name) {
                    warnings.push(Diagnostic::param(
                        file,
                        Some(ll.line),
                        name,
                        format!("overrides the earlier definition at line {}", prev.line),
                    ));
                }
                params.insert(
                    name.to_owned(),
                    RawValue { value: value.to_owned(), file: file.to_path_buf(), line: ll.line },
                );
            }
            None => errors.push(Diagnostic::at(
                file,
                ll.line,
                format!("missing '=' after parameter name: \"{}\"", ll.text),
            )),
        }
    }
    MainCf { params }
}

/// Splits `name = value` (white space around `=` optional). The name is one
/// word; the value is the rest, trimmed. None when there is no `=` or no
/// name, or the name contains white space.
pub(crate) fn split_assignment(text: &str) -> Option<(&str, &str)> {
    let (name, value) = text.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (MainCf, Vec<Diagnostic>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let m = parse(text, Path::new("main.cf"), &mut errors, &mut warnings);
        assert!(errors.is_empty(), "{errors:?}");
        (m, warnings)
    }

    #[test]
    fn continuation_lines_join_as_written_and_skip_comments() {
        let (m, _) = parse_ok("relayhost = a   \n    b  \n  # comment inside\n\n   c\nmyorigin=x\n");
        assert_eq!(m.params["relayhost"].value, "a       b     c");
        assert_eq!(normalize_space(&m.params["relayhost"].value), "a b c");
        assert_eq!(m.params["relayhost"].line, 1);
        assert_eq!(m.params["myorigin"].value, "x");
        assert_eq!(m.params["myorigin"].line, 6);
    }

    #[test]
    fn hash_inside_a_value_is_not_a_comment() {
        let (m, _) = parse_ok("mynetworks = 10.0.0.0/8 # not a comment\n");
        assert_eq!(m.params["mynetworks"].value, "10.0.0.0/8 # not a comment");
    }

    #[test]
    fn later_definitions_win_with_a_warning() {
        let (m, w) = parse_ok("smtpd_banner = one\nsmtpd_banner = two\n");
        assert_eq!(m.params["smtpd_banner"].value, "two");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].to_string(), "main.cf:2: smtpd_banner: overrides the earlier definition at line 1");
    }

    #[test]
    fn empty_values_and_equals_in_values() {
        let (m, _) = parse_ok("relayhost =\nmail_name = x = y\nmyorigin=   \n");
        assert_eq!(m.params["relayhost"].value, "");
        assert_eq!(m.params["mail_name"].value, "x = y");
        assert_eq!(m.params["myorigin"].value, "");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        parse(
            "  leading = x\nok = 1\nno_equals_here\n",
            Path::new("/etc/sluice/main.cf"),
            &mut errors,
            &mut warnings,
        );
        let text: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "/etc/sluice/main.cf:1: logical line must not start with white space: \"  leading = x\"",
                "/etc/sluice/main.cf:3: missing '=' after parameter name: \"no_equals_here\"",
            ]
        );
    }

    #[test]
    fn a_line_starting_with_equals_is_not_a_continuation() {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let m = parse("mail_name\n=x\n", Path::new("main.cf"), &mut errors, &mut warnings);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, Some(1));
        assert_eq!(errors[1].line, Some(2));
        assert!(m.params.is_empty());
    }
}
