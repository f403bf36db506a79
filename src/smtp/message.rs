//! The message: what happens to the content from the first byte after
//! `354` (or the first BDAT chunk) to the queue commit and its `250`.
//!
//! - **begin** ([`Session::begin_body`]): the headers policy servers asked
//!   to `PREPEND`, then our `Received:`, go into the queue draft first, so
//!   the body streams after them and nothing is rewritten later;
//! - **feed** ([`Session::feed_body`]): bytes through the decoder, the size
//!   and hop-count limits, `header_checks` once the header section is
//!   complete, `body_checks` line by line, and appends to the draft in
//!   chunks of [`APPEND_AT`];
//! - **finish** ([`Session::finish_message`]): the last checks, the
//!   content verdicts ([`ContentVerdict`]: REJECT, DISCARD, HOLD, WARN),
//!   sender authentication's verdict (refuse, hold or accept, and the
//!   `Authentication-Results:` header the commit writes at the top of the
//!   message), then the envelope and the commit. The reply waits for the
//!   commit: `250` means body, envelope and schedule entry are on disk in
//!   one synced batch.
//!
//! Sender authentication (`sender_auth.rs`) sees every decoded byte as
//! received, and removes forged `Authentication-Results:` headers from
//! what goes to the draft.
//!
//! With milters (`filters.rs`) the header section never goes into the
//! draft: `begin_body` keeps our `Received:` aside, `feed_body` cuts the
//! client's header section off the front as soon as it is complete, and
//! `finish_message`, after the content verdicts and before the commit,
//! hands the message to the milters, whose header edits are made to a
//! list and whose replacement body streams into the draft; the commit then
//! writes the header section in front of the body in its synced batch.
//! Never reads from or writes to the client itself: the session's loop
//! does, and this module queues replies through it.

use std::sync::Arc;

use bytes::Buf;
use sluice_queue::{ClientInfo, Envelope};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::command::printable;
use super::content::{self, BodyLines, Decoder, Headers, Violation};
use super::events::{self, Event};
use super::session::Session;
use super::state::{Body, ContentVerdict, Head, MilterEnd, Transaction};
use crate::auth::Disposition;
use crate::clock;
use crate::config::HeaderAction;
use crate::reply::{Reply, Status};

/// Decoded content is handed to the queue draft once this much is pending.
pub(super) const APPEND_AT: usize = 64 * 1024;

