//! The milter stages of a session: where Postfix's smtpd (and its cleanup
//! server) call `smtpd_milters`, after sluice's own checks of that stage
//! passed: CONNECT before the greeting, HELO, MAIL, RCPT (and refused
//! recipients for the milters that ask for them), DATA or the first BDAT,
//! an unknown command, and the message once received whole (in
//! `message.rs`'s finish, through [`Session::milter_message`]); plus the
//! Sendmail macros the session answers and the log lines Postfix writes
//! for milter decisions (`milter-reject`, `milter-discard`, `milter-hold`).
//!
//! Owns how a milter decision becomes a reply or a mark on the transaction;
//! the conversation with the milters is `crate::milter`'s, the commit
//! `message.rs`'s. Never talks to the client itself.

use std::net::IpAddr;

use sluice_queue::{Draft, Envelope, Recipient};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::session::Session;
use super::state::{Head, MilterEnd, MilterMarks, MilterVerdict, Transaction};
use crate::config::Route;
use crate::milter::{Action, Body, ConnectInfo, Edit, Family, HeaderSection, MacroSource, StoreError};
use crate::reply::{Reply, Status};

/// The values of the Sendmail macros at one point of the session
/// (Postfix's `smtpd_milter_eval`), taken when the stage is reached.
#[derive(Debug, Default)]
struct Macros {
    values: Vec<(&'static str, String)>,
}

impl Macros {
    fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.push((name, value.into()));
    }
}

impl MacroSource for Macros {
    fn value(&self, name: &str) -> Option<String> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }
}

/// The transaction as the macros name it.
#[derive(Debug, Default)]
struct At<'a> {
    queue_id: Option<String>,
    sender: Option<&'a str>,
    /// A recipient being reported, and the refusal sluice gave it.
    rcpt: Option<(&'a str, Option<&'a Reply>)>,
}

