//! The results of the sender authentication checks as sluice's own plain
//! types, and their two renderings: the `Authentication-Results:` header
//! (RFC 8601) added to the message, and the one-line summary in the log.
//!
//! Owns the mapping from `mail-auth`'s outputs to RFC 8601 result words
//! and the header's syntax (quoting of values and comments, folding). Pure:
//! no DNS, no clock, no I/O; never decides what a result does to the
//! message (that is `policy.rs`).

use std::fmt::Write as _;

use mail_auth::{DkimResult, DmarcResult, Error};

/// An RFC 8601 result value (section 2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    None,
    Pass,
    Fail,
    SoftFail,
    Neutral,
    TempError,
    PermError,
    Policy,
}

impl AuthResult {
    /// The word in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::None => "none",
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
            AuthResult::Policy => "policy",
        }
    }

    /// From an SPF result.
    pub fn of_spf(r: mail_auth::SpfResult) -> AuthResult {
        match r {
            mail_auth::SpfResult::Pass => AuthResult::Pass,
            mail_auth::SpfResult::Fail => AuthResult::Fail,
            mail_auth::SpfResult::SoftFail => AuthResult::SoftFail,
            mail_auth::SpfResult::Neutral => AuthResult::Neutral,
            mail_auth::SpfResult::TempError => AuthResult::TempError,
            mail_auth::SpfResult::PermError => AuthResult::PermError,
            mail_auth::SpfResult::None => AuthResult::None,
        }
    }

    /// From a DKIM or ARC result, with the reason for a non-pass. A body
    /// hash that does not match is `fail` (RFC 6376 6.1.3: the signature
    /// does not verify), where `mail-auth` says `neutral`.
    pub fn of_dkim(r: &DkimResult) -> (AuthResult, Option<String>) {
        match r {
            DkimResult::Pass => (AuthResult::Pass, None),
            DkimResult::None => (AuthResult::None, None),
            DkimResult::Neutral(e) if is_body_hash(e) => (AuthResult::Fail, Some(reason(e))),
            DkimResult::Neutral(e) => (AuthResult::Neutral, Some(reason(e))),
            DkimResult::Fail(e) => (AuthResult::Fail, Some(reason(e))),
            DkimResult::PermError(e) => (AuthResult::PermError, Some(reason(e))),
            DkimResult::TempError(e) => (AuthResult::TempError, Some(reason(e))),
        }
    }

    /// From a DMARC result.
    pub fn of_dmarc(r: &DmarcResult) -> AuthResult {
        match r {
            DmarcResult::Pass => AuthResult::Pass,
            DmarcResult::Fail(_) => AuthResult::Fail,
            DmarcResult::TempError(_) => AuthResult::TempError,
            DmarcResult::PermError(_) => AuthResult::PermError,
            DmarcResult::None => AuthResult::None,
        }
    }
}

fn is_body_hash(e: &Error) -> bool {
    matches!(
        e,
        Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)
            | Error::Arc(mail_auth::arc::ArcError::FailedBodyHashMatch)
    )
}

/// A short reason for a header comment and the log, in sluice's words
/// where the library's are long.
pub fn reason(e: &Error) -> String {
    use mail_auth::DnsError;
    use mail_auth::dkim::DkimError;
    match e {
        Error::Dkim(DkimError::FailedBodyHashMatch)
        | Error::Arc(mail_auth::arc::ArcError::FailedBodyHashMatch) => "body hash did not verify".into(),
        Error::Dkim(DkimError::SignatureExpired) => "signature expired".into(),
        Error::Dkim(DkimError::RevokedPublicKey) => "key revoked".into(),
        Error::Crypto(mail_auth::common::crypto::CryptoError::FailedVerification) => {
            "signature did not verify".into()
        }
        Error::Dns(DnsError::Resolver(_)) => "DNS error".into(),
        Error::Dns(DnsError::RecordNotFound(_)) => "no key".into(),
        Error::Dns(DnsError::InvalidRecordType) | Error::ParseError => "bad key record".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// Which SPF identity a check was about (RFC 7208 2.3, 2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The MAIL FROM address.
    MailFrom(String),
    /// The HELO/EHLO name (also the identity of a null reverse path).
    Helo(String),
}

/// One SPF check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: AuthResult,
    pub identity: Identity,
    /// The domain whose record was evaluated.
    pub domain: String,
    /// The record's `exp=` text, for a reject reply.
    pub explanation: Option<String>,
    /// Why it is a temperror or permerror, when sluice knows better than
    /// the result word (a timeout).
    pub note: Option<String>,
}

