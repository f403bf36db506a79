//! DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) at the end of a
//! message, without ever holding the message whole.
//!
//! While the message streams in, [`MessageCheck`] keeps its header section
//! (bounded) and runs the DKIM body hashes over the body as it passes:
//! one incremental hash per (canonicalization, algorithm) that the
//! message's DKIM-Signature and ARC-Message-Signature fields ask for, so a
//! 50 MB message costs the hashing and no memory. At the end, `mail-auth`
//! verifies the signatures over the kept header section with the hashes
//! computed here put in place of its own (it would otherwise hash a body
//! it is never given), then evaluates ARC and DMARC.
//!
//! The header section kept is bounded by `header_size_limit`: whole
//! fields up to that many bytes, and past it only the fields the checks
//! cannot do without (From, DKIM-Signature, ARC-*), up to twice the
//! bound. A signature over a field that was not kept then fails, which
//! is the safe direction: padding the header section cannot hide the
//! From domain from DMARC. At most [`MAX_SIGNATURES`] DKIM signatures are
//! verified (each costs a DNS lookup and an RSA verification).
//!
//! Never touches the session, the queue or the bytes stored; DNS only
//! through the `mail-auth` authenticator given (the daemon's resolver).

use std::time::Duration;

use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha256};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimOutput, DmarcOutput, MessageAuthenticator, SpfOutput};

use super::fields::{self, Event, Fields};
use super::report::{ArcCheck, AuthResult, DkimCheck, DmarcCheck, DmarcPolicy, Report, SpfReport};
use super::settings::Checks;

/// DKIM signatures verified per message; more are ignored (OpenDKIM's
/// default is 3; mailing lists and ESPs stack two or three).
pub const MAX_SIGNATURES: usize = 10;

/// The hash state `mail-auth` uses for both SHA-1 and SHA-256.
type HashState = <Sha256 as HashImpl>::Context;

/// Fields kept past the header bound, because DKIM, ARC and DMARC need
/// them whatever else the section holds.
const ESSENTIAL: [&[u8]; 5] =
    [b"From", b"DKIM-Signature", b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"];

/// The state of one message's checks while it streams.
pub struct MessageCheck {
    fields: Fields,
    /// The header section as kept (see the module docs), ending with its
    /// empty line once it has ended.
    kept: Vec<u8>,
    limit: usize,
    /// Some field was left out.
    truncated: bool,
    /// One body hash per (canonicalization, algorithm, length) asked for.
    hashers: Vec<(Canonicalization, HashAlgorithm, u64, BodyHasher<HashState>)>,
}

impl std::fmt::Debug for MessageCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCheck")
            .field("kept", &self.kept.len())
            .field("truncated", &self.truncated)
            .field("hashes", &self.hashers.len())
            .finish()
    }
}

impl MessageCheck {
    /// Starts the checks of one message; `limit` bounds the header section
    /// kept (`header_size_limit`).
    pub fn new(limit: usize) -> MessageCheck {
        let limit = limit.max(1024);
        MessageCheck {
            fields: Fields::new(limit),
            kept: Vec::new(),
            limit,
            truncated: false,
            hashers: Vec::new(),
        }
    }

    /// Feeds message bytes as received (after dot-unstuffing, before any
    /// change sluice makes).
    pub fn feed(&mut self, bytes: &[u8]) {
        let MessageCheck { fields, kept, limit, truncated, hashers } = self;
        fields.feed(bytes, &mut |e| take(e, kept, *limit, truncated, hashers));
    }

    /// True when some header field was not kept.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Ends the message and runs the end-of-data checks asked for, within
    /// `timeout` together. `spf` is the transaction's SPF report and
    /// `mail_from_domain` its RFC 5321.MailFrom domain (the HELO name for
    /// a null reverse path), both for DMARC.
    pub async fn finish(
        mut self,
        auth: &MessageAuthenticator,
        checks: Checks,
        spf: Option<&SpfReport>,
        mail_from_domain: &str,
        timeout: Duration,
    ) -> Report {
        {
            let MessageCheck { fields, kept, limit, truncated, hashers } = &mut self;
            fields.finish(&mut |e| take(e, kept, *limit, truncated, hashers));
        }
        if !self.kept.ends_with(b"\n\n") && !self.kept.ends_with(b"\r\n\r\n") {
            // A message that ended inside its header section: the parser
            // wants the empty line.
            self.kept.extend_from_slice(b"\r\n");
        }
        let mut report = Report::default();
        let Some(mut message) = AuthenticatedMessage::parse(&self.kept) else {
            // No header field at all: nothing is signed, nothing has a From.
            if checks.dkim {
                report.dkim.push(none_check());
            }
            if checks.arc {
                report.arc = Some(ArcCheck { result: AuthResult::None, reason: None, sealers: Vec::new() });
            }
            if checks.dmarc {
                report.dmarc = Some(dmarc_none("no From header"));
            }
            return report;
        };
        // Put the streamed body hashes where mail-auth looks for them (it
        // hashed the empty body it was given).
        let computed: Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)> =
            std::mem::take(&mut self.hashers)
                .into_iter()
                .map(|(c, h, l, hasher)| (c, h, l, hasher.finish().0.complete().as_ref().to_vec()))
                .collect();
        for (c, h, l, bh) in &mut message.body_hashes {
            if let Some((.., got)) = computed.iter().find(|(c2, h2, l2, _)| c2 == c && h2 == h && l2 == l) {
                bh.clone_from(got);
            }
        }
        message.dkim_headers.truncate(MAX_SIGNATURES);

