//! Postfix-compatible configuration: `main.cf`, `master.cf`, lookup tables,
//! and the typed view of them the rest of sluice reads.
//!
//! Owns parsing, `$name` expansion, the one table of supported parameters
//! with their Postfix defaults (`params.rs`), lookup tables and transport
//! resolution. Never opens sockets or the queue.
//!
//! A [`Config`] is immutable and shared as `Arc<Config>`; `SIGHUP` builds a
//! new one and swaps it in, or keeps the old one when the new one has errors.
//!
//! API contract used by `smtp`, `delivery` and `admin` (stable; extend, do not
//! change): typed accessors by Postfix parameter name (`int`, `time`, `size`,
//! `bool`, `list`, `string`, `maps`) that cannot fail at run time because
//! every value was type-checked at load; per-transport parameters through
//! [`Config::transport_param`]; listeners and transports from master.cf;
//! recipient routing through [`Config::route`].

pub mod command;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a problem was found: file and line, and the parameter if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    pub param: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(p) = &self.param {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found while loading, all at once (STYLE.md rule 9).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

/// A loaded configuration plus the warnings (unknown or unsupported
/// parameters, master.cf services sluice does not use) found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub warnings: Vec<Diagnostic>,
}

/// A failure inside a lookup table at lookup time (e.g. a table file that
/// vanished is caught at load; this is for run-time failures).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{table}: {message}")]
pub struct TableError {
    pub table: String,
    pub message: String,
}

/// One lookup table (`hash:/etc/sluice/transport`, `regexp:...`, ...).
pub trait Table: Send + Sync + std::fmt::Debug {
    /// Looks up one key exactly as given (case-folding as Postfix does for
    /// the table type). The caller does address-key expansion.
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError>;
    /// `type:name` as written in the configuration.
    fn name(&self) -> &str;
}

/// A parameter's list of tables (`transport_maps = hash:a, regexp:b`),
/// searched in order.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub tables: Vec<Arc<dyn Table>>,
}

impl Maps {
    /// True when the parameter names no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// First result of a plain key across the tables.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        let _ = key;
        todo!()
    }

    /// Looks up an email address the way Postfix's address lookups do:
    /// `user+ext@domain`, `user@domain`, then `domain` (and parent domains
    /// when `parent_domain_matches_subdomains` names the calling feature, or
    /// `.domain` keys otherwise), then `user+ext@`, `user@`. `feature` is the
    /// parameter name used to consult `parent_domain_matches_subdomains`.
    pub fn lookup_address(
        &self,
        config: &Config,
        feature: &str,
        address: &str,
    ) -> Result<Option<String>, TableError> {
        let _ = (config, feature, address);
        todo!()
    }
}

/// An `inet` line of master.cf whose command is `smtpd`.
#[derive(Debug, Clone)]
pub struct SmtpdService {
    /// The service field as written (`smtp`, `2525`, `127.0.0.1:2525`).
    pub name: String,
    /// The addresses to bind: the service's host if given, otherwise each of
    /// `inet_interfaces` (honouring `inet_protocols`), with the port resolved
    /// (`smtp` is 25).
    pub addrs: Vec<std::net::SocketAddr>,
    /// `maxproc` of the line (0 or `-`: no limit other than main.cf's).
    pub maxproc: Option<u32>,
    /// The effective configuration of this service: main.cf with this line's
    /// `-o name=value` overrides applied.
    pub config: Arc<Config>,
}

/// A master.cf line whose command is `lmtp` or `smtp`: a named transport.
#[derive(Debug, Clone)]
pub struct MasterTransport {
    /// Service name (what transport_maps results name, e.g. `lmtp`, `mbx`).
    pub name: String,
    /// `lmtp` or `smtp`.
    pub protocol: Protocol,
    /// `maxproc`: caps this transport's delivery concurrency (None: `-`, the
    /// default_process_limit).
    pub maxproc: Option<u32>,
    /// main.cf with this line's `-o` overrides applied.
    pub config: Arc<Config>,
}

/// Delivery protocol of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Lmtp,
    Smtp,
}

/// Where a next hop is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// `[host]:port` or `inet:host:port` — no MX lookup.
    Host { host: String, port: u16 },
    /// `host:port` or `domain` without brackets (smtp): look up MX, then A/AAAA.
    Mx { domain: String, port: u16 },
    /// `unix:/path`.
    Unix(PathBuf),
}

