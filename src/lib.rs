//! sluice: an inbound mail transfer agent for MX hosts.
//!
//! Mail arrives over SMTP (`smtp`), is made durable in the queue crate
//! (`sluice_queue`) before it is acknowledged, and leaves for the mailbox
//! servers over LMTP or SMTP through a gate per backend (`delivery`).
//! `config` reads Postfix-style `main.cf`/`master.cf`; `cli` is the
//! command line; `server` is the daemon: it wires them together, owns the
//! order of shutdown, and runs the admin service (socket, metrics, logs);
//! `resolver` is the DNS resolver the inbound server and delivery share.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod metric;
pub mod reply;
pub mod resolver;
pub mod server;
pub mod shutdown;
pub mod smtp;
