//! One restriction decision's inputs and outcome: the [`Request`] (client,
//! HELO, sender, recipient and the answers so far), the [`Question`]s a
//! restriction may need answered from outside (a policy server, a DNS
//! listing, a host name, a directory table's answer for a key) and their
//! [`Answers`], and the [`Decision`].
//!
//! Plain data: the evaluation is `policy/mod.rs`'s, the finding out is
//! the session's (`answer.rs`).

use super::super::naming::{Client, Listing};
use crate::config::{Known, PolicyService, Query};
use crate::reply::Reply;
use crate::verify::Verdict;

/// Everything a recipient decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client: Client<'a>,
    /// The HELO/EHLO name, if given.
    pub helo: Option<&'a str>,
    /// The reverse path (empty for `<>`).
    pub sender: &'a str,
    /// What DNS said of the sender's domain, when a restriction asked
    /// ([`Policy::checks_sender_domain`]); `Found` otherwise.
    pub sender_domain: DomainStatus,
    /// The recipient, without angle brackets.
    pub recipient: &'a str,
    /// What was asked on the way to this decision. A restriction whose
    /// answer is not here makes the decision [`Decision::Ask`].
    pub answers: &'a Answers,
}

/// What a restriction needs to know from outside before it can decide:
/// the session finds out and decides again with the answer in
/// [`Answers`]. Asked only when a restriction is reached, as Postfix does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// A policy server's `action=` (`check_policy_service`).
    Policy(PolicyService),
    /// What the domain blocklist `list` says of `domain` (`reject_rhsbl_*`):
    /// the address records of `<domain>.<list>`
    /// ([`Question::listing_key`]).
    Listing { domain: String, list: String },
    /// Whether this host name has an address or MX record
    /// (`reject_unknown_helo_hostname`).
    Host(String),
    /// What a directory table (`ldap:`, `pgsql:`, ...) answers for a key:
    /// relay_domains, relay_recipient_maps and `check_*_access` tables
    /// reach their keys one at a time and ask for each they lack.
    Lookup(Query),
    /// What the recipient's own mailbox server says of this address
    /// (`reject_unverified_recipient`): a probe, or the cached answer.
    Verify(String),
}

impl Question {
    /// The name a [`Question::Listing`]'s answer is kept under in
    /// [`Answers::listings`].
    pub fn listing_key(domain: &str, list: &str) -> String {
        format!("{domain}.{list}")
    }
}

/// The answers to [`Question`]s so far, for one decision.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// (policy server name, `action=` value).
    pub policy: Vec<(String, String)>,
    /// (query name, what the domain blocklist answered).
    pub listings: Vec<(String, Listing)>,
    /// (host name, what DNS says of it).
    pub hosts: Vec<(String, DomainStatus)>,
    /// What directory tables answered ([`Question::Lookup`]).
    pub tables: Known,
    /// (address, verification verdict) ([`Question::Verify`]).
    pub verified: Vec<(String, Verdict)>,
}

/// No answers: for a decision asked outside a session.
pub static NO_ANSWERS: Answers = Answers {
    policy: Vec::new(),
    listings: Vec::new(),
    hosts: Vec::new(),
    tables: Known::EMPTY,
    verified: Vec::new(),
};

impl Answers {
    /// How many questions were answered.
    pub fn len(&self) -> usize {
        self.policy.len() + self.listings.len() + self.hosts.len() + self.tables.len() + self.verified.len()
    }

    /// True when nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn policy(&self, name: &str) -> Option<&str> {
        self.policy.iter().find(|(n, _)| n == name).map(|(_, a)| a.as_str())
    }

    pub(super) fn listing(&self, query: &str) -> Option<&Listing> {
        self.listings.iter().find(|(q, _)| q == query).map(|(_, l)| l)
    }

    pub(super) fn verdict(&self, address: &str) -> Option<&Verdict> {
        self.verified.iter().find(|(a, _)| a == address).map(|(_, v)| v)
    }

    pub(super) fn host(&self, name: &str) -> Option<DomainStatus> {
        self.hosts.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// What DNS says of a mail domain (`reject_unknown_sender_domain`) or a
/// host name (`reject_unknown_helo_hostname`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomainStatus {
    /// It has an MX or an address record (or was not looked up).
    #[default]
    Found,
    /// Its only MX is the null MX (RFC 7505): it sends but takes no mail.
    NullMx,
    /// It has neither.
    NotFound,
    /// The lookup failed for now.
    TryAgain,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Refuse with this reply (4xx: try later, 5xx: never).
    Refuse(Reply),
    /// Find this out, then decide again with the answer in
    /// [`Request::answers`].
    Ask(Question),
}