/// What `transport_maps` / `default_transport` / `relay_transport` decided
/// for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver over `protocol` through the named transport to `nexthop`.
    Deliver { transport: String, protocol: Protocol, nexthop: NextHop },
    /// `error:text` (and `error:5.x.y text`): bounce with this text.
    Error { text: String },
    /// `discard:`: accept and drop, logged as discarded.
    Discard { text: String },
}

/// The whole configuration, immutable once built.
#[derive(Debug)]
pub struct Config {
    _private: (),
}

impl Config {
    /// Loads `main.cf` and `master.cf` (and every table they name) from `dir`.
    pub fn load(dir: &Path) -> Result<Loaded, ConfigErrors> {
        let _ = dir;
        todo!()
    }

    /// Builds a configuration from texts (tests, `sluice config` on stdin);
    /// relative table paths resolve against `dir`.
    pub fn from_texts(dir: &Path, main_cf: &str, master_cf: &str) -> Result<Loaded, ConfigErrors> {
        let _ = (dir, main_cf, master_cf);
        todo!()
    }

    /// The configuration directory (`-c DIR`).
    pub fn dir(&self) -> &Path {
        todo!()
    }

    /// The expanded value of a known parameter (the default when unset).
    /// Panics on a name not in the parameter table: that is a bug in sluice,
    /// caught by tests, never caused by input.
    pub fn string(&self, name: &str) -> &str {
        let _ = name;
        todo!()
    }

    pub fn bool(&self, name: &str) -> bool {
        let _ = name;
        todo!()
    }

    pub fn int(&self, name: &str) -> i64 {
        let _ = name;
        todo!()
    }

    /// A Postfix time value (`300s`, `5m`, `1h`, `5d`; bare number in the
    /// parameter's default unit).
    pub fn time(&self, name: &str) -> Duration {
        let _ = name;
        todo!()
    }

    /// A byte size (`message_size_limit`, `queue_minfree`).
    pub fn size(&self, name: &str) -> u64 {
        let _ = name;
        todo!()
    }

    /// A list value split on commas and/or white space.
    pub fn list(&self, name: &str) -> Vec<String> {
        let _ = name;
        todo!()
    }

    /// The tables a `*_maps` parameter names, opened at load.
    pub fn maps(&self, name: &str) -> &Maps {
        let _ = name;
        todo!()
    }

    /// A per-transport parameter: `<transport>_<suffix>` if set (or given
    /// by `-o` on the transport's master.cf line), else `default_<suffix>`
    /// when that exists, else `<protocol>_<suffix>` as Postfix does for
    /// `lmtp_*`/`smtp_*`. E.g. `transport_param("mbx", "destination_concurrency_limit")`.
    pub fn transport_param(&self, transport: &str, suffix: &str) -> &str {
        let _ = (transport, suffix);
        todo!()
    }

    /// `mynetworks`, parsed (with `mynetworks_style` applied when unset).
    pub fn mynetworks(&self) -> &[ipnet::IpNet] {
        todo!()
    }

    /// True when `addr` is in `mynetworks`.
    pub fn in_mynetworks(&self, addr: IpAddr) -> bool {
        self.mynetworks().iter().any(|n| n.contains(&addr))
    }

    /// SMTP listeners from master.cf.
    pub fn smtpd_services(&self) -> &[SmtpdService] {
        todo!()
    }

    /// Named delivery transports from master.cf.
    pub fn transports(&self) -> &[MasterTransport] {
        todo!()
    }

    /// Decides where mail for `recipient` goes: `transport_maps`, then
    /// `relay_transport` for `relay_domains`, else `default_transport`,
    /// with `relayhost` as the next hop when the result has none.
    pub fn route(&self, recipient: &str) -> Result<Route, TableError> {
        let _ = recipient;
        todo!()
    }

    /// True when `domain` is one of `relay_domains` (names, subdomains per
    /// `parent_domain_matches_subdomains`, and tables).
    pub fn is_relay_domain(&self, domain: &str) -> Result<bool, TableError> {
        let _ = domain;
        todo!()
    }

    /// Parameters whose value differs from the default, as `postconf -n`
    /// prints them (`name = value`, sorted by name).
    pub fn non_default(&self) -> Vec<(String, String)> {
        todo!()
    }
}
