//! The end-of-message stage of one milter: `SMFIC_BODYEOB`, then the
//! edits the milter asks for (headers, sender, recipients, a replacement
//! body streamed into storage) and `milter_header_checks` on the headers
//! it adds, then its decision (Postfix's `milter8_event` for
//! `SMFIC_BODYEOB` and cleanup's edit call-backs).
//!
//! Owns the order and the failure rules of edits; the edits themselves are
//! `edit.rs`'s, the decisions `client.rs`'s.

use tracing::{info, warn};

use super::action::Action;
use super::client::{Client, Ctx, Step};
use super::conn::ConnError;
use super::edit::{self, BodyLines};
use super::macros::Stage;
use super::protocol::*;
use super::{Body, Edit, StoreError};
use crate::reply::{Reply, Status};

impl Client {
    /// The end of the message: `SMFIC_BODYEOB`, then the edits the filter
    /// asks for and its decision. Edits are carried out as they arrive; a
    /// replacement body is streamed into storage through [`BodyLines`].
    pub(super) async fn end_of_message<B: Body>(
        &mut self,
        ctx: Ctx<'_>,
        edit: &mut Edit<'_, B>,
    ) -> Option<Action> {
        if self.conn.is_none() || self.persistent.is_some() {
            return self.persistent.clone();
        }
        let pairs = ctx.lists.values(Stage::EndOfMessage, &self.own, ctx.source);
        let timeout = self.milter.spec.content_timeout;
        let conn = self.conn.as_mut()?;
        if !pairs.is_empty() {
            conn.queue(&Command::Macro { stage: SMFIC_BODYEOB, pairs: &pairs });
        }
        conn.queue(&Command::EndOfBody);
        // The first edit that failed (storage, milter_header_checks): it
        // decides, and later edits are not carried out.
        let mut failed: Option<Action> = None;
        let mut replacing: Option<BodyLines> = None;
        let mut replaced = false;
        let result = loop {
            let header = match self.conn.as_mut()?.read_header(timeout).await {
                Ok(h) => h,
                Err(e) => {
                    self.warn(format_args!("can't read SMFIC_BODYEOB reply packet header: {e}"));
                    break self.comm_error();
                }
            };
            // A replacement body ends with the first other reply.
            if !header.is_body()
                && let Some(mut lines) = replacing.take()
            {
                replaced = true;
                let mut tail = Vec::new();
                lines.finish(&mut tail);
                if failed.is_none()
                    && let Err(e) = finish_body(edit.body, &tail).await
                {
                    failed = Some(store_failed(edit.id, self.name(), e));
                }
            }
            if header.is_body() {
                if replaced {
                    self.warn(format_args!(
                        "body replacement requests can't currently be mixed with other requests"
                    ));
                    break self.conf_error();
                }
                if replacing.is_none() {
                    replacing = Some(BodyLines::new());
                    if failed.is_none()
                        && let Err(e) = edit.body.replace_start().await
                    {
                        failed = Some(store_failed(edit.id, self.name(), e));
                    }
                }
                let lines = replacing.as_mut()?;
                if let Err(e) =
                    self.stream_body(header.len, timeout, lines, edit.body, failed.is_none()).await
                {
                    match e {
                        BodyError::Milter(e) => {
                            self.warn(format_args!("reading body replacement: {e}"));
                            break self.comm_error();
                        }
                        BodyError::Store(e) => failed = Some(store_failed(edit.id, self.name(), e)),
                    }
                }
                continue;
            }
            let reply = match self.conn.as_mut()?.read_response(header, timeout).await {
                Ok(r) => r,
                Err(e) => {
                    self.warn(format_args!("can't read SMFIC_BODYEOB reply: {e}"));
                    break self.comm_error();
                }
            };
            self.answered();
            if failed.is_some() && is_edit(&reply) {
                continue;
            }
            match self.apply(reply, edit) {
                Applied::Edited => {}
                Applied::Failed(a) => failed = Some(a),
                Applied::Misconfigured => break self.conf_error(),
                Applied::Decision(reply) => match self.decide(SMFIC_BODYEOB, reply) {
                    Step::More => {}
                    Step::Done(a) => break a,
                },
            }
        };
        self.succeeded();
        // A replacement cut off half way must not be accepted.
        if replacing.is_some()
            && !matches!(&result, Some(Action::Discard | Action::Shutdown | Action::Reply(_)))
        {
            return Some(Action::Reply(Reply::new(
                451,
                Status(4, 7, 0),
                "Service unavailable - try again later",
            )));
        }
        match (failed, &result) {
            (Some(f), None | Some(Action::Hold(_))) => Some(f),
            (Some(f), Some(Action::Reply(r))) if r.code() >= 500 => Some(f),
            _ => result,
        }
    }