        let deadline = crate::clock::instant() + timeout;
        let dkim = async {
            if checks.dkim || checks.dmarc {
                tokio::time::timeout_at(deadline, auth.verify_dkim(&message)).await.ok()
            } else {
                Some(Vec::new())
            }
        };
        let arc = async {
            if checks.arc {
                Some(tokio::time::timeout_at(deadline, auth.verify_arc(&message)).await.ok())
            } else {
                None
            }
        };
        let (dkim_out, arc_out) = futures::join!(dkim, arc);

        if checks.dkim {
            report.dkim = match &dkim_out {
                Some(outs) if outs.is_empty() => vec![none_check()],
                Some(outs) => outs.iter().map(|o| dkim_check(o, self.truncated)).collect(),
                None => vec![DkimCheck { reason: Some("DNS timeout".into()), ..dkim_temp() }],
            };
        }
        if let Some(arc_out) = arc_out {
            report.arc = Some(match arc_out {
                Some(o) => {
                    let (result, reason) = AuthResult::of_dkim(o.result());
                    let sealers = o.sets().iter().map(|s| s.seal.header.d.to_ascii_lowercase()).collect();
                    ArcCheck { result, reason, sealers }
                }
                None => ArcCheck {
                    result: AuthResult::TempError,
                    reason: Some("DNS timeout".into()),
                    sealers: Vec::new(),
                },
            });
        }
        if checks.dmarc {
            let spf_output = spf_output(spf, mail_from_domain);
            let dkim_outs = dkim_out.as_deref().unwrap_or_default();
            let params = DmarcParameters::new(&message, dkim_outs, mail_from_domain, &spf_output);
            let dmarc = tokio::time::timeout_at(deadline, auth.verify_dmarc(params)).await;
            report.dmarc = Some(match dmarc {
                // Without the DKIM results only an SPF pass is conclusive.
                Ok(out) if dkim_out.is_none() && !matches!(out.result(), mail_auth::DmarcResult::Pass) => {
                    DmarcCheck {
                        result: AuthResult::TempError,
                        reason: Some("DNS timeout".into()),
                        ..dmarc_check(&out)
                    }
                }
                Ok(out) => dmarc_check(&out),
                Err(_) => DmarcCheck {
                    result: AuthResult::TempError,
                    reason: Some("DNS timeout".into()),
                    from_domain: message
                        .from()
                        .rsplit_once('@')
                        .map(|(_, d)| d.to_owned())
                        .unwrap_or_default(),
                    policy: DmarcPolicy::None,
                },
            });
        }
        report
    }
}

/// Routes one splitter event: header fields to the kept section (or not),
/// the end of the section to the body hashes' set-up, body bytes to them.
fn take(
    e: Event<'_>,
    kept: &mut Vec<u8>,
    limit: usize,
    truncated: &mut bool,
    hashers: &mut Vec<(Canonicalization, HashAlgorithm, u64, BodyHasher<HashState>)>,
) {
    match e {
        Event::Field { bytes, complete: true } => {
            let essential =
                fields::name(bytes).is_some_and(|n| ESSENTIAL.iter().any(|e| n.eq_ignore_ascii_case(e)));
            let room = if essential { 2 * limit } else { limit };
            if kept.len() + bytes.len() <= room {
                kept.extend_from_slice(bytes);
            } else {
                *truncated = true;
            }
        }
        // Longer than the bound: never a field the checks can use, so
        // neither it nor the rest of it is kept.
        Event::Field { complete: false, .. } => *truncated = true,
        Event::More { .. } => {}
        Event::EndOfHeaders(blank) => {
            kept.extend_from_slice(blank);
            start_hashes(kept, hashers);
        }
        Event::Body(bytes) => {
            for (.., h) in hashers.iter_mut() {
                h.write(bytes);
            }
        }
    }
}

