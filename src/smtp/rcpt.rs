//! The `RCPT TO` stage: recipient syntax, the per-message recipient limit
//! (`452 4.5.3 Error: too many recipients`), the relay and recipient
//! restrictions (decided by `policy/`, logged here as Postfix logs them),
//! then an SPF refusal when configured (`sender_auth.rs`),
//! and the DSN parameters `NOTIFY` and `ORCPT`, kept in the envelope; an
//! accepted recipient is stored as its virtual alias expansion (`alias.rs`).
//!
//! The queue draft is opened at the first accepted recipient; that is when
//! the message gets its queue ID and the `client=` line is logged.

use std::borrow::Cow;

use sluice_queue::{Notify, Recipient};
use smtp_proto::RcptTo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::mail::xtext;
use super::policy::{Answers, Decision, Question, Request};
use super::session::Session;
use super::state::{Flow, MilterVerdict, Transaction};
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `RCPT TO:<forward-path> [parameters]`.
    pub(super) async fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> Flow {
        let address = to.address.to_string();
        // Policy servers and DNS are asked as the restrictions reach them;
        // each answer goes into the next round of the same decision.
        let mut answers = Answers::default();
        let checked = loop {
            match self.check_rcpt(&to, &answers) {
                Ok(Checked::Ask(question)) => {
                    if let Err(r) = self.answer(question, "RCPT", &address, &mut answers).await {
                        break Err(r);
                    }
                }
                Ok(Checked::Accept(rcpt, prepend)) => match self.spf_refusal() {
                    // SPF is asked after the restrictions, so relay
                    // control and unknown recipients answer first.
                    Some(r) => break Err(r),
                    None => break Ok((rcpt, prepend)),
                },
                Err(r) => break Err(r),
            }
        };
        match checked {
            Ok((rcpt, prepend)) => {
                match self.milter_rcpt(&rcpt).await {
                    MilterVerdict::Go => {}
                    MilterVerdict::Refuse(r) => {
                        self.counts.add("rcpt", false);
                        self.reply(&r);
                        return Flow::Continue;
                    }
                    MilterVerdict::Close(r) => {
                        self.counts.add("rcpt", false);
                        self.reply(&r);
                        return Flow::Close;
                    }
                }
                // Virtual aliases (alias.rs): the targets are what is stored.
                let rcpts = match self.expand_alias(rcpt, &mut answers).await {
                    Ok(rcpts) => rcpts,
                    Err(r) => {
                        self.counts.add("rcpt", false);
                        self.log_reject("RCPT", &r, Some(&address));
                        self.reply(&r);
                        return Flow::Continue;
                    }
                };
                let peer = self.peer.to_string();
                let queue = self.inbound.queue().clone();
                // With milters the header section stays out of the draft
                // until the commit (their edits are made to it there); with
                // sender authentication the draft keeps room for the
                // Authentication-Results header, known only at the end.
                let auth_head = matches!(&self.tx, Transaction::Mail(m) if self.wants_auth_header(m));
                let with_head = self.milters.is_some() || auth_head;
                if let Transaction::Mail(m) = &mut self.tx {
                    if m.draft.is_none() {
                        let draft = if with_head { queue.begin_with_head() } else { queue.begin() };
                        m.head = auth_head;
                        info!("{}: client={peer}", draft.id());
                        m.draft = Some(draft);
                    }
                    // A repeated recipient (or alias target) is accepted
                    // but stored once.
                    for rcpt in rcpts {
                        if !m.rcpts.iter().any(|r| r.address.eq_ignore_ascii_case(&rcpt.address)) {
                            m.rcpts.push(rcpt);
                        }
                    }
                    for h in prepend {
                        if !m.prepend.contains(&h) {
                            m.prepend.push(h);
                        }
                    }
                }
                self.counts.add("rcpt", true);
                self.reply(&Reply::new(250, Status(2, 1, 5), "Ok"));
            }
            Err(r) => {
                self.counts.add("rcpt", false);
                if r.code() != 503 {
                    self.log_reject("RCPT", &r, Some(&address));
                }
                self.milter_rcpt_refused(&address, &r).await;
                self.reply(&r);
            }
        }
        Flow::Continue
    }

    fn check_rcpt(&self, to: &RcptTo<Cow<'_, str>>, answers: &Answers) -> Result<Checked, Reply> {
        let s = &self.settings;
        let Transaction::Mail(m) = &self.tx else {
            return Err(Reply::new(503, Status(5, 5, 1), "Error: need MAIL command"));
        };
        if m.body.is_some() {
            return Err(Reply::new(503, Status(5, 5, 1), "Error: RCPT after BDAT"));
        }
        if m.rcpts.len() >= s.recipient_limit {
            return Err(Reply::new(452, Status(4, 5, 3), "Error: too many recipients"));
        }
        let address = to.address.as_ref();
        if address.is_empty() || !self.address_is_printable(address, "RCPT") {
            return Err(Reply::new(501, Status(5, 1, 3), "Bad recipient address syntax"));
        }
        if !m.smtputf8 && !address.is_ascii() {
            return Err(Reply::new(553, Status(5, 6, 7), "Must declare SMTPUTF8 to send unicode address"));
        }
        if !s.offers("dsn") {
            let notify = to.flags
                & (smtp_proto::RCPT_NOTIFY_NEVER
                    | smtp_proto::RCPT_NOTIFY_SUCCESS
                    | smtp_proto::RCPT_NOTIFY_FAILURE
                    | smtp_proto::RCPT_NOTIFY_DELAY)
                != 0;
            if let Some(p) = [(notify, "NOTIFY"), (to.orcpt.is_some(), "ORCPT")].iter().find(|(on, _)| *on) {
                return Err(Reply::new(555, Status(5, 5, 4), format!("Unsupported option: {}", p.1)));
            }
        }
        if to.flags & (smtp_proto::RCPT_RRVS_REJECT | smtp_proto::RCPT_RRVS_CONTINUE) != 0 {
            return Err(Reply::new(555, Status(5, 5, 4), "Unsupported option: RRVS"));
        }
        if to.flags & smtp_proto::RCPT_CONNEG != 0 {
            return Err(Reply::new(555, Status(5, 5, 4), "Unsupported option: CONNEG"));
        }
        let request = Request {
            client: self.peer.client(),
            helo: self.helo.as_ref().map(|h| h.name.as_str()),
            sender: &m.from,
            sender_domain: m.sender_domain,
            recipient: address,
            answers,
        };
        let prepend = match s.policy.check_prepending(&request) {
            (Decision::Refuse(r), _) => return Err(r),
            (Decision::Ask(question), _) => return Ok(Checked::Ask(question)),
            (Decision::Accept, prepend) => prepend,
        };
        let flags = to.flags;
        let notify = Notify {
            specified: flags
                & (smtp_proto::RCPT_NOTIFY_NEVER
                    | smtp_proto::RCPT_NOTIFY_SUCCESS
                    | smtp_proto::RCPT_NOTIFY_FAILURE
                    | smtp_proto::RCPT_NOTIFY_DELAY)
                != 0,
            never: flags & smtp_proto::RCPT_NOTIFY_NEVER != 0,
            success: flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
            failure: flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
            delay: flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
        };
        let mut rcpt = Recipient::new(address);
        rcpt.notify = notify;
        // smtp-proto accepts only the rfc822 address type and decodes the
        // xtext; the envelope keeps the wire form.
        rcpt.orcpt = to.orcpt.as_deref().map(|o| format!("rfc822;{}", xtext(o)));
        Ok(Checked::Accept(rcpt, prepend))
    }
}

/// A recipient check that got as far as the policy.
enum Checked {
    /// Accepted, with the headers the restrictions asked to prepend.
    Accept(Recipient, Vec<String>),
    /// A policy server or DNS must be asked before the decision.
    Ask(Question),
}
