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
//! This file owns the loop, the deadlines, the replies (batched, counted
//! as errors, softened under `soft_bounce`), error counting, pipelining
//! rules and the dispatch of each command to its stage. The stages live
//! beside it (`ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`, `bdat.rs`,
//! `starttls.rs`, `housekeeping.rs`), the message from its first byte to
//! the queue commit in `message.rs`, the restriction questions in
//! `answer.rs`, and the state they share in `state.rs`. It is generic over the byte stream
//! so tests drive it over `tokio::io::duplex`.
//!
//! Memory is bounded per session: the read buffer holds at most one command
//! line (`line_length_limit`) or one read of message content, and message
//! content goes to the queue draft in chunks as it is decoded.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

use super::command::{
    KNOWN_VERBS, counter, has_arguments, is_forbidden, names_postmaster, parse_error, printable,
    put_back_literal, stand_in_literal, takes_no_arguments, verb,
};
use super::content::{BareNewline, Violation};
use super::events::{self, Event};
use super::inbound::Inbound;
use super::peer::Peer;
use super::settings::Settings;
use super::state::{Counts, Flow, Helo, Input, Transaction};
use super::tls::{Stream, TlsInfo};
use crate::clock;
use crate::milter::MilterSession;
use crate::reply::{Reply, Status};
use crate::shutdown::Stage;

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Outcome of one read.
enum Read {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Failed(std::io::Error),
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
    /// The session's milters (`None` without `smtpd_milters`).
    pub(super) milters: Option<MilterSession>,
    /// A quarantine a milter asked for at CONNECT or HELO: every message
    /// of the session is held.
    pub(super) milter_hold: Option<String>,
    /// A reply that ends the session has been queued (a milter's 421):
    /// the loop closes the connection after sending it.
    pub(super) closing: bool,
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
        let milters = inbound.milters();
        let milters =
            (!milters.is_empty()).then(|| MilterSession::new(&milters, Arc::clone(&settings.milters.macros)));
        Session {
            milters,
            milter_hold: None,
            closing: false,
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
        // The milters hear of the client before it hears from us.
        let greeting = self.milter_connect().await;
        self.serve(greeting).await;
        // Whatever ended the session, a transaction still open is not
        // going to be committed: its staged body must not linger.
        self.reset().await;
        self.milter_disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        info!("disconnect from {}{}", self.peer, self.counts);
        events::emit(Event::Disconnected);
    }

    /// The session after the client is named: the greeting (`greeting`
    /// replaces the 220 when the milters refused the connection, and closes
    /// it when they said 421), then the command loop.
    async fn serve(&mut self, greeting: Option<(Reply, bool)>) {
        if !self.greet(greeting).await {
            return;
        }
        loop {
            if self.advance().await == Flow::Close || self.closing {
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
    async fn greet(&mut self, milter: Option<(Reply, bool)>) -> bool {
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
        if let Some((reply, close)) = milter {
            self.reply(&reply);
            if close {
                let _ = self.flush().await;
                return false;
            }
            return true;
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
                let milter = match known {
                    None => self.milter_unknown(line).await,
                    Some(_) => None,
                };
                self.reply(&milter.unwrap_or_else(|| parse_error(e)));
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
            R::Rset => self.rset().await,
            R::Noop { .. } => self.noop(),
            R::Quit => self.quit(),
            R::Vrfy { value } => self.vrfy(&value),
            R::Help { .. } => self.help(),
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
    pub(super) fn header_log_context(&self) -> (String, String) {
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

    /// Ends the transaction, deleting whatever was staged (and telling
    /// the milters it is over).
    pub(super) async fn reset(&mut self) {
        if matches!(self.tx, Transaction::Mail(_)) {
            self.milter_abort();
        }
        if let Transaction::Mail(m) = std::mem::take(&mut self.tx)
            && let Some(d) = m.draft
        {
            let id = d.id();
            if let Err(e) = d.abort().await {
                warn!("{id}: cannot delete staged message: {e}");
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

#[cfg(test)]
mod tests;
