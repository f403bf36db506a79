//! Postfix-compatible configuration: `main.cf`, `master.cf`, lookup tables,
//! and the typed view of them the rest of sluice reads.
//!
//! Owns parsing, `$name` expansion, the one table of supported parameters
//! with their Postfix defaults (`params.rs`), lookup tables and transport
//! resolution. Never opens the queue, and sockets only for directory
//! table lookups (below).
//!
//! A [`Config`] is immutable and shared as `Arc<Config>`; `SIGHUP` builds a
//! new one and swaps it in, or keeps the old one when the new one has errors.
//! Reloading is just [`Config::load`] again: it reads every file and table
//! afresh and returns [`ConfigErrors`] (never a half-built configuration)
//! when anything is wrong, so the caller keeps serving with the `Arc` it
//! already holds and logs the errors. Sessions and deliveries that hold the
//! old `Arc` finish with it; new connections and the next delivery
//! decisions read the new one.
//!
//! API contract used by `smtp`, `delivery` and `admin` (stable; extend, do not
//! change): typed accessors by Postfix parameter name (`int`, `time`, `size`,
//! `bool`, `list`, `string`, `maps`) that cannot fail at run time because
//! every value was type-checked at load; per-transport parameters through
//! [`Config::transport_param`]; listeners and transports from master.cf;
//! recipient routing through [`Config::route`] (and [`Config::route_async`]
//! when tables may be directory tables).
//!
//! Layout: `main_cf.rs` (syntax), `expand.rs` (`$name`), `params.rs` (the
//! table), `values.rs` (value syntax), `master_cf.rs`, `tables/`,
//! `matchlist.rs` (domain and network lists), `restrictions.rs`,
//! `milters.rs` (`smtpd_milters`), `route.rs`, `load.rs` (files to typed
//! settings), `lookup.rs` (key orders and directory lookups from pure and
//! async code). `sluice config`, the command that prints all this, is the
//! command line's (`cli/postconf.rs`).
//!
//! Directory tables (`tables/directory/`) are the one part of `config`
//! that opens sockets: at lookup time only, never while loading.

mod alias;
mod error;
mod expand;
mod load;
mod lookup;
mod main_cf;
mod master_cf;
mod matchlist;
mod milters;
pub mod params;
mod restrictions;
mod route;
mod tables;
mod values;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use alias::AliasError;
pub use error::{ConfigErrors, Diagnostic, TableError};
pub use load::machine_addresses;
pub use lookup::{Known, LookupError, MAX_ASKS, NOTHING_KNOWN, Query, resolve};
pub use main_cf::normalize_space;
pub use milters::{MilterDefault, MilterEndpoint, MilterProtocol, MilterSpec, canonical_macro};
pub use restrictions::{
    Access, Dnsbl, HeaderAction, Named, PolicyEndpoint, PolicyService, Restriction, RhsblName, named,
};
pub use tables::AnyCertificate;
pub use values::{Rate, TlsProtocols, parse_name_servers, parse_tls_protocols};

/// The configuration directory when none is given (`-c`), as
/// `/etc/postfix` is Postfix's.
pub const DEFAULT_DIR: &str = "/etc/sluice";

use futures::future::BoxFuture;
use matchlist::{DomainList, HostList};
use route::TransportInfo;

/// A loaded configuration plus the warnings (unknown or unsupported
/// parameters, master.cf services sluice does not use) found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub warnings: Vec<Diagnostic>,
}

/// Where a table entry was written: its file and line (`None` for tables
/// without a file, such as `inline:` and `static:`).
pub type WrittenAt<'a> = Option<(&'a std::path::Path, usize)>;

