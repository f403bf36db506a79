//! The inbound server's settings as plain typed values, built once per
//! configuration load from `main.cf` (and a listener's `-o` overrides), so
//! a session never parses configuration and tests can build settings
//! directly.
//!
//! Owns the mapping from Postfix parameter names to typed fields; must not
//! read files other than the TLS certificate and key, and never holds
//! per-session state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::content::BareNewline;
use super::policy::{
    AccessTable, Lookups, Networks, Policy, PolicyError, Restriction, TempfailAction, VerifyReplies,
};
use super::tls::{self, TlsError};
use crate::config::{self, Config, Known, LookupError, Maps, MilterSpec, SmtpdService};
use crate::milter::MacroLists;

/// `smtpd_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsLevel {
    /// No STARTTLS.
    #[default]
    None,
    /// STARTTLS offered, not required.
    May,
    /// STARTTLS required before `MAIL` (`530 5.7.0`).
    Encrypt,
}

/// Why settings could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{param}: {message}")]
    Value { param: &'static str, message: String },
}

/// Everything a listener and its sessions need to know, typed.
///
/// `Default` is Postfix's defaults with sluice's safer choices
/// (`smtpd_forbid_bare_newline = normalize`,
/// `smtpd_forbid_unauth_pipelining = yes`, VRFY off) and host name
/// `localhost`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `myhostname`: in replies, the banner and `Received:`.
    pub myhostname: String,
    /// `smtpd_banner`: the greeting text after `220 `.
    pub banner: String,
    /// `mail_name`: in `Received:`.
    pub mail_name: String,
    /// `myorigin`: the domain of `RCPT TO:<Postmaster>` (RFC 5321 4.5.1),
    /// which is then checked and routed as `postmaster@$myorigin`.
    pub myorigin: String,

    /// `message_size_limit` in bytes; 0 means no limit.
    pub message_size_limit: u64,
    /// `smtpd_recipient_limit`.
    pub recipient_limit: usize,
    /// `line_length_limit`: longest command line accepted.
    pub command_line_limit: usize,
    /// Longest message content line before CRLF (RFC 5321: 998); `None`
    /// accepts any length.
    pub data_line_limit: Option<usize>,
    /// `header_size_limit`: how much of the header section is examined.
    pub header_size_limit: usize,
    /// `hopcount_limit`: `Received:` headers (ours included) that mean a loop.
    pub hopcount_limit: usize,
    /// `smtpd_policy_service_timeout`: the whole exchange with a policy
    /// server.
    pub policy_timeout: Duration,
    /// `smtpd_policy_service_default_action`: the answer when a policy
    /// server cannot be asked.
    pub policy_default_action: String,
    /// `header_checks`: patterns over each logical header line.
    pub header_checks: crate::config::Maps,
    /// `body_checks`: patterns over each body line.
    pub body_checks: crate::config::Maps,
    /// The configuration whose `virtual_alias_maps` expand recipients at
    /// `RCPT` (`alias.rs`); `None` when it names no table.
    pub aliases: Option<Arc<Config>>,
    /// `body_checks_size_limit`: how much of the body they see.
    pub body_checks_size_limit: usize,
    /// `line_length_limit`: body lines longer than this are checked in
    /// pieces, as Postfix stores them.
    pub line_length_limit: usize,

    /// `smtpd_timeout`: to receive one command line or send one reply.
    pub timeout: Duration,
    /// `smtpd_starttls_timeout`: for the TLS handshake.
    pub starttls_timeout: Duration,
    /// `smtpd_upstream_proxy_protocol = haproxy`: read a PROXY header first.
    pub upstream_proxy: bool,
    /// `smtpd_upstream_proxy_timeout`.
    pub upstream_proxy_timeout: Duration,
    /// `sluice_upstream_proxy_networks`: the only peers whose PROXY header
    /// is read; every other connection is closed unread.
    pub upstream_proxy_networks: Networks,
    /// `smtpd_min_data_rate` (bytes/s): DATA and BDAT must average at least
    /// this after the first `smtpd_timeout`; stops a client trickling bytes.
    pub min_data_rate: u64,
    /// Upper bound on a whole session, however it behaves.
    pub session_time_limit: Duration,
    /// Pause before the greeting, to catch clients that talk first (0: none;
    /// the check for early input is made either way).
    pub greet_pause: Duration,

    /// `smtpd_hard_error_limit`: errors after which the session is closed.
    pub hard_error_limit: u32,
    /// `smtpd_soft_error_limit`: errors after which each error reply is
    /// delayed by `error_sleep`.
    pub soft_error_limit: u32,
    /// `smtpd_error_sleep_time`.
    pub error_sleep: Duration,
    /// `smtpd_junk_command_limit`: NOOP, VRFY, HELP and RSET beyond this
    /// count as errors.
    pub junk_command_limit: u32,

    /// `smtpd_helo_required`.
    pub helo_required: bool,
    /// `smtpd_peername_lookup`: look up and confirm the client's name (when
    /// the listener has a resolver; without one every client is `unknown`).
    pub peername_lookup: bool,
    /// `sluice_peername_lookup_timeout`: the deadline of the name and DNS
    /// blocklist lookups together before the greeting, and of the
    /// sender-domain lookup at MAIL.
    pub peername_timeout: Duration,
    /// Sender authentication (`sluice_auth_*`, `sluice_spf_*`,
    /// `sluice_dmarc_*`, `sluice_arc_*`): what is checked and what the
    /// results do.
    pub auth: crate::auth::Settings,
    /// VRFY answered (`252`) when `disable_vrfy_command = no` (the default
    /// is `yes`, unlike Postfix: see the parameter table).
    pub vrfy: bool,
    /// `smtputf8_enable`.
    pub smtputf8: bool,
    /// `smtpd_discard_ehlo_keywords`, lower-case: extensions not announced
    /// and, where a client could still use them, not honoured.
    pub discard_ehlo_keywords: Vec<String>,
    /// `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// `soft_bounce`: every 5xx reply goes out (and is logged) as 4xx.
    pub soft_bounce: bool,
    /// `smtpd_forbid_bare_newline_exclusions`: clients never refused for a
    /// bare newline (normalized instead).
    pub bare_newline_exclusions: Networks,
    /// `smtpd_forbid_bare_newline_reject_code` (521 also disconnects).
    pub bare_newline_reject_code: u16,
    /// `smtpd_forbid_unauth_pipelining`: disconnect clients that talk before
    /// the greeting or pipeline where RFC 2920 forbids it.
    pub forbid_unauth_pipelining: bool,

    /// Relay and recipient restrictions.
    pub policy: Policy,

    /// `smtpd_tls_security_level`.
    pub tls_level: TlsLevel,
    /// Server TLS configuration from `smtpd_tls_cert_file`/`_key_file`;
    /// required unless the level is `none`.
    pub tls: Option<Arc<rustls::ServerConfig>>,

    /// Concurrent sessions on the listener (master.cf `maxproc`, else
    /// `default_process_limit`).
    pub max_sessions: usize,
    /// `smtpd_client_connection_count_limit` (0: none).
    pub client_connection_count_limit: u32,
    /// `smtpd_client_connection_rate_limit` per `anvil_rate_time_unit` (0: none).
    pub client_connection_rate_limit: u32,
    /// `smtpd_client_message_rate_limit` per `anvil_rate_time_unit` (0: none).
    pub client_message_rate_limit: u32,
    /// `anvil_rate_time_unit`.
    pub rate_time_unit: Duration,
    /// `smtpd_client_event_limit_exceptions`: clients exempt from the
    /// count and rate limits.
    pub limit_exceptions: Networks,
    /// `smtpd_client_ipv4_prefix_length` / `smtpd_client_ipv6_prefix_length`:
    /// the network counted as one client by the count and rate limits.
    pub client_prefix: (u8, u8),
    /// The listener's settings under stress (its configuration with
    /// `stress = yes`), which new sessions get while the listener is at
    /// its limit (see `Inbound`); `None` without a configuration (settings
    /// built in code), which never adapts.
    pub stress: Option<Arc<Settings>>,
    /// The master.cf service name, for the listener's log lines.
    pub service: String,

    /// Backpressure limits checked at every `MAIL`
    /// (`sluice_queue_high_water`, `queue_minfree`).
    pub accept_limits: sluice_queue::AcceptLimits,

    /// `smtpd_milters` and the `milter_*` settings.
    pub milters: MilterSettings,
}

