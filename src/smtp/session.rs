//! One SMTP session: a struct, an [`Input`] mode and a [`Transaction`]
//! state, and one [`Session::run`].
//!
//! `run()` alternates between two things: processing every complete request
//! already buffered (commands, message content, BDAT chunks — this is where
//! replies are produced and the queue commit is awaited), and, when more
//! bytes are needed, flushing the batched replies and reading, racing the
//! read against its deadline and, between commands, against shutdown.
//! Replies are therefore sent in order and in batches (RFC 2920
//! PIPELINING), and shutdown can never cut a commit in half: it is only
//! looked at while waiting for a command.
//!
//! The stage handlers live beside this file (`ehlo.rs`, `mail.rs`,
//! `rcpt.rs`, `data.rs`, `bdat.rs`, `tls.rs`); this file owns the loop, the
//! deadlines, error counting, pipelining rules and the queue commit. It is
//! generic over the byte stream so tests drive it over `tokio::io::duplex`.
//!
//! Memory is bounded per session: the read buffer holds at most one command
//! line (`line_length_limit`) or one read of message content, and message
//! content goes to the queue draft in chunks as it is decoded.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::FutureExt;
use sluice_queue::{BodyType, ClientInfo, Draft, DsnRet, Envelope, Recipient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::data::{self, BareNewline, BodyLines, Decoder, Headers, Violation};
use super::events::{self, Event};
use super::listener::Inbound;
use super::peer::Peer;
use super::settings::Settings;
use super::tls::{Stream, TlsInfo};
use crate::clock;
use crate::config::{HeaderAction, PolicyService};
use crate::reply::{Reply, Status};
use crate::shutdown::Stage;

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Decoded content is handed to the queue draft once this much is pending.
const APPEND_AT: usize = 64 * 1024;

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
    pub sender_domain: super::policy::DomainStatus,
    /// Headers restrictions asked to `PREPEND` (policy servers' results),
    /// written before our `Received:` as Postfix does.
    pub prepend: Vec<String>,
    /// The transaction's name for policy servers (`instance=`).
    pub instance: String,
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
}

/// The most questions one restriction decision may ask (see
/// [`Session::answer`]); far more than any restriction list has.
const MAX_QUESTIONS: usize = 100;

/// Which content table a line meets.
#[derive(Debug, Clone, Copy)]
enum Content {
    Header,
    Body,
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

impl ContentVerdict {
    /// Runs `checks` over each logical header line, logging WARN at once.
    fn of(checks: &crate::config::Maps, headers: &Headers, id: &str, context: &str) -> ContentVerdict {
        let mut v = ContentVerdict::default();
        for line in headers.logical_lines() {
            if !v.check(Content::Header, checks, &line, id, context) {
                break;
            }
        }
        v
    }

    /// Looks `line` up in `checks` (header_checks or body_checks, as `kind`
    /// says) and records or logs what the result asks. False once the
    /// message is refused or discarded: inspection stops there.
    fn check(
        &mut self,
        kind: Content,
        checks: &crate::config::Maps,
        line: &str,
        id: &str,
        context: &str,
    ) -> bool {
        let (word, param) = match kind {
            Content::Header => ("header", "header_checks"),
            Content::Body => ("body", "body_checks"),
        };
        let result = match checks.lookup(line) {
            Ok(Some(r)) => r,
            Ok(None) => return true,
            Err(e) => {
                warn!("{id}: {param}: {e}");
                return true;
            }
        };
        let shown = printable(line.replace('\n', " ").as_bytes());
        let log = |text: &Option<String>, default: &str| {
            format!("{word} {shown} from {context}: {}", text.as_deref().unwrap_or(default))
        };
        match HeaderAction::parse(&result) {
            Ok(HeaderAction::Reject(t)) => {
                let line = log(&t.as_ref().map(|t| format!("5.7.1 {t}")), "5.7.1 Message content rejected");
                self.stop = Some((HeaderAction::Reject(t), line));
                return false;
            }
            Ok(HeaderAction::Discard(t)) => {
                let line = log(&t, param);
                self.stop = Some((HeaderAction::Discard(t), line));
                return false;
            }
            Ok(HeaderAction::Hold(t)) => {
                self.hold.get_or_insert_with(|| log(&t, param));
            }
            // Postfix words it `ID: warning: header ...` (an event, not a fault).
            Ok(HeaderAction::Warn(t)) => info!("{id}: warning: {}", log(&t, param)),
            Ok(HeaderAction::Dunno) => {}
            Ok(HeaderAction::Unsupported(word)) => {
                warn!("{id}: {param} action {word} is not supported; taken as DUNNO")
            }
            Err(e) => warn!("{id}: {param}: {e}; taken as DUNNO"),
        }
        true
    }