/// Which content table a line meets.
#[derive(Debug, Clone, Copy)]
enum Content {
    Header,
    Body,
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
        // A folded header is logged on one line: its line breaks and the
        // folding white space become spaces, anything else unprintable `?`.
        let shown = printable(line.replace(['\n', '\t'], " ").as_bytes());
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

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
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
        let auth = match &self.tx {
            Transaction::Mail(m) => self.begin_body_auth(m),
            Transaction::Idle => None,
        };
        let Transaction::Mail(m) = &mut self.tx else { return };
        let id = m.draft.as_ref().map(|d| d.id().to_string()).unwrap_or_default();
        // `for <address>` names what the client sent to when it named one
        // recipient, as Postfix's smtpd does: an alias, not its targets.
        let named = |r: &sluice_queue::Recipient| r.original.clone().unwrap_or_else(|| r.address.clone());
        let for_rcpt = match m.rcpts.first().map(named) {
            Some(first) if m.rcpts.iter().all(|r| named(r).eq_ignore_ascii_case(&first)) => Some(first),
            _ => None,
        };
        let header = content::received_header(&content::Trace {
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
            head: None,
            auth,
        };
        // With milters, the header section (ours and the client's) is
        // written at the commit, after their edits: keep ours until then.
        if self.milters.is_some() {
            body.head = Some(Head { bytes: None, received: header });
            m.body = Some(body);
            self.xfer_started = clock::instant();
            self.xfer_bytes = 0;
            return;
        }
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
        // Sender authentication sees the bytes as received; what is stored
        // loses any forged Authentication-Results header. Without milters
        // they are filtered here as they stream; with milters the header
        // section is filtered whole once it is cut off below (the cut is
        // measured in bytes as received).
        if let Some(auth) = body.auth.as_mut() {
            auth.feed(&mut body.out, before, body.head.is_none());
        }
        // With milters the header section is kept out of the draft: cut it
        // off the front of what was decoded (nothing was appended yet) as
        // soon as it is complete.
        if let Some(head) = body.head.as_mut()
            && head.bytes.is_none()
            && body.headers.is_complete()
        {
            let cut = body.headers.head_len().min(body.out.len());
            let bytes: Vec<u8> = body.out.drain(..cut).collect();
            head.bytes = Some(match body.auth.as_mut() {
                Some(auth) => auth.filter_whole(&bytes),
                None => bytes,
            });
        }
        let head_pending = body.head.as_ref().is_some_and(|h| h.bytes.is_none());
        // Once the message is refused (or the queue failed) the rest is
        // read only to find its end: nothing more is stored.
        if body.decoder.violation().is_some() || body.storage.is_some() || body.verdict.stops() {
            body.out.clear();
        } else if body.out.len() >= APPEND_AT
            && !head_pending
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
    /// says it is on disk. Ends the transaction either way (the milters
    /// are told, whatever became of the message); true when the message
    /// was queued.
    pub(super) async fn finish_message(&mut self) -> bool {
        let queued = self.end_message().await;
        self.milter_abort();
        queued
    }

    /// [`Session::finish_message`] but for telling the milters.
    async fn end_message(&mut self) -> bool {
        // A message that ended inside its header section still meets
        // header_checks, and a last line without CRLF body_checks.
        let s = &self.settings;
        let context =
            (!s.header_checks.is_empty() || !s.body_checks.is_empty()).then(|| self.header_log_context());
        // The transaction as milter log lines name it, before it is taken.
        let milter_context = self.milters.is_some().then(|| self.header_log_context().1);
        let auth_context = match &self.tx {
            Transaction::Mail(m) => self.context(m.rcpts.first().map(|r| r.address.as_str())),
            Transaction::Idle => String::new(),
        };
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
        // A header section that never ended (a message of headers only).
        if let Some(head) = body.head.as_mut()
            && head.bytes.is_none()
        {
            let cut = body.headers.head_len().min(body.out.len());
            let bytes: Vec<u8> = body.out.drain(..cut).collect();
            head.bytes = Some(match body.auth.as_mut() {
                Some(auth) => auth.filter_whole(&bytes),
                None => bytes,
            });
        } else if body.head.is_none()
            && let Some(auth) = body.auth.as_mut()
        {
            // What the streaming filter still holds (the last header field
            // of a message without a body).
            auth.finish(&mut body.out);
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
        // Sender authentication's verdict comes after the content checks,
        // which need no DNS: a message they refuse costs no lookups.
        let decision = self.end_of_data_auth(&m, body.auth.as_mut()).await;
        let mut auth_header = Vec::new();
        if let Some(d) = decision {
            info!("{id}: auth: {}", d.report.summary());
            match d.disposition {
                Disposition::Refuse(r) => {
                    if let Err(e) = draft.abort().await {
                        warn!("{id}: cannot delete staged message: {e}");
                    }
                    info!(
                        "{id}: reject: END-OF-MESSAGE from {}: {};{}",
                        self.peer,
                        self.shown(&r),
                        auth_context
                    );
                    self.reply(&r);
                    return false;
                }
                Disposition::Hold(why) => {
                    body.verdict
                        .hold
                        .get_or_insert_with(|| format!("{why} from {};{auth_context}", self.peer));
                }
                Disposition::Accept => {}
            }
            if m.head {
                auth_header = d.header.map(String::into_bytes).unwrap_or_default();
            }
        }
        if let Some(log) = &body.verdict.hold {
            info!("{id}: hold: {log}");
        }
        let from = m.from.clone();
        let (prepend, marks) = (std::mem::take(&mut m.prepend), std::mem::take(&mut m.milter));
        let mut envelope = Envelope {
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
        // With milters: they see the message now, and what they leave of it
        // is what is committed (header section in front of the body).
        let head = match body.head.take() {
            Some(head) => {
                let context = milter_context.unwrap_or_default();
                match self.filtered(&mut draft, head, &prepend, marks, &mut envelope, &context).await {
                    Ok(bytes) => Some(bytes),
                    Err(MilterEnd { reply, queued }) => {
                        if let Err(e) = draft.abort().await {
                            warn!("{id}: cannot delete staged message: {e}");
                        }
                        self.reply(&reply);
                        return queued;
                    }
                }
            }
            None => None,
        };
        let nrcpt = envelope.recipients.len();
        // The reply waits for the commit: `250` means the body, envelope and
        // schedule entry are on disk in one synced batch. Anything else the
        // queue says becomes 451/452 through Reply::from, and the client
        // keeps the message.
        // Our Authentication-Results header goes on top of everything, the
        // milters' header section included (they do not see it: their
        // results are their own). Both are empty for a plain draft.
        let mut top = auth_header;
        if let Some(head) = head {
            top.extend_from_slice(&head);
        }
        match draft.commit_with_head(top, envelope, clock::unix_millis()).await {
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
}
