//! The `master.cf` reader, as master(5) describes it: one service per
//! logical line, `service type private unpriv chroot wakeup maxproc command
//! args`, continuation lines starting with white space, comments, and
//! `-o name=value` / `-o { name = value }` overrides.
//!
//! Owns syntax only. Which services sluice uses (inet/smtpd listeners,
//! lmtp/smtp transports) and what their overrides mean is decided by the
//! loader. Never opens sockets: service addresses are only parsed.

use std::path::Path;

use super::error::Diagnostic;
use super::main_cf::logical_lines;
use super::values::unbrace;

/// One master.cf service line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub line: usize,
    pub service: String,
    pub kind: String,
    /// `maxproc`: None for `-` (default_process_limit); 0 means no limit.
    pub maxproc: Option<u32>,
    pub command: String,
    /// Command arguments other than `-o` overrides.
    pub args: Vec<String>,
    /// `-o name=value` overrides, in order (a later one wins).
    pub overrides: Vec<(String, String)>,
}

const TYPES: &[&str] = &["inet", "unix", "unix-dgram", "fifo", "pass"];

/// Parses master.cf text; every syntax error is reported with its line.
pub(crate) fn parse(text: &str, file: &Path, errors: &mut Vec<Diagnostic>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for ll in logical_lines(text, file, errors) {
        let err = |m: String| Diagnostic::at(file, ll.line, m);
        let tokens = match tokenize(&ll.text) {
            Ok(t) => t,
            Err(m) => {
                errors.push(err(m));
                continue;
            }
        };
        if tokens.len() < 8 {
            errors.push(err(format!(
                "expected service type private unpriv chroot wakeup maxproc command, got {} field(s)",
                tokens.len()
            )));
            continue;
        }
        let (service, kind) = (&tokens[0], &tokens[1]);
        let mut bad = Vec::new();
        if !TYPES.contains(&kind.as_str()) {
            bad.push(format!("unknown service type \"{kind}\" (expected one of {})", TYPES.join(", ")));
        }
        for (i, field) in [(2, "private"), (3, "unpriv"), (4, "chroot")] {
            if !matches!(tokens[i].as_str(), "y" | "n" | "-") {
                bad.push(format!("bad {field} field \"{}\" (expected y, n or -)", tokens[i]));
            }
        }
        let wakeup = tokens[5].trim_end_matches('?');
        if wakeup != "-" && wakeup.parse::<u32>().is_err() {
            bad.push(format!("bad wakeup field \"{}\"", tokens[5]));
        }
        let maxproc = match tokens[6].as_str() {
            "-" => None,
            m => match m.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    bad.push(format!("bad maxproc field \"{m}\" (expected a number or -)"));
                    None
                }
            },
        };
        let command = tokens[7].clone();
        let mut args = Vec::new();
        let mut overrides = Vec::new();
        let mut it = tokens[8..].iter();
        while let Some(tok) = it.next() {
            let assignment = if tok == "-o" {
                match it.next() {
                    Some(a) => a.as_str(),
                    None => {
                        bad.push("-o without name=value".into());
                        break;
                    }
                }
            } else if let Some(a) = tok.strip_prefix("-o") {
                a
            } else {
                args.push(tok.clone());
                continue;
            };
            let braced = assignment.starts_with('{');
            let inner = unbrace(assignment);
            match inner.split_once('=') {
                Some((n, v)) if !n.trim().is_empty() && !n.trim().contains(char::is_whitespace) => {
                    let (n, v) = if braced { (n.trim(), v.trim()) } else { (n, v) };
                    overrides.push((n.to_owned(), v.to_owned()));
                }
                _ => bad.push(format!(
                    "bad -o option \"{assignment}\" (expected name=value or {{ name = value }})"
                )),
            }
        }
        if out.iter().any(|e| e.service == *service && e.kind == *kind) {
            bad.push(format!("duplicate entry for service {service} type {kind}"));
        }
        if !bad.is_empty() {
            errors.extend(bad.into_iter().map(err));
            continue;
        }
        out.push(Entry {
            line: ll.line,
            service: service.clone(),
            kind: kind.clone(),
            maxproc,
            command,
            args,
            overrides,
        });
    }
    out
}

/// Splits on white space, keeping `{ ... }` groups (Postfix 3.0) together.
fn tokenize(s: &str) -> Result<Vec<String>, String> {
    super::values::split_grouped(s, char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_LIKE: &str = "\
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
# ==========================================================================
smtp      inet  n       -       y       -       -       smtpd
127.0.0.1:2525 inet n   -       n       -       10      smtpd
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o { smtpd_banner = $myhostname ESMTP test }
#  -o commented=out
pickup    unix  n       -       y       60      1       pickup
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
lmtp      unix  -       -       n       -       -       lmtp
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
";

    #[test]
    fn parses_services_overrides_and_continuations() {
        let mut errors = Vec::new();
        let e = parse(DEBIAN_LIKE, Path::new("master.cf"), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].service, "smtp");
        assert_eq!(e[0].maxproc, None);
        assert_eq!(e[1].service, "127.0.0.1:2525");
        assert_eq!(e[1].maxproc, Some(10));
        assert_eq!(e[1].line, 5);
        assert_eq!(
            e[1].overrides,
            vec![
                ("smtpd_recipient_restrictions".to_owned(), "permit_mynetworks,reject".to_owned()),
                ("smtpd_banner".to_owned(), "$myhostname ESMTP test".to_owned()),
            ]
        );
        assert_eq!(e[3].maxproc, Some(1));
        assert_eq!(e[4].overrides, vec![("syslog_name".to_owned(), "postfix/$service_name".to_owned())]);
        assert_eq!(e[6].command, "pipe");
        assert_eq!(e[6].args.len(), 5);
    }

    #[test]
    fn errors_name_the_line() {
        let mut errors = Vec::new();
        let text = "smtp inet n - y - - smtpd\nshort inet n\nx tcp n - y - - smtpd\ny inet n - y - many smtpd\nsmtp inet n - y - - smtpd\nz inet n - n - - smtpd -o nothing\n";
        parse(text, Path::new("/etc/sluice/master.cf"), &mut errors);
        let lines: Vec<Option<usize>> = errors.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(4), Some(5), Some(6)], "{errors:?}");
        assert!(errors[0].to_string().starts_with("/etc/sluice/master.cf:2: expected service"));
        assert!(errors[3].message.contains("duplicate"));
    }
}