    /// Reads `len` bytes of a replacement body in pieces and stores them
    /// (when `store`). The whole packet is always read, so the connection
    /// stays in step even when storage has failed.
    async fn stream_body<B: Body>(
        &mut self,
        len: usize,
        timeout: std::time::Duration,
        lines: &mut BodyLines,
        body: &mut B,
        mut store: bool,
    ) -> Result<(), BodyError> {
        const PIECE: usize = 64 * 1024;
        let conn = self.conn.as_mut().ok_or(BodyError::Milter(ConnError::Timeout))?;
        let mut buf = vec![0u8; PIECE.min(len)];
        let mut out = Vec::with_capacity(PIECE + PIECE / 2);
        let mut failure = None;
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len());
            let n = conn.read_piece(&mut buf[..want], timeout).await.map_err(BodyError::Milter)?;
            left -= n;
            if store {
                out.clear();
                lines.feed(&buf[..n], &mut out);
                if let Err(e) = body.replace_append(&out).await {
                    store = false;
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) => Err(BodyError::Store(e)),
            None => Ok(()),
        }
    }

    /// Carries out one end-of-message reply that is an edit; anything else
    /// is handed back as a decision.
    fn apply<B: Body>(&mut self, reply: Response, edit: &mut Edit<'_, B>) -> Applied {
        let leading_space = self.steps & SMFIP_HDR_LEADSPC != 0;
        match reply {
            Response::AddHeader { name, value } | Response::InsertHeader { name, value, .. }
                if !edit::valid_header_name(&name) =>
            {
                let _ = value;
                self.warn(format_args!("bad header name: {}", String::from_utf8_lossy(&name).escape_debug()));
                Applied::Misconfigured
            }
            Response::ChangeHeader { ref name, .. } if !edit::valid_header_name(name) => {
                self.warn(format_args!("null or bad change header name"));
                Applied::Misconfigured
            }
            Response::AddHeader { name, value } => {
                let value = edit::stored_header_value(&value, leading_space);
                match self.check_header(edit, &name, &value) {
                    Checked::Keep => edit.headers.add(&name, value),
                    Checked::Drop => {}
                    Checked::Stop(a) => return Applied::Failed(a),
                }
                Applied::Edited
            }
            Response::InsertHeader { index, name, value } => {
                let value = edit::stored_header_value(&value, leading_space);
                match self.check_header(edit, &name, &value) {
                    Checked::Keep => edit.headers.insert(index, &name, value),
                    Checked::Drop => {}
                    Checked::Stop(a) => return Applied::Failed(a),
                }
                Applied::Edited
            }
            Response::ChangeHeader { index, name, value } => {
                if value.is_empty() {
                    edit.headers.change(index, &name, Vec::new());
                    return Applied::Edited;
                }
                let value = edit::stored_header_value(&value, leading_space);
                match self.check_header(edit, &name, &value) {
                    Checked::Keep => edit.headers.change(index, &name, value),
                    Checked::Drop => {}
                    Checked::Stop(a) => return Applied::Failed(a),
                }
                Applied::Edited
            }
            Response::ChangeFrom { address, args } => {
                edit::change_sender(edit.envelope, edit.id, &address, &args);
                Applied::Edited
            }
            Response::AddRcpt { address, args } => {
                edit::add_recipient(edit.envelope, edit.id, &address, &args);
                Applied::Edited
            }
            Response::DelRcpt(address) => {
                edit::delete_recipient(edit.envelope, &address);
                Applied::Edited
            }
            other => Applied::Decision(other),
        }
    }

    /// `milter_header_checks` on a header a milter adds, inserts or
    /// changes, logged as Postfix's cleanup does
    /// (`milter-header-reject: header ...`).
    fn check_header<B: Body>(&mut self, edit: &Edit<'_, B>, name: &[u8], value: &[u8]) -> Checked {
        let Some(checks) = edit.header_checks.filter(|m| !m.is_empty()) else { return Checked::Keep };
        let line = format!(
            "{}:{}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value).replace("\r\n", "\n")
        );
        let result = match checks.lookup(&line) {
            Ok(Some(r)) => r,
            Ok(None) => return Checked::Keep,
            Err(e) => {
                warn!(target: "cleanup", "{}: milter_header_checks map lookup problem: {e}", edit.id);
                return Checked::Stop(Action::Reply(Reply::new(
                    451,
                    Status(4, 3, 0),
                    "Error: queue file write error",
                )));
            }
        };
        let shown: String =
            line.replace('\n', " ").chars().take(200).collect::<String>().escape_default().to_string();
        let log = |what: &str, text: Option<&str>| {
            let text = text.map(|t| format!(": {t}")).unwrap_or_default();
            info!(target: "cleanup", "{}: milter-header-{what}: header {shown} from {}{text}", edit.id, edit.context);
        };
        let (word, text) = match result.trim().split_once(char::is_whitespace) {
            Some((w, t)) => (w.to_ascii_uppercase(), Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            None => (result.trim().to_ascii_uppercase(), None),
        };
        match word.as_str() {
            "REJECT" => {
                let reply = reject_reply(text.as_deref());
                log("reject", Some(&reply.to_one_line()[4..]));
                Checked::Stop(Action::Reply(reply))
            }
            "DISCARD" => {
                log("discard", text.as_deref());
                Checked::Stop(Action::Discard)
            }
            "HOLD" => {
                log("hold", text.as_deref());
                self.hold
                    .get_or_insert_with(|| text.clone().unwrap_or_else(|| "milter_header_checks".into()));
                Checked::Keep
            }
            "WARN" | "INFO" => {
                log("warning", text.as_deref());
                Checked::Keep
            }
            "IGNORE" => {
                log("ignore", text.as_deref());
                Checked::Drop
            }
            "DUNNO" | "OK" => Checked::Keep,
            other => {
                warn!(target: "cleanup", "{}: milter_header_checks action {other} is not supported; taken as DUNNO", edit.id);
                Checked::Keep
            }
        }
    }
}

