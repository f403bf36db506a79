//! From files to an immutable [`Config`]: reads main.cf and master.cf,
//! computes the host-dependent defaults, expands and type-checks every
//! parameter through the `params.rs` table, opens the tables, builds one
//! configuration per master.cf service sluice uses (main.cf plus that
//! line's `-o` overrides), and reports every name nothing reads.
//!
//! Owns the order of those steps and where each problem is reported (file,
//! line, parameter). Collects all problems before deciding: any error means
//! no configuration at all. Never opens sockets; host names in
//! `inet_interfaces` or service addresses are resolved with the system
//! resolver (getaddrinfo) when the configuration loads.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::error::{ConfigErrors, Diagnostic, Report};
use super::expand::{self, Expander};
use super::main_cf::{self, MainCf};
use super::master_cf::{self, Entry};
use super::matchlist::{Build, DomainList, HostList};
use super::params::{self, Kind, PARAMS};
use super::restrictions;
use super::route::{self, TransportInfo, TransportKind};
use super::tables::{self, Origin, TableCache};
use super::values;
use super::{Config, Loaded, Maps, MasterTransport, Protocol, Setting, SmtpdService, Source, Typed};

/// Reads `dir/main.cf` and `dir/master.cf`.
pub(crate) fn load_dir(dir: &Path) -> Result<Loaded, ConfigErrors> {
    let main_path = dir.join("main.cf");
    let master_path = dir.join("master.cf");
    let mut errors = Vec::new();
    let mut read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(Diagnostic::file(p, format!("cannot read: {e}")));
            None
        }
    };
    let main = read(&main_path);
    let master = read(&master_path);
    match (main, master) {
        (Some(main), Some(master)) => load_texts(dir, &main, &main_path, &master, &master_path),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Builds a configuration from the two texts; `main_path`/`master_path`
/// are used in messages.
pub(crate) fn load_texts(
    dir: &Path,
    main_text: &str,
    main_path: &Path,
    master_text: &str,
    master_path: &Path,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let main = main_cf::parse(main_text, main_path, &mut errors, &mut warnings);
    let entries = master_cf::parse(master_text, master_path, &mut errors);
    let mut report = Report::default();
    errors.into_iter().for_each(|d| report.error(d));
    warnings.into_iter().for_each(|d| report.warn(d));

    let mut loader = Loader {
        dir: dir.to_path_buf(),
        main,
        main_path: main_path.to_path_buf(),
        master_path: master_path.to_path_buf(),
        hostname: system_hostname(),
        locals: local_addresses(),
        transports: Vec::new(),
        service_names: Vec::new(),
        derived: HashMap::new(),
        cache: TableCache::default(),
        report,
    };
    let config = loader.build_all(&entries);
    if loader.report.errors.is_empty() {
        Ok(Loaded { config: Arc::new(config), warnings: loader.report.warnings })
    } else {
        Err(ConfigErrors(loader.report.errors))
    }
}

/// The host's name as gethostname() returns it.
pub(crate) fn system_hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The host's interface addresses with their prefix lengths, IPv4 first.
pub(crate) fn local_addresses() -> Vec<(IpAddr, u8)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else { continue };
            if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                let len = u32::from(m.ip()).count_ones() as u8;
                v4.push((IpAddr::V4(a.ip()), len));
            } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                let len = u128::from(m.ip()).count_ones() as u8;
                v6.push((IpAddr::V6(a.ip()), len));
            }
        }
    }
    v4.extend(v6);
    v4
}

struct Loader {
    dir: PathBuf,
    main: MainCf,
    main_path: PathBuf,
    master_path: PathBuf,
    hostname: String,
    locals: Vec<(IpAddr, u8)>,
    /// Transports sluice can route to (master.cf and built in).
    transports: Vec<TransportInfo>,
    /// Every master.cf service name (used or not) plus the built-ins, for
    /// recognising `<service>_<suffix>` names.
    service_names: Vec<String>,
    /// Per-transport names (`relay_destination_rate_delay`) → base parameter.
    derived: HashMap<String, &'static str>,
    cache: TableCache,
    report: Report,
}

