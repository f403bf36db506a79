//! Operating sluice: the command line, the admin socket, metrics and
//! Postfix-style log lines. Never handles message bytes beyond headers.

pub mod api;
pub mod cli;
pub mod command;
pub mod log;
pub mod metrics;
pub mod socket;
pub mod view;

pub use command::run;