/// The milters a listener's sessions ask, and what they send them.
#[derive(Debug, Clone, Default)]
pub struct MilterSettings {
    /// `smtpd_milters` (with the listener's `-o`), each with its settings.
    pub specs: Vec<MilterSpec>,
    /// The `milter_*_macros` lists and `milter_macro_defaults`.
    pub macros: Arc<MacroLists>,
    /// `milter_header_checks`.
    pub header_checks: Maps,
    /// `milter_macro_daemon_name`.
    pub daemon_name: String,
    /// `milter_macro_v`.
    pub macro_v: String,
    /// `sluice_milter_failure_threshold`.
    pub failure_threshold: u32,
    /// `sluice_milter_cooldown`.
    pub cooldown: Duration,
    /// The configuration, to name the transport and next hop of senders
    /// and recipients (`{mail_mailer}`, `{rcpt_host}`, ...).
    pub config: Option<Arc<Config>>,
}

impl MilterSettings {
    fn from_config(config: &Arc<Config>) -> MilterSettings {
        let c = config.as_ref();
        MilterSettings {
            specs: c.milters().to_vec(),
            macros: Arc::new(MacroLists::from_config(c)),
            header_checks: c.maps("milter_header_checks").clone(),
            daemon_name: c.string("milter_macro_daemon_name").to_owned(),
            macro_v: c.string("milter_macro_v").to_owned(),
            failure_threshold: u32::try_from(c.int("sluice_milter_failure_threshold")).unwrap_or(u32::MAX),
            cooldown: c.time("sluice_milter_cooldown"),
            config: Some(Arc::clone(config)),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            myhostname: "localhost".to_owned(),
            banner: "localhost ESMTP sluice".to_owned(),
            mail_name: "sluice".to_owned(),
            myorigin: "localhost".to_owned(),
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            command_line_limit: 2048,
            data_line_limit: Some(super::content::MAX_LINE),
            header_size_limit: 102_400,
            hopcount_limit: 50,
            header_checks: crate::config::Maps::default(),
            body_checks: crate::config::Maps::default(),
            body_checks_size_limit: 51_200,
            line_length_limit: 2048,
            policy_timeout: Duration::from_secs(100),
            policy_default_action: "451 4.3.5 Server configuration problem".to_owned(),
            timeout: Duration::from_secs(300),
            starttls_timeout: Duration::from_secs(300),
            upstream_proxy: false,
            upstream_proxy_timeout: Duration::from_secs(5),
            upstream_proxy_networks: Networks::List(vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ]),
            min_data_rate: 500,
            session_time_limit: Duration::from_secs(3600),
            greet_pause: Duration::ZERO,
            hard_error_limit: 20,
            soft_error_limit: 10,
            error_sleep: Duration::from_secs(1),
            junk_command_limit: 100,
            helo_required: false,
            peername_lookup: true,
            peername_timeout: Duration::from_secs(5),
            auth: crate::auth::Settings::default(),
            vrfy: false,
            smtputf8: true,
            discard_ehlo_keywords: Vec::new(),
            bare_newline: BareNewline::Normalize,
            soft_bounce: false,
            bare_newline_exclusions: Networks::default(),
            bare_newline_reject_code: 550,
            forbid_unauth_pipelining: true,
            policy: Policy::default(),
            tls_level: TlsLevel::None,
            tls: None,
            max_sessions: 100,
            client_connection_count_limit: 50,
            client_connection_rate_limit: 0,
            client_message_rate_limit: 0,
            rate_time_unit: Duration::from_secs(60),
            limit_exceptions: Networks::default(),
            client_prefix: (32, 84),
            stress: None,
            service: "smtp".to_owned(),
            accept_limits: sluice_queue::AcceptLimits::default(),
            milters: MilterSettings::default(),
            aliases: None,
        }
    }
}