/// One lookup table (`hash:/etc/sluice/transport`, `regexp:...`, ...).
pub trait Table: Send + Sync + std::fmt::Debug {
    /// Looks up one key exactly as given (case-folding as Postfix does for
    /// the table type). The caller does address-key expansion.
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError>;
    /// `type:name` as written in the configuration.
    fn name(&self) -> &str;
    /// True for regexp, pcre and cidr tables: Postfix gives them only the
    /// full address, never the partial keys (`user@`, `domain`, `.domain`).
    fn is_pattern(&self) -> bool {
        false
    }
    /// Visits each fixed result the table holds, with the file and line it
    /// was written on where it has one, so a load can check results the
    /// way they will be used (transport_maps). Results built from a
    /// pattern's match groups are only known at lookup and are left out.
    fn each_result(&self, _visit: &mut dyn FnMut(WrittenAt<'_>, &str)) {}
    /// True for directory tables (`ldap:`, `pgsql:`, `mysql:`, `sqlite:`,
    /// `socketmap:`): their answers come from a server, through
    /// [`Table::query`]. Their [`Table::lookup`] answers only the keys
    /// they never ask about and fails for any other.
    fn is_directory(&self) -> bool {
        false
    }
    /// True when a directory table never asks its server about `key` (its
    /// `domain` list or templates rule the key out): "not found" at once.
    fn skips(&self, _key: &str) -> bool {
        false
    }
    /// Looks up one key, asking a directory server when needed (through
    /// the table's cache and breakers, within its timeout). In-memory
    /// tables answer at once. An error is a failed lookup, never "not
    /// found".
    fn query<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, TableError>> {
        Box::pin(std::future::ready(self.lookup(key)))
    }
}

/// A parameter's list of tables (`transport_maps = hash:a, regexp:b`),
/// searched in order.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub tables: Vec<Arc<dyn Table>>,
}

/// An `inet` line of master.cf whose command is `smtpd`.
/// One of the SMTP server's certificates with its key, as main.cf names
/// them, and the parameters that name them (for diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeyFile {
    pub cert_param: &'static str,
    pub cert: String,
    pub key_param: &'static str,
    /// The certificate's own file when the key is in it.
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct SmtpdService {
    /// The service field as written (`smtp`, `2525`, `127.0.0.1:2525`).
    pub name: String,
    /// The addresses to bind: the service's host if given, otherwise each of
    /// `inet_interfaces` (honouring `inet_protocols`), with the port resolved
    /// (`smtp` is 25). `inet_interfaces = all` gives the wildcard addresses
    /// `0.0.0.0` and `[::]` (per inet_protocols): bind the IPv6 one with
    /// IPV6_V6ONLY so both can be bound, as Postfix does.
    pub addrs: Vec<std::net::SocketAddr>,
    /// `maxproc` of the line (0 or `-`: no limit other than main.cf's).
    pub maxproc: Option<u32>,
    /// The effective configuration of this service: main.cf with this line's
    /// `-o name=value` overrides applied.
    pub config: Arc<Config>,
    /// The same with `stress = yes`, as Postfix's master starts the
    /// service's processes when it reaches its process limit: every
    /// `${stress?...}` expands to its stress value (`smtpd_timeout` 10s,
    /// `smtpd_hard_error_limit` 1, ...).
    pub stressed: Arc<Config>,
}

/// A master.cf line whose command is `lmtp` or `smtp`: a named transport.
/// The transports `smtp`, `relay` (SMTP) and `lmtp` are always present:
/// when master.cf does not define them they get main.cf's settings and no
/// maxproc.
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

impl Protocol {
    /// `lmtp` or `smtp`: the prefix of the protocol's client parameters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Lmtp => "lmtp",
            Protocol::Smtp => "smtp",
        }
    }
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

impl std::fmt::Display for NextHop {
    /// Postfix's notation: `[host]:port`, `domain:port`, `unix:/path`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Host { host, port } => write!(f, "[{host}]:{port}"),
            NextHop::Mx { domain, port } => write!(f, "{domain}:{port}"),
            NextHop::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What `transport_maps` / `default_transport` / `relay_transport` decided
/// for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver over `protocol` through the named transport to `nexthop`.
    /// `by_domain`: no transport, transport_maps entry or `relayhost` chose
    /// the next hop, the recipient's domain did (see `sluice_mx_forbidden_networks`).
    Deliver { transport: String, protocol: Protocol, nexthop: NextHop, by_domain: bool },
    /// `error:text` (and `error:5.x.y text`): bounce with this text.
    Error { text: String },
    /// `discard:`: accept and drop, logged as discarded.
    Discard { text: String },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Default,
    File { file: PathBuf, line: usize },
}

