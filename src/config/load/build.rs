//! The second half of loading: one configuration from a scope (main.cf
//! plus a service's `-o` overrides). Expands and type-checks every
//! parameter through the `params.rs` table, opens the tables, parses the
//! restriction and match lists, and runs the checks that need the whole
//! configuration (TLS files, transport map results, header_checks
//! actions). Problems go to the caller's lists, named by file, line and
//! parameter.

use super::*;

/// Expands and checks every parameter visible in `scope`.
pub(super) fn build_config(
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
        milters: Vec::new(),
        macro_defaults: Vec::new(),
    };
    let mut names: Vec<(String, Kind)> = PARAMS.iter().map(|p| (p.name.to_owned(), p.kind)).collect();
    let mut derived: Vec<(&String, &&'static str)> = loader.derived.iter().collect();
    derived.sort();
    for (name, base) in derived {
        if let Some(b) = params::find(base) {
            names.push((name.clone(), b.kind));
        }
    }
    // The directory tables opened below take main.cf's settings (they are
    // shared by every service, so -o overrides of these do not apply).
    if service.is_none() {
        cache.directory = directory_settings(&ex);
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
            Kind::NameServers => values::parse_name_servers(&value).map(|_| Typed::Text),
            Kind::RedisUrls => values::parse_redis_urls(&value).map(|_| Typed::Text),
            Kind::Interfaces => interface_addresses(&value).map(|_| Typed::Text),
            Kind::Addresses => addresses(&value).map(|_| Typed::Text),
            Kind::Str => Ok(Typed::Text),
            Kind::List => values::split_list(&value).map(|_| Typed::Text),
            Kind::Words(words) => values::split_list(&value).and_then(|items| {
                match items.iter().find(|i| !words.contains(&i.to_ascii_lowercase().as_str())) {
                    Some(bad) => {
                        Err(format!("unknown word \"{bad}\" (expected any of {})", words.join(", ")))
                    }
                    None => Ok(Typed::Text),
                }
            }),
            Kind::Maps => {
                let mut maps = Maps::default();
                match values::split_list(&value) {
                    Ok(items) => {
                        for item in items {
                            if let Some(t) =
                                tables::open(&item, &loader.dir, &origin, cache, errors_here, warnings)
                            {
                                // Content checks run as the message streams
                                // in, where nothing waits for a server.
                                if t.is_directory() && (name == "header_checks" || name == "body_checks") {
                                    errors_here.push(scope.diag(
                                        &name,
                                        format!("{item}: a directory table cannot be used here (use regexp: or pcre:)"),
                                    ));
                                    continue;
                                }
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
    check_fleet(&config, scope, errors);
    check_transport_maps(&config, scope, errors);
    check_header_checks(&config, scope, errors, warnings);
    build_milters(&mut config, scope, errors);
    config
}

/// A time parameter, or `secs` when its value was refused (its own error
/// says so; the milter list is still checked).
fn time_or(config: &Config, name: &str, secs: u64) -> std::time::Duration {
    match config.settings.get(name).map(|s| &s.typed) {
        Some(Typed::Time(d)) => *d,
        _ => std::time::Duration::from_secs(secs),
    }
}

/// `smtpd_milters` with the global `milter_*` settings it starts from, and
/// `milter_macro_defaults`. Every mistake names the parameter it is in.
fn build_milters(config: &mut Config, scope: &Scope<'_>, errors: &mut Vec<Diagnostic>) {
    use crate::config::milters::{self, MilterDefault, MilterGlobals, MilterProtocol};
    let protocol = match MilterProtocol::parse(config.string("milter_protocol")) {
        Ok(p) => p,
        Err(e) => {
            errors.push(scope.diag("milter_protocol", e));
            MilterProtocol { version: 6, no_header_reply: false }
        }
    };
    let globals = MilterGlobals {
        protocol,
        // Checked against the same words when the value was typed.
        default_action: MilterDefault::parse(config.string("milter_default_action"))
            .unwrap_or(MilterDefault::Tempfail),
        connect_timeout: time_or(config, "milter_connect_timeout", 30),
        command_timeout: time_or(config, "milter_command_timeout", 30),
        content_timeout: time_or(config, "milter_content_timeout", 300),
    };
    let queue_dir = PathBuf::from(config.string("queue_directory"));
    match milters::parse_list(config.string("smtpd_milters"), &globals, &queue_dir) {
        Ok(list) => config.milters = list,
        Err(messages) => messages.into_iter().for_each(|m| errors.push(scope.diag("smtpd_milters", m))),
    }
    match milters::parse_macro_defaults(config.string("milter_macro_defaults")) {
        Ok(d) => config.macro_defaults = d,
        Err(e) => errors.push(scope.diag("milter_macro_defaults", e)),
    }
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

/// STARTTLS needs a readable certificate and key: the
/// `smtpd_tls_chain_files` (one per key algorithm), or else
/// `smtpd_tls_cert_file` with `smtpd_tls_key_file`, and/or
/// `smtpd_tls_eccert_file` with `smtpd_tls_eckey_file`.
fn check_tls(config: &Config, scope: &Scope<'_>, errors: &mut Vec<Diagnostic>) {
    let level = config.string("smtpd_tls_security_level").trim();
    if !matches!(level, "may" | "encrypt") {
        return;
    }
    let readable = |name: &str, path: &str, errors: &mut Vec<Diagnostic>| {
        if let Err(e) = std::fs::File::open(path) {
            errors.push(scope.diag(name, format!("cannot read {path}: {e}")));
        }
    };
    let files = config.smtpd_tls_key_files();
    if files.is_empty() {
        errors.push(scope.diag(
            "smtpd_tls_cert_file",
            format!("smtpd_tls_security_level = {level} needs smtpd_tls_cert_file"),
        ));
    }
    for f in &files {
        readable(f.cert_param, &f.cert, errors);
        // The key in the certificate's file: already checked.
        if f.key != f.cert {
            readable(f.key_param, &f.key, errors);
        }
    }
}

/// Fleet mode through Redis Sentinel: the master's name needs the
/// sentinels' URLs, has no spaces, and each sentinel URL names its port
/// (a bare host would mean 6379, a Redis server's port, not a sentinel's).
fn check_fleet(config: &Config, scope: &Scope<'_>, errors: &mut Vec<Diagnostic>) {
    let master = config.string("sluice_fleet_sentinel_master").trim();
    if master.is_empty() {
        return;
    }
    if master.contains(char::is_whitespace) || master.contains(',') {
        errors.push(scope.diag(
            "sluice_fleet_sentinel_master",
            format!("bad master name \"{master}\": one name, as in the sentinels' \"sentinel monitor NAME\""),
        ));
    }
    let urls = config.list("sluice_fleet_redis");
    if urls.is_empty() {
        errors.push(scope.diag(
            "sluice_fleet_sentinel_master",
            "needs sluice_fleet_redis: the URLs of the Redis Sentinels that name the master",
        ));
    }
    for url in urls.iter().filter(|u| !values::redis_url_has_port(u)) {
        errors.push(scope.diag(
            "sluice_fleet_redis",
            format!("sentinel URL \"{url}\" has no port (a sentinel listens on 26379 unless set otherwise)"),
        ));
    }
}

/// main.cf's `sluice_table_*` values; a bad one keeps its default here
/// (the parameter's own check reports it).
fn directory_settings<S: expand::Source + ?Sized>(
    ex: &Expander<'_, S>,
) -> tables::directory::DirectorySettings {
    let value = |name: &str| ex.param(name).ok();
    tables::directory::DirectorySettings::from_values(
        |n| value(n).and_then(|v| values::parse_time(&v, 's', true).ok()),
        |n| value(n).and_then(|v| values::parse_int(&v).ok()),
        |n| value(n).and_then(|v| values::parse_size(&v).ok()),
    )
}
