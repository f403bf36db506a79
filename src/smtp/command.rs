//! Reading a command line before smtp-proto parses it, and the replies for
//! what it cannot parse: the verb (for the forbidden-command check and the
//! `disconnect from` counters), argument checks smtp-proto skips, the
//! address-literal stand-in (smtp-proto reads dot-atom domains only), and
//! `<Postmaster>`. Pure functions over bytes; the session's loop calls
//! them.

use std::borrow::Cow;

use crate::reply::{Reply, Status};

/// The command word of a line, upper-cased (for the forbidden list).
pub(super) fn verb(line: &[u8]) -> String {
    let end = line.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(64)]).to_ascii_uppercase()
}

/// The commands sluice implements, as `Request::name()` spells them.
pub(super) const KNOWN_VERBS: [&str; 13] = [
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "HELP", "STARTTLS",
    "AUTH",
];

/// The `disconnect from` counter of a command (`MAIL` counts as `mail`).
pub(super) fn counter(name: &str) -> &'static str {
    match name {
        "EHLO" => "ehlo",
        "HELO" => "helo",
        "MAIL" => "mail",
        "RCPT" => "rcpt",
        "DATA" => "data",
        "BDAT" => "bdat",
        "RSET" => "rset",
        "NOOP" => "noop",
        "QUIT" => "quit",
        "VRFY" => "vrfy",
        "HELP" => "help",
        "STARTTLS" => "starttls",
        "AUTH" => "auth",
        _ => "unknown",
    }
}

/// Commands RFC 5321 defines without arguments (NOOP and HELP take an
/// optional string).
pub(super) fn takes_no_arguments(name: &str) -> bool {
    matches!(name, "DATA" | "RSET" | "QUIT" | "STARTTLS")
}

/// Whether anything but white space follows the verb on a command line.
pub(super) fn has_arguments(line: &[u8]) -> bool {
    let end = line.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(line.len());
    line[end..].iter().any(|b| !b.is_ascii_whitespace())
}

/// `smtpd_forbidden_commands`: HTTP verbs and mail headers sent to the
/// SMTP port mean the client is not an MTA (or is being used to attack us).
pub(super) fn is_forbidden(verb: &str) -> bool {
    matches!(verb, "CONNECT" | "GET" | "POST" | "PUT" | "HEAD")
        || (verb.len() > 1
            && verb.ends_with(':')
            && verb[..verb.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The domain an address literal stands in for while smtp-proto parses a
/// path: under `.invalid` (RFC 2606), so it is never a real one.
const LITERAL_STAND_IN: &str = "address-literal.invalid";

/// For a `MAIL FROM:` or `RCPT TO:` line whose path ends in an address
/// literal (`<user@[192.0.2.1]>`, `<user@[IPv6:2001:db8::1]>`): the line
/// with [`LITERAL_STAND_IN`] in its place, and the literal. Only the path
/// (up to its `>`) is looked at, never the parameters after it. Anything
/// that is not an IP address between the brackets is left for smtp-proto
/// to refuse.
pub(super) fn stand_in_literal(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return None;
    }
    let path_end = memchr::memchr(b'>', line)?;
    let at = line[..path_end].windows(2).position(|w| w == b"@[")?;
    let close = at + 2 + line[at + 2..path_end].iter().position(|&b| b == b']')?;
    if close + 1 != path_end {
        return None;
    }
    let literal = std::str::from_utf8(&line[at + 1..=close]).ok()?;
    super::policy::address_literal(literal)?;
    let mut patched = line[..=at].to_vec();
    patched.extend_from_slice(LITERAL_STAND_IN.as_bytes());
    patched.extend_from_slice(&line[close + 1..]);
    Some((patched, literal.to_owned()))
}

/// Puts the address literal back where [`stand_in_literal`] took it out.
pub(super) fn put_back_literal(
    request: &mut Result<smtp_proto::Request<Cow<'_, str>>, smtp_proto::Error>,
    literal: &str,
) {
    let address = match request {
        Ok(smtp_proto::Request::Mail { from }) => &mut from.address,
        Ok(smtp_proto::Request::Rcpt { to }) => &mut to.address,
        _ => return,
    };
    if let Some(local) = address.strip_suffix(LITERAL_STAND_IN).filter(|l| l.ends_with('@')) {
        *address = Cow::Owned(format!("{local}{literal}"));
    }
}

/// True when the path of a `RCPT TO:` line is `<postmaster>` in any case.
pub(super) fn names_postmaster(line: &[u8]) -> bool {
    line.iter()
        .position(|&b| b == b'<')
        .and_then(|at| line.get(at + 1..at + 12))
        .is_some_and(|path| path.eq_ignore_ascii_case(b"postmaster>"))
}

/// Bytes as a log-safe string (the one filter, see [`crate::reply::printable`]).
pub(super) fn printable(bytes: &[u8]) -> String {
    crate::reply::printable_bytes(bytes, crate::reply::IN_TEXT)
}

/// The reply for a line smtp-proto could not parse.
pub(super) fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(502, Status(5, 5, 2), "Error: command not recognized"),
        E::InvalidSenderAddress => Reply::new(501, Status(5, 1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, Status(5, 1, 3), "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, Status(5, 5, 4), format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, Status(5, 5, 4), format!("Bad {param} parameter syntax"))
        }
        E::UnsupportedParameter { param } => {
            Reply::new(555, Status(5, 5, 4), format!("Unsupported option: {param}"))
        }
        _ => Reply::new(500, Status(5, 5, 2), "Error: bad syntax"),
    }
}