/// The raw values visible in one configuration: `-o` overrides, main.cf,
/// computed defaults, table defaults.
struct Scope<'a> {
    loader: &'a Loader,
    overrides: &'a [(String, String)],
    override_line: usize,
    service: Option<&'a str>,
    computed: HashMap<&'static str, String>,
}

impl expand::Source for Scope<'_> {
    fn raw(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some((_, v)) = self.overrides.iter().rev().find(|(n, _)| n == name) {
            return Some(Cow::Borrowed(v));
        }
        if name == "config_directory" {
            // Absolute, so that a table named `$config_directory/x` is not
            // joined to a relative `-c DIR` a second time (`-c conf/dev`).
            let dir = std::path::absolute(&self.loader.dir).unwrap_or_else(|_| self.loader.dir.clone());
            return Some(Cow::Owned(dir.display().to_string()));
        }
        if name == "service_name"
            && let Some(s) = self.service
        {
            return Some(Cow::Borrowed(s));
        }
        if let Some(v) = self.loader.main.params.get(name) {
            return Some(Cow::Borrowed(&v.value));
        }
        if let Some(v) = self.computed.get(name) {
            return Some(Cow::Borrowed(v));
        }
        if let Some(p) = params::find(name) {
            return match p.default {
                params::Default::Text(t) => Some(Cow::Borrowed(t)),
                params::Default::Computed(_) => None,
            };
        }
        self.loader.derived.get(name).map(|base| Cow::Owned(format!("${base}")))
    }
}

impl Scope<'_> {
    /// Where `name`'s value was written, if anywhere.
    fn source(&self, name: &str) -> Source {
        if self.overrides.iter().any(|(n, _)| n == name) {
            return Source::File { file: self.loader.master_path.clone(), line: self.override_line };
        }
        match self.loader.main.params.get(name) {
            Some(v) if name != "config_directory" => Source::File { file: v.file.clone(), line: v.line },
            _ => Source::Default,
        }
    }

    fn is_set(&self, name: &str) -> bool {
        self.source(name) != Source::Default
    }

    /// A diagnostic about `name` at the place it was written (main.cf
    /// without a line for a default value).
    fn diag(&self, name: &str, message: impl Into<String>) -> Diagnostic {
        match self.source(name) {
            Source::File { file, line } => Diagnostic::param(&file, Some(line), name, message),
            Source::Default => Diagnostic::param(&self.loader.main_path, None, name, message),
        }
    }

    /// Fills the host-dependent defaults in Postfix's order: myhostname
    /// (from the host name, .$mydomain or .localdomain appended when it has
    /// no dot), mydomain (from myhostname), mynetworks (from
    /// mynetworks_style, inet_interfaces and inet_protocols).
    fn compute_defaults(&mut self) {
        let host = self.loader.hostname.clone();
        let myhostname = if host.contains('.') {
            host
        } else if self.is_set("mydomain") {
            let d = Expander::new(&*self).param("mydomain").unwrap_or_default();
            format!("{host}.{d}")
        } else {
            format!("{host}.localdomain")
        };
        self.computed.insert("myhostname", myhostname);
        let expanded = Expander::new(&*self).param("myhostname").unwrap_or_default();
        let mydomain = match expanded.split_once('.') {
            Some((_, d)) if !d.is_empty() => d.to_owned(),
            _ => "localdomain".to_owned(),
        };
        self.computed.insert("mydomain", mydomain);
        let mynetworks = {
            let ex = Expander::new(&*self);
            let style = ex.param("mynetworks_style").unwrap_or_default();
            let interfaces = ex.param("inet_interfaces").unwrap_or_default();
            let protocols = ex.param("inet_protocols").unwrap_or_default();
            default_mynetworks(&style, &interfaces, &protocols, &self.loader.locals).unwrap_or_default()
        };
        self.computed.insert("mynetworks", mynetworks);
    }
}