/// A value checked against its type at load.
#[derive(Debug, Clone)]
enum Typed {
    Text,
    Bool(bool),
    Int(i64),
    Time(Duration),
    Size(u64),
    Rate(Option<Rate>),
    Listen(Option<SocketAddr>),
}

/// One parameter's raw and expanded value.
#[derive(Debug, Clone)]
struct Setting {
    raw: String,
    value: String,
    source: Source,
    typed: Typed,
}

/// The whole configuration, immutable once built.
#[derive(Debug)]
pub struct Config {
    dir: PathBuf,
    /// The master.cf service whose `-o` overrides this configuration
    /// carries; None for main.cf's own.
    service: Option<String>,
    settings: HashMap<String, Setting>,
    maps: HashMap<String, Maps>,
    restrictions: HashMap<String, Vec<Restriction>>,
    domain_lists: HashMap<String, DomainList>,
    host_lists: HashMap<String, HostList>,
    mynetworks: Vec<ipnet::IpNet>,
    parent_features: Vec<String>,
    services: Vec<SmtpdService>,
    transports: Vec<MasterTransport>,
    transport_info: Arc<Vec<TransportInfo>>,
    /// `smtpd_milters`, parsed with the `milter_*` settings applied.
    milters: Vec<MilterSpec>,
    /// `milter_macro_defaults`, names in `{name}` form.
    macro_defaults: Vec<(String, String)>,
}

impl Config {
    /// Loads `main.cf` and `master.cf` (and every table they name) from `dir`.
    /// On error nothing is returned but the full list of problems, so a
    /// reload that fails leaves the caller's current `Arc<Config>` in force.
    pub fn load(dir: &Path) -> Result<Loaded, ConfigErrors> {
        load::load_dir(dir)
    }

    /// Builds a configuration from texts (tests, `sluice config` on stdin);
    /// relative table paths resolve against `dir`.
    pub fn from_texts(dir: &Path, main_cf: &str, master_cf: &str) -> Result<Loaded, ConfigErrors> {
        load::load_texts(dir, main_cf, &dir.join("main.cf"), master_cf, &dir.join("master.cf"))
    }

