//! `smtpd_milters` and the `milter_*` parameters as typed settings: the
//! list of milters with each one's endpoint, protocol, timeouts and
//! default action (Postfix 3.0's `{ inet:host:port, name=value, ... }`
//! per-milter form included), and the macro name lists.
//!
//! Owns the syntax and its error messages; never connects to a milter.

use std::path::PathBuf;
use std::time::Duration;

use super::values;

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MilterEndpoint {
    /// `inet:host:port` (`inet:[::1]:port` for IPv6).
    Inet { host: String, port: u16 },
    /// `unix:/path` or `local:/path`; a relative path is under
    /// queue_directory, as Postfix's chrooted smtpd reads it.
    Unix(PathBuf),
}

/// `milter_default_action`: what happens to mail when a milter is down,
/// slow or misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilterDefault {
    /// Carry on as if the milter were not configured.
    Accept,
    /// Refuse with a permanent error (`550 5.5.0`).
    Reject,
    /// Refuse with a temporary error (`451 4.7.1`): Postfix 3.7's default.
    Tempfail,
    /// Accept and put the message on hold.
    Quarantine,
    /// Answer `421` and close the connection (Postfix 3.11's default).
    Shutdown,
}

impl MilterDefault {
    /// The words `milter_default_action` accepts.
    pub const WORDS: &'static [&'static str] = &["accept", "reject", "tempfail", "quarantine", "shutdown"];

    pub fn parse(s: &str) -> Option<MilterDefault> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "accept" => MilterDefault::Accept,
            "reject" => MilterDefault::Reject,
            "tempfail" => MilterDefault::Tempfail,
            "quarantine" => MilterDefault::Quarantine,
            "shutdown" => MilterDefault::Shutdown,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            MilterDefault::Accept => "accept",
            MilterDefault::Reject => "reject",
            MilterDefault::Tempfail => "tempfail",
            MilterDefault::Quarantine => "quarantine",
            MilterDefault::Shutdown => "shutdown",
        }
    }
}

/// `milter_protocol`: the version sluice announces, and whether header
/// replies are skipped (`no_header_reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MilterProtocol {
    /// 2, 3, 4 or 6.
    pub version: u32,
    /// `no_header_reply`: offer the filter to send no reply per header.
    pub no_header_reply: bool,
}

impl MilterProtocol {
    /// Parses `6`, `6 no_header_reply`, ...: exactly one version.
    pub fn parse(s: &str) -> Result<MilterProtocol, String> {
        let mut version = None;
        let mut no_header_reply = false;
        for word in values::split_list(s)? {
            match word.as_str() {
                "2" | "3" | "4" | "6" if version.is_none() => version = word.parse().ok(),
                "2" | "3" | "4" | "6" => return Err(format!("more than one protocol version in \"{s}\"")),
                "no_header_reply" => no_header_reply = true,
                other => {
                    return Err(format!(
                        "bad protocol information \"{other}\" (expected 2, 3, 4, 6, no_header_reply)"
                    ));
                }
            }
        }
        let version = version.ok_or_else(|| format!("no protocol version in \"{s}\""))?;
        Ok(MilterProtocol { version, no_header_reply })
    }
}

/// One milter of `smtpd_milters`, with the global `milter_*` settings and
/// its own overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    /// The endpoint as written (`inet:127.0.0.1:11332`): its name in logs.
    pub name: String,
    pub endpoint: MilterEndpoint,
    pub protocol: MilterProtocol,
    pub default_action: MilterDefault,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
}

/// The global settings a milter starts from (the `milter_*` parameters).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MilterGlobals {
    pub protocol: MilterProtocol,
    pub default_action: MilterDefault,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
}