    /// True once the message is refused or discarded: nothing more of it
    /// needs storing.
    pub fn stops(&self) -> bool {
        self.stop.is_some()
    }
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

/// Outcome of one read.
enum Read {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Failed(std::io::Error),
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

/// One client connection.
pub(crate) struct Session<S> {
    pub(super) stream: Stream<S>,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: Vec<u8>,
    pub(super) settings: Arc<Settings>,
    pub(super) inbound: Arc<Inbound>,
    pub(super) stage: Stage,
    pub(super) peer: Peer,
    pub(super) helo: Option<Helo>,
    pub(super) tls: Option<TlsInfo>,
    pub(super) input: Input,
    pub(super) tx: Transaction,
    /// `smtpd_forbid_bare_newline` as it applies to this client.
    pub(super) mode: BareNewline,
    pub(super) errors: u32,
    /// The error count at the last error pause (one pause per error).
    slept_for: u32,
    pub(super) junk: u32,
    pub(super) counts: Counts,
    /// The last command, for `timeout after DATA`-style log lines.
    pub(super) last: &'static str,
    started: Instant,
    /// When the current command line started to be awaited.
    request_started: Instant,
    /// When the current DATA/BDAT transfer started, and its bytes so far.
    pub(super) xfer_started: Instant,
    pub(super) xfer_bytes: u64,
    last_read: Instant,
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session over `stream` with the settings current at accept time.
    pub(crate) fn new(
        stream: S,
        peer: Peer,
        inbound: Arc<Inbound>,
        settings: Arc<Settings>,
        stage: Stage,
    ) -> Self {
        let now = clock::instant();
        Session {
            stream: Stream::Plain(stream),
            rbuf: BytesMut::with_capacity(4096),
            wbuf: Vec::with_capacity(512),
            mode: settings.bare_newline_for(peer.addr),
            settings,
            inbound,
            stage,
            peer,
            helo: None,
            tls: None,
            input: Input::Command,
            tx: Transaction::Idle,
            errors: 0,
            slept_for: 0,
            junk: 0,
            counts: Counts::default(),
            last: "CONNECT",
            started: now,
            request_started: now,
            xfer_started: now,
            xfer_bytes: 0,
            last_read: now,
        }
    }

    /// Starts the session with `early` as the first bytes read from the
    /// client (read before the session began, after a PROXY header).
    pub(crate) fn with_input(mut self, early: BytesMut) -> Self {
        self.rbuf.unsplit(early);
        self
    }

    /// Runs the session to its end and closes the stream. Never panics on
    /// client input; every failure ends as a log line.
    pub(crate) async fn run(mut self) {
        events::emit(Event::Connected);
        // Before the greeting and the `connect from` line, as Postfix: every
        // line of the session then names the client the same way. The DNS
        // blocklists the restrictions name are asked at the same time. Both
        // are bounded by sluice_peername_lookup_timeout, so a dead name
        // server delays the greeting by at most that.
        if let Some(resolver) = self.inbound.resolver() {
            let timeout = self.settings.peername_timeout;
            let blocklists = self.settings.policy.dnsbl_domains();
            let (lookup, addr) = (self.settings.peername_lookup, self.peer.addr);
            let peer = &mut self.peer;
            let (_, listed) = tokio::join!(
                async {
                    if lookup {
                        peer.look_up_name(resolver.as_ref(), timeout).await;
                    }
                },
                super::peer::dnsbl_listings(resolver.as_ref(), addr, &blocklists, timeout)
            );
            self.peer.dnsbl = listed;
        }
        info!("connect from {}", self.peer);
        self.serve().await;
        // Whatever ended the session, a transaction still open is not
        // going to be committed: its staged body must not linger.
        self.reset().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        info!("disconnect from {}{}", self.peer, self.counts);
        events::emit(Event::Disconnected);
    }

    async fn serve(&mut self) {
        if !self.greet().await {
            return;
        }
        loop {
            if self.advance().await == Flow::Close {
                return;
            }
            // Shutdown is honoured between commands only: a client in the
            // middle of DATA or a BDAT chunk is let finish (its deadlines
            // still apply), so its message is committed and answered before
            // the 421, and the client does not send it again.
            if self.stage.is_cancelled() && matches!(self.input, Input::Command | Input::SkipLine) {
                self.reply_shutting_down();
                return;
            }
            if let Err(e) = self.flush().await {
                info!("lost connection after {} from {}: {e}", self.last, self.peer);
                return;
            }
            match self.read().await {
                Read::Data => {}
                Read::Eof => {
                    if self.last != "QUIT" {
                        info!("lost connection after {} from {}", self.last, self.peer);
                    }
                    return;
                }
                Read::Failed(e) => {
                    info!("lost connection after {} from {}: {e}", self.last, self.peer);
                    return;
                }
                Read::Timeout => {
                    events::emit(Event::Timeout);
                    info!("timeout after {} from {}", self.last, self.peer);
                    let host = self.settings.myhostname.clone();
                    self.reply(&Reply::new(421, Status(4, 4, 2), format!("{host} Error: timeout exceeded")));
                    return;
                }
                Read::Shutdown => {
                    self.reply_shutting_down();
                    return;
                }
            }
        }
    }

    /// Sends the greeting, after checking that the client has not talked
    /// first (spamware does; RFC 5321 clients wait for the greeting).
    async fn greet(&mut self) -> bool {
        if !self.settings.greet_pause.is_zero() {
            let pause = self.settings.greet_pause;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stage.cancelled() => return false,
                r = self.stream.read_buf(&mut self.rbuf) => if let Ok(0) | Err(_) = r { return false },
            }
        }
        // Anything already readable arrived before the greeting was sent.
        // One poll with no waiting: a pause here would cost every
        // legitimate client its length (the optional pause above is the
        // administrator's choice), and a bot that talks first usually has
        // its bytes in the socket by the time it is accepted.
        if self.rbuf.is_empty()
            && let Some(r) = self.stream.read_buf(&mut self.rbuf).now_or_never()
            && matches!(r, Ok(0) | Err(_))
        {
            return false;
        }
        if !self.rbuf.is_empty() && self.settings.forbid_unauth_pipelining {
            self.protocol_violation();
            let _ = self.flush().await;
            return false;
        }
        let banner = self.settings.banner.clone();
        self.reply(&Reply::multiline(220, None, vec![banner]));
        true
    }

