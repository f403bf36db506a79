//! Operating sluice: the admin API and socket, metrics and Postfix-style
//! log lines. Never handles message bytes beyond headers.

pub mod api;
pub mod log;
pub mod metrics;
pub mod socket;
pub mod view;
