//! One open connection to a backend ([`Connection`]): transactions on it,
//! pipelined when the server offers `PIPELINING`, each read and write
//! within its phase's timeout, until `QUIT` or a failure ends it; the body
//! streamed from the queue as it is sent. Opening it (connect, greeting,
//! `LHLO`/`EHLO`, STARTTLS, the loop check) is `handshake.rs`'s. The types
//! it reports in are the client's (`client/mod.rs`); the wire details are
//! `wire.rs`'s, reading replies `reader.rs`'s.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::reader::ReplyReader;
use super::tls;
use super::wire::{Caps, DotStuffer, HeaderScan, MailParams};
use super::*;
use crate::clock;
use crate::config::Protocol;
use crate::delivery::nexthop::Target;
use crate::reply::{Class, Reply, Status};

/// How much is written to the socket at once while sending a body.
const BODY_CHUNK: usize = 64 * 1024;
/// Room made in the read buffer for each read of replies.
const READ_CHUNK: usize = 4096;

/// An open conversation, past the greeting and `LHLO`/`EHLO`.
pub struct Connection {
    pub(super) io: Box<dyn Io>,
    pub(super) rbuf: Vec<u8>,
    pub(super) rpos: usize,
    pub(super) caps: Caps,
    pub(super) target: Target,
    pub(super) protocol: Protocol,
    pub(super) timeouts: Timeouts,
    pub(super) opened: Instant,
    pub(super) idle_since: Instant,
    pub(super) transactions: u32,
    /// The server has no transaction open: the last one was read to its
    /// final reply (or none was begun). Only then may the next `MAIL`
    /// follow without an `RSET` ([`Connection::quiet`]).
    pub(super) clean: bool,
    /// What STARTTLS agreed, if it was used.
    pub(super) tls: Option<tls::Session>,
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

impl Connection {
    /// `host X refused to talk to me: REPLY`, always a deferral (Postfix
    /// skips a `5xx` greeting too and tries later).
    pub(super) fn refused(&self, reply: &Reply) -> OpenError {
        let st = reply.dsn();
        OpenError {
            text: format!("host {} refused to talk to me: {}", self.target.host(), reply.to_one_line()),
            dsn: Status(4, st.1, st.2),
            ours: false,
        }
    }

    pub(super) fn open_error(&self, b: &Broken) -> OpenError {
        OpenError { text: self.broken_text(b), dsn: Status(4, 4, 2), ours: false }
    }

