//! The admin service of the daemon: the admin API ([`api`]) and its Unix
//! socket ([`socket`]), how queue contents are shown ([`view`]), the
//! delivery backends as the API sees them ([`backends`]), the Prometheus
//! endpoint ([`exporter`]), what `sluice top` shows ([`top`]) and the Postfix-style log format ([`log`]).
//! Never handles message bytes beyond headers.

pub mod api;
pub mod backends;
pub mod exporter;
pub mod log;
pub mod socket;
pub mod top;
pub mod view;
