//! The delivery client: one conversation with a backend over LMTP
//! (RFC 2033) or SMTP (RFC 5321), on a TCP or unix socket.
//!
//! Both protocols share everything but two points, switched on
//! [`Protocol`]: the greeting command (`LHLO` vs `EHLO` with a `HELO`
//! fallback) and the replies after the final dot (one per accepted
//! recipient in LMTP, one for the transaction in SMTP). Commands are
//! pipelined when the server offers `PIPELINING`; every read and write has
//! its phase's timeout (`*_helo_timeout`, `*_mail_timeout`, ...).
//!
//! Owns turning one transaction into one verdict per recipient plus a
//! [`Health`] verdict on the backend, with Postfix's texts for logs and
//! bounces. Never decides retries or touches the queue; the connection
//! pool and the gate are the caller's.

mod connection;
pub mod wire;

pub use self::connection::{Connection, open};

use std::fmt;
use std::time::Duration;

use sluice_queue::{BodyType, DsnRet, Notify};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Protocol;
use crate::reply::Status;

/// A byte stream to a backend: TCP, unix socket, or an in-memory pipe in
/// tests.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A phase of the conversation, for timeouts and error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Greeting,
    Hello,
    Mail,
    Rcpt,
    Data,
    Body,
    Dot,
    Rset,
    Quit,
}

impl Phase {
    /// Postfix's words: "... timed out while {this}".
    fn doing(self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (Phase::Greeting, _) => "receiving the initial server greeting",
            (Phase::Hello, Protocol::Lmtp) => "performing the LHLO handshake",
            (Phase::Hello, Protocol::Smtp) => "performing the EHLO handshake",
            (Phase::Mail, _) => "sending MAIL FROM",
            (Phase::Rcpt, _) => "sending RCPT TO",
            (Phase::Data, _) => "sending DATA command",
            (Phase::Body, _) => "sending message body",
            (Phase::Dot, _) => "sending end of data -- message may be sent more than once",
            (Phase::Rset, _) => "sending RSET",
            (Phase::Quit, _) => "sending QUIT",
        }
    }

    /// Postfix's words: "(in reply to {this} command)".
    fn command(self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (Phase::Greeting, _) => "initial greeting",
            (Phase::Hello, Protocol::Lmtp) => "LHLO",
            (Phase::Hello, Protocol::Smtp) => "EHLO",
            (Phase::Mail, _) => "MAIL FROM",
            (Phase::Rcpt, _) => "RCPT TO",
            (Phase::Data, _) => "DATA",
            (Phase::Body | Phase::Dot, _) => "end of DATA",
            (Phase::Rset, _) => "RSET",
            (Phase::Quit, _) => "QUIT",
        }
    }
}

/// Why a conversation broke off.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Broken {
    Timeout(Phase),
    Lost(Phase),
    /// The peer sent something that is not an SMTP reply.
    Garbled(Phase, String),
}

impl Broken {
    fn phase(&self) -> Phase {
        match self {
            Broken::Timeout(p) | Broken::Lost(p) | Broken::Garbled(p, _) => *p,
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Deferred,
    Bounced,
}

/// One recipient's result, with the texts logs and bounces need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    pub verdict: Verdict,
    pub dsn: Status,
    /// What `status=... (TEXT)` says: the backend's reply for a success,
    /// `host X said: ... (in reply to ... command)` or a local explanation
    /// otherwise.
    pub text: String,
    /// The backend's own reply, when it gave one (`Diagnostic-Code:`).
    pub diagnostic: Option<String>,
}

impl RcptResult {
    fn local(verdict: Verdict, dsn: Status, text: impl Into<String>) -> RcptResult {
        RcptResult { verdict, dsn, text: text.into(), diagnostic: None }
    }
}

/// The backend's health as one transaction showed it (see
/// [`gate::Report`](crate::delivery::gate::Report)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The backend answered the transaction. `latency` is the server's part
    /// of a complete transaction (from `MAIL` to the `354`, plus from the
    /// final dot to the last reply: the body's transfer time is left out so
    /// a large message does not look like a slow server); `None` when the
    /// transaction ended early (rejected sender or recipients), whose
    /// quicker answers would mislead the latency estimate.
    Completed { latency: Option<Duration> },
    /// A `4xx` at `MAIL`/`DATA` or per-recipient system errors.
    Overloaded(String),
    /// Connection refused, timed out or lost, or `421`.
    Failed(String),
    /// Nothing was asked of the backend (the message could not be sent to
    /// it at all, e.g. SMTPUTF8 not offered).
    Untested,
}

/// The result of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    /// In the order of [`Transfer::rcpts`].
    pub rcpts: Vec<RcptResult>,
    pub health: Health,
    /// The session may carry another transaction.
    pub reusable: bool,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct TransferRcpt<'a> {
    pub address: &'a str,
    pub notify: Notify,
    pub orcpt: Option<&'a str>,
}

/// One message to one backend, for some of its recipients: what one
/// mail transaction on a [`Connection`] transfers (the client side's
/// counterpart of the inbound server's transaction).
#[derive(Debug, Clone)]
pub struct Transfer<'a> {
    pub sender: &'a str,
    pub rcpts: Vec<TransferRcpt<'a>>,
    /// The stored message (CRLF line ends, not dot-stuffed).
    pub body: &'a [u8],
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub ret: DsnRet,
    pub envid: Option<&'a str>,
}

/// Why a connection could not be opened; the recipients are deferred with
/// this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    pub text: String,
    pub dsn: Status,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
