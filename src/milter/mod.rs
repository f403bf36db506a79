//! The milter client: sluice asks Sendmail-protocol mail filters (rspamd,
//! OpenDKIM, OpenDMARC, clamav-milter, ...) about each SMTP session, as
//! Postfix does with `smtpd_milters` (Postfix's MILTER_README; protocol
//! version 6 of libmilter's `mfdef.h`).
//!
//! Layout: `protocol.rs` (the packets), `conn.rs` (one socket, every read
//! and write bounded in bytes and time), `client.rs` and `eom.rs` (one
//! milter in one session: negotiation, events, replies, edits),
//! `macros.rs` (which macros each stage sends), `edit.rs` (headers,
//! envelope and body edits as plain data), `action.rs` (what a decision
//! means as an SMTP reply), `breaker.rs` (a milter that keeps failing is
//! left alone for a while), and this file: the milters of a listener and
//! the [`MilterSession`] the SMTP session drives.
//!
//! Owns the conversation with milters; never touches the queue or the
//! client connection. The SMTP session calls one method per stage and acts
//! on the [`Action`] it gets back; the message content is read from, and a
//! replaced body written to, storage through the [`Body`] trait the session
//! implements over its queue draft, so no message is ever held in memory
//! whole.
//!
//! How several milters combine (Postfix's rules): each stage goes to the
//! milters in `smtpd_milters` order, and the first refusal (or discard)
//! ends the stage; a quarantine is remembered and the others still run.
//! The message content goes to each milter in turn once it has been
//! received whole, each seeing the edits of the ones before it (OpenDMARC
//! reads the `Authentication-Results:` OpenDKIM added).

pub mod action;
mod breaker;
mod client;
mod conn;
pub mod edit;
mod eom;
pub mod macros;
pub mod protocol;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_queue::Envelope;
use thiserror::Error;
use tracing::{info, warn};

pub use action::Action;
pub use breaker::{Breaker, Permit, Transition};
pub use client::ConnectInfo;
pub use edit::HeaderSection;
pub use macros::{MacroLists, MacroSource};
pub use protocol::Family;

use crate::config::{Config, Maps, MilterSpec};
use crate::reply::Reply;
use client::{Client, Ctx};

/// One configured milter: its settings (a listener's `-o` applied) and
/// the breaker it shares with every listener that names the same endpoint.
#[derive(Debug)]
pub struct Milter {
    spec: MilterSpec,
    breaker: Arc<Mutex<Breaker>>,
}

impl Milter {
    /// The milter's settings.
    pub fn spec(&self) -> &MilterSpec {
        &self.spec
    }

    /// True unless the breaker is open (this session then skips it).
    fn permit(&self) -> bool {
        let now = crate::clock::instant();
        let permit = self.breaker.lock().map(|mut b| b.permit(now)).unwrap_or(Permit::Use);
        permit != Permit::Skip
    }

    fn failed(&self) {
        let now = crate::clock::instant();
        let t = self.breaker.lock().ok().and_then(|mut b| b.failure(now));
        let action = self.spec.default_action.as_str();
        match t {
            Some(Transition::Opened { failures, cooldown }) => warn!(
                target: "smtpd",
                "milter {}: {failures} failures in a row; not contacted for {}, milter_default_action ({action}) applies meanwhile",
                self.spec.name,
                humantime::format_duration(cooldown)
            ),
            Some(Transition::Reopened { cooldown }) => warn!(
                target: "smtpd",
                "milter {}: still failing; not contacted for {}, milter_default_action ({action}) applies meanwhile",
                self.spec.name,
                humantime::format_duration(cooldown)
            ),
            _ => {}
        }
    }

    fn succeeded(&self) {
        if let Some(Transition::Closed) = self.breaker.lock().ok().and_then(|mut b| b.success()) {
            info!(target: "smtpd", "milter {}: answering again", self.spec.name);
        }
    }
}

/// The breakers of every milter endpoint sluice has used, kept for the
/// life of the process so a reload does not forget that a milter is down.
#[derive(Debug, Default)]
pub struct Registry {
    breakers: Mutex<HashMap<String, Arc<Mutex<Breaker>>>>,
}

impl Registry {
    /// The milters of a listener's configuration (`smtpd_milters` with its
    /// `-o` applied), in order, with their breakers
    /// (`sluice_milter_failure_threshold`, `sluice_milter_cooldown`).
    pub fn milters(&self, config: &Config) -> Vec<Arc<Milter>> {
        let threshold = u32::try_from(config.int("sluice_milter_failure_threshold")).unwrap_or(u32::MAX);
        let cooldown = config.time("sluice_milter_cooldown");
        self.build(config.milters(), threshold, cooldown)
    }

    /// [`Registry::milters`] from the parts (tests).
    pub fn build(&self, specs: &[MilterSpec], threshold: u32, cooldown: Duration) -> Vec<Arc<Milter>> {
        let Ok(mut breakers) = self.breakers.lock() else { return Vec::new() };
        specs
            .iter()
            .map(|spec| {
                let breaker = breakers
                    .entry(spec.name.clone())
                    .or_insert_with(|| Arc::new(Mutex::new(Breaker::new(threshold, cooldown))))
                    .clone();
                if let Ok(mut b) = breaker.lock() {
                    b.reconfigure(threshold, cooldown);
                }
                Arc::new(Milter { spec: spec.clone(), breaker })
            })
            .collect()
    }
}