impl Settings {
    /// False when `smtpd_discard_ehlo_keywords` takes the EHLO keyword
    /// `keyword` (lower case) away.
    pub fn offers(&self, keyword: &str) -> bool {
        !self.discard_ehlo_keywords.iter().any(|k| k == keyword)
    }

    /// The bare-newline mode that applies to a client. An excluded client
    /// is spared `reject` but still normalized: Postfix's exclusions exist
    /// so that local programs sending bare LF are not refused, and Postfix
    /// then stores their lines as lines anyway (its queue file holds
    /// records, not line ends). Mail from `mynetworks` is relayed to the
    /// mailbox servers like any other, so it must not reach them with bare
    /// CR or LF either; only `smtpd_forbid_bare_newline = no` keeps them.
    pub fn bare_newline_for(&self, addr: IpAddr) -> BareNewline {
        match self.bare_newline {
            BareNewline::Reject if self.bare_newline_exclusions.contains(addr) => BareNewline::Normalize,
            mode => mode,
        }
    }

    /// True when `addr` is exempt from connection count and rate limits.
    pub fn is_limit_exempt(&self, addr: IpAddr) -> bool {
        self.limit_exceptions.contains(addr)
    }

    /// The client the per-client limits count `addr` as: its network of
    /// `smtpd_client_ipv4_prefix_length` / `smtpd_client_ipv6_prefix_length`
    /// bits (an IPv4-mapped IPv6 address counts as its IPv4 form).
    pub fn client_key(&self, addr: IpAddr) -> IpAddr {
        client_network(addr, self.client_prefix)
    }

