//! One milter in one SMTP session: the connection, the option
//! negotiation, and the state machine of Postfix's `milter8` client:
//! which events are sent in which state, what each reply means at each
//! stage, and how the edits of the end-of-message stage are carried out.
//!
//! Owns the per-milter protocol rules; never decides for the session (the
//! session gets an [`Action`] or nothing and acts on it) and never talks
//! to another milter (the order of milters is `mod.rs`'s). The
//! end-of-message stage and its edits are in `eom.rs`.
//!
//! A failure (connect refused, a timeout, a protocol error) ends the
//! connection for the rest of the session, as in Postfix: from then on
//! every event answers `milter_default_action` at once.

use std::fmt::Display;
use std::sync::Arc;

use tracing::warn;

use super::action::{self, Action};
use super::conn::{Conn, ConnError};
use super::macros::{MacroLists, MacroSource, OwnLists, Stage};
use super::protocol::*;
use super::{Body, Edit, Milter};

/// Packets that get no reply are sent once this much is waiting.
const FLUSH_AT: usize = 256 * 1024;

/// What the session reports at CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// The client's verified name, or `[address]` when it has none.
    pub hostname: String,
    pub family: Family,
    pub port: u16,
    pub address: String,
}

/// Where the macros come from for one event.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub lists: &'a MacroLists,
    pub source: &'a dyn MacroSource,
}

/// Postfix's `MILTER8_STAT_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Not connected yet.
    Closed,
    /// Failed: only the default reply from now on.
    Error,
    /// Between transactions or in the envelope.
    Envelope,
    /// Receiving content.
    Message,
    /// Said ACCEPT at CONNECT or HELO: nothing more this session.
    AcceptConnection,
    /// Said ACCEPT or DISCARD for this message: nothing more until the
    /// next one.
    AcceptMessage,
    /// Refused the connection: its reply answers every later event.
    RejectConnection,
}

/// One milter's client for one session.
#[derive(Debug)]
pub struct Client {
    pub(super) milter: Arc<Milter>,
    pub(super) conn: Option<Conn>,
    pub(super) state: State,
    /// The reply every event gets once the connection is refused or
    /// failed (Postfix's `def_reply`).
    pub(super) persistent: Option<Action>,
    /// What was negotiated: the filter's version, the protocol steps it
    /// asked for, the events its version does not know, its own macro
    /// lists.
    pub(super) steps: u32,
    not_in_protocol: u32,
    pub(super) own: OwnLists,
    /// `SMFIR_SKIP`: further events of this kind are not sent.
    skip_event: Option<u8>,
    /// `SMFIR_QUARANTINE` seen during the last event.
    pub(super) hold: Option<String>,
    /// A transaction was begun (MAIL sent): the next abort must tell the
    /// milter (Postfix's `SMTPD_FLAG_NEED_MILTER_ABORT`).
    in_transaction: bool,
    /// The milter has answered this session and not failed: at the end of
    /// the session (or of a message) the breaker is told of a success.
    answered: bool,
}

/// The name of a command, for log lines as Postfix words them.
fn event_name(code: u8) -> &'static str {
    match code {
        SMFIC_CONNECT => "SMFIC_CONNECT",
        SMFIC_HELO => "SMFIC_HELO",
        SMFIC_MAIL => "SMFIC_MAIL",
        SMFIC_RCPT => "SMFIC_RCPT",
        SMFIC_DATA => "SMFIC_DATA",
        SMFIC_HEADER => "SMFIC_HEADER",
        SMFIC_EOH => "SMFIC_EOH",
        SMFIC_BODY => "SMFIC_BODY",
        SMFIC_BODYEOB => "SMFIC_BODYEOB",
        SMFIC_UNKNOWN => "SMFIC_UNKNOWN",
        SMFIC_OPTNEG => "SMFIC_OPTNEG",
        _ => "(unknown MTA event)",
    }
}

/// How a reply ends the reading of one event.
pub(super) enum Step {
    /// Read the next reply.
    More,
    /// The event is answered.
    Done(Option<Action>),
}

impl Client {
    pub fn new(milter: Arc<Milter>) -> Client {
        Client {
            milter,
            conn: None,
            state: State::Closed,
            persistent: None,
            steps: 0,
            not_in_protocol: 0,
            own: OwnLists::default(),
            skip_event: None,
            hold: None,
            in_transaction: false,
            answered: false,
        }
    }

    /// The milter's name (its endpoint as configured).
    pub fn name(&self) -> &str {
        &self.milter.spec.name
    }

