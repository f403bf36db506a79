//! The `MAIL FROM` stage: the reverse path and its ESMTP parameters
//! (`SIZE`, `BODY`, `SMTPUTF8`, `RET`, `ENVID`), and the checks that
//! belong before a transaction starts: HELO and TLS requirements, the
//! declared size, the client's message rate, and queue backpressure
//! (`452 4.3.1 Insufficient system storage` when the queue is above its
//! high-water mark or the disk below `queue_minfree`); for
//! `reject_unknown_sender_domain`, what DNS says of the sender's domain;
//! and SPF of the sender (`sender_auth.rs`).
//!
//! Must not open the queue draft: that waits for the first accepted
//! recipient, so rejected relay attempts cost no storage.

use std::borrow::Cow;
use std::time::Duration;

use sluice_queue::{BodyType, DsnRet};
use smtp_proto::MailFrom;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::policy::DomainStatus;
use super::session::Session;
use super::settings::TlsLevel;
use super::state::{Flow, Mail, MilterVerdict, Transaction};
use crate::reply::{Reply, Status};
use crate::resolver::{DnsError, Resolver};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `MAIL FROM:<reverse-path> [parameters]`.
    pub(super) async fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Flow {
        match self.check_mail(&from) {
            Ok(mut mail) => {
                if self.settings.policy.checks_sender_domain()
                    && let Some(resolver) = self.inbound.resolver()
                    && let Some((_, domain)) = mail.from.rsplit_once('@')
                {
                    let timeout = self.settings.peername_timeout;
                    mail.sender_domain = domain_status(resolver.as_ref(), domain, timeout).await;
                }
                self.authenticate_sender(&mut mail).await;
                self.tx = Transaction::Mail(Box::new(mail));
                match self.milter_mail().await {
                    MilterVerdict::Go => {
                        self.counts.add("mail", true);
                        self.reply(&Reply::new(250, Status(2, 1, 0), "Ok"));
                    }
                    MilterVerdict::Refuse(r) => {
                        self.reset().await;
                        self.counts.add("mail", false);
                        self.reply(&r);
                    }
                    MilterVerdict::Close(r) => {
                        self.counts.add("mail", false);
                        self.reply(&r);
                        return Flow::Close;
                    }
                }
            }
            Err(r) => {
                self.counts.add("mail", false);
                if r.code() != 503 {
                    info!(
                        "{}: reject: MAIL from {}: {}; from=<{}>{}",
                        self.queue_id(),
                        self.peer,
                        self.shown(&r),
                        from.address,
                        self.context(None)
                    );
                }
                self.reply(&r);
            }
        }
        Flow::Continue
    }

    fn check_mail(&self, from: &MailFrom<Cow<'_, str>>) -> Result<Mail, Reply> {
        let s = &self.settings;
        if self.helo.is_none() && s.helo_required {
            return Err(Reply::new(503, Status(5, 5, 1), "Error: send HELO/EHLO first"));
        }
        if s.tls_level == TlsLevel::Encrypt && self.tls.is_none() {
            return Err(Reply::new(530, Status(5, 7, 0), "Must issue a STARTTLS command first"));
        }
        if matches!(self.tx, Transaction::Mail(_)) {
            return Err(Reply::new(503, Status(5, 5, 1), "Error: nested MAIL command"));
        }
        if !self.address_is_printable(&from.address, "MAIL") {
            return Err(Reply::new(501, Status(5, 1, 7), "Bad sender address syntax"));
        }
        if let Some(param) = unsupported_mail_param(from) {
            return Err(Reply::new(555, Status(5, 5, 4), format!("Unsupported option: {param}")));
        }
        // Extensions not announced are not honoured either
        // (smtputf8_enable, smtpd_discard_ehlo_keywords).
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if smtputf8 && !(s.smtputf8 && s.offers("smtputf8")) {
            return Err(Reply::new(555, Status(5, 5, 4), "Unsupported option: SMTPUTF8"));
        }
        if !s.offers("dsn") {
            let ret = from.flags & (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS) != 0;
            if let Some(p) = [(ret, "RET"), (from.env_id.is_some(), "ENVID")].iter().find(|(on, _)| *on) {
                return Err(Reply::new(555, Status(5, 5, 4), format!("Unsupported option: {}", p.1)));
            }
        }
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 && !s.offers("binarymime") {
            return Err(Reply::new(555, Status(5, 5, 4), "Unsupported option: BODY=BINARYMIME"));
        }
        if !smtputf8 && !from.address.is_ascii() {
            return Err(Reply::new(553, Status(5, 6, 7), "Must declare SMTPUTF8 to send unicode address"));
        }
        let declared = u64::try_from(from.size).unwrap_or(u64::MAX);
        if s.message_size_limit > 0 && declared > s.message_size_limit {
            return Err(Reply::new(552, Status(5, 3, 4), "Message size exceeds fixed limit"));
        }
        if !self.inbound.message_allowed(self.peer.addr, s) {
            return Err(Reply::new(
                450,
                Status(4, 7, 1),
                format!("Error: too much mail from {}", self.peer.addr),
            ));
        }
        // Backpressure: the queue says whether it can take more, with room
        // for the size the client declared on top (Postfix's rule).
        let limits = sluice_queue::AcceptLimits {
            min_free: s.accept_limits.min_free.saturating_add(declared),
            ..s.accept_limits
        };
        if let Err(e) = self.inbound.queue().admit(&limits) {
            return Err(Reply::from(&e));
        }
        let body_type = if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            BodyType::BinaryMime
        } else if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else if from.flags & smtp_proto::MAIL_BODY_7BIT != 0 {
            BodyType::SevenBit
        } else {
            BodyType::Unspecified
        };
        let ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            DsnRet::Full
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            DsnRet::Headers
        } else {
            DsnRet::Unspecified
        };
        Ok(Mail {
            from: from.address.to_string(),
            declared_size: (declared > 0).then_some(declared),
            body_type,
            smtputf8,
            ret,
            envid: from.env_id.as_deref().map(xtext),
            rcpts: Vec::new(),
            draft: None,
            body: None,
            sender_domain: DomainStatus::Found,
            prepend: Vec::new(),
            instance: next_instance(),
            milter: Default::default(),
            checked: false,
            spf: None,
            head: false,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// False, with Postfix's warning, for an address holding a character
    /// the one filter refuses ([`crate::reply::is_printable`]): a control
    /// (C0, DEL, C1: `<"\x1b]0;x\x07"@a.b>` is a valid quoted local part
    /// to a parser, and an escape sequence to whoever reads the log or
    /// `mailq`) or an invisible formatting character. SMTPUTF8 allows
    /// UTF-8 in addresses, never those: they have no place in a mailbox
    /// name, and such an address would reach logs, `mailq`, `Received:`
    /// and DSNs.
    pub(super) fn address_is_printable(&self, address: &str, command: &str) -> bool {
        if address.chars().all(crate::reply::is_printable) {
            return true;
        }
        warn!(
            "Illegal address syntax from {} in {command} command: {}",
            self.peer,
            crate::reply::printable(address, crate::reply::IN_TEXT)
        );
        false
    }
}

/// A name for one mail transaction, unique in this process and across
/// restarts, for policy servers (`instance=`): they use it to tell a new
/// message from another recipient of the same one.
fn next_instance() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // The process ID once: `std::process::id()` is a `getpid` system call
    // each time, and this runs on every MAIL.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}.{:x}.{n:x}", PID.get_or_init(std::process::id), crate::clock::unix_millis())
}

