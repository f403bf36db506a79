//! One open connection to a backend ([`Connection`]): connecting to the first
//! target that answers, the greeting and `LHLO`/`EHLO` (with the `HELO`
//! fallback), then transactions on it, pipelined when the server offers
//! `PIPELINING`, each read and write within its phase's timeout, until
//! `QUIT` or a failure ends it. The types it reports in are the client's
//! (`client/mod.rs`); the wire details are `wire.rs`'s.

use std::fmt;
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::wire::{Caps, DotStuffer, MailParams};
use super::*;
use crate::clock;
use crate::config::Protocol;
use crate::delivery::nexthop::Target;
use crate::delivery::settings::Timeouts;
use crate::reply::{Class, Reply, Status};

/// How much is written to the socket at once while sending a body.
const BODY_CHUNK: usize = 64 * 1024;

/// An open conversation, past the greeting and `LHLO`/`EHLO`.
pub struct Connection {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    rpos: usize,
    caps: Caps,
    target: Target,
    protocol: Protocol,
    timeouts: Timeouts,
    opened: Instant,
    idle_since: Instant,
    transactions: u32,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target.to_string())
            .field("protocol", &self.protocol)
            .field("caps", &self.caps)
            .field("transactions", &self.transactions)
            .finish()
    }
}

/// Connects to the first target that answers and completes the greeting;
/// the error is the last target's.
pub async fn open(
    targets: &[Target],
    protocol: Protocol,
    helo_name: &str,
    timeouts: &Timeouts,
) -> Result<Connection, OpenError> {
    let mut last = OpenError { text: "no address to connect to".into(), dsn: Status(4, 4, 1) };
    for target in targets {
        let io: Box<dyn Io> = match connect(target, timeouts.connect).await {
            Ok(io) => io,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match Connection::handshake(io, target.clone(), protocol, helo_name, timeouts).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn connect(target: &Target, timeout: Duration) -> Result<Box<dyn Io>, OpenError> {
    let fail = |what: String, dsn| OpenError { text: format!("connect to {target}: {what}"), dsn };
    let attempt = async {
        match target {
            Target::Inet { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok::<Box<dyn Io>, std::io::Error>(Box::new(s))
            }
            Target::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok(Box::new(s) as Box<dyn Io>)
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(fail(io_text(&e), Status(4, 4, 1))),
        Err(_) => Err(fail("Connection timed out".into(), Status(4, 4, 1))),
    }
}

/// An I/O error as Postfix words it (`Connection refused`), without Rust's
/// `(os error 111)` suffix.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

impl Connection {
    /// Reads the greeting and says `LHLO`/`EHLO` (falling back to `HELO` when
    /// an SMTP server rejects `EHLO`) over an already connected stream.
    pub async fn handshake(
        io: Box<dyn Io>,
        target: Target,
        protocol: Protocol,
        helo_name: &str,
        timeouts: &Timeouts,
    ) -> Result<Connection, OpenError> {
        let now = clock::instant();
        let mut s = Connection {
            io,
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            caps: Caps::default(),
            target,
            protocol,
            timeouts: *timeouts,
            opened: now,
            idle_since: now,
            transactions: 0,
        };
        let greeting = s.reply(Phase::Greeting).await.map_err(|b| s.open_error(&b))?;
        if greeting.code() != 220 {
            return Err(s.refused(&greeting));
        }
        let verb = match protocol {
            Protocol::Lmtp => "LHLO",
            Protocol::Smtp => "EHLO",
        };
        s.send(format!("{verb} {helo_name}\r\n").as_bytes(), Phase::Hello)
            .await
            .map_err(|b| s.open_error(&b))?;
        let (reply, raw) = s.reply_raw(Phase::Hello, true).await.map_err(|b| s.open_error(&b))?;
        if reply.code() == 250 {
            s.caps = Caps::from_ehlo(&raw);
            return Ok(s);
        }
        if protocol == Protocol::Smtp && reply.class() == Class::Permanent && reply.code() != 421 {
            s.send(format!("HELO {helo_name}\r\n").as_bytes(), Phase::Hello)
                .await
                .map_err(|b| s.open_error(&b))?;
            let reply = s.reply(Phase::Hello).await.map_err(|b| s.open_error(&b))?;
            if reply.code() == 250 {
                return Ok(s);
            }
            return Err(s.refused(&reply));
        }
        Err(s.refused(&reply))
    }

    /// `host X refused to talk to me: REPLY`, always a deferral (Postfix
    /// skips a `5xx` greeting too and tries later).
    fn refused(&self, reply: &Reply) -> OpenError {
        let st = reply.dsn();
        OpenError {
            text: format!("host {} refused to talk to me: {}", self.target.host(), reply.to_one_line()),
            dsn: Status(4, st.1, st.2),
        }
    }

    fn open_error(&self, b: &Broken) -> OpenError {
        OpenError { text: self.broken_text(b), dsn: Status(4, 4, 2) }
    }

    fn broken_text(&self, b: &Broken) -> String {
        let doing = b.phase().doing(self.protocol);
        match b {
            Broken::Timeout(_) => format!("conversation with {} timed out while {doing}", self.target.host()),
            Broken::Lost(_) => format!("lost connection with {} while {doing}", self.target.host()),
            Broken::Garbled(_, what) => {
                format!("host {} sent an invalid reply while {doing}: {what}", self.target.host())
            }
        }
    }

    /// Where this session goes, as logs show it (`relay=`).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// What the server offered.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// When the connection was made.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// When the last transaction ended.
    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// Transactions carried so far.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    fn timeout(&self, phase: Phase) -> Duration {
        let t = &self.timeouts;
        match phase {
            Phase::Greeting | Phase::Hello => t.helo,
            Phase::Mail => t.mail,
            Phase::Rcpt => t.rcpt,
            Phase::Data => t.data_init,
            Phase::Body => t.data_xfer,
            Phase::Dot => t.data_done,
            Phase::Rset => t.rset,
            Phase::Quit => t.quit,
        }
    }

    async fn send(&mut self, bytes: &[u8], phase: Phase) -> Result<(), Broken> {
        let limit = self.timeout(phase);
        let io = &mut self.io;
        match tokio::time::timeout(limit, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Broken::Lost(phase)),
            Err(_) => Err(Broken::Timeout(phase)),
        }
    }

    async fn reply(&mut self, phase: Phase) -> Result<Reply, Broken> {
        self.reply_raw(phase, false).await.map(|(r, _)| r)
    }

    /// Reads one (possibly multi-line) reply within the phase's timeout;
    /// with `keep_raw` also returns its bytes (for the EHLO parser).
    async fn reply_raw(&mut self, phase: Phase, keep_raw: bool) -> Result<(Reply, Vec<u8>), Broken> {
        let deadline = clock::instant() + self.timeout(phase);
        let mut rx = ResponseReceiver::default();
        let mut raw = Vec::new();
        loop {
            if self.rpos < self.rbuf.len() {
                let slice = &self.rbuf[self.rpos..];
                let mut it = slice.iter();
                let res = rx.parse(&mut it);
                let used = slice.len() - it.len();
                if keep_raw {
                    raw.extend_from_slice(&slice[..used]);
                }
                self.rpos += used;
                match res {
                    Ok(r) => return Ok((wire::to_reply(r), raw)),
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => return Err(Broken::Garbled(phase, e.to_string())),
                }
            }
            // Keep what the parser has not consumed, then read more.
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
            if self.rbuf.len() > 64 * 1024 {
                return Err(Broken::Garbled(phase, "reply too long".into()));
            }
            let read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Broken::Lost(phase)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(Broken::Timeout(phase)),
            }
        }
    }

    /// `RSET`, to check that a pooled session is still alive before it
    /// carries another message. False when it is not (close it).
    pub async fn reset(&mut self) -> bool {
        if self.send(b"RSET\r\n", Phase::Rset).await.is_err() {
            return false;
        }
        matches!(self.reply(Phase::Rset).await, Ok(r) if r.code() == 250)
    }

    /// Says `QUIT` (briefly: the answer does not matter) and closes.
    pub async fn quit(mut self) {
        self.timeouts.quit = self.timeouts.quit.min(Duration::from_secs(5));
        if self.send(b"QUIT\r\n", Phase::Quit).await.is_ok() {
            let _ = self.reply(Phase::Quit).await;
        }
        let _ = self.io.shutdown().await;
    }

    /// Runs one mail transaction. Never fails as a whole: every recipient
    /// gets a verdict, and [`TransferOutcome::reusable`] says whether the session
    /// can carry another message.
    pub async fn deliver(&mut self, tx: &Transfer<'_>) -> TransferOutcome {
        self.transactions += 1;
        let out = self.transaction(tx).await;
        self.idle_since = clock::instant();
        out
    }

    fn remote(&self, verdict: Verdict, reply: &Reply, phase: Phase) -> RcptResult {
        let text = format!(
            "host {} said: {} (in reply to {} command)",
            self.target.host(),
            reply.to_one_line(),
            phase.command(self.protocol)
        );
        let mut dsn = reply.dsn();
        // A reply whose enhanced code contradicts its class keeps the class.
        dsn.0 = match verdict {
            Verdict::Sent => 2,
            Verdict::Deferred => 4,
            Verdict::Bounced => 5,
        };
        RcptResult { verdict, dsn, text, diagnostic: Some(reply.to_one_line()) }
    }

    fn by_reply(&self, reply: &Reply, phase: Phase) -> RcptResult {
        match reply.class() {
            Class::Positive => RcptResult {
                verdict: Verdict::Sent,
                dsn: reply.dsn(),
                text: reply.to_one_line(),
                diagnostic: Some(reply.to_one_line()),
            },
            Class::Transient => self.remote(Verdict::Deferred, reply, phase),
            Class::Permanent => self.remote(Verdict::Bounced, reply, phase),
        }
    }

    async fn transaction(&mut self, tx: &Transfer<'_>) -> TransferOutcome {
        let n = tx.rcpts.len();
        let mut results: Vec<Option<RcptResult>> = vec![None; n];
        let host = self.target.host();

        // What cannot be sent to this server at all bounces here, before a
        // command is written.
        let all =
            |r: RcptResult| TransferOutcome { rcpts: vec![r; n], health: Health::Untested, reusable: true };
        if !wire::safe_address(tx.sender) {
            return all(RcptResult::local(Verdict::Bounced, Status(5, 1, 7), "bad sender address syntax"));
        }
        let addrs: Vec<&str> = tx.rcpts.iter().map(|r| r.address).collect();
        let utf8 = wire::needs_smtputf8(tx.smtputf8, tx.sender, &addrs, tx.body);
        if utf8 && !self.caps.smtputf8 {
            return all(RcptResult::local(
                Verdict::Bounced,
                Status(5, 6, 7),
                format!("SMTPUTF8 is required, but was not offered by host {host}"),
            ));
        }
        let size = tx.body.len() as u64;
        if self.caps.size > 0 && size > self.caps.size {
            return all(RcptResult::local(
                Verdict::Bounced,
                Status(5, 3, 4),
                format!("message size {size} exceeds size limit {} of server {host}", self.caps.size),
            ));
        }
        let mut sendable = Vec::new();
        for (i, r) in tx.rcpts.iter().enumerate() {
            if wire::safe_address(r.address) && !r.address.is_empty() {
                sendable.push(i);
            } else {
                results[i] = Some(RcptResult::local(
                    Verdict::Bounced,
                    Status(5, 1, 3),
                    "bad recipient address syntax",
                ));
            }
        }
        if sendable.is_empty() {
            return TransferOutcome {
                rcpts: results.into_iter().flatten().collect(),
                health: Health::Untested,
                reusable: true,
            };
        }

        let params =
            MailParams { size: Some(size), body: tx.body_type, smtputf8: utf8, ret: tx.ret, envid: tx.envid };
        let mail = wire::mail_from(tx.sender, &params, &self.caps);
        let rcpt_cmds: Vec<Vec<u8>> = sendable
            .iter()
            .map(|&i| wire::rcpt_to(tx.rcpts[i].address, &tx.rcpts[i].notify, tx.rcpts[i].orcpt, &self.caps))
            .collect();
        let pipelining = self.caps.pipelining;

        let mut out = Flow { results, health: None, reusable: true };
        let flow = self.commands(&mail, &rcpt_cmds, &sendable, pipelining, &mut out).await;
        let (accepted, server_time) = match flow {
            Ok(Some(x)) => x,
            Ok(None) => return out.finish(Health::Completed { latency: None }),
            Err(b) => {
                let text = self.broken_text(&b);
                out.fail_pending(&text, Status(4, 4, 2));
                out.reusable = false;
                return out.finish(Health::Failed(text));
            }
        };

        // The body, then the verdicts after the dot.
        if let Err(b) = self.body(tx.body).await {
            let text = self.broken_text(&b);
            out.fail_pending(&text, Status(4, 4, 2));
            out.reusable = false;
            return out.finish(Health::Failed(text));
        }
        let dot_sent = clock::instant();
        let expected = match self.protocol {
            Protocol::Lmtp => accepted.len(),
            Protocol::Smtp => 1,
        };
        let mut trouble = None;
        for k in 0..expected {
            let reply = match self.reply(Phase::Dot).await {
                Ok(r) => r,
                Err(b) => {
                    // Timeout or lost connection after the final dot: the
                    // server may have delivered. Defer, and say so.
                    let text = self.broken_text(&b);
                    out.fail_pending(&text, Status(4, 4, 2));
                    out.reusable = false;
                    return out.finish(Health::Failed(text));
                }
            };
            let targets: &[usize] = match self.protocol {
                Protocol::Lmtp => &accepted[k..=k],
                Protocol::Smtp => &accepted,
            };
            for &i in targets {
                out.results[i] = Some(self.by_reply(&reply, Phase::Dot));
            }
            if reply.code() == 421 {
                out.reusable = false;
                out.health = Some(Health::Failed(self.remote(Verdict::Deferred, &reply, Phase::Dot).text));
                break;
            }
            if reply.class() == Class::Transient && system_trouble(&reply) {
                trouble.get_or_insert_with(|| self.remote(Verdict::Deferred, &reply, Phase::Dot).text);
            }
        }
        if let Some(h) = out.health.take() {
            let text = match &h {
                Health::Failed(t) => t.clone(),
                _ => String::new(),
            };
            out.fail_pending(&text, Status(4, 4, 2));
            return out.finish(h);
        }
        let latency = server_time + clock::instant().saturating_duration_since(dot_sent);
        match trouble {
            Some(t) => out.finish(Health::Overloaded(t)),
            None => out.finish(Health::Completed { latency: Some(latency) }),
        }
    }

    /// `MAIL`, `RCPT`s and `DATA`, pipelined when offered. Returns the
    /// indexes of accepted recipients and the server time so far, or `None`
    /// when no body is to be sent (every result then set).
    async fn commands(
        &mut self,
        mail: &[u8],
        rcpts: &[Vec<u8>],
        sendable: &[usize],
        pipelining: bool,
        out: &mut Flow,
    ) -> Result<Option<(Vec<usize>, Duration)>, Broken> {
        let t0 = clock::instant();
        if pipelining {
            let mut batch = Vec::with_capacity(mail.len() + rcpts.iter().map(Vec::len).sum::<usize>() + 6);
            batch.extend_from_slice(mail);
            for r in rcpts {
                batch.extend_from_slice(r);
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&batch, Phase::Mail).await?;
        } else {
            self.send(mail, Phase::Mail).await?;
        }

        let mail_reply = self.reply(Phase::Mail).await?;
        let mail_ok = mail_reply.class() == Class::Positive;
        if !mail_ok {
            let r = self.by_reply(&mail_reply, Phase::Mail);
            for &i in sendable {
                out.results[i] = Some(r.clone());
            }
            if mail_reply.code() == 421 {
                out.reusable = false;
                out.health = Some(Health::Failed(r.text.clone()));
                return Ok(None);
            }
            if mail_reply.class() == Class::Transient {
                out.health = Some(Health::Overloaded(r.text.clone()));
            }
            if pipelining {
                // The server answers the RCPTs and the DATA too (with 503s):
                // read them to stay in step.
                for _ in rcpts {
                    self.reply(Phase::Rcpt).await?;
                }
                self.data_refused().await?;
            }
            return Ok(None);
        }

        let mut accepted = Vec::new();
        let mut rcpt_trouble = None;
        for (k, &i) in sendable.iter().enumerate() {
            if !pipelining {
                self.send(&rcpts[k], Phase::Rcpt).await?;
            }
            let reply = self.reply(Phase::Rcpt).await?;
            if reply.class() == Class::Positive {
                accepted.push(i);
                continue;
            }
            let r = self.by_reply(&reply, Phase::Rcpt);
            if reply.code() == 421 {
                // The server is closing: whatever was not answered is
                // deferred along with this one.
                out.results[i] = Some(r.clone());
                out.reusable = false;
                out.health = Some(Health::Failed(r.text.clone()));
                out.fail_pending(&r.text, r.dsn);
                return Ok(None);
            }
            if reply.class() == Class::Transient && system_trouble(&reply) {
                rcpt_trouble.get_or_insert_with(|| r.text.clone());
            }
            out.results[i] = Some(r);
        }
        if accepted.is_empty() {
            if pipelining {
                self.data_refused().await?;
            }
            if let Some(t) = rcpt_trouble {
                out.health = Some(Health::Overloaded(t));
            }
            return Ok(None);
        }
        if !pipelining {
            self.send(b"DATA\r\n", Phase::Data).await?;
        }
        let data = self.reply(Phase::Data).await?;
        if data.code() != 354 {
            let r = self.by_reply(&data, Phase::Data);
            let r = if r.verdict == Verdict::Sent {
                // A 2xx to DATA is a protocol error: do not call it delivered.
                RcptResult::local(Verdict::Deferred, Status(4, 5, 0), r.text)
            } else {
                r
            };
            for &i in &accepted {
                out.results[i] = Some(r.clone());
            }
            if data.code() == 421 {
                out.reusable = false;
                out.health = Some(Health::Failed(r.text.clone()));
            } else if data.class() == Class::Transient {
                out.health = Some(Health::Overloaded(r.text.clone()));
            }
            return Ok(None);
        }
        if let Some(t) = rcpt_trouble {
            out.health = Some(Health::Overloaded(t));
        }
        Ok(Some((accepted, clock::instant().saturating_duration_since(t0))))
    }

    /// Reads the reply to a pipelined `DATA` when no recipient was accepted;
    /// if the server still said `354`, sends an empty message so the
    /// session stays in step (RFC 2920 section 3.1).
    async fn data_refused(&mut self) -> Result<(), Broken> {
        let r = self.reply(Phase::Data).await?;
        if r.code() == 354 {
            self.send(b".\r\n", Phase::Dot).await?;
            if self.protocol == Protocol::Smtp {
                self.reply(Phase::Dot).await?;
            }
        }
        Ok(())
    }

    async fn body(&mut self, body: &[u8]) -> Result<(), Broken> {
        let mut stuffer = DotStuffer::default();
        let mut buf = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 32);
        for chunk in body.chunks(BODY_CHUNK) {
            buf.clear();
            stuffer.feed(chunk, &mut buf);
            self.send(&buf, Phase::Body).await?;
        }
        buf.clear();
        stuffer.finish(&mut buf);
        self.send(&buf, Phase::Body).await
    }
}

/// A `4xx` that speaks of the server rather than the mailbox: `4.3.x` (mail
/// system) or `4.4.x` (network), or no enhanced code at all on a `421`.
fn system_trouble(reply: &Reply) -> bool {
    reply.code() == 421 || matches!(reply.status(), Some(Status(4, 3 | 4, _)))
}

/// Results being collected during one transaction.
struct Flow {
    results: Vec<Option<RcptResult>>,
    health: Option<Health>,
    reusable: bool,
}

impl Flow {
    /// Defers every recipient that has no verdict yet.
    fn fail_pending(&mut self, text: &str, dsn: Status) {
        for r in self.results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(RcptResult::local(Verdict::Deferred, Status(4, dsn.1, dsn.2), text));
        }
    }

    fn finish(mut self, default: Health) -> TransferOutcome {
        let health = self.health.take().unwrap_or(default);
        self.fail_pending("no reply from server", Status(4, 4, 2));
        TransferOutcome {
            rcpts: self.results.into_iter().flatten().collect(),
            health,
            reusable: self.reusable,
        }
    }
}
