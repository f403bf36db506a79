//! SPF (RFC 7208) at MAIL FROM: the HELO identity and the MAIL FROM
//! identity of one transaction, checked at the same time with `mail-auth`
//! through the daemon's resolver, within `sluice_auth_timeout`.
//!
//! Both identities are checked because RFC 7208 2.3 recommends the HELO
//! check and because a null reverse path (bounces) has no other identity
//! (2.4: it is checked as `postmaster@<HELO name>`). The result is only
//! data: what an SPF fail does is `policy.rs`'s decision.
//!
//! Never touches the session, the queue or the message.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfOutput};

use super::report::{AuthResult, Identity, SpfCheck, SpfReport};

/// The envelope facts SPF looks at.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// The HELO/EHLO name as given (empty if none).
    pub helo: &'a str,
    /// The MAIL FROM address without brackets (empty for `<>`).
    pub sender: &'a str,
    /// This host's name (`myhostname`), for SPF's `%{r}` macro.
    pub receiver: &'a str,
}

/// True when a HELO name is a domain name SPF can check (not an address
/// literal, not a bare host name).
fn is_domain(helo: &str) -> bool {
    let h = helo.trim_end_matches('.');
    h.contains('.')
        && !h.starts_with('[')
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
        })
}

/// Checks the transaction's identities. Each check that has not finished
/// within `timeout` is a temperror.
pub async fn check(auth: &MessageAuthenticator, env: &Envelope<'_>, timeout: Duration) -> SpfReport {
    // An IPv4 client over an IPv6 socket matches ip4: mechanisms.
    let ip = env.client.to_canonical();
    let helo = env.helo.trim_end_matches('.');
    let sender = env.sender;
    let mail_from = async {
        if sender.is_empty() {
            return None;
        }
        let domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d).to_owned();
        let params = SpfParameters::verify_mail_from(ip, helo, env.receiver, sender);
        let out = tokio::time::timeout(timeout, auth.verify_spf(params)).await;
        Some(to_check(out, Identity::MailFrom(sender.to_owned()), domain, timeout))
    };
    let helo_check = async {
        if !is_domain(helo) {
            return None;
        }
        let params = SpfParameters::verify_ehlo(ip, helo, env.receiver);
        let out = tokio::time::timeout(timeout, auth.verify_spf(params)).await;
        Some(to_check(out, Identity::Helo(helo.to_owned()), helo.to_owned(), timeout))
    };
    let (mail_from, helo) = futures::join!(mail_from, helo_check);
    SpfReport { mail_from, helo }
}

fn to_check(
    out: Result<SpfOutput, tokio::time::error::Elapsed>,
    identity: Identity,
    domain: String,
    timeout: Duration,
) -> SpfCheck {
    match out {
        Ok(o) => SpfCheck {
            result: AuthResult::of_spf(o.result()),
            identity,
            domain: if o.domain().is_empty() { domain } else { o.domain().to_owned() },
            explanation: o.explanation().map(str::to_owned),
            note: None,
        },
        Err(_) => SpfCheck {
            result: AuthResult::TempError,
            identity,
            note: Some(format!("no DNS answer for {domain} within {}", humantime::format_duration(timeout))),
            domain,
            explanation: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_domain_names_are_checked_as_helo() {
        assert!(is_domain("mail.example.org"));
        assert!(is_domain("mail.example.org."));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("[192.0.2.1]"));
        assert!(!is_domain("a..b"));
        assert!(!is_domain("bad host.example"));
    }
}