/// Whether a mail domain exists for `reject_unknown_sender_domain` (or a
/// host name for `reject_unknown_helo_hostname`): an MX
/// record, else an address record (RFC 5321 5.1); a lone null MX (RFC 7505)
/// says it takes no mail. Address literals are not looked up. Bounded by
/// `timeout`; a late or failed answer is [`DomainStatus::TryAgain`].
pub(super) async fn domain_status(resolver: &dyn Resolver, domain: &str, timeout: Duration) -> DomainStatus {
    if domain.starts_with('[') {
        return DomainStatus::Found;
    }
    let ask = async {
        match resolver.mx(domain).await {
            Ok(mx) if mx.len() == 1 && matches!(mx[0].1.as_str(), "" | ".") => DomainStatus::NullMx,
            Ok(_) => DomainStatus::Found,
            Err(DnsError::NotFound { .. }) => match resolver.ips(domain).await {
                Ok(_) => DomainStatus::Found,
                Err(DnsError::NotFound { .. }) => DomainStatus::NotFound,
                Err(DnsError::Temporary { .. }) => DomainStatus::TryAgain,
            },
            Err(DnsError::Temporary { .. }) => DomainStatus::TryAgain,
        }
    };
    tokio::time::timeout(timeout, ask).await.unwrap_or(DomainStatus::TryAgain)
}

/// The first MAIL parameter smtp-proto understood but sluice does not
/// advertise (and so must refuse, RFC 5321 4.1.1.11). `AUTH=` is ignored:
/// clients send it out of habit and it asserts nothing without AUTH.
fn unsupported_mail_param(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    use smtp_proto::*;
    if from.flags & MAIL_REQUIRETLS != 0 {
        Some("REQUIRETLS")
    } else if from.flags & MAIL_CONPERM != 0 {
        Some("CONPERM")
    } else if from.flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE) != 0 || from.by != 0 {
        Some("BY")
    } else if from.trans_id.is_some() {
        Some("TRANSID")
    } else if from.solicit.is_some() {
        Some("SOLICIT")
    } else if from.mtrk.is_some() {
        Some("MTRK")
    } else if from.hold_for != 0 {
        Some("HOLDFOR")
    } else if from.hold_until != 0 {
        Some("HOLDUNTIL")
    } else if from.mt_priority != 0 {
        Some("MT-PRIORITY")
    } else {
        None
    }
}

/// RFC 3461 xtext: the value as it is written on the wire (smtp-proto
/// hands it over decoded; the envelope keeps the wire form for DSNs).
pub(super) fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::xtext;

    #[test]
    fn xtext_encodes_plus_equals_and_controls() {
        assert_eq!(xtext("abc"), "abc");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}