/// Parses an `smtpd_milters` value: endpoints and `{ endpoint, name=value,
/// ... }` groups, separated by commas or white space. Every problem is
/// reported, one message each.
pub(crate) fn parse_list(
    value: &str,
    globals: &MilterGlobals,
    queue_dir: &std::path::Path,
) -> Result<Vec<MilterSpec>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let items = match values::split_list(value) {
        Ok(items) => items,
        Err(e) => return Err(vec![e]),
    };
    for item in items {
        match parse_one(&item, globals, queue_dir) {
            Ok(spec) => out.push(spec),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn parse_one(item: &str, globals: &MilterGlobals, queue_dir: &std::path::Path) -> Result<MilterSpec, String> {
    let (endpoint, settings) = if item.starts_with('{') {
        let inner = values::unbrace(item);
        let parts = values::split_list(inner)?;
        let Some((first, rest)) = parts.split_first() else {
            return Err("empty { } in milter list".into());
        };
        (first.clone(), rest.to_vec())
    } else {
        (item.to_owned(), Vec::new())
    };
    let mut spec = MilterSpec {
        name: endpoint.clone(),
        endpoint: parse_endpoint(&endpoint, queue_dir)?,
        protocol: globals.protocol,
        default_action: globals.default_action,
        connect_timeout: globals.connect_timeout,
        command_timeout: globals.command_timeout,
        content_timeout: globals.content_timeout,
    };
    for setting in settings {
        let text = values::unbrace(&setting);
        let (name, value) = text
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .ok_or_else(|| {
                format!("milter {endpoint}: \"{text}\" is not name=value (write name=value, or {{ name = value }} with spaces)")
            })?;
        let time = |v: &str| {
            values::parse_time(v, 's', false).and_then(|d| {
                if d.is_zero() { Err(format!("time value \"{v}\" must be greater than zero")) } else { Ok(d) }
            })
        };
        let bad = |e: String| format!("milter {endpoint}: {name}: {e}");
        match name {
            "connect_timeout" => spec.connect_timeout = time(value).map_err(bad)?,
            "command_timeout" => spec.command_timeout = time(value).map_err(bad)?,
            "content_timeout" => spec.content_timeout = time(value).map_err(bad)?,
            "default_action" => {
                spec.default_action = MilterDefault::parse(value).ok_or_else(|| {
                    bad(format!("bad value \"{value}\" (expected {})", MilterDefault::WORDS.join(", ")))
                })?
            }
            "protocol" => spec.protocol = MilterProtocol::parse(value).map_err(bad)?,
            _ => {
                return Err(format!(
                    "milter {endpoint}: unknown setting \"{name}\" (expected connect_timeout, command_timeout, content_timeout, default_action, protocol)"
                ));
            }
        }
    }
    Ok(spec)
}

/// `inet:host:port`, `unix:path` or `local:path` (Postfix's syntax, not
/// libmilter's `inet:port@host`).
fn parse_endpoint(s: &str, queue_dir: &std::path::Path) -> Result<MilterEndpoint, String> {
    let (transport, rest) = s.split_once(':').ok_or_else(|| {
        format!("milter service \"{s}\" needs transport:endpoint (inet:host:port or unix:/path)")
    })?;
    match transport {
        "inet" => {
            if rest.contains('@') {
                return Err(format!(
                    "milter service \"{s}\": write inet:host:port (the form port@host is libmilter's)"
                ));
            }
            let (host, port) =
                values::split_host_port(rest).map_err(|e| format!("milter service \"{s}\": {e}"))?;
            let host = host.ok_or_else(|| format!("milter service \"{s}\" needs inet:host:port"))?;
            let port = values::parse_port(port).map_err(|e| format!("milter service \"{s}\": {e}"))?;
            Ok(MilterEndpoint::Inet { host: host.to_owned(), port })
        }
        "unix" | "local" => {
            if rest.is_empty() {
                return Err(format!("milter service \"{s}\" needs a socket path"));
            }
            let path = PathBuf::from(rest);
            Ok(MilterEndpoint::Unix(if path.is_relative() { queue_dir.join(path) } else { path }))
        }
        other => Err(format!(
            "invalid transport name \"{other}\" in milter service \"{s}\" (expected inet or unix)"
        )),
    }
}

/// `milter_macro_defaults`: `name=value` pairs (or `{ name = value }`),
/// used for a macro sluice has no value for. Names are stored in the
/// `{name}` form.
pub(crate) fn parse_macro_defaults(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in values::split_list(value)? {
        // `{ name = value }` is a group; `{name}=value` is a braced name.
        let text = if item.starts_with('{') && !closes_before_equals(&item) {
            values::unbrace(&item).to_owned()
        } else {
            item.clone()
        };
        let (name, v) =
            text.split_once('=').ok_or_else(|| format!("malformed default macro entry \"{item}\""))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("malformed default macro entry \"{item}\""));
        }
        let name = canonical_macro(name);
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, v.trim().to_owned()));
        }
    }
    Ok(out)
}

