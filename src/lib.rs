//! sluice: an inbound mail transfer agent for MX hosts.
//!
//! Mail arrives over SMTP (`smtp`), is made durable in the queue crate
//! (`sluice_queue`) before it is acknowledged, and leaves for the mailbox
//! servers over LMTP or SMTP through a gate per backend (`delivery`).
//!
//! The floors, top down (ARCHITECTURE.md; a module imports only from
//! floors below its own, and `tests/architecture.rs` checks it):
//! - `cli`: the command line (the binary calls it; nothing else does);
//! - `server`: the daemon, its wiring and order of shutdown, and the admin
//!   service (API, socket, metrics, logs);
//! - `smtp` and `delivery`, the two wings, which never import each other;
//! - `milter`, a service the SMTP wing calls: the mail filter client;
//! - `auth`: sender authentication (SPF, DKIM, DMARC, ARC), the checks
//!   the inbound wing asks for;
//! - `config`: Postfix-style `main.cf`/`master.cf`, tables, typed values;
//! - the ground: `clock`, `shutdown`, `reply`, `resolver` (the DNS
//!   resolver both wings share), `metric` (every metric's name) and
//!   `verify` (the recipient verification trait delivery implements for
//!   the SMTP server).
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod metric;
pub mod milter;
pub mod reply;
pub mod resolver;
pub mod server;
pub mod shutdown;
pub mod smtp;
pub mod verify;