    /// Settings for one master.cf `smtpd` listener: its own configuration
    /// (main.cf with the line's `-o` overrides) and its `maxproc`, with
    /// their twin under stress.
    pub fn from_service(service: &SmtpdService) -> Result<Settings, SettingsError> {
        let mut s = Settings::from_config(&service.config)?;
        let mut stressed = Settings::from_config(&service.stressed)?;
        if let Some(n) = service.maxproc.filter(|&n| n > 0) {
            s.max_sessions = n as usize;
            stressed.max_sessions = n as usize;
        }
        s.stress = Some(Arc::new(stressed));
        Ok(s)
    }

    /// Builds settings from a loaded configuration. Fails on restriction
    /// lists that make an open relay, or a certificate that does not load
    /// (everything else was checked when the configuration was loaded).
    pub fn from_config(config: &Arc<Config>) -> Result<Settings, SettingsError> {
        let c = config.as_ref();
        // The configuration type-checked every value at load; a negative
        // number is clamped to 0 rather than wrapped.
        let count = |name: &str| u64::try_from(c.int(name)).unwrap_or(0);
        let restrictions = |name: &str| -> Vec<Restriction> {
            c.restrictions(name).iter().map(|r| restriction(r, config)).collect()
        };
        let policy = Policy {
            mynetworks: Networks::Param { config: Arc::clone(config), name: "mynetworks" },
            client: restrictions("smtpd_client_restrictions"),
            helo: restrictions("smtpd_helo_restrictions"),
            sender: restrictions("smtpd_sender_restrictions"),
            relay: restrictions("smtpd_relay_restrictions"),
            recipient: restrictions("smtpd_recipient_restrictions"),
            data: restrictions("smtpd_data_restrictions"),
            reject_unlisted_recipient: c.bool("smtpd_reject_unlisted_recipient"),
            unknown_client_reject_code: count("unknown_client_reject_code") as u16,
            non_fqdn_reject_code: count("non_fqdn_reject_code") as u16,
            invalid_hostname_reject_code: count("invalid_hostname_reject_code") as u16,
            unknown_hostname_reject_code: count("unknown_hostname_reject_code") as u16,
            rbl_reject_code: count("maps_rbl_reject_code") as u16,
            unknown_address_reject_code: count("unknown_address_reject_code") as u16,
            nullmx_reject_code: count("nullmx_reject_code") as u16,
            verify: VerifyReplies {
                reject_code: count("unverified_recipient_reject_code") as u16,
                defer_code: count("unverified_recipient_defer_code") as u16,
                tempfail_action: TempfailAction::parse(c.string("unverified_recipient_tempfail_action")),
                reject_reason: c.string("unverified_recipient_reject_reason").to_owned(),
            },
            lookups: Arc::new(ConfigLookups { config: Arc::clone(config) }),
        };
        policy.validate()?;

        let bare_newline = BareNewline::parse(c.string("smtpd_forbid_bare_newline")).ok_or_else(|| {
            SettingsError::Value {
                param: "smtpd_forbid_bare_newline",
                message: format!("unknown value \"{}\"", c.string("smtpd_forbid_bare_newline")),
            }
        })?;
        let tls_level = match c.string("smtpd_tls_security_level").trim().to_ascii_lowercase().as_str() {
            "" | "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            other => {
                return Err(SettingsError::Value {
                    param: "smtpd_tls_security_level",
                    message: format!("unsupported level \"{other}\" (none, may or encrypt)"),
                });
            }
        };
        let tls = match tls_level {
            TlsLevel::None => None,
            _ => {
                // Postfix: the mandatory list where TLS is required.
                let param = match tls_level {
                    TlsLevel::Encrypt => "smtpd_tls_mandatory_protocols",
                    _ => "smtpd_tls_protocols",
                };
                let protocols = crate::config::parse_tls_protocols(c.string(param))
                    .map_err(|message| SettingsError::Value { param, message })?;
                let keys: Vec<_> = c
                    .smtpd_tls_key_files()
                    .into_iter()
                    .map(|f| tls::KeyFiles { cert: f.cert.into(), key: f.key.into() })
                    .collect();
                Some(tls::server_config_from_files(&keys, protocols, c.bool("tls_preempt_cipherlist"))?)
            }
        };
        let networks = |name: &'static str| Networks::Param { config: Arc::clone(config), name };
        let prefix = |param: &'static str, max: u64| match count(param) {
            n if n <= max => Ok(n as u8),
            n => Err(SettingsError::Value {
                param,
                message: format!("{n} is not a prefix length (0 to {max})"),
            }),
        };
        let client_prefix =
            (prefix("smtpd_client_ipv4_prefix_length", 32)?, prefix("smtpd_client_ipv6_prefix_length", 128)?);

        Ok(Settings {
            myhostname: c.string("myhostname").to_owned(),
            banner: c.string("smtpd_banner").to_owned(),
            mail_name: c.string("mail_name").to_owned(),
            myorigin: c.string("myorigin").to_owned(),
            message_size_limit: c.size("message_size_limit"),
            recipient_limit: count("smtpd_recipient_limit") as usize,
            // RFC 5321 4.5.3.1.4: at least 512 octets must be accepted.
            command_line_limit: (count("line_length_limit") as usize).max(512),
            data_line_limit: Some(super::content::MAX_LINE),
            header_size_limit: count("header_size_limit") as usize,
            hopcount_limit: count("hopcount_limit") as usize,
            header_checks: c.maps("header_checks").clone(),
            body_checks: c.maps("body_checks").clone(),
            body_checks_size_limit: usize::try_from(c.size("body_checks_size_limit")).unwrap_or(usize::MAX),
            line_length_limit: (count("line_length_limit") as usize).max(1),
            policy_timeout: c.time("smtpd_policy_service_timeout"),
            policy_default_action: c.string("smtpd_policy_service_default_action").to_owned(),
            timeout: c.time("smtpd_timeout"),
            starttls_timeout: c.time("smtpd_starttls_timeout"),
            upstream_proxy: c.string("smtpd_upstream_proxy_protocol").trim() == "haproxy",
            upstream_proxy_timeout: c.time("smtpd_upstream_proxy_timeout"),
            upstream_proxy_networks: networks("sluice_upstream_proxy_networks"),
            min_data_rate: count("smtpd_min_data_rate"),
            session_time_limit: Settings::default().session_time_limit,
            greet_pause: Duration::ZERO,
            hard_error_limit: count("smtpd_hard_error_limit") as u32,
            soft_error_limit: count("smtpd_soft_error_limit") as u32,
            error_sleep: c.time("smtpd_error_sleep_time"),
            junk_command_limit: count("smtpd_junk_command_limit") as u32,
            helo_required: c.bool("smtpd_helo_required"),
            peername_lookup: c.bool("smtpd_peername_lookup"),
            peername_timeout: c.time("sluice_peername_lookup_timeout"),
            auth: crate::auth::Settings::from_config(config),
            // VRFY is off unless the administrator asks for it, whatever
            // Postfix's default (`no`) says.
            vrfy: !c.bool("disable_vrfy_command"),
            smtputf8: c.bool("smtputf8_enable"),
            discard_ehlo_keywords: c
                .list("smtpd_discard_ehlo_keywords")
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            bare_newline,
            soft_bounce: c.bool("soft_bounce"),
            bare_newline_exclusions: networks("smtpd_forbid_bare_newline_exclusions"),
            bare_newline_reject_code: count("smtpd_forbid_bare_newline_reject_code") as u16,
            forbid_unauth_pipelining: c.bool("smtpd_forbid_unauth_pipelining"),
            policy,
            tls_level,
            tls,
            max_sessions: count("default_process_limit").max(1) as usize,
            client_connection_count_limit: count("smtpd_client_connection_count_limit") as u32,
            client_connection_rate_limit: count("smtpd_client_connection_rate_limit") as u32,
            client_message_rate_limit: count("smtpd_client_message_rate_limit") as u32,
            rate_time_unit: c.time("anvil_rate_time_unit"),
            limit_exceptions: networks("smtpd_client_event_limit_exceptions"),
            client_prefix,
            stress: None,
            service: c.string("service_name").to_owned(),
            accept_limits: accept_limits(c),
            milters: MilterSettings::from_config(config),
            aliases: c.has_virtual_aliases().then(|| Arc::clone(config)),
        })
    }
}

