//! What the sender authentication results do to a message: pure functions
//! of the settings and the results, so every decision is tested without
//! DNS or a session.
//!
//! Defaults (see `settings.rs` and conf/README.md for the parameters):
//! everything is checked and recorded, and only one result refuses mail
//! unless told otherwise: a DMARC fail from a domain that publishes
//! `p=reject` (`550 5.7.1`), because the domain owner asked for exactly
//! that and the large mailbox providers honour it. `p=quarantine` is
//! marked (the header says `dmarc=fail`; the mailbox server's filter files
//! it), not held: held mail waits for an administrator a new MX may not
//! have. SPF `-all` is marked, not refused: mail forwarded by a third
//! party fails SPF while its DKIM signature (and so DMARC) can still
//! pass. A temporary DNS error is marked `temperror` and the mail
//! accepted: deferring on every DNS hiccup delays legitimate mail, and a
//! forged message gains little from one DNS outage. A passing ARC chain
//! sealed by a domain in `sluice_arc_trusted_sealers` (a mailing list the
//! administrator trusts) turns a DMARC refusal or hold into a mark.
//!
//! Never does I/O and never reads the clock; the session sends the replies
//! and the queue keeps the holds.

use super::report::{AuthResult, DmarcPolicy, Report, SpfReport};
use super::settings::{Action, Settings, TempAction};
use crate::reply::{Reply, Status};

/// What happens to a message once its end-of-data checks are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted (with the header, when on).
    Accept,
    /// Accepted and held; the text says why, for the log.
    Hold(String),
    /// Refused with this reply (5xx) or deferred (4xx).
    Refuse(Reply),
}

impl Disposition {
    /// The `dis=` word of the header's DMARC comment.
    pub fn word(&self) -> &'static str {
        match self {
            Disposition::Accept => "none",
            Disposition::Hold(_) => "quarantine",
            Disposition::Refuse(r) if r.code() >= 500 => "reject",
            Disposition::Refuse(_) => "none",
        }
    }
}

/// At RCPT TO: whether SPF refuses the transaction's sender (only with
/// `sluice_spf_fail_policy = reject`).
pub fn at_rcpt(
    settings: &Settings,
    spf: &SpfReport,
    sender: &str,
    client: std::net::IpAddr,
) -> Option<Reply> {
    if settings.spf_fail != Action::Reject {
        return None;
    }
    let check = spf.decisive()?;
    let who = if sender.is_empty() { "<>".to_owned() } else { format!("<{sender}>") };
    match check.result {
        AuthResult::Fail => {
            let mut text = format!(
                "{who}: Sender address rejected: SPF fail: {} does not designate {} as a permitted sender",
                check.domain,
                client.to_canonical()
            );
            // RFC 7208 8.4: the domain's explanation belongs in the reply.
            if let Some(exp) = check.explanation.as_deref().map(printable).filter(|e| !e.is_empty()) {
                text.push_str(": ");
                text.push_str(&exp);
            }
            Some(Reply::new(550, Status(5, 7, 23), text))
        }
        AuthResult::TempError if settings.temperror == TempAction::Defer => Some(Reply::new(
            451,
            Status(4, 7, 24),
            format!(
                "{who}: Sender address rejected: SPF temporary error for {}, try again later",
                check.domain
            ),
        )),
        _ => None,
    }
}

/// At the end of the message: the DMARC verdict, by the domain's policy
/// and the settings.
pub fn at_end(settings: &Settings, report: &Report) -> Disposition {
    let Some(dmarc) = &report.dmarc else { return Disposition::Accept };
    match dmarc.result {
        AuthResult::Fail => {
            let action = match dmarc.policy {
                DmarcPolicy::Reject => settings.dmarc_reject,
                DmarcPolicy::Quarantine => settings.dmarc_quarantine,
                DmarcPolicy::None => Action::Mark,
            };
            if action != Action::Mark && vouched(settings, report) {
                return Disposition::Accept;
            }
            match action {
                Action::Mark => Disposition::Accept,
                Action::Hold => Disposition::Hold(format!(
                    "DMARC policy of {} (p={})",
                    dmarc.from_domain,
                    dmarc.policy.as_str()
                )),
                Action::Reject => Disposition::Refuse(Reply::new(
                    550,
                    Status(5, 7, 1),
                    format!("Message rejected by DMARC policy for {}", dmarc.from_domain),
                )),
            }
        }
        AuthResult::TempError if settings.temperror == TempAction::Defer => Disposition::Refuse(Reply::new(
            451,
            Status(4, 7, 1),
            format!("DMARC check of {} failed temporarily, try again later", dmarc.from_domain),
        )),
        _ => Disposition::Accept,
    }
}