/// The SPF checks of one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpfReport {
    /// The MAIL FROM identity; None for a null reverse path.
    pub mail_from: Option<SpfCheck>,
    /// The HELO identity; None when the HELO name is not a domain name.
    pub helo: Option<SpfCheck>,
}

impl SpfReport {
    /// The check DMARC and the policy use: MAIL FROM, or the HELO identity
    /// for a null reverse path (RFC 7208 2.4).
    pub fn decisive(&self) -> Option<&SpfCheck> {
        self.mail_from.as_ref().or(self.helo.as_ref())
    }
}

/// One DKIM signature's check (or the absence of any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    pub result: AuthResult,
    pub reason: Option<String>,
    /// `d=`, `s=`, `i=` of the signature; empty for `dkim=none`.
    pub domain: String,
    pub selector: String,
    pub auid: String,
    /// The first 8 characters of the signature's `b=` in base64, telling
    /// signatures apart (RFC 6008).
    pub b_prefix: String,
}

/// The ARC chain's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcCheck {
    pub result: AuthResult,
    pub reason: Option<String>,
    /// The `d=` of each ARC-Seal, oldest first.
    pub sealers: Vec<String>,
}

/// A DMARC policy as published (after `t=y` lowered it one step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The DMARC evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: AuthResult,
    pub reason: Option<String>,
    /// The RFC 5322.From domain (empty when the message has none usable).
    pub from_domain: String,
    pub policy: DmarcPolicy,
}

/// Everything checked for one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub spf: Option<SpfReport>,
    /// Empty when DKIM was not checked; one `none` entry for an unsigned
    /// message.
    pub dkim: Vec<DkimCheck>,
    pub arc: Option<ArcCheck>,
    pub dmarc: Option<DmarcCheck>,
}

impl Report {
    /// The `Authentication-Results:` header, CRLF-terminated, one method
    /// result per folded line. `disposition` is what sluice did about
    /// DMARC (`none`, `quarantine` for a hold, `reject`), shown as `dis=`.
    pub fn header(&self, authserv_id: &str, disposition: &str) -> String {
        let mut h = format!("Authentication-Results: {}", pvalue(authserv_id));
        let start = h.len();
        for line in self.method_results(Some(disposition)) {
            h.push_str(";\r\n\t");
            h.push_str(&line);
        }
        if h.len() == start {
            h.push_str("; none");
        }
        h.push_str("\r\n");
        h
    }

    /// The results on one line, without comments, for the log.
    pub fn summary(&self) -> String {
        let lines = self.method_results(None);
        if lines.is_empty() { "none".into() } else { lines.join(", ") }
    }

