//! The restriction questions: the decisions of `policy/` are pure, and
//! when one needs something the session does not know yet (a policy
//! server's action, a DNS blocklist listing, whether a host name exists,
//! what a recipient's mailbox server says of it)
//! it asks a [`Question`](Question). This module finds the
//! answer ([`Session::answer`]: the policy client call with Postfix's
//! attributes, the DNS lookup within `sluice_peername_lookup_timeout`, or
//! a directory table's lookup within the table's timeout, the recipient
//! verifier's verdict)
//! and runs the `DATA` decision ([`Session::data_refusal`]); `rcpt.rs`
//! runs the `RCPT` one the same way.
//!
//! Never decides anything itself: every decision is the policy's, asked
//! again with the answers gathered so far.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::error;

use super::policy::{Answers, Decision, DomainStatus, Question, Request};
use super::session::Session;
use super::state::Transaction;
use crate::config::PolicyService;
use crate::reply::{Reply, Status};
use crate::verify::Verdict;

/// The most questions one restriction decision may ask (see
/// [`Session::answer`]); far more than any restriction list has.
const MAX_QUESTIONS: usize = 100;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `smtpd_data_restrictions` for the current transaction: the refusal,
    /// if any (the caller logs it).
    pub(super) async fn data_refusal(&mut self) -> Option<Reply> {
        let mut answers = Answers::default();
        loop {
            match self.data_decision(&answers)? {
                Ok(r) => return r,
                Err(question) => {
                    if let Err(r) = self.answer(question, "DATA", "", &mut answers).await {
                        return Some(r);
                    }
                }
            }
        }
    }

    /// Finds out what a restriction asked (`question`) at `state` (`RCPT`,
    /// `DATA`) about `recipient`, into `answers` for the next round of the
    /// decision. DNS questions are bounded by sluice_peername_lookup_timeout;
    /// without a resolver, a name is not listed and a host lookup fails for
    /// now.
    ///
    /// A decision asks each question once, so more than [`MAX_QUESTIONS`]
    /// means one is asked again and again: it is cut off with a 451
    /// instead of looping.
    pub(super) async fn answer(
        &self,
        question: Question,
        state: &str,
        recipient: &str,
        answers: &mut Answers,
    ) -> Result<(), Reply> {
        if answers.len() >= MAX_QUESTIONS {
            error!(
                "{}: {question:?} asked again after {MAX_QUESTIONS} answers; decision cut off",
                self.queue_id()
            );
            return Err(Reply::new(451, Status(4, 3, 0), "Error: internal restriction error"));
        }
        let timeout = self.settings.peername_timeout;
        let resolver = self.inbound.resolver();
        match question {
            Question::Policy(service) => {
                let action = self.ask_policy(&service, state, recipient).await;
                answers.policy.push((service.name, action));
            }
            Question::Listing { domain, list } => {
                let listed = match &resolver {
                    Some(r) => super::peer::rhsbl_listing(r.as_ref(), &domain, &list, timeout).await,
                    None => Default::default(),
                };
                answers.listings.push((Question::listing_key(&domain, &list), listed));
            }
            Question::Host(name) => {
                let status = match &resolver {
                    Some(r) => super::mail::domain_status(r.as_ref(), &name, timeout).await,
                    None => DomainStatus::TryAgain,
                };
                answers.hosts.push((name, status));
            }
            // Through the table's cache and breakers, within its timeout.
            // A failure is never "not found": the client is told to try
            // again (Postfix's "Temporary lookup failure"); the table has
            // logged what failed and for which key.
            // The recipient's own backend, through its gate and the
            // verification cache, within address_verify_poll_count x
            // address_verify_poll_delay; the policy turns the verdict into
            // a reply. A listener without a verifier cannot verify now.
            Question::Verify(address) => {
                let verdict = match self.inbound.verifier() {
                    // An alias is verified through its targets (alias.rs),
                    // as Postfix's probe goes through cleanup's expansion:
                    // deliverable when every target is, else the first
                    // verdict that is not.
                    // The client waits one poll window for the alias, not
                    // one per target (the verifier bounds them together).
                    Some(v) => v.verify(&self.verify_targets(&address, &mut answers.tables).await).await,
                    None => Verdict::Tempfail("address verification is not available".into()),
                };
                answers.verified.push((address, verdict));
            }
            Question::Lookup(query) => match query.ask().await {
                Ok(answer) => answers.tables.insert(&query, answer),
                Err(_) => {
                    let what = if recipient.is_empty() { state } else { recipient };
                    return Err(Reply::new(
                        451,
                        Status(4, 3, 0),
                        format!("<{what}>: Temporary lookup failure"),
                    ));
                }
            },
        }
        Ok(())
    }

    /// One round of [`Session::data_refusal`]: `None` without a
    /// transaction or restrictions, `Err` when a policy server must be
    /// asked first.
    fn data_decision(&self, answers: &Answers) -> Option<Result<Option<Reply>, Question>> {
        let Transaction::Mail(m) = &self.tx else { return None };
        if self.settings.policy.data.is_empty() {
            return None;
        }
        let request = Request {
            client: self.peer.client(),
            helo: self.helo.as_ref().map(|h| h.name.as_str()),
            sender: &m.from,
            sender_domain: m.sender_domain,
            recipient: m.rcpts.last().map_or("", |r| r.address.as_str()),
            answers,
        };
        Some(match self.settings.policy.check_data(&request) {
            Decision::Accept => Ok(None),
            Decision::Refuse(r) => Ok(Some(r)),
            Decision::Ask(question) => Err(question),
        })
    }

    /// Asks a policy server about the current transaction at `state`
    /// (`RCPT`, `DATA`), with Postfix's attribute names.
    pub(super) async fn ask_policy(&self, service: &PolicyService, state: &str, recipient: &str) -> String {
        let (sender, count, instance, size) = match &self.tx {
            Transaction::Mail(m) => {
                (m.from.clone(), m.rcpts.len(), m.instance.clone(), m.declared_size.unwrap_or(0))
            }
            Transaction::Idle => (String::new(), 0, String::new(), 0),
        };
        let (tls_version, tls_cipher) =
            self.tls.as_ref().map(|t| (t.version.clone(), t.cipher.clone())).unwrap_or_default();
        let attributes = [
            ("request", "smtpd_access_policy".to_owned()),
            ("protocol_state", state.to_owned()),
            ("protocol_name", self.protocol(false)),
            ("helo_name", self.helo.as_ref().map(|h| h.name.clone()).unwrap_or_default()),
            ("queue_id", self.queue_id().replace("NOQUEUE", "")),
            ("sender", sender),
            ("recipient", recipient.to_owned()),
            ("recipient_count", count.to_string()),
            ("client_address", self.peer.addr.to_string()),
            ("client_name", self.peer.name.clone()),
            ("reverse_client_name", self.peer.reverse_name.clone()),
            ("instance", instance),
            ("size", size.to_string()),
            ("encryption_protocol", tls_version),
            ("encryption_cipher", tls_cipher),
        ];
        let s = &self.settings;
        super::policy_client::ask(service, &attributes, s.policy_timeout, &s.policy_default_action).await
    }
}