/// An address as Postfix writes it to milters: in brackets for IPv4, with
/// `IPv6:` for IPv6 (its `rfc_addr`).
fn rfc_addr(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("IPv6:{a}"),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The macros at this point of the session.
    fn macros(&self, at: At<'_>) -> Macros {
        let s = &self.settings;
        let p = &self.peer;
        let mut m = Macros::default();
        m.set("{j}", &s.myhostname);
        m.set("{daemon_name}", &s.milters.daemon_name);
        m.set("{v}", &s.milters.macro_v);
        if let Some(local) = p.local {
            m.set("{daemon_addr}", local.ip().to_string());
            m.set("{daemon_port}", local.port().to_string());
        }
        let forged = if p.name.eq_ignore_ascii_case(&p.reverse_name) { "" } else { " (may be forged)" };
        m.set("{_}", format!("{} [{}]{forged}", p.reverse_name, p.addr));
        m.set("{client_addr}", rfc_addr(p.addr));
        m.set("{client_port}", p.port.to_string());
        m.set("{client_name}", &p.name);
        m.set("{client_ptr}", &p.reverse_name);
        use super::naming::NameStatus as N;
        let resolve = match (p.naming.name, p.naming.reverse) {
            (N::Ok, _) => "OK",
            (N::Forged, _) | (_, N::Forged) => "FORGED",
            (N::Temp, _) | (_, N::Temp) => "TEMP",
            _ => "FAIL",
        };
        m.set("{client_resolve}", resolve);
        if let Some(tls) = &self.tls {
            m.set("{tls_version}", &tls.version);
            m.set("{cipher}", &tls.cipher);
        }
        if let Some(id) = at.queue_id {
            m.set("{i}", id);
        }
        let route = |address: &str| s.milters.config.as_ref().map(|c| c.route(address));
        if let Some(sender) = at.sender {
            m.set("{mail_addr}", sender);
            if let Some(Ok(Route::Deliver { transport, nexthop, .. })) =
                route(sender).filter(|_| !sender.is_empty())
            {
                m.set("{mail_mailer}", transport);
                m.set("{mail_host}", nexthop.to_string());
            }
        }
        match at.rcpt {
            Some((address, None)) => {
                m.set("{rcpt_addr}", address);
                match route(address) {
                    Some(Ok(Route::Deliver { transport, nexthop, .. })) => {
                        m.set("{rcpt_mailer}", transport);
                        m.set("{rcpt_host}", nexthop.to_string());
                    }
                    Some(Ok(Route::Error { .. })) => m.set("{rcpt_mailer}", "error"),
                    Some(Ok(Route::Discard { .. })) => m.set("{rcpt_mailer}", "discard"),
                    _ => {}
                }
            }
            // A refused recipient, as Postfix reports it to milters that
            // ask: the mailer "error", the enhanced status as the host and
            // the reply text as the address.
            Some((_, Some(r))) => {
                m.set("{rcpt_mailer}", "error");
                m.set("{rcpt_host}", r.dsn().to_string());
                m.set("{rcpt_addr}", r.lines().join(" "));
            }
            None => {}
        }
        m
    }

    /// The transaction's sender and queue ID, for the macros.
    fn at(&self) -> At<'_> {
        match &self.tx {
            Transaction::Mail(m) => At {
                queue_id: m.draft.as_ref().map(|d| d.id().to_string()),
                sender: Some(m.from.as_str()),
                rcpt: None,
            },
            Transaction::Idle => At::default(),
        }
    }

    /// Logs a milter decision as Postfix's smtpd does
    /// (`NOQUEUE: milter-reject: RCPT from name[addr]: 550 5.7.1 ...;
    /// from=<...> to=<...> proto=ESMTP helo=<...>`).
    fn log_milter(&self, stage: &str, action: &Action, from: Option<&str>, to: Option<&str>) {
        let (what, text) = match action {
            Action::Reply(r) => ("milter-reject", self.shown(r)),
            Action::Shutdown => ("milter-reject", "421 4.7.0 Server closing connection".to_owned()),
            Action::Discard => ("milter-discard", "milter triggers DISCARD action".to_owned()),
            Action::Hold(reason) => ("milter-hold", reason.clone()),
        };
        let mut context = self.context(to);
        if let (Some(from), Transaction::Idle) = (from, &self.tx) {
            context.insert_str(0, &format!(" from=<{from}>"));
        }
        info!("{}: {what}: {stage} from {}: {text};{context}", self.queue_id(), self.peer);
    }

    /// What a decision at `stage` means: a refusal or a close, or a mark
    /// on the transaction (discard, hold) and carry on.
    fn verdict(
        &mut self,
        stage: &str,
        action: Option<Action>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> MilterVerdict {
        let Some(action) = action else { return MilterVerdict::Go };
        self.log_milter(stage, &action, from, to);
        match action {
            Action::Reply(r) if r.code() == 421 => MilterVerdict::Close(r),
            Action::Reply(r) => MilterVerdict::Refuse(r),
            Action::Shutdown => {
                MilterVerdict::Close(Reply::new(421, Status(4, 7, 0), "Server closing connection"))
            }
            Action::Discard => {
                if let Transaction::Mail(m) = &mut self.tx {
                    m.milter.discard = true;
                }
                MilterVerdict::Go
            }
            Action::Hold(reason) => {
                match &mut self.tx {
                    Transaction::Mail(m) => {
                        m.milter.hold.get_or_insert(reason);
                    }
                    // At CONNECT or HELO: every message of the session.
                    Transaction::Idle => {
                        self.milter_hold.get_or_insert(reason);
                    }
                }
                MilterVerdict::Go
            }
        }
    }

    /// CONNECT, before the greeting: the greeting to send instead of 220
    /// and whether the session ends after it. A refusal answers with 554
    /// and every later command with the milter's reply; a 421 closes.
    pub(super) async fn milter_connect(&mut self) -> Option<(Reply, bool)> {
        let mut milters = self.milters.take()?;
        let info = ConnectInfo {
            hostname: if self.peer.name == super::naming::UNKNOWN {
                format!("[{}]", self.peer.addr)
            } else {
                self.peer.name.clone()
            },
            family: if self.peer.addr.is_ipv4() { Family::Inet } else { Family::Inet6 },
            port: self.peer.port,
            address: self.peer.addr.to_string(),
        };
        let macros = self.macros(At::default());
        let action = milters.connect(&macros, &info).await;
        self.milters = Some(milters);
        let host = self.settings.myhostname.clone();
        match self.verdict("CONNECT", action, None, None) {
            MilterVerdict::Go => None,
            MilterVerdict::Refuse(r) if r.code() >= 500 => Some((
                Reply::multiline(554, None, vec![format!("{host} ESMTP not accepting connections")]),
                false,
            )),
            // A temporary refusal waits for MAIL, which it will answer.
            MilterVerdict::Refuse(_) => None,
            MilterVerdict::Close(_) => Some((
                Reply::multiline(421, None, vec![format!("{host} Service unavailable - try again later")]),
                true,
            )),
        }
    }

    /// HELO or EHLO, once sluice accepted the name: only a 421 matters now
    /// (a refusal answers MAIL and what follows, as in Postfix).
    pub(super) async fn milter_helo(&mut self, name: &str) -> Option<Reply> {
        let mut milters = self.milters.take()?;
        let macros = self.macros(At::default());
        let action = milters.helo(&macros, name).await;
        self.milters = Some(milters);
        match self.verdict("HELO", action, None, None) {
            MilterVerdict::Close(r) => Some(r),
            _ => None,
        }
    }

    /// MAIL FROM, once sluice accepted it and the transaction exists.
    pub(super) async fn milter_mail(&mut self) -> MilterVerdict {
        let Some(mut milters) = self.milters.take() else { return MilterVerdict::Go };
        let (args, from) = match &self.tx {
            Transaction::Mail(m) => (mail_args(m), m.from.clone()),
            Transaction::Idle => (Vec::new(), String::new()),
        };
        let macros = self.macros(self.at());
        let action = milters.mail(&macros, &args).await;
        self.milters = Some(milters);
        self.verdict("MAIL", action, Some(&from), None)
    }

    /// RCPT TO, once sluice accepted the recipient.
    pub(super) async fn milter_rcpt(&mut self, rcpt: &Recipient) -> MilterVerdict {
        let Some(mut milters) = self.milters.take() else { return MilterVerdict::Go };
        if matches!(&self.tx, Transaction::Mail(m) if m.milter.discard) {
            self.milters = Some(milters);
            return MilterVerdict::Go;
        }
        let args = rcpt_args(rcpt);
        let macros = self.macros(At { rcpt: Some((&rcpt.address, None)), ..self.at() });
        let action = milters.rcpt(&macros, &args, false).await;
        self.milters = Some(milters);
        self.verdict("RCPT", action, None, Some(&rcpt.address))
    }

    /// A recipient sluice refused, for the milters that want to know.
    pub(super) async fn milter_rcpt_refused(&mut self, address: &str, reply: &Reply) {
        let Some(mut milters) = self.milters.take() else { return };
        if matches!(self.tx, Transaction::Mail(_)) {
            let args = vec![format!("<{address}>")];
            let macros = self.macros(At { rcpt: Some((address, Some(reply))), ..self.at() });
            milters.rcpt(&macros, &args, true).await;
        }
        self.milters = Some(milters);
    }

    /// DATA, or the first BDAT, once the data restrictions passed.
    pub(super) async fn milter_data(&mut self) -> MilterVerdict {
        let Some(mut milters) = self.milters.take() else { return MilterVerdict::Go };
        if matches!(&self.tx, Transaction::Mail(m) if m.milter.discard) {
            self.milters = Some(milters);
            return MilterVerdict::Go;
        }
        let macros = self.macros(self.at());
        let action = milters.data(&macros).await;
        self.milters = Some(milters);
        self.verdict("DATA", action, None, None)
    }

    /// A command sluice does not know: a milter's reply replaces the
    /// `502` (Postfix's `milter_unknown_reply_override`).
    pub(super) async fn milter_unknown(&mut self, line: &[u8]) -> Option<Reply> {
        let mut milters = self.milters.take()?;
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        let macros = self.macros(self.at());
        let action = milters.unknown(&macros, &text).await;
        self.milters = Some(milters);
        action.and_then(|a| a.reply())
    }

    /// The transaction is over: the milters forget it.
    pub(super) fn milter_abort(&mut self) {
        if let Some(m) = self.milters.as_mut() {
            m.abort();
        }
    }

    /// The session is over.
    pub(super) async fn milter_disconnect(&mut self) {
        if let Some(mut m) = self.milters.take() {
            m.disconnect().await;
        }
    }

    /// The message, received whole and stored in `draft` (its body) and
    /// `headers`: each milter sees it and may edit it; the decision comes
    /// back. `context` names the client and transaction for log lines.
    pub(super) async fn milter_message(
        &mut self,
        draft: &mut Draft,
        headers: &mut HeaderSection,
        envelope: &mut Envelope,
        head_len: u64,
        context: &str,
    ) -> Option<Action> {
        let mut milters = self.milters.take()?;
        let id = draft.id().to_string();
        let macros = self.macros(At {
            queue_id: Some(id.clone()),
            sender: Some(envelope.sender.as_str()),
            rcpt: None,
        });
        let limit = self.settings.message_size_limit;
        let checks = &self.settings.milters.header_checks;
        let mut body = DraftBody { draft, limit, head_len };
        let mut edit =
            Edit { headers, envelope, body: &mut body, header_checks: Some(checks), id: &id, context };
        let action = milters.message(&macros, &mut edit).await;
        self.milters = Some(milters);
        action
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The end of a message received with milters: its header section
    /// (`head`: the client's, then `prepend` and our `Received:` in front)
    /// and its body (in `draft`) go to each milter, whose edits are made to
    /// them and to `envelope`. Returns the header section to commit in
    /// front of the body, or how the message ended instead (refused,
    /// discarded), logged as Postfix's cleanup logs it. `context` is
    /// `name[addr]; from=<...> to=<...> proto=... helo=<...>`.
    pub(super) async fn filtered(
        &mut self,
        draft: &mut Draft,
        head: Head,
        prepend: &[String],
        marks: MilterMarks,
        envelope: &mut Envelope,
        context: &str,
    ) -> Result<Vec<u8>, MilterEnd> {
        let id = draft.id();
        let accepted = || MilterEnd {
            reply: Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}")),
            queued: true,
        };
        let bytes = head.bytes.unwrap_or_default();
        // The empty line after the header section is the message's own:
        // kept as it was sent (a message of headers only has none).
        let (lines, separator): (&[u8], &[u8]) = if bytes == b"\r\n" {
            (b"", b"\r\n")
        } else if bytes.ends_with(b"\r\n\r\n") {
            (&bytes[..bytes.len() - 2], b"\r\n")
        } else {
            (&bytes, b"")
        };
        let prefix: String = prepend.iter().map(|h| format!("{h}\r\n")).collect();
        let mut headers = HeaderSection::parse(lines);
        headers.prepend_own(&head.received);
        if !prefix.is_empty() {
            headers.prepend_visible(&prefix);
        }
        // Discarded at MAIL, RCPT or DATA (and logged there): the content
        // goes to no milter.
        if marks.discard {
            self.milter_abort();
            return Err(accepted());
        }
        let original = headers.clone();
        let head_len = (prefix.len() + head.received.len() + bytes.len()) as u64;
        let action = self.milter_message(draft, &mut headers, envelope, head_len, context).await;
        self.milter_abort();
        let (peer, rest) = context.split_once(';').unwrap_or((context, ""));
        let log = |what: &str, text: &str| {
            info!(target: "cleanup", "{id}: {what}: END-OF-MESSAGE from {peer}: {text};{rest}");
        };
        match action {
            Some(Action::Reply(r)) => {
                // Postfix's cleanup words it without the reply code.
                let shown = self.shown(&r);
                log("milter-reject", shown.get(4..).unwrap_or(&shown));
                self.closing |= r.code() == 421;
                return Err(MilterEnd { reply: r, queued: false });
            }
            Some(Action::Shutdown) => {
                log("milter-reject", "4.7.0 Server closing connection");
                self.closing = true;
                let reply = Reply::new(421, Status(4, 7, 0), "Server closing connection");
                return Err(MilterEnd { reply, queued: false });
            }
            Some(Action::Discard) => {
                log("milter-discard", "milter triggers DISCARD action");
                return Err(accepted());
            }
            Some(Action::Hold(reason)) => {
                log("milter-hold", &reason);
                envelope.held = true;
            }
            None => {}
        }
        // A quarantine asked for at an earlier stage (logged there).
        if marks.hold.is_some() || self.milter_hold.is_some() {
            envelope.held = true;
        }
        if envelope.recipients.is_empty() {
            log("milter-discard", "milters deleted every recipient");
            return Err(accepted());
        }
        Ok(if headers == original {
            // Unedited: exactly the bytes received, ours in front.
            [prefix.as_bytes(), head.received.as_bytes(), &bytes].concat()
        } else {
            [headers.to_bytes().as_slice(), separator].concat()
        })
    }
}