/// Postfix's mynetworks default: for each address of inet_interfaces (all
/// of the host's when `all`), per inet_protocols, the address itself
/// (`host`), its interface's subnet (`subnet`) or its class A/B/C network
/// (`class`; IPv6 as `subnet`). Printed as Postfix prints it.
pub(crate) fn default_mynetworks(
    style: &str,
    interfaces: &str,
    protocols: &str,
    locals: &[(IpAddr, u8)],
) -> Result<String, String> {
    let (v4, v6) = parse_protocols(protocols)?;
    let addrs: Vec<(IpAddr, u8)> = match interface_addresses(interfaces)? {
        None => locals.to_vec(),
        Some(list) => list
            .into_iter()
            .map(|a| {
                let len = locals.iter().find(|(l, _)| *l == a).map(|(_, n)| *n);
                (a, len.unwrap_or(if a.is_ipv4() { 32 } else { 128 }))
            })
            .collect(),
    };
    let mut nets: Vec<IpNet> = Vec::new();
    for (addr, len) in addrs {
        if (addr.is_ipv4() && !v4) || (addr.is_ipv6() && !v6) {
            continue;
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match style.trim() {
            "host" => max,
            "subnet" => len,
            "class" => match addr {
                IpAddr::V4(a) => match a.octets()[0] {
                    0..=127 => 8,
                    128..=191 => 16,
                    192..=223 => 24,
                    _ => 32,
                },
                IpAddr::V6(_) => len,
            },
            other => return Err(format!("bad mynetworks_style \"{other}\"")),
        };
        let net = IpNet::new(addr, prefix).map_err(|e| e.to_string())?.trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    nets.sort_by_key(|n| n.addr().is_ipv6());
    Ok(nets
        .iter()
        .map(|n| match n {
            IpNet::V4(n) => n.to_string(),
            IpNet::V6(n) => format!("[{}]/{}", n.addr(), n.prefix_len()),
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// `inet_protocols`: (IPv4 enabled, IPv6 enabled).
pub(crate) fn parse_protocols(value: &str) -> Result<(bool, bool), String> {
    let mut v4 = false;
    let mut v6 = false;
    for w in values::split_list(value)? {
        match w.to_ascii_lowercase().as_str() {
            "all" => {
                v4 = true;
                v6 = true;
            }
            "ipv4" => v4 = true,
            "ipv6" => v6 = true,
            _ => return Err(format!("bad inet_protocols value \"{w}\" (expected all, ipv4, ipv6)")),
        }
    }
    if !v4 && !v6 {
        return Err("inet_protocols enables no protocol".into());
    }
    Ok((v4, v6))
}

/// `inet_interfaces`: None for `all`, else the addresses (`loopback-only`
/// is 127.0.0.1 and ::1; names are resolved).
pub(crate) fn interface_addresses(value: &str) -> Result<Option<Vec<IpAddr>>, String> {
    let words = values::split_list(value)?;
    if words.is_empty() {
        return Err("inet_interfaces is empty".into());
    }
    let mut out = Vec::new();
    for w in words {
        match w.to_ascii_lowercase().as_str() {
            "all" => return Ok(None),
            "loopback-only" => {
                out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
                out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            }
            _ => {
                let host = w.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&w);
                out.extend(resolve_host(host)?);
            }
        }
    }
    Ok(Some(out))
}

/// An IP literal, `localhost`, or a name resolved with getaddrinfo.
fn resolve_host(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Some(ip) = values::parse_ip(host) {
        return Ok(vec![ip]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    let addrs: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host name \"{host}\": {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("host name \"{host}\" has no address"));
    }
    Ok(addrs)
}

/// The addresses an `inet` smtpd service binds.
fn listener_addrs(service: &str, config: &Config) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = values::split_host_port(service)?;
    let port = values::parse_port(port)?;
    let (v4, v6) = parse_protocols(config.string("inet_protocols"))?;
    let ips: Vec<IpAddr> = match host {
        Some(h) if h != "*" => resolve_host(h)?,
        _ => match interface_addresses(config.string("inet_interfaces"))? {
            None => {
                let mut any = Vec::new();
                if v4 {
                    any.push(values::ANY_V4);
                }
                if v6 {
                    any.push(values::ANY_V6);
                }
                any
            }
            Some(list) => list,
        },
    };
    let picked: Vec<SocketAddr> = ips
        .into_iter()
        .filter(|ip| (ip.is_ipv4() && v4) || (ip.is_ipv6() && v6))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    if picked.is_empty() {
        return Err(format!("service {service}: no address left after inet_protocols"));
    }
    Ok(picked)
}

impl Loader {
    fn build_all(&mut self, entries: &[Entry]) -> Config {
        // Which master.cf services sluice uses.
        let mut listeners: Vec<&Entry> = Vec::new();
        let mut transports: Vec<(&Entry, Protocol)> = Vec::new();
        for e in entries {
            self.service_names.push(e.service.clone());
            let used = match (e.kind.as_str(), e.command.as_str()) {
                ("inet", "smtpd") => {
                    listeners.push(e);
                    true
                }
                ("unix", "lmtp") => {
                    transports.push((e, Protocol::Lmtp));
                    true
                }
                ("unix", "smtp") => {
                    transports.push((e, Protocol::Smtp));
                    true
                }
                ("unix", "error") if e.service != "retry" => {
                    self.transports
                        .push(TransportInfo { name: e.service.clone(), kind: TransportKind::Error });
                    true
                }
                ("unix", "discard") => {
                    self.transports
                        .push(TransportInfo { name: e.service.clone(), kind: TransportKind::Discard });
                    true
                }
                _ => false,
            };
            if !used {
                self.report.warn(Diagnostic::at(
                    &self.master_path,
                    e.line,
                    format!("service {} ({} {}) is not used by sluice", e.service, e.kind, e.command),
                ));
            } else if !e.args.is_empty() {
                self.report.warn(Diagnostic::at(
                    &self.master_path,
                    e.line,
                    format!("service {}: arguments {} are not used by sluice", e.service, e.args.join(" ")),
                ));
            }
        }
        for (e, p) in &transports {
            self.transports.push(TransportInfo { name: e.service.clone(), kind: TransportKind::Deliver(*p) });
        }
        let mut builtin = Vec::new();
        for (name, kind) in [
            ("smtp", TransportKind::Deliver(Protocol::Smtp)),
            ("relay", TransportKind::Deliver(Protocol::Smtp)),
            ("lmtp", TransportKind::Deliver(Protocol::Lmtp)),
            ("error", TransportKind::Error),
            ("discard", TransportKind::Discard),
        ] {
            if !self.transports.iter().any(|t| t.name == name) {
                self.transports.push(TransportInfo { name: name.to_owned(), kind });
                if let TransportKind::Deliver(p) = kind {
                    builtin.push((name, p));
                }
            }
            if !self.service_names.iter().any(|s| s == name) {
                self.service_names.push(name.to_owned());
            }
        }
        for t in &self.transports {
            if let TransportKind::Deliver(_) = t.kind {
                for suffix in params::PER_TRANSPORT {
                    let name = format!("{}_{suffix}", t.name);
                    if params::find(&name).is_none()
                        && let Some(base) = params::per_transport_base(suffix)
                    {
                        self.derived.insert(name, base.name);
                    }
                }
            }
        }
        let info = Arc::new(self.transports.clone());

        let mut root = self.build_scope(&[], 0, None, info.clone());
        self.classify_main();

        for e in listeners {
            let cfg = self.build_scope(&e.overrides, e.line, Some(&e.service), info.clone());
            match listener_addrs(&e.service, &cfg) {
                Ok(addrs) => root.services.push(SmtpdService {
                    name: e.service.clone(),
                    addrs,
                    maxproc: e.maxproc,
                    config: Arc::new(cfg),
                }),
                Err(m) => self.report.error(Diagnostic::at(&self.master_path, e.line, m)),
            }
        }
        for (e, protocol) in transports {
            let cfg = self.build_scope(&e.overrides, e.line, Some(&e.service), info.clone());
            root.transports.push(MasterTransport {
                name: e.service.clone(),
                protocol,
                maxproc: e.maxproc,
                config: Arc::new(cfg),
            });
        }
        for (name, protocol) in builtin {
            let cfg = self.build_scope(&[], 0, Some(name), info.clone());
            root.transports.push(MasterTransport {
                name: name.to_owned(),
                protocol,
                maxproc: None,
                config: Arc::new(cfg),
            });
        }
        root
    }

    /// Warnings for main.cf names nothing reads.
    fn classify_main(&mut self) {
        let mut names: Vec<(String, usize)> =
            self.main.params.iter().map(|(n, v)| (n.clone(), v.line)).collect();
        names.sort_by_key(|(_, line)| *line);
        let file = self.main_path.clone();
        for (name, line) in names {
            if let Some(w) = self.classify(&name) {
                self.report.warn(Diagnostic::param(&file, Some(line), &name, w));
            }
        }
    }

    /// Why `name` is not read, or None when it is a supported parameter.
    fn classify(&self, name: &str) -> Option<String> {
        if name == "config_directory" {
            return Some("is set with -c DIR; the value in main.cf is not used".into());
        }
        if params::find(name).is_some() || self.derived.contains_key(name) {
            return None;
        }
        let services: Vec<&str> = self.service_names.iter().map(String::as_str).collect();
        if let Some((service, suffix)) = params::split_per_transport(name, &services) {
            let is_transport = self
                .transports
                .iter()
                .any(|t| t.name == service && matches!(t.kind, TransportKind::Deliver(_)));
            if is_transport && params::is_unsupported_per_transport(suffix) {
                return Some(format!(
                    "not implemented by sluice: Postfix queue-manager tuning for transport {service}; sluice's per-backend gates use the <transport>_sluice_* parameters"
                ));
            }
            if !is_transport
                && (params::PER_TRANSPORT.contains(&suffix) || params::is_unsupported_per_transport(suffix))
            {
                return Some(format!("{service} is a master.cf service sluice does not use"));
            }
        }
        if let Some(reason) = params::unsupported_reason(name) {
            return Some(format!("not implemented by sluice: {reason}"));
        }
        Some("unknown parameter".into())
    }

    /// Builds one configuration: main.cf plus `overrides` (from the
    /// master.cf line at `line`) for `service`.
    fn build_scope(
        &mut self,
        overrides: &[(String, String)],
        line: usize,
        service: Option<&str>,
        info: Arc<Vec<TransportInfo>>,
    ) -> Config {
        let mut cache = std::mem::take(&mut self.cache);
        let mut errors: Vec<Diagnostic> = Vec::new();
        let mut warnings: Vec<Diagnostic> = Vec::new();
        let config = {
            let mut scope =
                Scope { loader: &*self, overrides, override_line: line, service, computed: HashMap::new() };
            scope.compute_defaults();
            let scope = scope;
            build_config(&scope, service, info, &mut cache, &mut errors, &mut warnings)
        };
        self.cache = cache;
        for (name, _) in overrides {
            if let Some(w) = self.classify(name) {
                warnings.push(Diagnostic::param(&self.master_path, Some(line), name, format!("in -o: {w}")));
            }
        }
        errors.into_iter().for_each(|d| self.report.error(d));
        warnings.into_iter().for_each(|d| self.report.warn(d));
        config
    }
}

/// Expands and checks every parameter visible in `scope`.
fn build_config(
    scope: &Scope<'_>,
    service: Option<&str>,
    info: Arc<Vec<TransportInfo>>,
    cache: &mut TableCache,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Config {
    let loader = scope.loader;
    let ex = Expander::new(scope);
    let mut config = Config {
        dir: loader.dir.clone(),
        service: service.map(str::to_owned),
        settings: HashMap::new(),
        maps: HashMap::new(),
        restrictions: HashMap::new(),
        domain_lists: HashMap::new(),
        host_lists: HashMap::new(),
        mynetworks: Vec::new(),
        parent_features: Vec::new(),
        services: Vec::new(),
        transports: Vec::new(),
        transport_info: info,
    };
    let mut names: Vec<(String, Kind)> = PARAMS.iter().map(|p| (p.name.to_owned(), p.kind)).collect();
    let mut derived: Vec<(&String, &&'static str)> = loader.derived.iter().collect();
    derived.sort();
    for (name, base) in derived {
        if let Some(b) = params::find(base) {
            names.push((name.clone(), b.kind));
        }
    }
    // parent_domain_matches_subdomains first: the lists below need it.
    if let Ok(v) = ex.param("parent_domain_matches_subdomains") {
        config.parent_features = values::split_list(&v).unwrap_or_default();
    }

    for (name, kind) in names {
        let raw = expand::Source::raw(scope, &name).map(Cow::into_owned).unwrap_or_default();
        let source = scope.source(&name);
        let is_default = source == Source::Default;
        let value = match ex.param(&name) {
            Ok(v) => v,
            Err(e) => {
                errors.push(scope.diag(&e.param, e.message));
                config
                    .settings
                    .insert(name, Setting { raw, value: String::new(), source, typed: Typed::Text });
                continue;
            }
        };
        // A default that refers to other parameters (`$mynetworks`,
        // `$default_destination_concurrency_limit`) can only be wrong
        // because of them, and their own error says so: do not repeat it.
        let quiet = is_default && raw.contains('$');
        let mut local_errors: Vec<Diagnostic> = Vec::new();
        let errors_here: &mut Vec<Diagnostic> = if quiet { &mut local_errors } else { &mut *errors };
        let origin_file = match &source {
            Source::File { file, .. } => file.clone(),
            Source::Default => loader.main_path.clone(),
        };
        let origin_line = match &source {
            Source::File { line, .. } => Some(*line),
            Source::Default => None,
        };
        let origin = Origin { file: &origin_file, line: origin_line, param: &name };
        let typed = match kind {
            Kind::Bool => values::parse_bool(&value).map(Typed::Bool),
            Kind::Int { min } => values::parse_int(&value).and_then(|i| {
                if i < min { Err(format!("value {i} is below the minimum {min}")) } else { Ok(Typed::Int(i)) }
            }),
            Kind::Time { unit, ms, nonzero } => values::parse_time(&value, unit, ms).and_then(|d| {
                if nonzero && d.is_zero() {
                    Err(format!("time value \"{}\" must be greater than zero", value.trim()))
                } else {
                    Ok(Typed::Time(d))
                }
            }),
            Kind::Size => values::parse_size(&value).map(Typed::Size),
            Kind::Rate => values::parse_rate(&value).map(Typed::Rate),
            Kind::Listen => values::parse_listen(&value).map(Typed::Listen),
            Kind::Port => values::parse_port(&value).map(|_| Typed::Text),
            Kind::Enum(words) => {
                let v = value.trim();
                if words.contains(&v) {
                    Ok(Typed::Text)
                } else {
                    Err(format!(
                        "bad value \"{v}\" (expected {})",
                        words
                            .iter()
                            .map(|w| if w.is_empty() { "empty" } else { w })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            Kind::Level => match expand::compare_levels(&value, "2") {
                Some(std::cmp::Ordering::Less) => {
                    if !is_default {
                        warnings.push(scope.diag(
                            &name,
                            "sluice uses the defaults of compatibility level 2 and later (relay_domains empty, mynetworks_style host, smtpd_relay_restrictions set)",
                        ));
                    }
                    Ok(Typed::Text)
                }
                Some(_) => Ok(Typed::Text),
                None => Err(format!("bad compatibility level \"{value}\"")),
            },
            Kind::Protocols => parse_protocols(&value).map(|_| Typed::Text),
            Kind::TlsProtocols => values::parse_tls_protocols(&value).map(|_| Typed::Text),
            Kind::Interfaces => interface_addresses(&value).map(|_| Typed::Text),
            Kind::Str => Ok(Typed::Text),
            Kind::List => values::split_list(&value).map(|_| Typed::Text),
            Kind::Maps => {
                let mut maps = Maps::default();
                match values::split_list(&value) {
                    Ok(items) => {
                        for item in items {
                            if let Some(t) =
                                tables::open(&item, &loader.dir, &origin, cache, errors_here, warnings)
                            {
                                maps.tables.push(t);
                            }
                        }
                    }
                    Err(e) => errors_here.push(scope.diag(&name, e)),
                }
                config.maps.insert(name.clone(), maps);
                Ok(Typed::Text)
            }
            Kind::Restrictions => {
                let r = restrictions::parse(&value, &origin, &loader.dir, cache, errors_here, warnings);
                config.restrictions.insert(name.clone(), r);
                Ok(Typed::Text)
            }
            Kind::DomainList | Kind::HostList => {
                let mut b = Build {
                    origin: origin.clone(),
                    dir: &loader.dir,
                    cache: &mut *cache,
                    errors: &mut *errors_here,
                    warnings: &mut *warnings,
                };
                if kind == Kind::DomainList {
                    let parent = config.parent_features.contains(&name);
                    let list: DomainList = b.domain_list(&value, parent);
                    config.domain_lists.insert(name.clone(), list);
                } else {
                    let list: HostList = b.host_list(&value);
                    if name == "mynetworks" {
                        config.mynetworks = list.networks();
                    }
                    config.host_lists.insert(name.clone(), list);
                }
                Ok(Typed::Text)
            }
            Kind::Transport => check_transport(&config.transport_info, &value, false).map(|_| Typed::Text),
            Kind::NextHop => {
                if value.trim().is_empty() {
                    Ok(Typed::Text)
                } else {
                    route::parse_nexthop(&value, Protocol::Smtp, 25, 24, Path::new("/")).map(|_| Typed::Text)
                }
            }
        };
        let typed = typed.unwrap_or_else(|m| {
            let m = if is_default { format!("{m} (default \"{}\")", raw_text(scope, &name)) } else { m };
            errors_here.push(scope.diag(&name, m));
            Typed::Text
        });
        config.settings.insert(name, Setting { raw, value, source, typed });
    }

    for (by, name) in ex.undefined() {
        if by.is_empty() {
            continue;
        }
        let what = if params::unsupported_reason(&name).is_some() {
            format!(
                "${name} is a Postfix parameter sluice does not implement; it expands to empty unless set in main.cf"
            )
        } else {
            format!("${name} is not defined and expands to empty")
        };
        warnings.push(scope.diag(&by, what));
    }
    check_tls(&config, scope, errors);
    check_transport_maps(&config, scope, errors);
    check_header_checks(&config, scope, errors, warnings);
    config
}

/// Every fixed header_checks and body_checks result must be an action
/// Postfix knows; one sluice does not take (it relays mail unchanged) is a
/// warning.
fn check_header_checks(
    config: &Config,
    scope: &Scope<'_>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let tables = ["header_checks", "body_checks"]
        .into_iter()
        .flat_map(|param| config.maps(param).tables.iter().map(move |t| (param, t)));
    for (param, table) in tables {
        table.each_result(&mut |at, result| {
            let diag = |m: String| match at {
                Some((file, line)) => Diagnostic::param(file, Some(line), param, m),
                None => scope.diag(param, format!("{}: {m}", table.name())),
            };
            match restrictions::HeaderAction::parse(result) {
                Err(m) => errors.push(diag(m)),
                Ok(restrictions::HeaderAction::Unsupported(word)) => warnings.push(diag(format!(
                    "{word} is not supported (sluice relays mail unchanged); it is taken as DUNNO"
                ))),
                Ok(_) => {}
            }
        });
    }
}

/// Checks a `transport:nexthop` value: the transport is defined (master.cf
/// or built in) and its next hop parses. In a table (`in_table`) an empty
/// transport keeps the default one; its next hop is then checked by LMTP's
/// rules, the more lenient, so a valid entry is never refused.
fn check_transport(info: &[TransportInfo], value: &str, in_table: bool) -> Result<(), String> {
    let (t, nexthop) = route::split_result(value);
    let kind = match info_kind(info, t) {
        Some(kind) => kind,
        None if in_table && t.is_empty() => TransportKind::Deliver(Protocol::Lmtp),
        None => return Err(format!("transport \"{t}\" is not defined in master.cf")),
    };
    match kind {
        TransportKind::Deliver(p) if !nexthop.is_empty() => {
            route::parse_nexthop(nexthop, p, 25, 24, Path::new("/")).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// Every fixed result in transport_maps must name a defined transport and
/// a next hop sluice can parse: a typo is an error naming the table's file
/// and line when the configuration loads (and `sluice config check` and a
/// reload refuse it), not a deferral when mail for that domain arrives.
fn check_transport_maps(config: &Config, scope: &Scope<'_>, errors: &mut Vec<Diagnostic>) {
    for table in &config.maps("transport_maps").tables {
        table.each_result(&mut |at, result| {
            if let Err(m) = check_transport(&config.transport_info, result, true) {
                errors.push(match at {
                    Some((file, line)) => {
                        Diagnostic::param(file, Some(line), "transport_maps", format!("\"{result}\": {m}"))
                    }
                    None => scope.diag("transport_maps", format!("{}: \"{result}\": {m}", table.name())),
                });
            }
        });
    }
}

/// The text of `name`'s default for messages.
fn raw_text(scope: &Scope<'_>, name: &str) -> String {
    expand::Source::raw(scope, name).map(Cow::into_owned).unwrap_or_default()
}

fn info_kind(info: &[TransportInfo], name: &str) -> Option<TransportKind> {
    info.iter().find(|t| t.name == name).map(|t| t.kind)
}

/// STARTTLS needs a readable certificate and key: one
/// `smtpd_tls_chain_files` file, or `smtpd_tls_cert_file` and
/// `smtpd_tls_key_file`.
fn check_tls(config: &Config, scope: &Scope<'_>, errors: &mut Vec<Diagnostic>) {
    let level = config.string("smtpd_tls_security_level").trim();
    if !matches!(level, "may" | "encrypt") {
        return;
    }
    let chain = config.list("smtpd_tls_chain_files");
    match chain.as_slice() {
        [] => {}
        [path] => {
            if let Err(e) = std::fs::File::open(path) {
                errors.push(scope.diag("smtpd_tls_chain_files", format!("cannot read {path}: {e}")));
            }
            return;
        }
        _ => {
            errors.push(scope.diag(
                "smtpd_tls_chain_files",
                format!("{} files given; sluice takes one (one key algorithm)", chain.len()),
            ));
            return;
        }
    }
    for name in ["smtpd_tls_cert_file", "smtpd_tls_key_file"] {
        let path = config.string(name).trim();
        if name == "smtpd_tls_key_file" && path == config.string("smtpd_tls_cert_file").trim() {
            // The key is in the certificate file: already checked.
            continue;
        }
        if path.is_empty() {
            errors.push(scope.diag(name, format!("smtpd_tls_security_level = {level} needs {name}")));
        } else if let Err(e) = std::fs::File::open(path) {
            errors.push(scope.diag(name, format!("cannot read {path}: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locals() -> Vec<(IpAddr, u8)> {
        vec![
            ("127.0.0.1".parse().unwrap(), 8),
            ("192.0.2.2".parse().unwrap(), 24),
            ("::1".parse().unwrap(), 128),
            ("fd00::2".parse().unwrap(), 64),
        ]
    }

    #[test]
    fn mynetworks_styles_as_postfix_prints_them() {
        let l = locals();
        assert_eq!(
            default_mynetworks("host", "all", "all", &l).unwrap(),
            "127.0.0.1/32 192.0.2.2/32 [::1]/128 [fd00::2]/128"
        );
        assert_eq!(
            default_mynetworks("subnet", "all", "all", &l).unwrap(),
            "127.0.0.0/8 192.0.2.0/24 [::1]/128 [fd00::]/64"
        );
        assert_eq!(default_mynetworks("class", "all", "ipv4", &l).unwrap(), "127.0.0.0/8 192.0.2.0/24");
        assert_eq!(default_mynetworks("host", "loopback-only", "all", &l).unwrap(), "127.0.0.1/32 [::1]/128");
        assert_eq!(default_mynetworks("subnet", "192.0.2.2", "all", &l).unwrap(), "192.0.2.0/24");
        assert!(default_mynetworks("wide", "all", "all", &l).is_err());
    }

    #[test]
    fn protocols_and_interfaces() {
        assert_eq!(parse_protocols("all"), Ok((true, true)));
        assert_eq!(parse_protocols("ipv4, ipv6"), Ok((true, true)));
        assert_eq!(parse_protocols("ipv6"), Ok((false, true)));
        assert!(parse_protocols("ipx").is_err());
        assert_eq!(interface_addresses("all"), Ok(None));
        assert_eq!(interface_addresses("127.0.0.1, [::1]").unwrap().unwrap().len(), 2);
        assert!(interface_addresses("").is_err());
    }
}