    /// One `method=result [(comment)] ptype.property=value ...` per result;
    /// comments only when `disposition` is given (the header).
    fn method_results(&self, disposition: Option<&str>) -> Vec<String> {
        let comments = disposition.is_some();
        let mut out = Vec::new();
        if let Some(spf) = &self.spf {
            for check in [&spf.mail_from, &spf.helo].into_iter().flatten() {
                let mut s = format!("spf={}", check.result.as_str());
                if comments && let Some(c) = spf_comment(check) {
                    let _ = write!(s, " ({})", comment(&c));
                }
                match &check.identity {
                    Identity::MailFrom(addr) => {
                        let _ = write!(s, " smtp.mailfrom={}", pvalue(addr));
                    }
                    Identity::Helo(name) => {
                        let _ = write!(s, " smtp.helo={}", pvalue(name));
                    }
                }
                out.push(s);
            }
        }
        for d in &self.dkim {
            let mut s = format!("dkim={}", d.result.as_str());
            if comments && let Some(r) = &d.reason {
                let _ = write!(s, " ({})", comment(r));
            }
            if !d.domain.is_empty() {
                if d.auid.is_empty() || !comments {
                    let _ = write!(s, " header.d={}", pvalue(&d.domain));
                } else {
                    let _ = write!(s, " header.i={}", pvalue(&d.auid));
                }
                if comments {
                    let _ = write!(s, " header.s={} header.b={}", pvalue(&d.selector), pvalue(&d.b_prefix));
                }
            }
            out.push(s);
        }
        if let Some(a) = &self.arc {
            let mut s = format!("arc={}", a.result.as_str());
            // Who sealed is a comment: RFC 8617 registers no property
            // for it, and it is what a reader of the header wants to know.
            let sealed = (!a.sealers.is_empty()).then(|| format!("sealed by {}", a.sealers.join(", ")));
            let c = match (&a.reason, sealed) {
                (Some(r), Some(by)) => Some(format!("{r}; {by}")),
                (r, by) => r.clone().or(by),
            };
            if comments && let Some(c) = c {
                let _ = write!(s, " ({})", comment(&c));
            }
            out.push(s);
        }
        if let Some(d) = &self.dmarc {
            let mut s = format!("dmarc={}", d.result.as_str());
            if let Some(dis) = disposition {
                let mut c = format!("p={} dis={dis}", d.policy.as_str());
                if let Some(r) = &d.reason {
                    c = format!("{r}; {c}");
                }
                let _ = write!(s, " ({})", comment(&c));
            } else if d.result != AuthResult::None {
                let _ = write!(s, " p={}", d.policy.as_str());
            }
            if !d.from_domain.is_empty() {
                let _ = write!(s, " header.from={}", pvalue(&d.from_domain));
            }
            out.push(s);
        }
        out
    }
}

/// The comment of an SPF result, naming the domain and why.
fn spf_comment(c: &SpfCheck) -> Option<String> {
    if let Some(n) = &c.note {
        return Some(n.clone());
    }
    let what = match c.result {
        AuthResult::Pass => "designates the client",
        AuthResult::Fail => "does not designate the client",
        AuthResult::SoftFail => "does not designate the client (softfail)",
        AuthResult::Neutral => "makes no assertion about the client",
        AuthResult::None => return (!c.domain.is_empty()).then(|| format!("no SPF record for {}", c.domain)),
        AuthResult::TempError => return Some(format!("temporary DNS error looking up {}", c.domain)),
        AuthResult::PermError => return Some(format!("bad SPF record for {}", c.domain)),
        AuthResult::Policy => return None,
    };
    Some(format!("{} {what}", c.domain))
}

/// RFC 2045 token characters (what a `value` may be without quotes).
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// A property value (RFC 8601 `pvalue`): as is when it is a token, an
/// address or domain of atoms; else a quoted string. Characters that have
/// no place in a header (controls, and non-ASCII, which a non-SMTPUTF8
/// message cannot carry) become `?`.
pub fn pvalue(v: &str) -> String {
    let atom = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(is_token_char));
    let plain = match v.rsplit_once('@') {
        Some((local, domain)) => (local.is_empty() || atom(local)) && atom(domain),
        None => !v.is_empty() && v.chars().all(is_token_char),
    };
    if plain {
        return v.to_owned();
    }
    let mut q = String::with_capacity(v.len() + 2);
    q.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            c if c == ' ' || c.is_ascii_graphic() => q.push(c),
            _ => q.push('?'),
        }
    }
    q.push('"');
    q
}