/// The MAIL FROM arguments as milters get them: `<address>` and the ESMTP
/// parameters sluice took (rebuilt from what it parsed).
fn mail_args(m: &super::state::Mail) -> Vec<String> {
    use sluice_queue::{BodyType, DsnRet};
    let mut args = vec![format!("<{}>", m.from)];
    if let Some(size) = m.declared_size {
        args.push(format!("SIZE={size}"));
    }
    match m.body_type {
        BodyType::SevenBit => args.push("BODY=7BIT".into()),
        BodyType::EightBitMime => args.push("BODY=8BITMIME".into()),
        BodyType::BinaryMime => args.push("BODY=BINARYMIME".into()),
        BodyType::Unspecified => {}
    }
    if m.smtputf8 {
        args.push("SMTPUTF8".into());
    }
    match m.ret {
        DsnRet::Full => args.push("RET=FULL".into()),
        DsnRet::Headers => args.push("RET=HDRS".into()),
        DsnRet::Unspecified => {}
    }
    if let Some(envid) = &m.envid {
        args.push(format!("ENVID={envid}"));
    }
    args
}

/// The RCPT TO arguments as milters get them: `<address>`, `NOTIFY=` and
/// `ORCPT=` as sluice took them.
fn rcpt_args(r: &Recipient) -> Vec<String> {
    let mut args = vec![format!("<{}>", r.address)];
    let n = r.notify;
    if n.specified {
        let words: Vec<&str> = if n.never {
            vec!["NEVER"]
        } else {
            [(n.success, "SUCCESS"), (n.failure, "FAILURE"), (n.delay, "DELAY")]
                .into_iter()
                .filter_map(|(on, w)| on.then_some(w))
                .collect()
        };
        args.push(format!("NOTIFY={}", words.join(",")));
    }
    if let Some(orcpt) = &r.orcpt {
        args.push(format!("ORCPT={orcpt}"));
    }
    args
}

/// The message body in the queue draft, as milters read and replace it:
/// read back chunk by chunk, replaced by streaming into the same draft.
struct DraftBody<'a> {
    draft: &'a mut Draft,
    /// `message_size_limit` (0: none): a replacement may not make the
    /// message larger.
    limit: u64,
    /// The header section's size, counted against the limit.
    head_len: u64,
}

fn store_error(e: sluice_queue::Error) -> StoreError {
    StoreError { reply: Reply::from(&e), detail: e.to_string() }
}

impl Body for DraftBody<'_> {
    async fn chunk(&mut self, n: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.draft.read_chunk(n).await.map_err(store_error)
    }

    async fn replace_start(&mut self) -> Result<(), StoreError> {
        self.draft.restart_body().await.map_err(store_error)
    }

    async fn replace_append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let size = self.head_len + self.draft.len() + bytes.len() as u64;
        if self.limit > 0 && size > self.limit {
            return Err(StoreError {
                reply: Reply::new(552, Status(5, 3, 4), "Error: message file too big"),
                detail: format!(
                    "replaced body makes the message larger than message_size_limit ({})",
                    self.limit
                ),
            });
        }
        self.draft.append(bytes).await.map_err(store_error)
    }

    async fn replace_finish(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