    /// The configuration directory (`-c DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The master.cf service this configuration belongs to (its `-o`
    /// overrides are applied), or None for main.cf's configuration.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    fn setting(&self, name: &str) -> &Setting {
        match self.settings.get(name) {
            Some(s) => s,
            None => panic!("sluice bug: parameter {name} is not in src/config/params.rs"),
        }
    }

    /// True when `name` is a parameter this configuration knows: a row of
    /// the parameter table or a per-transport name of a known transport.
    pub fn knows(&self, name: &str) -> bool {
        self.settings.contains_key(name)
    }

    /// The expanded value of a known parameter (the default when unset).
    /// Panics on a name not in the parameter table: that is a bug in sluice,
    /// caught by tests, never caused by input.
    pub fn string(&self, name: &str) -> &str {
        &self.setting(name).value
    }

    /// The value as written (unexpanded), or the default's text.
    pub fn raw(&self, name: &str) -> &str {
        &self.setting(name).raw
    }

    /// True when the parameter was set in main.cf or by a `-o` override.
    pub fn is_set(&self, name: &str) -> bool {
        self.setting(name).source != Source::Default
    }

    /// The SMTP server's certificates and keys, one per key algorithm, as
    /// Postfix reads them: every `smtpd_tls_chain_files` entry (key and
    /// chain in one file), or else each of the pairs `smtpd_tls_cert_file`
    /// and `smtpd_tls_key_file`, `smtpd_tls_eccert_file` and
    /// `smtpd_tls_eckey_file` whose certificate is set (a key left empty is
    /// in the certificate's file).
    pub fn smtpd_tls_key_files(&self) -> Vec<TlsKeyFile> {
        const CHAIN: &str = "smtpd_tls_chain_files";
        let chain = self.list(CHAIN);
        if !chain.is_empty() {
            return chain
                .into_iter()
                .map(|f| TlsKeyFile { cert_param: CHAIN, cert: f.clone(), key_param: CHAIN, key: f })
                .collect();
        }
        [("smtpd_tls_cert_file", "smtpd_tls_key_file"), ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file")]
            .into_iter()
            .filter_map(|(cert_param, key_param)| {
                let cert = self.string(cert_param).trim();
                let key = match self.string(key_param).trim() {
                    "" => cert,
                    key => key,
                };
                (!cert.is_empty()).then(|| TlsKeyFile {
                    cert_param,
                    cert: cert.to_owned(),
                    key_param,
                    key: key.to_owned(),
                })
            })
            .collect()
    }

    /// Where the parameter was set: file and line, or None for a default.
    pub fn origin(&self, name: &str) -> Option<(&Path, usize)> {
        match &self.setting(name).source {
            Source::Default => None,
            Source::File { file, line } => Some((file, *line)),
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.setting(name).typed {
            Typed::Bool(b) => b,
            ref other => panic!("sluice bug: {name} is not a boolean ({other:?})"),
        }
    }

    /// An integer parameter (a byte size is accepted too).
    pub fn int(&self, name: &str) -> i64 {
        match self.setting(name).typed {
            Typed::Int(i) => i,
            Typed::Size(s) => i64::try_from(s).unwrap_or(i64::MAX),
            ref other => panic!("sluice bug: {name} is not an integer ({other:?})"),
        }
    }

    /// A Postfix time value (`300s`, `5m`, `1h`, `5d`; bare number in the
    /// parameter's default unit).
    pub fn time(&self, name: &str) -> Duration {
        match self.setting(name).typed {
            Typed::Time(d) => d,
            ref other => panic!("sluice bug: {name} is not a time value ({other:?})"),
        }
    }

    /// A byte size (`message_size_limit`, `queue_minfree`); a non-negative
    /// integer parameter is accepted too.
    pub fn size(&self, name: &str) -> u64 {
        match self.setting(name).typed {
            Typed::Size(s) => s,
            Typed::Int(i) => u64::try_from(i).unwrap_or(0),
            ref other => panic!("sluice bug: {name} is not a size ({other:?})"),
        }
    }

    /// A list value split on commas and/or white space (`{ ... }` groups
    /// kept together, braces removed).
    pub fn list(&self, name: &str) -> Vec<String> {
        values::split_list(self.string(name))
            .unwrap_or_default()
            .iter()
            .map(|s| values::unbrace(s).to_owned())
            .collect()
    }

    /// A list value split on commas and white space only, braces kept
    /// (Postfix's `mystrtok()`): macro name lists, where `{name}` is a
    /// name, not a group.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.string(name)
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The tables a `*_maps` parameter names, opened at load.
    pub fn maps(&self, name: &str) -> &Maps {
        match self.maps.get(name) {
            Some(m) => m,
            None => panic!("sluice bug: {name} is not a lookup-table parameter"),
        }
    }

    /// A rate parameter (`sluice_rate_limit`): None for no limit.
    pub fn rate(&self, name: &str) -> Option<Rate> {
        match self.setting(name).typed {
            Typed::Rate(r) => r,
            ref other => panic!("sluice bug: {name} is not a rate ({other:?})"),
        }
    }

    /// A listen-address parameter (`sluice_metrics_listen`): None for off.
    pub fn socket_addr(&self, name: &str) -> Option<SocketAddr> {
        match self.setting(name).typed {
            Typed::Listen(a) => a,
            ref other => panic!("sluice bug: {name} is not a listen address ({other:?})"),
        }
    }

    /// A restriction list (`smtpd_relay_restrictions`, ...), parsed at
    /// load with its access tables opened. Restrictions sluice does not
    /// implement were reported as warnings and are not in the list.
    pub fn restrictions(&self, name: &str) -> &[Restriction] {
        match self.restrictions.get(name) {
            Some(r) => r,
            None => panic!("sluice bug: {name} is not a restriction list"),
        }
    }

    /// True when `addr` matches a network-list parameter (`mynetworks`,
    /// `smtpd_forbid_bare_newline_exclusions`,
    /// `smtpd_client_event_limit_exceptions`). A table that fails to answer
    /// counts as no match.
    pub fn matches_client(&self, name: &str, addr: IpAddr) -> bool {
        match self.host_lists.get(name) {
            Some(l) => l.matches(addr).unwrap_or(false),
            None => panic!("sluice bug: {name} is not a network list"),
        }
    }

    /// The configuration used for transport `name`: its master.cf line's
    /// own (with `-o` overrides) when this is main.cf's configuration and
    /// the transport exists, else this one.
    pub fn transport_config(&self, name: &str) -> &Config {
        if self.service.as_deref() == Some(name) {
            return self;
        }
        match self.transports.iter().find(|t| t.name == name) {
            Some(t) => &t.config,
            None => self,
        }
    }

    /// A per-transport parameter: `<transport>_<suffix>` if set (or given
    /// by `-o` on the transport's master.cf line), else `default_<suffix>`
    /// when that exists, else `<protocol>_<suffix>` as Postfix does for
    /// `lmtp_*`/`smtp_*`. E.g. `transport_param("mbx", "destination_concurrency_limit")`.
    ///
    /// Also `<suffix>` itself (`initial_destination_concurrency`,
    /// `sluice_rate_limit`). For LMTP transports, `helo_timeout` and
    /// `helo_name` mean Postfix's `lmtp_lhlo_timeout` and `lmtp_lhlo_name`,
    /// so delivery can ask with one suffix for both protocols. Values come
    /// from the transport's own configuration (its `-o` overrides). Panics
    /// when no such parameter exists (a bug, caught by tests).
    pub fn transport_param(&self, transport: &str, suffix: &str) -> &str {
        let cfg = self.transport_config(transport);
        &cfg.setting(&cfg.transport_param_name(transport, suffix)).value
    }

    /// The parameter name [`Config::transport_param`] reads.
    pub fn transport_param_name(&self, transport: &str, suffix: &str) -> String {
        let cfg = self.transport_config(transport);
        let protocol = cfg.transport_protocol(transport);
        let suffix = match (protocol, suffix) {
            (Some(Protocol::Lmtp), "helo_timeout") => "lhlo_timeout",
            (Some(Protocol::Lmtp), "helo_name") => "lhlo_name",
            _ => suffix,
        };
        let own = format!("{transport}_{suffix}");
        if cfg.settings.contains_key(&own) {
            return own;
        }
        let default = format!("default_{suffix}");
        if params::find(&default).is_some() {
            return default;
        }
        if let Some(p) = protocol {
            let by_protocol = format!("{}_{suffix}", p.as_str());
            if cfg.settings.contains_key(&by_protocol) {
                return by_protocol;
            }
        }
        suffix.to_owned()
    }

    /// [`Config::transport_param`] as a time value.
    pub fn transport_time(&self, transport: &str, suffix: &str) -> Duration {
        let cfg = self.transport_config(transport);
        cfg.time(&cfg.transport_param_name(transport, suffix))
    }

    /// [`Config::transport_param`] as an integer.
    pub fn transport_int(&self, transport: &str, suffix: &str) -> i64 {
        let cfg = self.transport_config(transport);
        cfg.int(&cfg.transport_param_name(transport, suffix))
    }

    /// [`Config::transport_param`] as a rate (`sluice_rate_limit`).
    pub fn transport_rate(&self, transport: &str, suffix: &str) -> Option<Rate> {
        let cfg = self.transport_config(transport);
        cfg.rate(&cfg.transport_param_name(transport, suffix))
    }

    /// The protocol of a transport sluice delivers with, or None (error,
    /// discard, unknown).
    pub fn transport_protocol(&self, transport: &str) -> Option<Protocol> {
        self.transport_info.iter().find(|t| t.name == transport).and_then(|t| match t.kind {
            route::TransportKind::Deliver(p) => Some(p),
            _ => None,
        })
    }

    /// `smtpd_milters` of this configuration (a listener's `-o
    /// smtpd_milters=` applied), each with its own settings.
    pub fn milters(&self) -> &[MilterSpec] {
        &self.milters
    }

    /// `milter_macro_defaults` as (`{name}`, value) pairs.
    pub fn milter_macro_defaults(&self) -> &[(String, String)] {
        &self.macro_defaults
    }

    /// `mynetworks`, parsed (with `mynetworks_style` applied when unset).
    /// Only literal networks (and those in pattern files) are listed;
    /// `!negations` and tables are honoured by [`Config::in_mynetworks`].
    pub fn mynetworks(&self) -> &[ipnet::IpNet] {
        &self.mynetworks
    }

    /// True when `addr` is in `mynetworks` (negations, pattern files and
    /// tables included; an IPv4-mapped IPv6 address matches its IPv4 form).
    pub fn in_mynetworks(&self, addr: IpAddr) -> bool {
        self.matches_client("mynetworks", addr)
    }

    /// SMTP listeners from master.cf. Empty on a service's or transport's
    /// own configuration: ask main.cf's configuration.
    pub fn smtpd_services(&self) -> &[SmtpdService] {
        &self.services
    }

    /// Named delivery transports from master.cf (plus the built-in `smtp`,
    /// `relay` and `lmtp` when master.cf lacks them). Empty on a service's
    /// or transport's own configuration: ask main.cf's configuration.
    pub fn transports(&self) -> &[MasterTransport] {
        &self.transports
    }

    /// Decides where mail for `recipient` goes: `transport_maps`, then
    /// `relay_transport` for `relay_domains`, else `default_transport`,
    /// with `relayhost` as the next hop when the result has none.
    ///
    /// A recipient without `@` is routed as `user@$myorigin`. Errors (a
    /// table failing, a result naming a transport that does not exist or an
    /// unusable next hop) mean: defer the recipient, as Postfix does.
    /// A directory table in transport_maps or relay_domains fails this
    /// synchronous form: delivery uses [`Config::route_async`].
    pub fn route(&self, recipient: &str) -> Result<Route, TableError> {
        self.resolve_route(recipient, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// True when `domain` is one of `relay_domains` (names, subdomains per
    /// `parent_domain_matches_subdomains`, and tables).
    /// A directory table among them fails this synchronous form: see
    /// [`Config::is_relay_domain_in`] and [`Config::is_relay_domain_async`].
    pub fn is_relay_domain(&self, domain: &str) -> Result<bool, TableError> {
        self.is_relay_domain_in(domain, &NOTHING_KNOWN).map_err(LookupError::into_failure)
    }

    /// True when `parent_domain_matches_subdomains` lists `feature`.
    pub fn parent_matches(&self, feature: &str) -> bool {
        self.parent_features.iter().any(|f| f == feature)
    }

    /// Parameters whose value differs from the default, as `postconf -n`
    /// prints them (`name = value`, sorted by name): every supported
    /// parameter set in main.cf (or by this service's `-o`), with its value
    /// as written, and `config_directory` when it is not `/etc/sluice`.
    pub fn non_default(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|(name, s)| {
                s.source != Source::Default || (name.as_str() == "config_directory" && s.value != DEFAULT_DIR)
            })
            .map(|(n, s)| (n.clone(), s.raw.clone()))
            .collect();
        out.sort();
        out
    }

    /// Every parameter this configuration knows with its value as written
    /// (or the default's text), sorted by name.
    pub fn all_raw(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.settings.iter().map(|(n, s)| (n.clone(), s.raw.clone())).collect();
        out.sort();
        out
    }
}
