//! The inbound SMTP server: listener, sessions, policy checks, TLS.
//! Writes accepted mail through the queue crate; never delivers.
//!
//! One file per SMTP stage over one session (`session.rs`): `ehlo.rs`,
//! `mail.rs`, `rcpt.rs`, `data.rs`, `bdat.rs`, `tls.rs` (STARTTLS);
//! `policy.rs` decides relay and recipient questions, purely; `peer.rs`
//! finds the client's forward-confirmed name before the greeting; `listener.rs`
//! accepts connections and applies the per-client limits; `settings.rs`
//! turns the configuration into typed values once per load.
//!
//! Entry points: build an [`Inbound`] per listener (queue handle and
//! [`Settings`]), bind the socket with [`bind`] (a backlog large enough for
//! bursts), then [`serve`] it until the shutdown
//! [`Stage`](crate::shutdown::Stage) is cancelled.

mod bdat;
pub mod data;
mod ehlo;
pub mod events;
mod listener;
mod mail;
mod peer;
pub mod policy;
mod policy_client;
mod proxy;
mod rcpt;
mod session;
mod settings;
pub mod tls;

pub use data::BareNewline;
pub use listener::{Inbound, bind, serve, serve_staged, serve_stream};
pub use settings::admission;
pub use settings::{Settings, SettingsError, TlsLevel};