/// Sets up one body hash per kind the signatures in `headers` ask for.
fn start_hashes(
    headers: &[u8],
    hashers: &mut Vec<(Canonicalization, HashAlgorithm, u64, BodyHasher<HashState>)>,
) {
    let Some(message) = AuthenticatedMessage::parse(headers) else { return };
    for (c, h, l, _) in &message.body_hashes {
        let state = match h {
            HashAlgorithm::Sha1 => <mail_auth::common::crypto::Sha1 as HashImpl>::hasher(),
            HashAlgorithm::Sha256 => Sha256::hasher(),
        };
        hashers.push((*c, *h, *l, BodyHasher::new(state, *c, *l)));
    }
}

fn none_check() -> DkimCheck {
    DkimCheck {
        result: AuthResult::None,
        reason: None,
        domain: String::new(),
        selector: String::new(),
        auid: String::new(),
        b_prefix: String::new(),
    }
}

fn dkim_temp() -> DkimCheck {
    DkimCheck { result: AuthResult::TempError, ..none_check() }
}

fn dkim_check(o: &DkimOutput<'_>, truncated: bool) -> DkimCheck {
    let (result, mut reason) = AuthResult::of_dkim(o.result());
    if truncated && result != AuthResult::Pass {
        reason = Some(format!("{}; header section over header_size_limit", reason.unwrap_or_default()));
    }
    let mut c = DkimCheck { result, reason, ..none_check() };
    if let Some(sig) = o.signature() {
        c.domain = sig.d.to_ascii_lowercase();
        c.selector = sig.s.clone();
        c.auid = sig.i.clone();
        c.b_prefix = b64_prefix(&sig.b);
    }
    c
}

fn dmarc_none(reason: &str) -> DmarcCheck {
    DmarcCheck {
        result: AuthResult::None,
        reason: Some(reason.to_owned()),
        from_domain: String::new(),
        policy: DmarcPolicy::None,
    }
}

fn dmarc_check(o: &DmarcOutput) -> DmarcCheck {
    let result = AuthResult::of_dmarc(&o.result());
    let policy = match o.policy() {
        mail_auth::dmarc::Policy::Reject => DmarcPolicy::Reject,
        mail_auth::dmarc::Policy::Quarantine => DmarcPolicy::Quarantine,
        _ => DmarcPolicy::None,
    };
    let reason = match result {
        AuthResult::None if o.domain().is_empty() => Some("no usable From domain".to_owned()),
        AuthResult::None => Some("no DMARC record".to_owned()),
        AuthResult::TempError => Some("DNS error".to_owned()),
        _ => None,
    };
    DmarcCheck { result, reason, from_domain: o.domain().to_ascii_lowercase(), policy }
}

/// The SPF outcome DMARC takes, rebuilt from the transaction's report.
fn spf_output(spf: Option<&SpfReport>, mail_from_domain: &str) -> SpfOutput {
    use mail_auth::SpfResult as S;
    let Some(check) = spf.and_then(SpfReport::decisive) else {
        return SpfOutput::new(mail_from_domain.to_owned()).with_result(S::None);
    };
    let result = match check.result {
        AuthResult::Pass => S::Pass,
        AuthResult::Fail => S::Fail,
        AuthResult::SoftFail => S::SoftFail,
        AuthResult::Neutral => S::Neutral,
        AuthResult::TempError => S::TempError,
        AuthResult::PermError => S::PermError,
        AuthResult::None | AuthResult::Policy => S::None,
    };
    SpfOutput::new(check.domain.clone()).with_result(result)
}

/// The first six bytes of a signature in base64: eight characters.
fn b64_prefix(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(8);
    for chunk in b.chunks(3).take(2) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_prefix_is_eight_characters() {
        assert_eq!(b64_prefix(b"foobar and more"), "Zm9vYmFy");
        assert_eq!(b64_prefix(b"fo"), "Zm8");
    }

    #[test]
    fn header_section_is_bounded_but_keeps_what_dmarc_needs() {
        let mut check = MessageCheck::new(1024);
        let mut msg = Vec::new();
        for i in 0..100 {
            msg.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(40)).as_bytes());
        }
        msg.extend_from_slice(b"From: a@example.org\r\n");
        msg.extend_from_slice(format!("X-Huge: {}\r\n", "h".repeat(5000)).as_bytes());
        msg.extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        for c in msg.chunks(77) {
            check.feed(c);
        }
        assert!(check.truncated());
        let kept = String::from_utf8_lossy(&check.kept).into_owned();
        assert!(kept.len() <= 2 * 1024, "{}", kept.len());
        assert!(kept.contains("From: a@example.org\r\n"));
        assert!(!kept.contains("X-Huge"));
        assert!(kept.ends_with("\r\n\r\n"), "the section's end is kept: {kept:?}");
    }
}
