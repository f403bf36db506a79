//! An address verification probe over an open connection: `MAIL FROM`,
//! `RCPT TO`, `RSET`, and no message (Postfix's verify(8) probes end the
//! same way, with `RSET` before any `DATA`).
//!
//! Owns the conversation and Postfix's text for what the server said;
//! the caller holds the gate's permit, chooses the connection and caches
//! the answer.

use super::connection::Connection;
use super::wire::{self, Caps, MailParams};
use super::*;
use crate::reply::Class;

/// What a probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// `2xx` to `RCPT TO`; the reply as one line.
    Accepted(String),
    /// `5xx` to `RCPT TO`: `host ... said: ... (in reply to RCPT TO command)`.
    Refused(String),
    /// `4xx` to `MAIL FROM` or `RCPT TO`, or `5xx` to `MAIL FROM` (the
    /// sender was judged, not the address): no answer about the address.
    Deferred(String),
    /// The connection broke or timed out (the text says while doing what).
    Broken(String),
}

impl Connection {
    /// Probes `rcpt` with `sender` as the reverse path. The second value
    /// says whether the connection can carry more (it said `250` to the
    /// closing `RSET`).
    pub async fn probe(&mut self, sender: &str, rcpt: &str) -> (ProbeAnswer, bool) {
        self.transactions += 1;
        if !wire::safe_address(sender) || !wire::safe_address(rcpt) || rcpt.is_empty() {
            return (ProbeAnswer::Refused("bad address syntax".into()), true);
        }
        let caps: Caps = self.caps;
        let params = MailParams {
            size: None,
            body: sluice_queue::BodyType::Unspecified,
            smtputf8: !sender.is_ascii() || !rcpt.is_ascii(),
            ret: DsnRet::Unspecified,
            envid: None,
        };
        let mail = wire::mail_from(sender, &params, &caps);
        let none = Notify::default();
        let rcpt_cmd = wire::rcpt_to(rcpt, &none, None, &caps);
        let answer = match self.exchange(&mail, Phase::Mail).await {
            Err(text) => return (ProbeAnswer::Broken(text), false),
            Ok(r) if r.class() != Class::Positive => ProbeAnswer::Deferred(self.said(&r, Phase::Mail)),
            Ok(_) => match self.exchange(&rcpt_cmd, Phase::Rcpt).await {
                Err(text) => return (ProbeAnswer::Broken(text), false),
                Ok(r) => match r.class() {
                    Class::Positive => ProbeAnswer::Accepted(r.to_one_line()),
                    Class::Transient => ProbeAnswer::Deferred(self.said(&r, Phase::Rcpt)),
                    Class::Permanent => ProbeAnswer::Refused(self.said(&r, Phase::Rcpt)),
                },
            },
        };
        let reusable = self.reset().await;
        self.idle_since = crate::clock::instant();
        (answer, reusable)
    }

    /// Sends one command and reads its reply; the error is Postfix's text
    /// for a broken conversation.
    async fn exchange(&mut self, command: &[u8], phase: Phase) -> Result<crate::reply::Reply, String> {
        if let Err(b) = self.send(command, phase).await {
            return Err(self.broken_text(&b));
        }
        self.reply(phase).await.map_err(|b| self.broken_text(&b))
    }

    /// `host mbx[10.0.0.1] said: 550 5.1.1 ... (in reply to RCPT TO command)`.
    fn said(&self, reply: &crate::reply::Reply, phase: Phase) -> String {
        format!(
            "host {} said: {} (in reply to {} command)",
            self.target.host(),
            reply.to_one_line(),
            phase.command(self.protocol)
        )
    }
}