/// True when the `{` that opens `item` is closed right before a `=`.
fn closes_before_equals(item: &str) -> bool {
    let mut depth = 0usize;
    for (i, c) in item.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return item[i + 1..].starts_with('=');
                }
            }
            _ => {}
        }
    }
    false
}

/// A macro name in the `{name}` form Postfix looks names up by (`i` and
/// `{i}` are the same macro).
pub fn canonical_macro(name: &str) -> String {
    if name.starts_with('{') { name.to_owned() } else { format!("{{{name}}}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globals() -> MilterGlobals {
        MilterGlobals {
            protocol: MilterProtocol { version: 6, no_header_reply: false },
            default_action: MilterDefault::Tempfail,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            content_timeout: Duration::from_secs(300),
        }
    }

    fn parse(v: &str) -> Result<Vec<MilterSpec>, Vec<String>> {
        parse_list(v, &globals(), std::path::Path::new("/var/spool/sluice"))
    }

    #[test]
    fn plain_endpoints() {
        let l = parse("inet:127.0.0.1:11332, unix:/run/opendkim.sock local:private/dmarc inet:[::1]:8891")
            .unwrap();
        assert_eq!(l[0].endpoint, MilterEndpoint::Inet { host: "127.0.0.1".into(), port: 11332 });
        assert_eq!(l[1].endpoint, MilterEndpoint::Unix("/run/opendkim.sock".into()));
        assert_eq!(l[2].endpoint, MilterEndpoint::Unix("/var/spool/sluice/private/dmarc".into()));
        assert_eq!(l[3].endpoint, MilterEndpoint::Inet { host: "::1".into(), port: 8891 });
        assert_eq!(l[0].name, "inet:127.0.0.1:11332");
        assert_eq!(l[0].default_action, MilterDefault::Tempfail);
    }

    #[test]
    fn per_milter_settings_override_the_globals() {
        let l = parse(
            "{ inet:127.0.0.1:11332, connect_timeout=10s, default_action=accept, { protocol = 6 no_header_reply } }, inet:h:1",
        )
        .unwrap();
        assert_eq!(l[0].connect_timeout, Duration::from_secs(10));
        assert_eq!(l[0].default_action, MilterDefault::Accept);
        assert_eq!(l[0].protocol, MilterProtocol { version: 6, no_header_reply: true });
        assert_eq!(l[0].command_timeout, Duration::from_secs(30));
        assert_eq!(l[1].default_action, MilterDefault::Tempfail);
    }

    #[test]
    fn every_mistake_is_named() {
        let errs = parse("inet:1234@localhost smtp:x inet:h:0 { inet:h:1, default_action=maybe } { inet:h:2, speed=3 } unix:").unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs[0].contains("port@host"));
        assert!(errs[1].contains("invalid transport name \"smtp\""));
        assert!(errs[3].contains("default_action") && errs[3].contains("maybe"));
        assert!(errs[4].contains("unknown setting \"speed\""));
        assert!(parse("{ inet:h:1, command_timeout=0 }").unwrap_err()[0].contains("greater than zero"));
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(MilterProtocol::parse("6").unwrap().version, 6);
        assert!(MilterProtocol::parse("2 no_header_reply").unwrap().no_header_reply);
        assert!(MilterProtocol::parse("5").is_err());
        assert!(MilterProtocol::parse("2 6").is_err());
        assert!(MilterProtocol::parse("no_header_reply").is_err());
    }

    #[test]
    fn macro_defaults() {
        let d = parse_macro_defaults("auth_type=none, { {daemon_addr} = 192.0.2.1 }, i=x, {i}=y").unwrap();
        assert_eq!(
            d,
            vec![
                ("{auth_type}".into(), "none".into()),
                ("{daemon_addr}".into(), "192.0.2.1".into()),
                ("{i}".into(), "x".into()),
            ]
        );
        assert!(parse_macro_defaults("novalue").is_err());
    }
}
