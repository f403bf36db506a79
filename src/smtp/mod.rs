//! The inbound SMTP server: listener, sessions, policy checks, TLS.
//! Writes accepted mail through the queue crate; never delivers.
//!
//! Entry points: build an [`Inbound`] per listener (queue handle and
//! [`Settings`]), bind the socket with [`bind`] (a backlog large enough for
//! bursts), then [`serve`] it until the shutdown
//! [`Stage`](crate::shutdown::Stage) is cancelled.
//!
//! # Floor plan
//!
//! From the top down; a module imports only from the ones below it.
//!
//! - `listener.rs`: the accept loop (PROXY header, per-client limits), one
//!   session per connection.
//! - The stages, one file per SMTP command over one session (as Stalwart
//!   does): `ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`, `bdat.rs`,
//!   `starttls.rs`, `housekeeping.rs` (RSET, NOOP, QUIT, VRFY, HELP);
//!   `alias.rs`, the virtual alias expansion of an accepted recipient;
//!   `message.rs`, the message from its first byte to the
//!   queue commit (begin, feed, finish, the content verdicts); `answer.rs`,
//!   the restriction questions (policy servers, DNS) and the `DATA`
//!   decision; `filters.rs`, the milter stages; `sender_auth.rs`, sender
//!   authentication (SPF at MAIL, its refusal at RCPT, the checks over the
//!   content and their decision at the end of the message, asked of
//!   `crate::auth`). Each adds methods to the session; none imports
//!   another stage's types.
//! - `session.rs`: the command loop, the replies and the deadlines.
//! - `state.rs`: the session's state as data (HELO, input mode, the
//!   transaction, the message in transit).
//! - `inbound.rs` ([`Inbound`]): what a listener's sessions share, and the
//!   per-client limits.
//! - `settings.rs`: the configuration as typed values, once per load.
//! - `policy/`: the restriction decisions, pure (no network, no clock).
//! - `peer.rs`: the client's forward-confirmed name and its DNS blocklist
//!   listings, found at connect.
//! - Leaves: `content.rs` (the DATA decoder, headers, body lines, our
//!   `Received:`), `naming.rs` (how the client is named), `tls.rs` (server
//!   TLS configuration and the session's stream), `command.rs` (reading a
//!   command line), `policy_client.rs` (the policy delegation protocol),
//!   `proxy.rs` (the PROXY header), `events.rs` (the metrics hook).
//!
//! # Where milters plug in
//!
//! `filters.rs` holds the milter stages (`crate::milter` speaks the
//! protocol); each is called where Postfix's smtpd calls the milters,
//! after sluice's own checks of that stage passed: connect (`Session::run`,
//! after the client is named and before the greeting), HELO (`ehlo.rs`,
//! once the name is accepted), MAIL (`mail.rs`, after `check_mail`), RCPT
//! (`rcpt.rs`, after the restriction decision; refused recipients go to
//! the milters that ask for them), DATA (`data.rs`/`bdat.rs`, after the
//! data restrictions) and the message (`message.rs`). With milters the
//! header section is kept out of the draft (`feed_body` cuts it off as it
//! completes) and `finish_message`, after the content verdicts and before
//! the queue commit, lets each milter read the message and edit it: the
//! header edits are made to a list and the header section is written in
//! front of the (possibly replaced) body by the commit itself, so the
//! `250` still means the edited message is on disk.

mod alias;
mod answer;
mod bdat;
mod command;
mod content;
mod data;
mod ehlo;
pub mod events;
mod filters;
mod housekeeping;
mod inbound;
mod listener;
mod mail;
mod message;
pub mod naming;
mod peer;
pub mod policy;
mod policy_client;
mod proxy;
mod rcpt;
mod sender_auth;
mod session;
mod settings;
mod starttls;
mod state;
pub mod tls;

pub use content::BareNewline;
pub use inbound::Inbound;
pub use listener::{bind, serve, serve_staged, serve_stream};
pub use settings::accept_limits;
pub use settings::{Settings, SettingsError, TlsLevel};