    /// True when it asked to see rejected recipients (`SMFIP_RCPT_REJ`).
    pub fn wants_rejected_recipients(&self) -> bool {
        self.steps & SMFIP_RCPT_REJ != 0
    }

    /// The quarantine reason the last event gave, if any.
    pub fn take_hold(&mut self) -> Option<String> {
        self.hold.take()
    }

    /// Connects, negotiates and reports the client (Postfix's
    /// `milter8_connect` and `milter8_conn_event`). While the milter's
    /// breaker is open it is not contacted and the default action applies.
    pub async fn connect(&mut self, ctx: Ctx<'_>, info: &ConnectInfo) -> Option<Action> {
        let spec = &self.milter.spec;
        if !self.milter.permit() {
            self.state = State::Error;
            self.persistent = action::on_failure(spec.default_action);
            return self.persistent.clone();
        }
        let conn = match Conn::connect(&spec.endpoint, spec.connect_timeout).await {
            Ok(c) => c,
            Err(e) => {
                warn!(target: "smtpd", "connect to Milter service {}: {e}", spec.name);
                return self.comm_error();
            }
        };
        self.conn = Some(conn);
        if let Err(reply) = self.negotiate().await {
            return reply;
        }
        self.state = State::Envelope;
        let cmd = Command::Connect {
            hostname: &info.hostname,
            family: info.family,
            port: info.port,
            address: &info.address,
        };
        self.event(cmd, Stage::Connect, ctx, SMFIP_NOCONNECT, SMFIP_NR_CONN).await
    }

    /// The option negotiation; on failure the error reply is already set.
    async fn negotiate(&mut self) -> Result<(), Option<Action>> {
        let spec = &self.milter.spec;
        let version = spec.protocol.version;
        let offered = version_steps(version) | if spec.protocol.no_header_reply { SMFIP_NR_HDR } else { 0 };
        let timeout = spec.command_timeout;
        self.not_in_protocol = NOSEND_MASK & !offered;
        let Some(conn) = self.conn.as_mut() else { return Err(self.persistent.clone()) };
        conn.queue(&Command::OptNeg { version, actions: ALL_ACTIONS, steps: offered });
        let reply = match conn.read_header(timeout).await {
            Ok(h) if h.code == SMFIC_OPTNEG => conn.read_response(h, timeout).await,
            Ok(h) => Err(ConnError::Protocol(ProtocolError::Unknown(h.code))),
            Err(e) => Err(e),
        };
        let (theirs, actions, steps, macros) = match reply {
            Ok(Response::OptNeg { version, actions, steps, macros }) => (version, actions, steps, macros),
            Ok(_) => unreachable_reply(),
            Err(e) => {
                self.warn(format_args!("read error in initial handshake: {e}"));
                return Err(self.comm_error());
            }
        };
        if theirs > version || theirs < 2 {
            self.warn(format_args!("protocol version {theirs} conflict with MTA protocol version {version}"));
            return Err(self.comm_error());
        }
        if actions & !ALL_ACTIONS != 0 {
            self.warn(format_args!(
                "request mask 0x{actions:x} conflict with MTA request mask 0x{ALL_ACTIONS:x}"
            ));
            return Err(self.comm_error());
        }
        // A filter speaking an older version is not sent the events that
        // version does not define (libmilter may hang up on them).
        if theirs < version {
            self.not_in_protocol |= NOSEND_MASK & !version_steps(theirs);
        }
        self.steps = steps;
        for (stage, names) in macros {
            if !self.own.set(stage, &names) {
                self.warn(format_args!("ignoring unknown macro type {stage}"));
            }
        }
        Ok(())
    }

    /// HELO or EHLO.
    pub async fn helo(&mut self, ctx: Ctx<'_>, name: &str) -> Option<Action> {
        match self.state {
            State::Envelope | State::AcceptMessage => {
                self.event(Command::Helo(name), Stage::Helo, ctx, SMFIP_NOHELO, SMFIP_NR_HELO).await
            }
            _ => self.persistent.clone(),
        }
    }

    /// MAIL FROM: `<address>` then its ESMTP parameters.
    pub async fn mail(&mut self, ctx: Ctx<'_>, args: &[String]) -> Option<Action> {
        match self.state {
            State::Envelope => {
                self.in_transaction = true;
                self.event(Command::Mail(args), Stage::Mail, ctx, SMFIP_NOMAIL, SMFIP_NR_MAIL).await
            }
            _ => self.persistent.clone(),
        }
    }

