//! Recipient address verification (`reject_unverified_recipient`) as the
//! SMTP server sees it: the [`Verifier`] trait and its [`Verdict`].
//!
//! Lives on the ground floor because two wings meet here: delivery
//! implements the trait (the probe is a conversation with the recipient's
//! own backend through its gate, and the answers are cached in the queue);
//! the SMTP server calls it at `RCPT` and turns the verdict into a reply.
//! The server wiring hands one to the other, so neither imports the other.
//!
//! Owns the contract only: no probing, no caching, no replies.

use futures::future::BoxFuture;

/// What verification found out about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The mailbox server accepted the address (`2xx` to `RCPT TO`).
    Deliverable,
    /// The mailbox server refused it for good (`5xx`); the text is what it
    /// said, as Postfix's verify(8) reports it
    /// (`host mbx[10.0.0.1] said: 550 5.1.1 <a@b> User unknown (in reply to
    /// RCPT TO command)`).
    Undeliverable(String),
    /// The mailbox server refused it for now (`4xx`), or the probe failed
    /// after it reached the server: try again later.
    Unverified(String),
    /// No answer could be had in time without adding load to a backend
    /// that cannot take it (no slot, paused, breaker open, the probe still
    /// running when the time ran out, no route): the restriction's
    /// `unverified_recipient_tempfail_action` decides.
    Tempfail(String),
}

/// Verifies recipient addresses. Implemented by delivery; the SMTP server
/// holds it as `Arc<dyn Verifier>`.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// What is known of `addresses` (one recipient, or the targets of one
    /// alias), probing their backends when the cache has no answer:
    /// [`Verdict::Deliverable`] when each is, else the first verdict in
    /// order that is not (the addresses after it are not asked). Bounded in
    /// time by the implementation, for all of them together
    /// (`address_verify_poll_count` × `address_verify_poll_delay`).
    fn verify<'a>(&'a self, addresses: &'a [String]) -> BoxFuture<'a, Verdict>;
}