/// Text safe inside a header comment: no parentheses or backslashes to
/// unbalance it, no line breaks or controls.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => ' ',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spf(result: AuthResult, identity: Identity, domain: &str) -> SpfCheck {
        SpfCheck { result, identity, domain: domain.into(), explanation: None, note: None }
    }

    fn sample() -> Report {
        Report {
            spf: Some(SpfReport {
                mail_from: Some(spf(
                    AuthResult::Pass,
                    Identity::MailFrom("a@example.org".into()),
                    "example.org",
                )),
                helo: Some(spf(
                    AuthResult::None,
                    Identity::Helo("mail.example.org".into()),
                    "mail.example.org",
                )),
            }),
            dkim: vec![DkimCheck {
                result: AuthResult::Fail,
                reason: Some("body hash did not verify".into()),
                domain: "example.org".into(),
                selector: "s1".into(),
                auid: String::new(),
                b_prefix: "AbCd+/12".into(),
            }],
            arc: Some(ArcCheck { result: AuthResult::None, reason: None, sealers: vec![] }),
            dmarc: Some(DmarcCheck {
                result: AuthResult::Pass,
                reason: None,
                from_domain: "example.org".into(),
                policy: DmarcPolicy::Reject,
            }),
        }
    }

    #[test]
    fn header_has_one_folded_line_per_result() {
        let h = sample().header("mx.example.net", "none");
        assert_eq!(
            h,
            "Authentication-Results: mx.example.net;\r\n\
             \tspf=pass (example.org designates the client) smtp.mailfrom=a@example.org;\r\n\
             \tspf=none (no SPF record for mail.example.org) smtp.helo=mail.example.org;\r\n\
             \tdkim=fail (body hash did not verify) header.d=example.org header.s=s1 header.b=\"AbCd+/12\";\r\n\
             \tarc=none;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=example.org\r\n"
        );
        // It parses as one header field whose lines all continue it.
        assert!(h.trim_end().split("\r\n").skip(1).all(|l| l.starts_with('\t')));
    }

    #[test]
    fn nothing_checked_says_none() {
        assert_eq!(Report::default().header("mx", "none"), "Authentication-Results: mx; none\r\n");
        assert_eq!(Report::default().summary(), "none");
    }

    #[test]
    fn summary_is_one_line_without_comments() {
        assert_eq!(
            sample().summary(),
            "spf=pass smtp.mailfrom=a@example.org, spf=none smtp.helo=mail.example.org, \
             dkim=fail header.d=example.org, arc=none, dmarc=pass p=reject header.from=example.org"
        );
    }

    #[test]
    fn values_are_quoted_when_they_are_not_atoms() {
        assert_eq!(pvalue("user@example.org"), "user@example.org");
        assert_eq!(pvalue("example.org"), "example.org");
        assert_eq!(pvalue("@example.org"), "@example.org");
        assert_eq!(pvalue("\"odd local\"@example.org"), "\"\\\"odd local\\\"@example.org\"");
        assert_eq!(pvalue("[192.0.2.1]"), "\"[192.0.2.1]\"");
        assert_eq!(pvalue("a;b"), "\"a;b\"");
        assert_eq!(pvalue("ü@x\r\n"), "\"?@x??\"");
        assert_eq!(pvalue(""), "\"\"");
    }

    #[test]
    fn comments_cannot_break_out() {
        assert_eq!(comment("a (b) \\ c\r\nd"), "a  b    c??d");
    }

    #[test]
    fn a_null_reverse_path_is_judged_by_helo() {
        let r = SpfReport {
            mail_from: None,
            helo: Some(spf(AuthResult::Fail, Identity::Helo("h.example".into()), "h.example")),
        };
        assert_eq!(r.decisive().map(|c| c.result), Some(AuthResult::Fail));
    }
}