    /// RCPT TO: `<address>` then its ESMTP parameters.
    pub async fn rcpt(&mut self, ctx: Ctx<'_>, args: &[String]) -> Option<Action> {
        match self.state {
            State::Envelope => {
                self.event(Command::Rcpt(args), Stage::Rcpt, ctx, SMFIP_NORCPT, SMFIP_NR_RCPT).await
            }
            _ => self.persistent.clone(),
        }
    }

    /// DATA (or the first BDAT).
    pub async fn data(&mut self, ctx: Ctx<'_>) -> Option<Action> {
        match self.state {
            State::Envelope => self.event(Command::Data, Stage::Data, ctx, SMFIP_NODATA, SMFIP_NR_DATA).await,
            _ => self.persistent.clone(),
        }
    }

    /// A command sluice does not know.
    pub async fn unknown(&mut self, ctx: Ctx<'_>, line: &str) -> Option<Action> {
        match self.state {
            State::Envelope => {
                self.event(Command::Unknown(line), Stage::Unknown, ctx, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN).await
            }
            _ => self.persistent.clone(),
        }
    }

    /// The reply that answers every command once the connection was
    /// refused or failed, if any.
    pub fn persistent(&self) -> Option<&Action> {
        self.persistent.as_ref()
    }

    /// The message content and the end-of-message stage (Postfix's
    /// `milter8_message`): headers as they are now (earlier milters' edits
    /// included), the end of the headers, the body in chunks, then the
    /// edits and the decision.
    pub async fn message<B: Body>(&mut self, ctx: Ctx<'_>, edit: &mut Edit<'_, B>) -> Option<Action> {
        if self.state != State::Envelope {
            return self.persistent.clone();
        }
        self.state = State::Message;
        let result = self.content(ctx, edit).await;
        if matches!(self.state, State::Message | State::AcceptMessage) {
            self.state = State::Envelope;
        }
        result
    }

    /// True while this message is still being sent (Postfix's
    /// `MILTER8_MESSAGE_DONE` negated).
    fn in_message(&self) -> bool {
        self.state == State::Message
    }

