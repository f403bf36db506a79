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

mod build;

use self::build::build_config;

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

/// The addresses of this machine's network interfaces (what a wildcard
/// listener is reachable at).
pub fn machine_addresses() -> Vec<IpAddr> {
    local_addresses().into_iter().map(|(ip, _)| ip).collect()
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

impl Config {
    /// `proxy_interfaces`: the addresses of a proxy or NAT that passes
    /// mail on to this host (resolved when asked; checked at load).
    pub fn proxy_interfaces(&self) -> Vec<IpAddr> {
        addresses(self.string("proxy_interfaces")).unwrap_or_default()
    }
}

/// An address list (`proxy_interfaces`): IP addresses (bracketed or not)
/// and host names, each resolved; empty is none.
pub(crate) fn addresses(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for w in values::split_list(value)? {
        let host = w.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&w);
        out.extend(resolve_host(host)?);
    }
    Ok(out)
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
            // Postfix's master passes `-o stress=yes` after the line's own
            // options; a diagnostic both scopes share is reported once.
            let mut stress = e.overrides.clone();
            stress.push(("stress".to_owned(), "yes".to_owned()));
            let stressed = self.build_scope(&stress, e.line, Some(&e.service), info.clone());
            match listener_addrs(&e.service, &cfg) {
                Ok(addrs) => root.services.push(SmtpdService {
                    name: e.service.clone(),
                    addrs,
                    maxproc: e.maxproc,
                    config: Arc::new(cfg),
                    stressed: Arc::new(stressed),
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

#[cfg(test)]
mod tests;
