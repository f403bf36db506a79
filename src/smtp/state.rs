//! The session's state, as data: what the client said so far (HELO/EHLO),
//! what the next input bytes are ([`Input`]), the mail transaction
//! ([`Transaction`], in which a recipient cannot exist before `MAIL`), the
//! message in transit ([`Body`]) and what the content checks said of it
//! ([`ContentVerdict`]), the counters of the `disconnect from` line, and
//! what the processing loop does next ([`Flow`]).
//!
//! Data only: the behaviour lives with the module that changes it (the
//! command stages, `message.rs` for the body and its verdict). Below every
//! stage and the session, so they all name these types without importing
//! one another.

use std::fmt;

use sluice_queue::{BodyType, Draft, DsnRet, Recipient};

use super::content::{BodyLines, Decoder, Headers};
use super::policy::DomainStatus;
use crate::auth::{MessageCheck, SpfReport, Strip};
use crate::config::HeaderAction;
use crate::reply::Reply;

/// What the client said in `HELO`/`EHLO`.
#[derive(Debug, Clone)]
pub(super) struct Helo {
    pub name: String,
    /// `EHLO` (extensions, PIPELINING) rather than `HELO`.
    pub esmtp: bool,
}

/// What the next input bytes are.
#[derive(Debug)]
pub(super) enum Input {
    /// Command lines.
    Command,
    /// The rest of a command line that was too long: skipped.
    SkipLine,
    /// DATA content up to the end-of-data line.
    Data,
    /// A BDAT chunk of which `left` bytes are still to come.
    Bdat { left: u64, last: bool },
    /// A BDAT chunk that will not be stored; `reply` is sent once it has
    /// been read.
    Discard { left: u64, reply: Reply },
}

/// The mail transaction. A recipient can only exist inside `Mail`, so
/// `RCPT` before `MAIL` cannot be represented.
#[derive(Debug, Default)]
pub(super) enum Transaction {
    #[default]
    Idle,
    Mail(Box<Mail>),
}

/// A transaction after `MAIL FROM`.
#[derive(Debug)]
pub(super) struct Mail {
    /// The reverse path, empty for `<>`.
    pub from: String,
    pub declared_size: Option<u64>,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub ret: DsnRet,
    /// `ENVID`, xtext-encoded as received.
    pub envid: Option<String>,
    pub rcpts: Vec<Recipient>,
    /// Opened at the first accepted recipient (the queue ID is assigned
    /// then, as Postfix does with `smtpd_delay_open_until_valid_rcpt`).
    pub draft: Option<Draft>,
    /// Content being received (DATA, or BDAT chunks so far).
    pub body: Option<Body>,
    /// What DNS said of the sender's domain (asked only for
    /// `reject_unknown_sender_domain`).
    pub sender_domain: DomainStatus,
    /// Headers restrictions asked to `PREPEND` (policy servers' results),
    /// written before our `Received:` as Postfix does.
    pub prepend: Vec<String>,
    /// The transaction's name for policy servers (`instance=`).
    pub instance: String,
    /// What the milters said of the transaction before its content.
    pub milter: MilterMarks,
    /// Sender authentication applies (the client is not in
    /// `sluice_auth_exempt_clients`): forged Authentication-Results
    /// headers are removed, and the checks run when the listener can.
    pub checked: bool,
    /// SPF of the HELO and MAIL FROM identities, found at MAIL FROM.
    pub spf: Option<SpfReport>,
    /// The draft keeps room for the Authentication-Results header, written
    /// at its top by the commit.
    pub head: bool,
}

/// Milter decisions that are not refusals and wait for the end of the
/// message: Postfix's DISCARD and HOLD flags of a transaction.
#[derive(Debug, Default)]
pub(super) struct MilterMarks {
    /// A milter said DISCARD (at MAIL, RCPT or DATA): the message is
    /// accepted and dropped, and its content goes to no milter.
    pub discard: bool,
    /// A milter said QUARANTINE: the message is queued on hold.
    pub hold: Option<String>,
}