/// A storage failure while a milter reads or replaces the body: the
/// reply the client gets (the queue's 451 or 452, or 552 for a body
/// grown past `message_size_limit`) and what happened.
#[derive(Debug, Error)]
#[error("{detail}")]
pub struct StoreError {
    pub reply: Reply,
    pub detail: String,
}

/// The message body as the session stores it: read back in chunks for
/// each milter, and replaced when a milter sends a new one. Implemented
/// over the queue draft, so neither costs memory beyond a chunk.
pub trait Body: Send {
    /// Chunk `n` (from 0) of the current body; None past the last.
    fn chunk(&mut self, n: u32) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// A replacement body begins: what was stored is dropped.
    fn replace_start(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// More of the replacement (line ends already CRLF).
    fn replace_append(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The replacement is complete.
    fn replace_finish(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What the end-of-message stage may change, and what its log lines name.
pub struct Edit<'a, B> {
    /// The header section, sluice's `Received:` first (hidden).
    pub headers: &'a mut HeaderSection,
    /// Sender, recipients and DSN parameters, as they will be queued.
    pub envelope: &'a mut Envelope,
    pub body: &'a mut B,
    /// `milter_header_checks`.
    pub header_checks: Option<&'a Maps>,
    /// The queue ID.
    pub id: &'a str,
    /// `name[addr]; from=<...> to=<...> proto=... helo=<...>` for logs.
    pub context: &'a str,
}

impl<B> std::fmt::Debug for Edit<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edit").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The milters of one SMTP session.
#[derive(Debug)]
pub struct MilterSession {
    clients: Vec<Client>,
    lists: Arc<MacroLists>,
}

impl MilterSession {
    /// A session with `milters` (nothing is connected until
    /// [`MilterSession::connect`]).
    pub fn new(milters: &[Arc<Milter>], lists: Arc<MacroLists>) -> MilterSession {
        MilterSession { clients: milters.iter().cloned().map(Client::new).collect(), lists }
    }

    /// True without milters.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client has connected.
    pub async fn connect(&mut self, source: &dyn MacroSource, info: &ConnectInfo) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.connect(ctx, info).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// HELO or EHLO.
    pub async fn helo(&mut self, source: &dyn MacroSource, name: &str) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.helo(ctx, name).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// MAIL FROM: `args` is `<address>` then the ESMTP parameters as sent.
    pub async fn mail(&mut self, source: &dyn MacroSource, args: &[String]) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.mail(ctx, args).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// RCPT TO. A recipient sluice itself refused (`rejected`) goes only
    /// to the milters that asked for such (`SMFIP_RCPT_REJ`), and what
    /// they answer changes nothing (Postfix).
    pub async fn rcpt(
        &mut self,
        source: &dyn MacroSource,
        args: &[String],
        rejected: bool,
    ) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            if rejected && !c.wants_rejected_recipients() {
                continue;
            }
            let a = c.rcpt(ctx, args).await;
            if rejected {
                c.take_hold();
                continue;
            }
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// DATA, or the first BDAT chunk (milters see one DATA either way).
    pub async fn data(&mut self, source: &dyn MacroSource) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.data(ctx).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// A command sluice does not recognise (the line as sent).
    pub async fn unknown(&mut self, source: &dyn MacroSource, line: &str) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.unknown(ctx, line).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// The message, received whole: each milter in turn sees it (with the
    /// edits of the ones before) and decides; the edits are made in
    /// `edit`.
    pub async fn message<B: Body>(
        &mut self,
        source: &dyn MacroSource,
        edit: &mut Edit<'_, B>,
    ) -> Option<Action> {
        let lists = Arc::clone(&self.lists);
        let ctx = Ctx { lists: &lists, source };
        let mut hold = None;
        for c in &mut self.clients {
            let a = c.message(ctx, edit).await;
            if let Some(a) = combine(&mut hold, c.take_hold(), a) {
                return Some(a);
            }
        }
        hold.map(Action::Hold)
    }

    /// The reply a refused or failed milter gives every command from now
    /// on (a refusal at CONNECT, a milter that is down under
    /// `milter_default_action = tempfail`), for commands that have no
    /// event of their own.
    pub fn persistent(&self) -> Option<Action> {
        self.clients.iter().find_map(|c| c.persistent().filter(|a| a.reply().is_some()).cloned())
    }

    /// The transaction is over (RSET, a finished or refused message).
    pub fn abort(&mut self) {
        self.clients.iter_mut().for_each(Client::abort);
    }

    /// The session is over.
    pub async fn disconnect(&mut self) {
        for c in &mut self.clients {
            c.disconnect().await;
        }
    }
}

/// Folds one milter's answer into a stage's: a quarantine (from the reply
/// or from the answer itself) is kept and the next milter asked; any other
/// decision ends the stage.
fn combine(hold: &mut Option<String>, quarantined: Option<String>, answer: Option<Action>) -> Option<Action> {
    if let Some(q) = quarantined {
        hold.get_or_insert(q);
    }
    match answer {
        None => None,
        Some(Action::Hold(h)) => {
            hold.get_or_insert(h);
            None
        }
        Some(other) => Some(other),
    }
}
