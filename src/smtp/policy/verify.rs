//! `reject_unverified_recipient`: what a verification verdict makes of a
//! recipient, with Postfix's codes, texts and tempfail actions
//! (smtpd_check.c's `check_rcpt_verify`, ADDRESS_VERIFICATION_README).
//!
//! Pure, like the rest of `policy/`: the verdict arrives in the request's
//! answers ([`Question::Verify`]); this file never probes.

use super::{Pending, Policy, Question, Request, Step, reply_class};
use crate::reply::{Reply, Status};
use crate::verify::Verdict;

/// `unverified_recipient_tempfail_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TempfailAction {
    /// Refuse with `unverified_recipient_reject_code`.
    Reject,
    /// Refuse with 450.
    Defer,
    /// 450 unless a later restriction rejects (Postfix's default).
    #[default]
    DeferIfPermit,
    /// Go on; a later rejection becomes a 450.
    DeferIfReject,
}

impl TempfailAction {
    /// The parameter's word (checked at load), `defer_if_permit` otherwise.
    pub fn parse(word: &str) -> TempfailAction {
        match word.trim().to_ascii_lowercase().as_str() {
            "reject" => TempfailAction::Reject,
            "defer" => TempfailAction::Defer,
            "defer_if_reject" => TempfailAction::DeferIfReject,
            _ => TempfailAction::DeferIfPermit,
        }
    }
}

/// The `unverified_recipient_*` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReplies {
    /// `unverified_recipient_reject_code`: the server said 5xx.
    pub reject_code: u16,
    /// `unverified_recipient_defer_code`: the server said 4xx.
    pub defer_code: u16,
    /// `unverified_recipient_tempfail_action`: no answer in time.
    pub tempfail_action: TempfailAction,
    /// `unverified_recipient_reject_reason`: replaces Postfix's text.
    pub reject_reason: String,
}

impl Default for VerifyReplies {
    /// Postfix's defaults.
    fn default() -> Self {
        VerifyReplies {
            reject_code: 450,
            defer_code: 450,
            tempfail_action: TempfailAction::DeferIfPermit,
            reject_reason: String::new(),
        }
    }
}

impl Policy {
    /// The step of `reject_unverified_recipient` for the request's
    /// recipient: ask for the verdict when it is not known yet; a
    /// deliverable address goes on to the next restriction (the
    /// restriction never permits, as in Postfix).
    pub(super) fn unverified(&self, req: &Request<'_>, pending: &mut Pending) -> Option<Step> {
        let rcpt = req.recipient;
        let Some(verdict) = req.answers.verdict(rcpt) else {
            return Some(Step::Ask(Question::Verify(rcpt.to_owned())));
        };
        let v = &self.verify;
        let refuse = |code: u16, what: &str, text: &str| {
            let text =
                if v.reject_reason.is_empty() { format!("{what}: {text}") } else { v.reject_reason.clone() };
            Reply::new(
                code,
                Status(reply_class(code), 1, 1),
                format!("<{rcpt}>: Recipient address rejected: {text}"),
            )
        };
        match verdict {
            Verdict::Deliverable => None,
            Verdict::Undeliverable(text) => {
                Some(Step::Refuse(refuse(v.reject_code, "undeliverable address", text)))
            }
            Verdict::Unverified(text) => Some(Step::Refuse(refuse(v.defer_code, "unverified address", text))),
            Verdict::Tempfail(text) => {
                let reply = |code| refuse(code, "unverified address", text);
                match v.tempfail_action {
                    TempfailAction::Reject => Some(Step::Refuse(reply(v.reject_code))),
                    TempfailAction::Defer => Some(Step::Refuse(reply(450))),
                    TempfailAction::DeferIfPermit => {
                        pending.if_permit.get_or_insert_with(|| reply(450));
                        None
                    }
                    TempfailAction::DeferIfReject => {
                        pending.if_reject = true;
                        None
                    }
                }
            }
        }
    }
}
