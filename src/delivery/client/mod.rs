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
mod handshake;
mod probe;
pub mod reader;
pub mod tls;
pub mod wire;

pub use self::connection::Connection;
pub use self::handshake::{open, open_with};
pub use self::probe::ProbeAnswer;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_queue::{BodyType, DsnRet, Notify};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Protocol;
use crate::reply::Status;

/// Per-phase timeouts of one client conversation (Postfix's
/// `lmtp_*_timeout` / `smtp_*_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/unix connect; Postfix's `lmtp_connect_timeout = 0` (the system's
    /// limit) is taken as 30 s so a silent peer cannot hold a slot for minutes.
    pub connect: Duration,
    /// Greeting and `LHLO`/`EHLO`/`HELO` replies.
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    /// Reply to `DATA` (the `354`).
    pub data_init: Duration,
    /// Writing the message body.
    pub data_xfer: Duration,
    /// Replies after the final dot.
    pub data_done: Duration,
    pub rset: Duration,
    pub quit: Duration,
}

impl Default for Timeouts {
    /// Postfix's `smtp_*` defaults.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            helo: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_xfer: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
            rset: Duration::from_secs(20),
            quit: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    /// The same timeout for every phase (tests).
    pub fn uniform(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            helo: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_xfer: d,
            data_done: d,
            rset: d,
            quit: d,
        }
    }
}

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
    /// The transaction was broken off on this side: the message could not
    /// be read from the queue ([`TransferOutcome::content_error`]). Says
    /// nothing about the backend.
    Aborted,
}

/// The result of one transaction.
#[derive(Debug)]
pub struct TransferOutcome {
    /// In the order of [`Transfer::rcpts`].
    pub rcpts: Vec<RcptResult>,
    pub health: Health,
    /// The session may carry another transaction.
    pub reusable: bool,
    /// The message could not be read (every recipient is then deferred
    /// and the caller decides what the error means: deleted meanwhile,
    /// quarantined, storage trouble).
    pub content_error: Option<sluice_queue::Error>,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct TransferRcpt<'a> {
    pub address: &'a str,
    pub notify: Notify,
    pub orcpt: Option<&'a str>,
}

/// A message body as a transaction reads it: from the start, one chunk at a
/// time, as often as needed (a look at its headers, then the transfer), so
/// a message of any size costs one chunk of memory. The queue's bodies
/// (`dispatch.rs`) and bodies in memory (tests) are both this.
pub trait Content: Send + Sync {
    /// The length in bytes.
    fn len(&self) -> u64;
    /// True for an empty body.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts reading from the beginning.
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Chunks + '_>, sluice_queue::Error>>;
}

/// A body being read: the next chunk, `None` at the end.
pub trait Chunks: Send {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, sluice_queue::Error>>;
}

/// How much of an in-memory body one chunk holds.
const MEMORY_CHUNK: usize = 64 * 1024;

impl Content for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Chunks + '_>, sluice_queue::Error>> {
        Box::pin(async move { Ok(Box::new(self.chunks(MEMORY_CHUNK)) as Box<dyn Chunks + '_>) })
    }
}

impl Chunks for std::slice::Chunks<'_, u8> {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, sluice_queue::Error>> {
        let next = self.next().map(<[u8]>::to_vec);
        Box::pin(async move { Ok(next) })
    }
}

/// One message to one backend, for some of its recipients: what one
/// mail transaction on a [`Connection`] transfers (the client side's
/// counterpart of the inbound server's transaction).
#[derive(Clone)]
pub struct Transfer<'a> {
    pub sender: &'a str,
    pub rcpts: Vec<TransferRcpt<'a>>,
    /// The stored message (CRLF line ends, not dot-stuffed).
    pub body: &'a dyn Content,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub ret: DsnRet,
    pub envid: Option<&'a str>,
}

impl fmt::Debug for Transfer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("sender", &self.sender)
            .field("rcpts", &self.rcpts)
            .field("size", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// How a connection is opened: the protocol and greeting, the timeouts,
/// TLS, and the loop check.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub protocol: Protocol,
    /// Our name in `LHLO`/`EHLO`.
    pub helo_name: &'a str,
    pub timeouts: &'a Timeouts,
    pub tls: &'a tls::Policy,
    /// `myhostname`, when a server answering `EHLO` with it is this host
    /// (mail that loops back): SMTP to port 25 or to a recipient's domain,
    /// as Postfix checks it. `None`: not checked (LMTP, configured next
    /// hops on other ports, which may well be servers on this machine
    /// with its name).
    pub loop_name: Option<&'a str>,
    /// The next hop as logs and errors name it (`example.org`), and the
    /// name `secure` TLS checks.
    pub nexthop: &'a str,
}

/// Why a connection could not be opened; the recipients are deferred with
/// this text (bounced when `dsn` is a `5.x.x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    pub text: String,
    pub dsn: Status,
    /// The failure is this host's own finding (mail that loops back), not
    /// the backend's trouble: it does not count against its breaker.
    pub ours: bool,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