/// What [`Client::apply`] did.
enum Applied {
    Edited,
    /// An edit failed or `milter_header_checks` decided: this is the
    /// result, and later edits are ignored.
    Failed(Action),
    /// A request sluice must not carry out.
    Misconfigured,
    /// Not an edit.
    Decision(Response),
}

/// What `milter_header_checks` said of one header.
enum Checked {
    Keep,
    /// `IGNORE`: the header is not added.
    Drop,
    Stop(Action),
}

/// Why streaming a replacement body failed.
enum BodyError {
    Milter(ConnError),
    Store(StoreError),
}

/// True for the replies that edit the message.
fn is_edit(r: &Response) -> bool {
    matches!(
        r,
        Response::AddHeader { .. }
            | Response::InsertHeader { .. }
            | Response::ChangeHeader { .. }
            | Response::ChangeFrom { .. }
            | Response::AddRcpt { .. }
            | Response::DelRcpt(_)
    )
}

/// The end of a replacement body.
async fn finish_body<B: Body>(body: &mut B, tail: &[u8]) -> Result<(), StoreError> {
    if !tail.is_empty() {
        body.replace_append(tail).await?;
    }
    body.replace_finish().await
}

/// A storage failure while carrying out an edit: logged, and its reply is
/// the result.
fn store_failed(id: &str, milter: &str, e: StoreError) -> Action {
    warn!(target: "cleanup", "{id}: milter {milter}: cannot store the edited message: {e}");
    Action::Reply(e.reply)
}

/// `milter_header_checks` REJECT's reply: `550 5.7.1 Message content
/// rejected`, or the given text (with its own `4.x.x`/`5.x.x` status when
/// it starts with one: a 4.x.x text gives 450).
fn reject_reply(text: Option<&str>) -> Reply {
    let Some(text) = text else { return Reply::new(550, Status(5, 7, 1), "Message content rejected") };
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    match Status::parse(head) {
        Some(st) if st.0 == 4 => Reply::new(450, st, rest),
        Some(st) if st.0 == 5 => Reply::new(550, st, rest),
        _ => Reply::new(550, Status(5, 7, 1), text),
    }
}