    async fn content<B: Body>(&mut self, ctx: Ctx<'_>, edit: &mut Edit<'_, B>) -> Option<Action> {
        let leading_space = self.steps & SMFIP_HDR_LEADSPC != 0;
        // As Postfix: the end-of-header macros go with every header, the
        // end-of-message ones with every body chunk.
        let eoh = ctx.lists.values(Stage::EndOfHeaders, &self.own, ctx.source);
        let eom = ctx.lists.values(Stage::EndOfMessage, &self.own, ctx.source);
        if self.steps & SMFIP_NOHDRS == 0 {
            let fields: Vec<(Vec<u8>, Vec<u8>)> =
                edit.headers.visible().map(|f| (f.name.clone(), f.milter_value(leading_space))).collect();
            for (name, value) in &fields {
                let cmd = Command::Header { name, value };
                if let Some(a) = self.send_event(cmd, &eoh, SMFIP_NOHDRS, SMFIP_NR_HDR).await {
                    return Some(a);
                }
                if !self.in_message() {
                    return None;
                }
            }
        }
        let ended = self.send_event(Command::EndOfHeaders, &eoh, SMFIP_NOEOH, SMFIP_NR_EOH).await;
        if ended.is_some() || !self.in_message() {
            return ended;
        }
        if self.steps & SMFIP_NOBODY == 0 {
            let mut n = 0;
            'chunks: loop {
                let chunk = match edit.body.chunk(n).await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(target: "cleanup", "{}: reading the message for milter {}: {e}", edit.id, self.name());
                        return Some(Action::Reply(e.reply));
                    }
                };
                n += 1;
                for piece in chunk.chunks(BODY_CHUNK) {
                    let a = self.send_event(Command::Body(piece), &eom, SMFIP_NOBODY, SMFIP_NR_BODY).await;
                    if a.is_some() || !self.in_message() {
                        return a;
                    }
                    if self.skip_event == Some(SMFIC_BODY) {
                        break 'chunks;
                    }
                }
            }
        }
        self.end_of_message(ctx, edit).await
    }

    /// Sends one event with the macros of `stage` and reads its reply.
    async fn event(
        &mut self,
        cmd: Command<'_>,
        stage: Stage,
        ctx: Ctx<'_>,
        skip: u32,
        no_reply: u32,
    ) -> Option<Action> {
        let pairs = ctx.lists.values(stage, &self.own, ctx.source);
        self.send_event(cmd, &pairs, skip, no_reply).await
    }

    /// Sends one event with its macros and reads its reply (Postfix's
    /// `milter8_event`, for every event but the end of the message).
    /// `skip` is the protocol step by which a filter declines the event,
    /// `no_reply` the one by which it declines to answer it.
    async fn send_event(
        &mut self,
        cmd: Command<'_>,
        pairs: &[(String, String)],
        skip: u32,
        no_reply: u32,
    ) -> Option<Action> {
        if self.conn.is_none() || self.persistent.is_some() {
            return self.persistent.clone();
        }
        // Not in the filter's protocol version.
        if skip & self.not_in_protocol != 0 {
            return None;
        }
        let code = cmd.code();
        match self.skip_event {
            Some(s) if s == code => return None,
            Some(_) => self.skip_event = None,
            None => {}
        }
        let timeout = self.timeout(code);
        let conn = self.conn.as_mut()?;
        // Macros go out even for an event the filter does not want: a
        // later stage may read them.
        if !pairs.is_empty() {
            conn.queue(&Command::Macro { stage: code, pairs });
        }
        if skip & self.steps != 0 {
            return None;
        }
        conn.queue(&cmd);
        if no_reply & self.steps != 0 {
            // Nothing is read back, so nothing sends the packets: past a
            // bound they go out now (a body under SMFIP_NR_BODY must not
            // pile up in memory).
            if conn.pending() >= FLUSH_AT
                && let Err(e) = conn.flush(timeout).await
            {
                self.warn(format_args!("error writing {}: {e}", event_name(code)));
                return self.comm_error();
            }
            return None;
        }
        loop {
            let reply = match self.read(timeout).await {
                Ok(r) => r,
                Err(e) => {
                    self.warn(format_args!("can't read {} reply packet header: {e}", event_name(code)));
                    return self.comm_error();
                }
            };
            if let Step::Done(a) = self.decide(code, reply) {
                return a;
            }
        }
    }

    /// The time limit for `code`'s reply: `milter_content_timeout` for
    /// message content, `milter_command_timeout` for the rest.
    fn timeout(&self, code: u8) -> std::time::Duration {
        match code {
            SMFIC_HEADER | SMFIC_EOH | SMFIC_BODY | SMFIC_BODYEOB => self.milter.spec.content_timeout,
            _ => self.milter.spec.command_timeout,
        }
    }

    /// Reads one whole reply (not a body replacement).
    async fn read(&mut self, timeout: std::time::Duration) -> Result<Response, ConnError> {
        let conn = self.conn.as_mut().ok_or(ConnError::Timeout)?;
        let header = conn.read_header(timeout).await?;
        if header.is_body() {
            return Err(ConnError::Protocol(ProtocolError::Unknown(header.code)));
        }
        let r = conn.read_response(header, timeout).await?;
        self.answered();
        Ok(r)
    }

    /// What a decision reply means after event `code` (the part of
    /// `milter8_event` shared by every stage).
    pub(super) fn decide(&mut self, code: u8, reply: Response) -> Step {
        let connection_level = matches!(code, SMFIC_CONNECT | SMFIC_HELO);
        match reply {
            Response::Progress => Step::More,
            Response::Quarantine(reason) => {
                self.hold = Some(action::hold_reason(&reason));
                Step::More
            }
            Response::Continue => Step::Done(None),
            Response::Skip => {
                self.skip_event = Some(code);
                Step::Done(None)
            }
            Response::Accept => {
                if connection_level {
                    self.close_quietly();
                    self.state = State::AcceptConnection;
                } else {
                    self.state = State::AcceptMessage;
                }
                Step::Done(None)
            }
            Response::Discard if connection_level => {
                self.warn(format_args!("DISCARD action is not allowed for connect or helo"));
                Step::Done(None)
            }
            Response::Discard => {
                self.state = State::AcceptMessage;
                Step::Done(Some(Action::Discard))
            }
            Response::Reject => Step::Done(self.refuse(connection_level, action::rejected())),
            Response::Tempfail => Step::Done(self.refuse(connection_level, action::tempfailed())),
            Response::Shutdown => Step::Done(self.refuse(true, Action::Shutdown)),
            Response::ReplyCode(text) => match action::parse_reply_code(&text) {
                Some(r) => Step::Done(self.refuse(connection_level, Action::Reply(r))),
                None => {
                    self.warn(format_args!(
                        "malformed reply: {}",
                        String::from_utf8_lossy(&text).escape_debug()
                    ));
                    Step::Done(self.conf_error())
                }
            },
            other => {
                self.warn(format_args!(
                    "unexpected filter response {} after event {}",
                    reply_name(&other),
                    event_name(code)
                ));
                Step::Done(self.comm_error())
            }
        }
    }

    /// A refusal; at CONNECT or HELO it answers the rest of the session.
    fn refuse(&mut self, connection_level: bool, a: Action) -> Option<Action> {
        if connection_level {
            self.close_quietly();
            self.state = State::RejectConnection;
            self.persistent = Some(a.clone());
        }
        Some(a)
    }

    /// Sends `SMFIC_ABORT`: the transaction is over (RSET, a new MAIL, a
    /// finished message, as Postfix does after each one). Once per
    /// transaction: a second call sends nothing.
    pub fn abort(&mut self) {
        self.hold = None;
        if std::mem::take(&mut self.in_transaction)
            && matches!(self.state, State::Envelope | State::Message | State::AcceptMessage)
        {
            // No reply comes; it goes out with the next event or the QUIT.
            if let Some(c) = self.conn.as_mut() {
                c.queue(&Command::Abort);
            }
            self.state = State::Envelope;
        }
    }

    /// Sends `SMFIC_QUIT` and closes the connection: the session is over.
    pub async fn disconnect(&mut self) {
        self.succeeded();
        if matches!(self.state, State::Envelope | State::Message | State::AcceptMessage)
            && let Some(c) = self.conn.as_mut()
        {
            c.queue(&Command::Quit);
        }
        if let Some(c) = self.conn.take() {
            c.close(self.milter.spec.command_timeout).await;
        }
        self.state = State::Closed;
        self.persistent = None;
    }

    /// A communication failure: the connection is dropped and the default
    /// action answers from now on (`milter8_comm_error`).
    pub(super) fn comm_error(&mut self) -> Option<Action> {
        self.fail(action::on_failure(self.milter.spec.default_action))
    }

    /// A milter asking for what sluice must not do (`milter8_conf_error`).
    pub(super) fn conf_error(&mut self) -> Option<Action> {
        self.fail(action::on_misconfiguration(self.milter.spec.default_action))
    }

    fn fail(&mut self, reply: Option<Action>) -> Option<Action> {
        // Dropping the socket without QUIT: replies may be in flight, and
        // the milter must not take a later packet for an answer to them.
        self.conn = None;
        self.state = State::Error;
        self.persistent = reply;
        self.answered = false;
        self.milter.failed();
        self.persistent.clone()
    }

    /// Closes the connection without QUIT (the milter has hung up, or
    /// will: libmilter closes after a connection-level decision).
    fn close_quietly(&mut self) {
        self.conn = None;
    }

    /// A reply was read. Not yet a success for the breaker: a milter that
    /// answers the envelope and then hangs on the content must still open
    /// it, so successes are counted per message and per session.
    pub(super) fn answered(&mut self) {
        self.answered = true;
    }

    /// A message was answered, or the session ended, without a failure.
    pub(super) fn succeeded(&mut self) {
        if std::mem::take(&mut self.answered) && self.state != State::Error {
            self.milter.succeeded();
        }
    }

    pub(super) fn warn(&self, what: impl Display) {
        warn!(target: "smtpd", "milter {}: {what}", self.name());
    }
}

/// The name of a reply, for log lines as Postfix words them.
fn reply_name(r: &Response) -> &'static str {
    match r {
        Response::OptNeg { .. } => "SMFIC_OPTNEG",
        Response::AddHeader { .. } => "SMFIR_ADDHEADER",
        Response::InsertHeader { .. } => "SMFIR_INSHEADER",
        Response::ChangeHeader { .. } => "SMFIR_CHGHEADER",
        Response::ChangeFrom { .. } => "SMFIR_CHGFROM",
        Response::AddRcpt { .. } => "SMFIR_ADDRCPT",
        Response::DelRcpt(_) => "SMFIR_DELRCPT",
        Response::ConnFail => "SMFIR_CONN_FAIL",
        _ => "(unknown filter reply)",
    }
}

/// The negotiation answered something that is not a negotiation: decoded
/// only when the code was `SMFIC_OPTNEG`, so this cannot happen.
fn unreachable_reply() -> (u32, u32, u32, Vec<(u32, String)>) {
    (0, 0, 0, Vec::new())
}