/// True when a passing ARC chain was sealed by a trusted forwarder.
fn vouched(settings: &Settings, report: &Report) -> bool {
    report.arc.as_ref().is_some_and(|a| {
        a.result == AuthResult::Pass && a.sealers.iter().any(|s| settings.trusted_sealers.contains(s))
    })
}

/// A domain's text made safe for a reply line: printable ASCII only,
/// at most 200 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| *c == ' ' || c.is_ascii_graphic()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::report::{ArcCheck, DmarcCheck, Identity, SpfCheck};

    fn dmarc(result: AuthResult, policy: DmarcPolicy) -> Report {
        Report {
            dmarc: Some(DmarcCheck { result, reason: None, from_domain: "example.org".into(), policy }),
            ..Report::default()
        }
    }

    fn spf(result: AuthResult) -> SpfReport {
        SpfReport {
            mail_from: Some(SpfCheck {
                result,
                identity: Identity::MailFrom("a@example.org".into()),
                domain: "example.org".into(),
                explanation: Some("See\r\nhttp://example.org/why".into()),
                note: None,
            }),
            helo: None,
        }
    }

    const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn defaults_refuse_only_dmarc_reject() {
        let s = Settings::default();
        let r = at_end(&s, &dmarc(AuthResult::Fail, DmarcPolicy::Reject));
        assert_eq!(r.word(), "reject");
        assert_eq!(
            r,
            Disposition::Refuse(Reply::new(
                550,
                Status(5, 7, 1),
                "Message rejected by DMARC policy for example.org"
            ))
        );
        assert_eq!(at_end(&s, &dmarc(AuthResult::Fail, DmarcPolicy::Quarantine)), Disposition::Accept);
        assert_eq!(at_end(&s, &dmarc(AuthResult::Fail, DmarcPolicy::None)), Disposition::Accept);
        assert_eq!(at_end(&s, &dmarc(AuthResult::TempError, DmarcPolicy::Reject)), Disposition::Accept);
        assert_eq!(at_end(&s, &dmarc(AuthResult::Pass, DmarcPolicy::Reject)), Disposition::Accept);
        assert_eq!(at_rcpt(&s, &spf(AuthResult::Fail), "a@example.org", CLIENT), None);
    }

    #[test]
    fn quarantine_can_hold_and_temperror_can_defer() {
        let s =
            Settings { dmarc_quarantine: Action::Hold, temperror: TempAction::Defer, ..Settings::default() };
        let held = at_end(&s, &dmarc(AuthResult::Fail, DmarcPolicy::Quarantine));
        assert_eq!(held, Disposition::Hold("DMARC policy of example.org (p=quarantine)".into()));
        assert_eq!(held.word(), "quarantine");
        let deferred = at_end(&s, &dmarc(AuthResult::TempError, DmarcPolicy::None));
        assert!(matches!(&deferred, Disposition::Refuse(r) if r.code() == 451), "{deferred:?}");
        assert_eq!(deferred.word(), "none");
    }

    #[test]
    fn a_trusted_arc_sealer_turns_refusal_into_mark() {
        let s = Settings { trusted_sealers: vec!["lists.example".into()], ..Settings::default() };
        let mut r = dmarc(AuthResult::Fail, DmarcPolicy::Reject);
        r.arc =
            Some(ArcCheck { result: AuthResult::Pass, reason: None, sealers: vec!["lists.example".into()] });
        assert_eq!(at_end(&s, &r), Disposition::Accept);
        // A broken chain vouches for nothing.
        r.arc =
            Some(ArcCheck { result: AuthResult::Fail, reason: None, sealers: vec!["lists.example".into()] });
        assert!(matches!(at_end(&s, &r), Disposition::Refuse(_)));
    }

    #[test]
    fn spf_reject_names_the_domain_and_its_explanation() {
        let s = Settings { spf_fail: Action::Reject, temperror: TempAction::Defer, ..Settings::default() };
        let r = at_rcpt(&s, &spf(AuthResult::Fail), "a@example.org", CLIENT).unwrap();
        assert_eq!(
            r.to_string(),
            "550 5.7.23 <a@example.org>: Sender address rejected: SPF fail: example.org does not designate \
             192.0.2.1 as a permitted sender: Seehttp://example.org/why"
        );
        assert_eq!(at_rcpt(&s, &spf(AuthResult::SoftFail), "a@example.org", CLIENT), None);
        assert_eq!(
            at_rcpt(&s, &spf(AuthResult::TempError), "a@example.org", CLIENT).map(|r| r.code()),
            Some(451)
        );
    }
}