    pub(super) fn broken_text(&self, b: &Broken) -> String {
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

    /// The TLS session, when the connection is encrypted.
    pub fn tls(&self) -> Option<&tls::Session> {
        self.tls.as_ref()
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

    pub(super) fn timeout(&self, phase: Phase) -> Duration {
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

    pub(super) async fn send(&mut self, bytes: &[u8], phase: Phase) -> Result<(), Broken> {
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

    /// Reads one (possibly multi-line) reply within the phase's timeout.
    /// What one reply may cost is bounded by the reader (`reader.rs`); the
    /// read buffer holds at most one read's worth beyond it, since more is
    /// read only once the reader has taken everything buffered.
    pub(super) async fn reply(&mut self, phase: Phase) -> Result<Reply, Broken> {
        let deadline = clock::instant() + self.timeout(phase);
        let mut reader = ReplyReader::new();
        loop {
            if self.rpos < self.rbuf.len() {
                let (used, res) = reader.feed(&self.rbuf[self.rpos..]);
                self.rpos += used;
                match res {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(e) => return Err(Broken::Garbled(phase, e.to_string())),
                }
            }
            self.rbuf.clear();
            self.rpos = 0;
            self.rbuf.reserve(READ_CHUNK);
            let read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Broken::Lost(phase)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(Broken::Timeout(phase)),
            }
        }
    }

    /// Whether a pooled session can carry the next message as it is,
    /// without an `RSET` round trip: its last transaction ended cleanly
    /// and the server has said nothing since ([`Connection::spoke`]); a
    /// quiet socket is taken as alive, as Exim does when it sends the next
    /// `MAIL` on a connection.
    ///
    /// Why not `RSET` every time: on a busy backend each message then cost
    /// one more write, one more read and one more wake-up on both sides
    /// (measured: see benches/README.md, "CPU per message"). `RSET` stays
    /// where it is needed: after a transaction that did not end (a refused
    /// `MAIL` or recipients leave the server mid-transaction).
    pub fn quiet(&mut self) -> bool {
        self.clean && !self.spoke()
    }

    /// Whether the server has no transaction open ([`Connection::quiet`]
    /// without looking at the socket).
    pub fn clean(&self) -> bool {
        self.clean
    }

    /// Whether the server said something, or closed, since the last reply
    /// that was read: bytes left unread after it, or a socket readable now,
    /// which one read that does not wait sees (a `421` announced while
    /// idle, a stray reply, end of file). Nothing is owed between
    /// transactions, so such a session must not carry another message,
    /// not even after an `RSET`: the `RSET` would take the first unread
    /// reply for its own, and every later reply would answer the command
    /// before its own (a refused recipient read as accepted). The bytes
    /// read stay in the buffer, so asking again gives the same answer.
    pub fn spoke(&mut self) -> bool {
        use futures::FutureExt;
        if self.rpos < self.rbuf.len() {
            return true;
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.rbuf.reserve(READ_CHUNK);
        // Pending: nothing to read, the connection is open and silent.
        // Dropping the pending read loses nothing (no byte was taken).
        self.io.read_buf(&mut self.rbuf).now_or_never().is_some()
    }

    /// `RSET`, to check that a pooled session is still alive before it
    /// carries another message. False when it is not (close it).
    pub async fn reset(&mut self) -> bool {
        if self.send(b"RSET\r\n", Phase::Rset).await.is_err() {
            return false;
        }
        let ok = matches!(self.reply(Phase::Rset).await, Ok(r) if r.code() == 250);
        // The server has dropped whatever transaction was open.
        self.clean = ok;
        ok
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
        let all = |r: RcptResult| TransferOutcome {
            rcpts: vec![r; n],
            health: Health::Untested,
            reusable: true,
            content_error: None,
        };
        if !wire::safe_address(tx.sender) {
            return all(RcptResult::local(Verdict::Bounced, Status(5, 1, 7), "bad sender address syntax"));
        }
        // The message is opened before any command is sent: one that cannot
        // be read costs the backend nothing.
        let aborted = |e: sluice_queue::Error| TransferOutcome {
            rcpts: vec![RcptResult::local(Verdict::Deferred, Status(4, 3, 0), "queue file read error"); n],
            health: Health::Aborted,
            reusable: true,
            content_error: Some(e),
        };
        let utf8 = if !tx.smtputf8 {
            false
        } else if !tx.sender.is_ascii() || tx.rcpts.iter().any(|r| !r.address.is_ascii()) {
            true
        } else {
            match headers_ascii(tx.body).await {
                Ok(ascii) => !ascii,
                Err(e) => return aborted(e),
            }
        };
        if utf8 && !self.caps.smtputf8 {
            return all(RcptResult::local(
                Verdict::Bounced,
                Status(5, 6, 7),
                format!("SMTPUTF8 is required, but was not offered by host {host}"),
            ));
        }
        let size = tx.body.len();
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
                content_error: None,
            };
        }
        let mut chunks = match tx.body.open().await {
            Ok(c) => c,
            Err(e) => return aborted(e),
        };

        let params =
            MailParams { size: Some(size), body: tx.body_type, smtputf8: utf8, ret: tx.ret, envid: tx.envid };
        let mail = wire::mail_from(tx.sender, &params, &self.caps);
        let rcpt_cmds: Vec<Vec<u8>> = sendable
            .iter()
            .map(|&i| wire::rcpt_to(tx.rcpts[i].address, &tx.rcpts[i].notify, tx.rcpts[i].orcpt, &self.caps))
            .collect();
        let pipelining = self.caps.pipelining;

        let mut out = Flow { results, health: None, reusable: true, content_error: None };
        // Clean again only once the replies after the dot are all read.
        self.clean = false;
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
        match self.body(chunks.as_mut()).await {
            Ok(()) => {}
            Err(Sending::Broken(b)) => {
                let text = self.broken_text(&b);
                out.fail_pending(&text, Status(4, 4, 2));
                out.reusable = false;
                return out.finish(Health::Failed(text));
            }
            Err(Sending::Unreadable(e)) => {
                // No final dot: the server must not take a message cut
                // short for complete. Closing the connection mid-data is
                // how a transaction is abandoned (RFC 5321 4.1.1.4).
                out.fail_pending("queue file read error", Status(4, 3, 0));
                out.reusable = false;
                out.content_error = Some(e);
                return out.finish(Health::Aborted);
            }
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
        // Every reply after the dot was read: the server's transaction is
        // over, whatever the verdicts.
        self.clean = true;
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

    /// Sends the body as it is read, one stored chunk at a time, stuffed
    /// and cut into pieces of at most [`BODY_CHUNK`] bytes.
    async fn body(&mut self, chunks: &mut (dyn Chunks + '_)) -> Result<(), Sending> {
        let mut stuffer = DotStuffer::default();
        let mut buf = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 32);
        while let Some(chunk) = chunks.next_chunk().await.map_err(Sending::Unreadable)? {
            for piece in chunk.chunks(BODY_CHUNK) {
                buf.clear();
                stuffer.feed(piece, &mut buf);
                self.send(&buf, Phase::Body).await.map_err(Sending::Broken)?;
            }
        }
        buf.clear();
        stuffer.finish(&mut buf);
        self.send(&buf, Phase::Body).await.map_err(Sending::Broken)
    }
}

/// Why a body was not sent whole.
enum Sending {
    Broken(Broken),
    /// The queue could not give the rest of it.
    Unreadable(sluice_queue::Error),
}

/// Whether a message's header section is all ASCII, read chunk by chunk up
/// to its end (usually within the first chunk).
async fn headers_ascii(body: &dyn Content) -> Result<bool, sluice_queue::Error> {
    let mut chunks = body.open().await?;
    let mut scan = HeaderScan::default();
    while let Some(chunk) = chunks.next_chunk().await? {
        if let Some(ascii) = scan.feed(&chunk) {
            return Ok(ascii);
        }
    }
    Ok(scan.finish())
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
    content_error: Option<sluice_queue::Error>,
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
            content_error: self.content_error,
        }
    }
}