/// The limits past which the queue accepts no new mail (`sluice_queue_high_water`,
/// `sluice_queue_high_water_bytes`, `queue_minfree`) of a configuration,
/// for `MAIL` and for the `/health` endpoint. As Postfix's smtpd, at least
/// 1.5 × `message_size_limit` must be free whatever `queue_minfree` says:
/// a message that is accepted must fit.
pub fn accept_limits(c: &Config) -> sluice_queue::AcceptLimits {
    let size_limit = c.size("message_size_limit");
    sluice_queue::AcceptLimits {
        max_messages: u64::try_from(c.int("sluice_queue_high_water")).unwrap_or(0),
        max_bytes: c.size("sluice_queue_high_water_bytes"),
        min_free: c.size("queue_minfree").max(size_limit.saturating_add(size_limit / 2)),
    }
}

/// The network of `addr` with `prefix` = (IPv4, IPv6) bits kept.
pub(super) fn client_network(addr: IpAddr, prefix: (u8, u8)) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.0.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix.1.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

/// A restriction as the configuration parsed it, with its tables.
fn restriction(r: &config::Restriction, config: &Arc<Config>) -> Restriction {
    let r = r.map_table(|maps: &Maps| -> Arc<dyn AccessTable> {
        let name = maps.tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
        Arc::new(ConfigTable { maps: maps.clone(), config: Arc::clone(config), name })
    });
    match r {
        // `unix:private/policy` is under queue_directory, as in Postfix.
        Restriction::CheckPolicyService(p) => {
            Restriction::CheckPolicyService(p.under(std::path::Path::new(config.string("queue_directory"))))
        }
        r => r,
    }
}

