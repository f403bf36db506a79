//! Sender authentication in the session: where the checks of
//! `crate::auth` are asked and what the session does with their answers.
//!
//! - MAIL FROM (`mail.rs`): whether the checks apply to this client
//!   (`sluice_auth_exempt_clients`) and the SPF check of the HELO and MAIL
//!   FROM identities, within `sluice_auth_timeout`;
//! - RCPT TO (`rcpt.rs`), after the restrictions accepted the recipient:
//!   an SPF fail refused, when `sluice_spf_fail_policy = reject` (as
//!   Postfix's policyd-spf at the end of smtpd_recipient_restrictions);
//! - the first accepted recipient opens a draft that keeps room for the
//!   Authentication-Results header (`Queue::begin_with_head`);
//! - the content (`message.rs`, `feed_body`): every byte as received goes
//!   to the DKIM/ARC check, and through the filter that removes forged
//!   Authentication-Results headers on its way to the draft (with milters,
//!   the header section is filtered whole before they see it);
//! - end of message (`message.rs`, `finish_message`, after the content
//!   verdicts, before the commit): DKIM, ARC and DMARC, one log line,
//!   then refuse, hold or accept (before the milters' end of message: a
//!   refused message costs them nothing more); the header goes to the top
//!   of the message, above the milters' header section, in the commit's
//!   batch.
//!
//! Owns that wiring only: the checks, the header and the policy are
//! `crate::auth`'s, the replies and log lines go through the session.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use super::state::{BodyAuth, Mail, Transaction};
use crate::auth::{Decision, Envelope, Strip};
use crate::reply::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// At MAIL FROM: marks whether sender authentication applies to the
    /// transaction, and checks SPF if it does.
    pub(super) async fn authenticate_sender(&self, mail: &mut Mail) {
        mail.checked = self.settings.auth.applies_to(self.peer.addr);
        let Some(auth) = self.inbound.authenticator().filter(|_| mail.checked) else { return };
        let env = Envelope {
            client: self.peer.addr,
            helo: self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or(""),
            sender: &mail.from,
            receiver: &self.settings.myhostname,
        };
        mail.spf = auth.spf(&self.settings.auth, &env).await;
    }

    /// At RCPT TO, once the restrictions accepted the recipient: the SPF
    /// refusal of the sender, if the settings ask for one.
    pub(super) fn spf_refusal(&self) -> Option<Reply> {
        let Transaction::Mail(m) = &self.tx else { return None };
        let spf = m.spf.as_ref()?;
        crate::auth::policy::at_rcpt(&self.settings.auth, spf, &m.from, self.peer.addr)
    }

    /// True when the transaction's draft must keep room for the
    /// Authentication-Results header.
    pub(super) fn wants_auth_header(&self, m: &Mail) -> bool {
        let s = &self.settings.auth;
        m.checked && s.header && s.checks.any() && self.inbound.authenticator().is_some()
    }

    /// At the first byte of content: the checks' view of it, or `None`
    /// for a client the checks do not apply to.
    pub(super) fn begin_body_auth(&self, m: &Mail) -> Option<BodyAuth> {
        if !m.checked {
            return None;
        }
        let s = &self.settings.auth;
        let check = self.inbound.authenticator().filter(|_| s.checks.at_end_of_data()).map(|a| a.begin(s));
        Some(BodyAuth { check, strip: Strip::new(&s.authserv_id, s.header_limit), scratch: Vec::new() })
    }

    /// At the end of the message: the end-of-data checks and what they
    /// decide, or `None` when none ran (exempt client, no checks, no
    /// resolver).
    pub(super) async fn end_of_data_auth(&self, m: &Mail, auth: Option<&mut BodyAuth>) -> Option<Decision> {
        let authenticator = self.inbound.authenticator()?;
        let s = &self.settings.auth;
        let auth = auth?;
        if !s.checks.any() {
            return None;
        }
        let check = match auth.check.take() {
            Some(c) => c,
            None => authenticator.begin(s),
        };
        let env = Envelope {
            client: self.peer.addr,
            helo: self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or(""),
            sender: &m.from,
            receiver: &self.settings.myhostname,
        };
        Some(authenticator.end_of_data(s, check, m.spf.as_ref(), &env).await)
    }
}

impl BodyAuth {
    /// Passes the bytes decoded since `before` in `out` to the checks, and
    /// (when `stream` is set) through the forged-header filter: while the
    /// header section lasts, they are taken out of `out` and put back
    /// filtered. With milters `stream` is unset: the header section is
    /// filtered whole by [`BodyAuth::filter_whole`] once it is cut off.
    pub(super) fn feed(&mut self, out: &mut Vec<u8>, before: usize, stream: bool) {
        if let Some(check) = self.check.as_mut() {
            check.feed(&out[before..]);
        }
        if stream && !self.strip.in_body() {
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[before..]);
            out.truncate(before);
            self.strip.feed(&self.scratch, out);
        }
    }

    /// The message ended: whatever the filter still holds (the last header
    /// field of a message without a body) goes to `out`, or not.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        self.strip.finish(out);
    }

    /// A whole header section (kept for the milters), less the forged
    /// fields. The milters then see only sluice's own claims to its
    /// authserv-id (none: its header is added after them), so a milter
    /// trusting results under that name (OpenDMARC) is not misled either.
    pub(super) fn filter_whole(&mut self, head: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(head.len());
        self.strip.feed(head, &mut out);
        self.strip.finish(&mut out);
        out
    }
}