/// Message content in transit to the draft.
#[derive(Debug)]
pub(super) struct Body {
    pub decoder: Decoder,
    /// Decoded bytes not yet appended to the draft.
    pub out: Vec<u8>,
    pub headers: Headers,
    /// Decoded client bytes so far (our `Received:` not included).
    pub size: u64,
    /// The first storage failure; the rest of the content is discarded.
    pub storage: Option<sluice_queue::Error>,
    /// What `header_checks` and `body_checks` said so far.
    pub verdict: ContentVerdict,
    /// The body lines for `body_checks` (`None` without them).
    pub lines: Option<BodyLines>,
    /// With milters: the header section, kept out of the draft until the
    /// commit so their edits are made to a list, not to stored bytes.
    pub head: Option<Head>,
    /// Sender authentication over the content (`None` for exempt clients).
    pub auth: Option<BodyAuth>,
}

/// The header section of a message that milters will see.
#[derive(Debug)]
pub(super) struct Head {
    /// The client's header section as received (less forged
    /// Authentication-Results fields), with the empty line that ends it;
    /// `None` until it is complete (its bytes wait in the body's `out`
    /// until then, never in the draft).
    pub bytes: Option<Vec<u8>>,
    /// Our `Received:` header (milters do not see it).
    pub received: String,
}

/// Sender authentication's view of the content in transit: the end-of-data
/// checks see every byte as received; the filter removing forged
/// Authentication-Results headers sits between the decoder and the draft
/// (with milters, it filters the header section once it is complete).
#[derive(Debug)]
pub(super) struct BodyAuth {
    /// DKIM body hashes and the kept header section (`None` when no
    /// end-of-data check runs).
    pub check: Option<MessageCheck>,
    pub strip: Strip,
    /// Decoded bytes on their way through `strip` (header section only).
    pub scratch: Vec<u8>,
}

/// The outcome of `header_checks` and `body_checks` for one message. Each
/// logged event is kept with its log text: `header NAME: value from
/// client; from=<...> to=<...> proto=... helo=<...>` (`body LINE from ...`
/// for body_checks), as Postfix's cleanup words it.
#[derive(Debug, Default)]
pub(super) struct ContentVerdict {
    /// REJECT or DISCARD (inspection stopped there), with its log text.
    pub stop: Option<(HeaderAction, String)>,
    /// HOLD: the message is queued on hold.
    pub hold: Option<String>,
}

/// What a milter decision means for the command it answers (`filters.rs`
/// decides, the stages act).
#[derive(Debug)]
pub(super) enum MilterVerdict {
    /// Carry on (a discard or a quarantine is marked on the transaction).
    Go,
    /// Refuse the command with this reply.
    Refuse(Reply),
    /// Send this reply (a 421) and close the connection.
    Close(Reply),
}

/// How a message the milters saw ended without a commit: the reply, and
/// whether it counts as accepted (a discard says `250` too).
#[derive(Debug)]
pub(super) struct MilterEnd {
    pub reply: Reply,
    pub queued: bool,
}

/// What the processing loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Process more buffered input.
    Continue,
    /// Flush replies and read.
    NeedInput,
    /// Flush replies and end the session.
    Close,
}

/// Per-command counters for the `disconnect from` line, as Postfix prints
/// them (`ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=6/7`).
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// (name, ok, total) in first-use order.
    items: Vec<(&'static str, u32, u32)>,
}

impl Counts {
    pub(super) fn add(&mut self, name: &'static str, ok: bool) {
        match self.items.iter_mut().find(|(n, _, _)| *n == name) {
            Some(item) => {
                item.1 += u32::from(ok);
                item.2 += 1;
            }
            None => self.items.push((name, u32::from(ok), 1)),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mut ok, mut total) = (0, 0);
        for (name, o, t) in &self.items {
            ok += o;
            total += t;
            if o == t {
                write!(f, " {name}={t}")?;
            } else {
                write!(f, " {name}={o}/{t}")?;
            }
        }
        if ok == total { write!(f, " commands={total}") } else { write!(f, " commands={ok}/{total}") }
    }
}