/// [`Lookups`] over a loaded configuration.
struct ConfigLookups {
    config: Arc<Config>,
}

impl std::fmt::Debug for ConfigLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigLookups")
    }
}

impl Lookups for ConfigLookups {
    fn is_relay_domain(&self, domain: &str, known: &Known) -> Result<bool, LookupError> {
        self.config.is_relay_domain_in(domain, known)
    }

    fn relay_recipient(&self, address: &str, known: &Known) -> Result<Option<bool>, LookupError> {
        let maps = self.config.maps("relay_recipient_maps");
        if maps.is_empty() {
            return Ok(None);
        }
        Ok(Some(maps.lookup_address_in(&self.config, "relay_recipient_maps", address, known)?.is_some()))
    }

    fn is_virtual_alias(&self, address: &str, known: &Known) -> Result<bool, LookupError> {
        if !self.config.has_virtual_aliases() {
            return Ok(false);
        }
        self.config.is_virtual_alias_in(address, known)
    }

    fn virtual_alias_domain(&self, domain: &str, known: &Known) -> Result<Option<u16>, LookupError> {
        let code = self.config.int("unknown_virtual_alias_reject_code") as u16;
        Ok(self.config.is_virtual_alias_domain_in(domain, known)?.then_some(code))
    }
}

/// An access table of the configuration, with Postfix's key orders
/// (`smtpd_access_maps` decides parent-domain matching).
struct ConfigTable {
    maps: Maps,
    config: Arc<Config>,
    name: String,
}

impl std::fmt::Debug for ConfigTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigTable({})", self.name)
    }
}

impl AccessTable for ConfigTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn lookup_address(&self, address: &str, known: &Known) -> Result<Option<String>, LookupError> {
        self.maps.lookup_address_in(&self.config, "smtpd_access_maps", address, known)
    }

    fn lookup_client(&self, addr: IpAddr, known: &Known) -> Result<Option<String>, LookupError> {
        self.maps.lookup_client_in(addr, known)
    }

    fn lookup_domain(&self, domain: &str, known: &Known) -> Result<Option<String>, LookupError> {
        self.maps.lookup_domain_in(&self.config, "smtpd_access_maps", domain, known)
    }
}

#[cfg(test)]
mod tests;