    /// Processes buffered input until more is needed or the session ends.
    async fn advance(&mut self) -> Flow {
        loop {
            let flow = match self.input {
                Input::Command | Input::SkipLine => self.next_command().await,
                Input::Data => self.data_input().await,
                Input::Bdat { .. } => self.bdat_input().await,
                Input::Discard { .. } => self.discard_input(),
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    /// Takes one command line off the buffer and executes it.
    async fn next_command(&mut self) -> Flow {
        let limit = self.settings.command_line_limit;
        let Some(nl) = memchr::memchr(b'\n', &self.rbuf) else {
            // No line end yet. Past the limit the line is refused at once
            // and its remainder skipped as it arrives (SkipLine), so the
            // buffer never holds more than one limit's worth of it.
            if self.rbuf.len() > limit + 2 {
                self.rbuf.clear();
                if matches!(self.input, Input::Command) {
                    self.input = Input::SkipLine;
                    return self.line_too_long().await;
                }
            } else if matches!(self.input, Input::SkipLine) {
                self.rbuf.clear();
            }
            return Flow::NeedInput;
        };
        let line = self.rbuf.split_to(nl + 1);
        if matches!(self.input, Input::SkipLine) {
            self.input = Input::Command;
            return Flow::Continue;
        }
        if line.len() > limit + 2 {
            return self.line_too_long().await;
        }
        self.request_started = clock::instant();
        let flow = self.command(&line).await;
        if flow == Flow::Close {
            return flow;
        }
        self.check_errors().await
    }

    async fn line_too_long(&mut self) -> Flow {
        self.reply(&Reply::new(500, Status(5, 5, 2), "Error: command line too long"));
        self.check_errors().await
    }

    /// Executes one command line (with its line end).
    async fn command(&mut self, line: &[u8]) -> Flow {
        if self.mode == BareNewline::Reject {
            let body = line.strip_suffix(b"\r\n");
            let bare = match body {
                None => Some(Violation::BareLf),
                Some(b) if b.contains(&b'\r') => Some(Violation::BareCr),
                Some(_) => None,
            };
            if let Some(v) = bare {
                let code = self.settings.bare_newline_reject_code;
                let r = v.reply(code);
                warn!(
                    "{} from {}",
                    if v == Violation::BareLf { "bare <LF> received" } else { "bare <CR> received" },
                    self.peer
                );
                self.reply(&r);
                return if code == 521 { Flow::Close } else { Flow::Continue };
            }
        }
        // An HTTP request or a mail header on the SMTP port is not an MTA
        // that lost its way: it is a proxy or browser being abused to talk
        // to us. Postfix answers it with 221 and hangs up; so do we.
        let verb = verb(line);
        if is_forbidden(&verb) {
            warn!("non-SMTP command from {}: {}", self.peer, printable(line));
            self.reply(&Reply::new(221, Status(2, 7, 0), "Error: I can break rules, too. Goodbye."));
            return Flow::Close;
        }
        // smtp-proto reads dot-atom domains only; an address literal
        // (RFC 5321 4.1.3) is parsed under a stand-in name and put back.
        let stand_in = stand_in_literal(line);
        let parsed_line = stand_in.as_ref().map_or(line, |(l, _)| l.as_slice());
        let mut request = smtp_proto::Request::parse(&mut parsed_line.iter());
        if let Some((_, literal)) = &stand_in {
            put_back_literal(&mut request, literal);
        }
        let name = match &request {
            Ok(r) => r.name(),
            Err(_) => "UNKNOWN",
        };
        // RFC 2920 3.1: these end a pipelined group; a client that sends
        // more before their reply has not waited as it must. Clients that
        // did not say EHLO may not pipeline at all. BDAT is followed by its
        // chunk, not by a command.
        let last_in_group =
            matches!(name, "EHLO" | "HELO" | "DATA" | "VRFY" | "EXPN" | "NOOP" | "QUIT" | "HELP");
        if self.settings.forbid_unauth_pipelining
            && !self.rbuf.is_empty()
            && name != "BDAT"
            && name != "STARTTLS"
            && (last_in_group || !self.esmtp() || !self.settings.offers("pipelining"))
        {
            self.last = name;
            self.protocol_violation();
            return Flow::Close;
        }
        match request {
            // smtp-proto skips whatever follows these verbs; RFC 5321 gives
            // them no arguments, and Postfix refuses `DATA x`. Taking it
            // would put sluice in DATA mode where a strict hop in front
            // still reads commands: a disagreement smugglers live on.
            Ok(req) if takes_no_arguments(name) && has_arguments(line) => {
                self.last = name;
                self.counts.add(counter(name), false);
                self.reply(&Reply::new(501, Status(5, 5, 4), format!("Syntax: {name}")));
                let _ = req;
                Flow::Continue
            }
            // smtp-proto reads `<Postmaster>` (RFC 5321 4.1.1.3: without a
            // domain, any case) as the empty path; it must be accepted
            // (4.5.1) and, as Postfix's append_at_myorigin does, it is
            // postmaster@$myorigin from here on.
            Ok(smtp_proto::Request::Rcpt { mut to }) if to.address.is_empty() && names_postmaster(line) => {
                self.last = "RCPT";
                to.address = format!("postmaster@{}", self.settings.myorigin).into();
                self.rcpt(to).await
            }
            Ok(req) => self.request(req).await,
            Err(e) => {
                // A known command with bad syntax counts as that command
                // (`mail=0/1`), as in Postfix's disconnect line.
                let known = KNOWN_VERBS.iter().find(|v| v.eq_ignore_ascii_case(&verb)).copied();
                if let Some(v) = known {
                    self.last = v;
                }
                self.counts.add(known.map_or("unknown", counter), false);
                self.reply(&parse_error(e));
                Flow::Continue
            }
        }
    }

    async fn request(&mut self, req: smtp_proto::Request<std::borrow::Cow<'_, str>>) -> Flow {
        use smtp_proto::Request as R;
        self.last = req.name();
        match req {
            R::Ehlo { host } => self.ehlo(&host, true).await,
            R::Helo { host } => self.ehlo(&host, false).await,
            R::Mail { from } => self.mail(from).await,
            R::Rcpt { to } => self.rcpt(to).await,
            R::Data => self.data().await,
            R::Bdat { chunk_size, is_last } => self.bdat(chunk_size as u64, is_last).await,
            R::Rset => {
                // RSET ends the transaction but keeps the HELO name and TLS.
                self.reset().await;
                self.junk_command("rset");
                self.reply(&Reply::new(250, Status(2, 0, 0), "Ok"));
                Flow::Continue
            }
            R::Noop { .. } => {
                self.junk_command("noop");
                self.reply(&Reply::new(250, Status(2, 0, 0), "Ok"));
                Flow::Continue
            }
            R::Quit => {
                self.counts.add("quit", true);
                self.reply(&Reply::new(221, Status(2, 0, 0), "Bye"));
                Flow::Close
            }
            R::Vrfy { value } => {
                self.junk_command("vrfy");
                if self.settings.vrfy && self.settings.offers("vrfy") {
                    // Recipient validity is not disclosed: RFC 5321 3.5.3.
                    let v = value.trim_matches(['<', '>']).to_owned();
                    self.reply(&Reply::new(
                        252,
                        Status(2, 0, 0),
                        format!("<{v}>: Cannot VRFY user, but will accept message"),
                    ));
                } else {
                    self.reply(&Reply::new(502, Status(5, 5, 1), "VRFY command is disabled"));
                }
                Flow::Continue
            }
            R::Help { .. } => {
                self.junk_command("help");
                self.reply(&Reply::new(
                    214,
                    Status(2, 0, 0),
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS; see RFC 5321",
                ));
                Flow::Continue
            }
            R::StartTls => self.starttls().await,
            // sluice has no SASL: an MX takes mail from anyone for its
            // domains and authenticates no one.
            R::Auth { .. } => {
                self.counts.add("auth", false);
                self.reply(&Reply::new(503, Status(5, 5, 1), "Error: authentication not enabled"));
                Flow::Continue
            }
            other => {
                self.counts.add("unknown", false);
                let _ = other;
                self.reply(&Reply::new(502, Status(5, 5, 2), "Error: command not recognized"));
                Flow::Continue
            }
        }
    }

    /// NOOP, RSET, VRFY and HELP beyond `smtpd_junk_command_limit` count as
    /// errors, so a client cannot idle forever on them.
    fn junk_command(&mut self, name: &'static str) {
        self.counts.add(name, true);
        self.junk += 1;
        if self.junk > self.settings.junk_command_limit {
            self.errors += 1;
        }
    }

    /// Queues a reply, counting 4xx/5xx as errors.
    pub(super) fn reply(&mut self, r: &Reply) {
        // Replies are batched in `wbuf` and written before the next read:
        // pipelined commands are answered in order, in as few writes as
        // the client's batching allows.
        let softened;
        let r = if self.settings.soft_bounce && r.code() >= 500 {
            softened = r.softened();
            &softened
        } else {
            r
        };
        if r.code() >= 400 {
            self.errors += 1;
            events::emit(Event::Rejected { stage: self.last, code: r.code() });
        }
        if self.settings.offers("enhancedstatuscodes") {
            self.wbuf.extend_from_slice(&r.to_wire());
        } else {
            self.wbuf.extend_from_slice(&r.without_status().to_wire());
        }
    }

    /// A refusal as the log shows it: as it is sent, so after `soft_bounce`.
    pub(super) fn shown(&self, r: &Reply) -> String {
        if self.settings.soft_bounce { r.softened().to_one_line() } else { r.to_one_line() }
    }

    /// The `421` a session gets when sluice stops while it is open.
    fn reply_shutting_down(&mut self) {
        let host = self.settings.myhostname.clone();
        self.reply(&Reply::new(
            421,
            Status(4, 3, 2),
            format!("{host} Service shutting down, closing transmission channel"),
        ));
    }

    /// Ends the session after `smtpd_hard_error_limit` errors; slows it
    /// down after `smtpd_soft_error_limit` (the pause comes before the
    /// reply is sent, as the replies are flushed later).
    async fn check_errors(&mut self) -> Flow {
        if self.errors >= self.settings.hard_error_limit {
            warn!("too many errors after {} from {}", self.last, self.peer);
            let host = self.settings.myhostname.clone();
            self.reply(&Reply::new(421, Status(4, 7, 0), format!("{host} Error: too many errors")));
            return Flow::Close;
        }
        // One pause per new error: a client that makes many quick mistakes
        // (a dictionary attack on recipients) is slowed to one guess per
        // smtpd_error_sleep_time without holding this task busy.
        if self.errors > self.settings.soft_error_limit && self.errors > self.slept_for {
            self.slept_for = self.errors;
            tokio::time::sleep(self.settings.error_sleep).await;
        }
        Flow::Continue
    }

    /// `554 5.5.0` and the end of the session for a client that talks out
    /// of turn.
    fn protocol_violation(&mut self) {
        events::emit(Event::ProtocolViolation);
        let n = self.rbuf.len().min(100);
        info!(
            "improper command pipelining after {} from {}: {}",
            self.last,
            self.peer,
            printable(&self.rbuf[..n])
        );
        self.rbuf.clear();
        self.reply(&Reply::new(554, Status(5, 5, 0), "Error: SMTP protocol synchronization"));
    }

    /// True after EHLO.
    pub(super) fn esmtp(&self) -> bool {
        self.helo.as_ref().is_some_and(|h| h.esmtp)
    }

    /// `SMTP`, `ESMTP`, `ESMTPS`, or the `UTF8` variants (RFC 6531), as
    /// `Received:` and the envelope name the protocol.
    pub(super) fn protocol(&self, smtputf8: bool) -> String {
        let base = match (self.esmtp(), self.tls.is_some()) {
            (false, false) => "SMTP",
            (false, true) => "SMTPS",
            (true, false) => "ESMTP",
            (true, true) => "ESMTPS",
        };
        if smtputf8 { format!("UTF8{}", base.trim_start_matches('E')) } else { base.to_owned() }
    }

    /// `from=<...> to=<...> proto=ESMTP helo=<...>` for reject log lines.
    pub(super) fn context(&self, to: Option<&str>) -> String {
        let mut s = String::new();
        if let Transaction::Mail(m) = &self.tx {
            s.push_str(&format!(" from=<{}>", m.from));
        }
        if let Some(to) = to {
            s.push_str(&format!(" to=<{to}>"));
        }
        let helo = self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("");
        s.push_str(&format!(" proto={} helo=<{helo}>", self.protocol(false)));
        s
    }

    /// The queue ID and `client; from=<...> to=<...> proto=... helo=<...>`
    /// for header_checks log lines.
    fn header_log_context(&self) -> (String, String) {
        let to = match &self.tx {
            Transaction::Mail(m) => m.rcpts.first().map(|r| r.address.clone()),
            Transaction::Idle => None,
        };
        (self.queue_id(), format!("{};{}", self.peer, self.context(to.as_deref())))
    }

    /// The queue ID for log lines: the draft's, or `NOQUEUE`.
    pub(super) fn queue_id(&self) -> String {
        match &self.tx {
            Transaction::Mail(m) => m.draft.as_ref().map(|d| d.id().to_string()),
            Transaction::Idle => None,
        }
        .unwrap_or_else(|| "NOQUEUE".to_owned())
    }

    /// Logs a rejected request as Postfix does:
    /// `NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1 ...; from=<> to=<> proto=ESMTP helo=<>`.
    pub(super) fn log_reject(&self, stage: &str, r: &Reply, to: Option<&str>) {
        info!(
            "{}: reject: {stage} from {}: {};{}",
            self.queue_id(),
            self.peer,
            self.shown(r),
            self.context(to)
        );
    }

    /// Ends the transaction, deleting whatever was staged.
    pub(super) async fn reset(&mut self) {
        if let Transaction::Mail(m) = std::mem::take(&mut self.tx)
            && let Some(d) = m.draft
        {
            let id = d.id();
            if let Err(e) = d.abort().await {
                warn!("{id}: cannot delete staged message: {e}");
            }
        }
    }

    /// `smtpd_data_restrictions` for the current transaction: the refusal,
    /// if any (the caller logs it).
    pub(super) async fn data_refusal(&mut self) -> Option<Reply> {
        let mut answers = super::policy::Answers::default();
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
        question: super::policy::Question,
        state: &str,
        recipient: &str,
        answers: &mut super::policy::Answers,
    ) -> Result<(), Reply> {
        use super::policy::{DomainStatus, Question};
        if answers.policy.len() + answers.listings.len() + answers.hosts.len() >= MAX_QUESTIONS {
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
        }
        Ok(())
    }

    /// One round of [`Session::data_refusal`]: `None` without a
    /// transaction or restrictions, `Err` when a policy server must be
    /// asked first.
    fn data_decision(
        &self,
        answers: &super::policy::Answers,
    ) -> Option<Result<Option<Reply>, super::policy::Question>> {
        let Transaction::Mail(m) = &self.tx else { return None };
        if self.settings.policy.data.is_empty() {
            return None;
        }
        let request = super::policy::Request {
            client: self.peer.client(),
            helo: self.helo.as_ref().map(|h| h.name.as_str()),
            sender: &m.from,
            sender_domain: m.sender_domain,
            recipient: m.rcpts.last().map_or("", |r| r.address.as_str()),
            answers,
        };
        Some(match self.settings.policy.check_data(&request) {
            super::policy::Decision::Accept => Ok(None),
            super::policy::Decision::Refuse(r) => Ok(Some(r)),
            super::policy::Decision::Ask(question) => Err(question),
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

    /// Begins a message body (DATA or the first BDAT chunk): our
    /// `Received:` header goes into the draft first.
    pub(super) async fn begin_body(&mut self, decoder: Decoder) {
        let now_secs = clock::unix_millis() / 1000;
        let tls = self.tls.clone();
        let helo = self.helo.as_ref().map(|h| h.name.clone()).unwrap_or_default();
        let smtputf8 = matches!(&self.tx, Transaction::Mail(m) if m.smtputf8);
        let protocol = self.protocol(smtputf8);
        let settings = Arc::clone(&self.settings);
        let peer = self.peer.clone();
        let Transaction::Mail(m) = &mut self.tx else { return };
        let id = m.draft.as_ref().map(|d| d.id().to_string()).unwrap_or_default();
        let for_rcpt = if m.rcpts.len() == 1 { Some(m.rcpts[0].address.clone()) } else { None };
        let header = data::received_header(&data::Trace {
            helo: &helo,
            client_name: &peer.name,
            client_addr: peer.addr,
            myhostname: &settings.myhostname,
            mail_name: &settings.mail_name,
            protocol: &protocol,
            tls: tls.as_ref().map(|t| (t.version.as_str(), t.cipher.as_str())),
            queue_id: &id,
            for_rcpt: for_rcpt.as_deref(),
            unix_secs: now_secs,
        });
        // The header is the first thing in the draft: the body then streams
        // after it, and nothing has to be rewritten or held back to
        // prepend it later.
        let mut body = Body {
            decoder,
            out: Vec::new(),
            headers: Headers::new(settings.header_size_limit),
            size: 0,
            storage: None,
            verdict: ContentVerdict::default(),
            lines: (!settings.body_checks.is_empty())
                .then(|| BodyLines::new(settings.body_checks_size_limit, settings.line_length_limit)),
        };
        // Headers the restrictions asked for come first, then ours, in
        // Postfix's order.
        let mut header = header;
        for h in m.prepend.iter().rev() {
            header.insert_str(0, &format!("{h}\r\n"));
        }
        // A storage failure is remembered, not answered now: the client is
        // already sending content, which must be read to its end before
        // the 451 can be understood as the reply to it.
        if let Some(d) = m.draft.as_mut()
            && let Err(e) = d.append(header.as_bytes()).await
        {
            body.storage = Some(e);
        }
        m.body = Some(body);
        self.xfer_started = clock::instant();
        self.xfer_bytes = 0;
    }

    /// Feeds message bytes through the body's decoder, enforcing size and
    /// hop count, and appends to the draft when enough is pending. Returns
    /// how many input bytes were consumed.
    pub(super) async fn feed_body(&mut self, n: usize) -> usize {
        let limit = self.settings.message_size_limit;
        let hops = self.settings.hopcount_limit;
        // header_checks run once, when the header section is complete,
        // body_checks on each body line; the log context is only built
        // while they are still to run.
        let checks_pending = matches!(&self.tx, Transaction::Mail(m) if m.body.as_ref().is_some_and(|b| {
            !b.verdict.stops()
                && ((!self.settings.header_checks.is_empty() && !b.headers.is_complete()) || b.lines.is_some())
        }));
        let context = checks_pending.then(|| self.header_log_context());
        let Transaction::Mail(m) = &mut self.tx else {
            self.rbuf.advance(n);
            return n;
        };
        let Some(body) = m.body.as_mut() else {
            self.rbuf.advance(n);
            return n;
        };
        // `out` only ever holds what was decoded since the last append, so
        // its size is bounded by APPEND_AT plus one read (twice that when
        // every byte is a bare LF turned into CRLF).
        let before = body.out.len();
        let used = body.decoder.decode(&self.rbuf[..n], &mut body.out);
        self.rbuf.advance(used);
        self.xfer_bytes += used as u64;
        let fresh = &body.out[before..];
        body.size += fresh.len() as u64;
        if limit > 0 && body.size > limit {
            body.decoder.set_violation(Violation::TooBig);
        }
        // The hop count and header_checks are checked once, as soon as the
        // header section is complete, so a refused message is not stored.
        if !body.headers.is_complete() && body.headers.feed(fresh) {
            if hops > 0 && body.headers.received_count() + 1 >= hops {
                body.decoder.set_violation(Violation::TooManyHops);
            }
            if let Some((id, context)) = &context
                && !self.settings.header_checks.is_empty()
            {
                body.verdict = ContentVerdict::of(&self.settings.header_checks, &body.headers, id, context);
            }
        }
        if let (Some(lines), Some((id, context))) = (body.lines.as_mut(), &context)
            && !body.verdict.stops()
        {
            let verdict = &mut body.verdict;
            let checks = &self.settings.body_checks;
            lines.feed(fresh, &mut |line| verdict.check(Content::Body, checks, line, id, context));
        }
        // Once the message is refused (or the queue failed) the rest is
        // read only to find its end: nothing more is stored.
        if body.decoder.violation().is_some() || body.storage.is_some() || body.verdict.stops() {
            body.out.clear();
        } else if body.out.len() >= APPEND_AT
            && let Some(d) = m.draft.as_mut()
        {
            if let Err(e) = d.append(&body.out).await {
                body.storage = Some(e);
            }
            body.out.clear();
        }
        used
    }

    /// Commits the message received in the current transaction and
    /// answers for it: `250 2.0.0 Ok: queued as ID` only once the queue
    /// says it is on disk. Ends the transaction either way; true when the
    /// message was queued.
    pub(super) async fn finish_message(&mut self) -> bool {
        // A message that ended inside its header section still meets
        // header_checks, and a last line without CRLF body_checks.
        let s = &self.settings;
        let context =
            (!s.header_checks.is_empty() || !s.body_checks.is_empty()).then(|| self.header_log_context());
        let Transaction::Mail(mut m) = std::mem::take(&mut self.tx) else { return false };
        let Some(mut body) = m.body.take() else { return false };
        let Some(mut draft) = m.draft.take() else { return false };
        let id = draft.id();
        // The hop count when the header section never ended (tiny message).
        if !body.headers.is_complete()
            && self.settings.hopcount_limit > 0
            && body.headers.received_count() + 1 >= self.settings.hopcount_limit
        {
            body.decoder.set_violation(Violation::TooManyHops);
        }
        if !body.headers.is_complete()
            && !self.settings.header_checks.is_empty()
            && let Some((id, context)) = &context
        {
            body.verdict = ContentVerdict::of(&self.settings.header_checks, &body.headers, id, context);
        }
        if let (Some(lines), Some((id, context))) = (body.lines.as_mut(), &context)
            && !body.verdict.stops()
        {
            let verdict = &mut body.verdict;
            let checks = &self.settings.body_checks;
            lines.finish(&mut |line| verdict.check(Content::Body, checks, line, id, context));
        }
        if body.decoder.violation().is_none()
            && body.storage.is_none()
            && !body.verdict.stops()
            && !body.out.is_empty()
            && let Err(e) = draft.append(&body.out).await
        {
            body.storage = Some(e);
        }
        let refusal = match (body.decoder.violation(), body.storage.take()) {
            (Some(v), _) => Some(v.reply(self.settings.bare_newline_reject_code)),
            (None, Some(e)) => {
                warn!("{id}: queue append failed: {e}");
                Some(Reply::from(&e))
            }
            (None, None) => None,
        };
        if let Some(r) = refusal {
            if let Err(e) = draft.abort().await {
                warn!("{id}: cannot delete staged message: {e}");
            }
            info!(
                "{id}: reject: END-OF-MESSAGE from {}: {}; from=<{}> proto={} helo=<{}>",
                self.peer,
                self.shown(&r),
                m.from,
                self.protocol(m.smtputf8),
                self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("")
            );
            self.reply(&r);
            return false;
        }
        // header_checks: REJECT answers 550 and DISCARD claims delivery;
        // neither keeps the message.
        if let Some((action, log)) = body.verdict.stop.take() {
            if let Err(e) = draft.abort().await {
                warn!("{id}: cannot delete staged message: {e}");
            }
            return match action {
                HeaderAction::Reject(text) => {
                    info!("{id}: reject: {log}");
                    let text = text.unwrap_or_else(|| "Message content rejected".into());
                    self.reply(&Reply::new(550, Status(5, 7, 1), text));
                    false
                }
                _ => {
                    info!("{id}: discard: {log}");
                    self.reply(&Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}")));
                    true
                }
            };
        }
        if let Some(log) = &body.verdict.hold {
            info!("{id}: hold: {log}");
        }
        let nrcpt = m.rcpts.len();
        let from = m.from.clone();
        let envelope = Envelope {
            sender: m.from,
            recipients: m.rcpts,
            arrival: clock::unix_millis(),
            size: 0,
            client: ClientInfo {
                addr: Some(self.peer.addr),
                name: self.peer.name.clone(),
                helo: self.helo.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
                protocol: self.protocol(m.smtputf8),
            },
            declared_size: m.declared_size,
            body_type: m.body_type,
            smtputf8: m.smtputf8,
            ret: m.ret,
            envid: m.envid,
            held: body.verdict.hold.is_some(),
            delay_warned: false,
            is_notification: false,
        };
        let size = body.size;
        // Postfix's cleanup names the message's Message-ID as it files the
        // message; admins find a queue ID from a Message-ID this way.
        info!(target: "cleanup", "{id}: message-id=<{}>", body.headers.message_id().unwrap_or_default());
        // The reply waits for the commit: `250` means the body, envelope and
        // schedule entry are on disk in one synced batch. Anything else the
        // queue says becomes 451/452 through Reply::from, and the client
        // keeps the message.
        match draft.commit(envelope, clock::unix_millis()).await {
            Ok(_) => {
                // The `from=<...>, size=..., nrcpt=...` line is the queue
                // manager's (delivery logs it when it takes the message).
                events::emit(Event::Queued { bytes: size, recipients: nrcpt });
                // A client that delivers mail is not the one the error
                // limits are for: its count starts again (as in Postfix).
                self.errors = 0;
                self.reply(&Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}")));
                true
            }
            Err(e) => {
                let r = Reply::from(&e);
                warn!("{id}: queue commit failed: {e}");
                info!("{id}: reject: END-OF-MESSAGE from {}: {}; from=<{from}>", self.peer, self.shown(&r));
                self.reply(&r);
                false
            }
        }
    }

    /// A new command line is awaited from `now` on.
    pub(super) fn restart_request(&mut self, now: Instant) {
        self.request_started = now;
    }

    /// Writes out the batched replies.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        // A client that stops reading would otherwise hold the session (and
        // its slot) forever once the socket buffer is full.
        let timeout = self.settings.timeout;
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(r) => {
                self.wbuf.clear();
                r
            }
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout")),
        }
    }

    /// The time by which the next read must complete: the whole command
    /// line within `smtpd_timeout` (a client trickling a command byte by
    /// byte is cut off); for content, `smtpd_timeout` per read and on
    /// average `smtpd_min_data_rate`; the session's overall limit always.
    fn deadline(&self) -> Instant {
        let s = &self.settings;
        let end = self.started + s.session_time_limit;
        let request = match self.input {
            Input::Command | Input::SkipLine => self.request_started + s.timeout,
            Input::Data | Input::Bdat { .. } | Input::Discard { .. } => {
                let idle = self.last_read + s.timeout;
                if s.min_data_rate > 0 {
                    let budget = Duration::from_secs_f64(self.xfer_bytes as f64 / s.min_data_rate as f64);
                    idle.min(self.xfer_started + s.timeout + budget)
                } else {
                    idle
                }
            }
        };
        request.min(end)
    }

    async fn read(&mut self) -> Read {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let deadline = self.deadline();
        let between_commands = matches!(self.input, Input::Command | Input::SkipLine);
        // Cancelling the read is safe: `read_buf` either appended bytes to
        // the buffer or did nothing, so a lost race loses no input.
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
        let r = tokio::select! {
            r = read => match r {
                Err(_) => Read::Timeout,
                Ok(Ok(0)) => Read::Eof,
                Ok(Ok(_)) => Read::Data,
                Ok(Err(e)) => Read::Failed(e),
            },
            _ = self.stage.cancelled(), if between_commands => Read::Shutdown,
        };
        self.last_read = clock::instant();
        r
    }
}

/// The command word of a line, upper-cased (for the forbidden list).
fn verb(line: &[u8]) -> String {
    let end = line.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(64)]).to_ascii_uppercase()
}

/// The commands sluice implements, as `Request::name()` spells them.
const KNOWN_VERBS: [&str; 13] = [
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "HELP", "STARTTLS",
    "AUTH",
];

/// The `disconnect from` counter of a command (`MAIL` counts as `mail`).
fn counter(name: &str) -> &'static str {
    match name {
        "EHLO" => "ehlo",
        "HELO" => "helo",
        "MAIL" => "mail",
        "RCPT" => "rcpt",
        "DATA" => "data",
        "BDAT" => "bdat",
        "RSET" => "rset",
        "NOOP" => "noop",
        "QUIT" => "quit",
        "VRFY" => "vrfy",
        "HELP" => "help",
        "STARTTLS" => "starttls",
        "AUTH" => "auth",
        _ => "unknown",
    }
}

/// Commands RFC 5321 defines without arguments (NOOP and HELP take an
/// optional string).
fn takes_no_arguments(name: &str) -> bool {
    matches!(name, "DATA" | "RSET" | "QUIT" | "STARTTLS")
}

/// Whether anything but white space follows the verb on a command line.
fn has_arguments(line: &[u8]) -> bool {
    let end = line.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(line.len());
    line[end..].iter().any(|b| !b.is_ascii_whitespace())
}

/// `smtpd_forbidden_commands`: HTTP verbs and mail headers sent to the
/// SMTP port mean the client is not an MTA (or is being used to attack us).
fn is_forbidden(verb: &str) -> bool {
    matches!(verb, "CONNECT" | "GET" | "POST" | "PUT" | "HEAD")
        || (verb.len() > 1
            && verb.ends_with(':')
            && verb[..verb.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The domain an address literal stands in for while smtp-proto parses a
/// path: under `.invalid` (RFC 2606), so it is never a real one.
const LITERAL_STAND_IN: &str = "address-literal.invalid";

/// For a `MAIL FROM:` or `RCPT TO:` line whose path ends in an address
/// literal (`<user@[192.0.2.1]>`, `<user@[IPv6:2001:db8::1]>`): the line
/// with [`LITERAL_STAND_IN`] in its place, and the literal. Only the path
/// (up to its `>`) is looked at, never the parameters after it. Anything
/// that is not an IP address between the brackets is left for smtp-proto
/// to refuse.
fn stand_in_literal(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return None;
    }
    let path_end = memchr::memchr(b'>', line)?;
    let at = line[..path_end].windows(2).position(|w| w == b"@[")?;
    let close = at + 2 + line[at + 2..path_end].iter().position(|&b| b == b']')?;
    if close + 1 != path_end {
        return None;
    }
    let literal = std::str::from_utf8(&line[at + 1..=close]).ok()?;
    super::policy::address_literal(literal)?;
    let mut patched = line[..=at].to_vec();
    patched.extend_from_slice(LITERAL_STAND_IN.as_bytes());
    patched.extend_from_slice(&line[close + 1..]);
    Some((patched, literal.to_owned()))
}

/// Puts the address literal back where [`stand_in_literal`] took it out.
fn put_back_literal(
    request: &mut Result<smtp_proto::Request<Cow<'_, str>>, smtp_proto::Error>,
    literal: &str,
) {
    let address = match request {
        Ok(smtp_proto::Request::Mail { from }) => &mut from.address,
        Ok(smtp_proto::Request::Rcpt { to }) => &mut to.address,
        _ => return,
    };
    if let Some(local) = address.strip_suffix(LITERAL_STAND_IN).filter(|l| l.ends_with('@')) {
        *address = Cow::Owned(format!("{local}{literal}"));
    }
}

/// True when the path of a `RCPT TO:` line is `<postmaster>` in any case.
fn names_postmaster(line: &[u8]) -> bool {
    line.iter()
        .position(|&b| b == b'<')
        .and_then(|at| line.get(at + 1..at + 12))
        .is_some_and(|path| path.eq_ignore_ascii_case(b"postmaster>"))
}

/// Bytes as a log-safe string.
pub(super) fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The reply for a line smtp-proto could not parse.
fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(502, Status(5, 5, 2), "Error: command not recognized"),
        E::InvalidSenderAddress => Reply::new(501, Status(5, 1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, Status(5, 1, 3), "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, Status(5, 5, 4), format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, Status(5, 5, 4), format!("Bad {param} parameter syntax"))
        }
        E::UnsupportedParameter { param } => {
            Reply::new(555, Status(5, 5, 4), format!("Unsupported option: {}", printable(param.as_bytes())))
        }
        _ => Reply::new(500, Status(5, 5, 2), "Error: bad syntax"),
    }
}

#[cfg(test)]
mod tests;
