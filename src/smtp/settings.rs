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

use ipnet::IpNet;

use super::data::BareNewline;
use super::policy::{self, Lookups, Policy, PolicyError};
use super::tls::{self, TlsError};
use crate::config::{Config, SmtpdService, TableError};

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

    /// `smtpd_timeout`: to receive one command line or send one reply.
    pub timeout: Duration,
    /// `smtpd_starttls_timeout`: for the TLS handshake.
    pub starttls_timeout: Duration,
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
    /// `disable_vrfy_command = no` (off by default).
    pub vrfy: bool,
    /// `smtputf8_enable`.
    pub smtputf8: bool,
    /// `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// `smtpd_forbid_bare_newline_exclusions`: clients treated as `no`.
    pub bare_newline_exclusions: Vec<IpNet>,
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
    pub limit_exceptions: Vec<IpNet>,

    /// Backpressure limits checked at every `MAIL`
    /// (`sluice_queue_high_water`, `queue_minfree`).
    pub admission: sluice_queue::Admission,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            myhostname: "localhost".to_owned(),
            banner: "localhost ESMTP sluice".to_owned(),
            mail_name: "sluice".to_owned(),
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            command_line_limit: 2048,
            data_line_limit: Some(super::data::MAX_LINE),
            header_size_limit: 102_400,
            hopcount_limit: 50,
            timeout: Duration::from_secs(300),
            starttls_timeout: Duration::from_secs(300),
            min_data_rate: 500,
            session_time_limit: Duration::from_secs(3600),
            greet_pause: Duration::ZERO,
            hard_error_limit: 20,
            soft_error_limit: 10,
            error_sleep: Duration::from_secs(1),
            junk_command_limit: 100,
            helo_required: false,
            vrfy: false,
            smtputf8: true,
            bare_newline: BareNewline::Normalize,
            bare_newline_exclusions: Vec::new(),
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
            limit_exceptions: Vec::new(),
            admission: sluice_queue::Admission::default(),
        }
    }
}

impl Settings {
    /// The bare-newline mode that applies to a client (exclusions get `No`).
    pub fn bare_newline_for(&self, addr: IpAddr) -> BareNewline {
        if self.bare_newline_exclusions.iter().any(|n| n.contains(&addr)) {
            BareNewline::No
        } else {
            self.bare_newline
        }
    }

    /// True when `addr` is exempt from connection count and rate limits.
    pub fn is_limit_exempt(&self, addr: IpAddr) -> bool {
        self.limit_exceptions.iter().any(|n| n.contains(&addr))
    }

    /// Settings for one master.cf `smtpd` listener: its own configuration
    /// (main.cf with the line's `-o` overrides) and its `maxproc`.
    pub fn from_service(service: &SmtpdService) -> Result<Settings, SettingsError> {
        let mut s = Settings::from_config(&service.config)?;
        if let Some(n) = service.maxproc.filter(|&n| n > 0) {
            s.max_sessions = n as usize;
        }
        Ok(s)
    }

    /// Builds settings from a loaded configuration. Fails on restriction
    /// lists sluice cannot honour (or that make an open relay), an unknown
    /// TLS level, or a certificate that does not load.
    pub fn from_config(config: &Arc<Config>) -> Result<Settings, SettingsError> {
        let c = config.as_ref();
        let words = |name: &str| c.list(name);
        let restrictions = |name: &'static str| policy::parse_restrictions(name, &words(name));
        let policy = Policy {
            mynetworks: c.mynetworks().to_vec(),
            client: restrictions("smtpd_client_restrictions")?,
            relay: restrictions("smtpd_relay_restrictions")?,
            recipient: restrictions("smtpd_recipient_restrictions")?,
            reject_unlisted_recipient: c.bool("smtpd_reject_unlisted_recipient"),
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
            _ => Some(tls::server_config_from_files(
                c.string("smtpd_tls_cert_file").as_ref(),
                c.string("smtpd_tls_key_file").as_ref(),
            )?),
        };
        let int = |name: &'static str| -> Result<u64, SettingsError> {
            u64::try_from(c.int(name))
                .map_err(|_| SettingsError::Value { param: name, message: "must not be negative".into() })
        };
        let nets = |name: &'static str| networks(name, &words(name));
        let banner = c.string("smtpd_banner").to_owned();
        let high_water = high_water(c.string("sluice_queue_high_water"))?;

        Ok(Settings {
            myhostname: c.string("myhostname").to_owned(),
            banner,
            mail_name: c.string("mail_name").to_owned(),
            message_size_limit: c.size("message_size_limit"),
            recipient_limit: int("smtpd_recipient_limit")? as usize,
            command_line_limit: (int("line_length_limit")? as usize).max(512),
            data_line_limit: Some(super::data::MAX_LINE),
            header_size_limit: int("header_size_limit")? as usize,
            hopcount_limit: int("hopcount_limit")? as usize,
            timeout: c.time("smtpd_timeout"),
            starttls_timeout: c.time("smtpd_starttls_timeout"),
            min_data_rate: int("smtpd_min_data_rate")?,
            session_time_limit: Duration::from_secs(3600),
            greet_pause: Duration::ZERO,
            hard_error_limit: int("smtpd_hard_error_limit")? as u32,
            soft_error_limit: int("smtpd_soft_error_limit")? as u32,
            error_sleep: c.time("smtpd_error_sleep_time"),
            junk_command_limit: int("smtpd_junk_command_limit")? as u32,
            helo_required: c.bool("smtpd_helo_required"),
            vrfy: !c.bool("disable_vrfy_command"),
            smtputf8: c.bool("smtputf8_enable"),
            bare_newline,
            bare_newline_exclusions: nets("smtpd_forbid_bare_newline_exclusions")?,
            bare_newline_reject_code: int("smtpd_forbid_bare_newline_reject_code")? as u16,
            forbid_unauth_pipelining: c.bool("smtpd_forbid_unauth_pipelining"),
            policy,
            tls_level,
            tls,
            max_sessions: int("default_process_limit")?.max(1) as usize,
            client_connection_count_limit: int("smtpd_client_connection_count_limit")? as u32,
            client_connection_rate_limit: int("smtpd_client_connection_rate_limit")? as u32,
            client_message_rate_limit: int("smtpd_client_message_rate_limit")? as u32,
            rate_time_unit: c.time("anvil_rate_time_unit"),
            limit_exceptions: nets("smtpd_client_event_limit_exceptions")?,
            admission: sluice_queue::Admission {
                max_messages: high_water.0,
                max_bytes: high_water.1,
                min_free: c.size("queue_minfree"),
            },
        })
    }
}

/// Parses a network list (`mynetworks` syntax: `1.2.3.0/24`, `[::1]/128`,
/// bare addresses). Host names and tables are not supported here.
fn networks(param: &'static str, words: &[String]) -> Result<Vec<IpNet>, SettingsError> {
    words
        .iter()
        .map(|w| {
            let w = w.replace(['[', ']'], "");
            w.parse::<IpNet>()
                .or_else(|_| w.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| SettingsError::Value { param, message: format!("not a network: \"{w}\"") })
        })
        .collect()
}

/// `sluice_queue_high_water`: a message count and/or a byte size, e.g.
/// `100000 20g` (either may be 0 or absent for no limit).
fn high_water(value: &str) -> Result<(u64, u64), SettingsError> {
    let mut out = (0, 0);
    for w in value.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        let bad = || SettingsError::Value {
            param: "sluice_queue_high_water",
            message: format!("bad value \"{w}\""),
        };
        let (digits, unit) = w.split_at(w.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(w.len()));
        let n: u64 = digits.parse().map_err(|_| bad())?;
        match unit.to_ascii_lowercase().as_str() {
            "" => out.0 = n,
            "b" => out.1 = n,
            "k" => out.1 = n << 10,
            "m" => out.1 = n << 20,
            "g" => out.1 = n << 30,
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// [`Lookups`] over a loaded configuration.
#[derive(Debug)]
struct ConfigLookups {
    config: Arc<Config>,
}

impl Lookups for ConfigLookups {
    fn is_relay_domain(&self, domain: &str) -> Result<bool, TableError> {
        self.config.is_relay_domain(domain)
    }

    fn relay_recipient(&self, address: &str) -> Result<Option<bool>, TableError> {
        let maps = self.config.maps("relay_recipient_maps");
        if maps.is_empty() {
            return Ok(None);
        }
        Ok(Some(maps.lookup_address(&self.config, "relay_recipient_maps", address)?.is_some()))
    }

    fn access_address(&self, table: &str, address: &str) -> Result<Option<String>, TableError> {
        let _ = address;
        Err(TableError {
            table: table.to_owned(),
            message: "access tables in restrictions are not available".into(),
        })
    }

    fn access_keys(&self, table: &str, keys: &[String]) -> Result<Option<String>, TableError> {
        let _ = keys;
        Err(TableError {
            table: table.to_owned(),
            message: "access tables in restrictions are not available".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_takes_count_and_bytes() {
        assert_eq!(high_water("").unwrap(), (0, 0));
        assert_eq!(high_water("1000").unwrap(), (1000, 0));
        assert_eq!(high_water("1000 2g").unwrap(), (1000, 2 << 30));
        assert_eq!(high_water("512m").unwrap(), (0, 512 << 20));
        assert!(high_water("10x").is_err());
    }

    #[test]
    fn networks_accept_postfix_forms() {
        let n =
            networks("mynetworks", &["127.0.0.0/8".into(), "[::1]/128".into(), "192.0.2.7".into()]).unwrap();
        assert_eq!(n.len(), 3);
        assert!(n[2].contains(&"192.0.2.7".parse::<IpAddr>().unwrap()));
        assert!(networks("mynetworks", &["example.com".into()]).is_err());
    }

    #[test]
    fn exclusions_turn_bare_newline_handling_off() {
        let s =
            Settings { bare_newline_exclusions: vec!["10.0.0.0/8".parse().unwrap()], ..Settings::default() };
        assert_eq!(s.bare_newline_for("10.1.1.1".parse().unwrap()), BareNewline::No);
        assert_eq!(s.bare_newline_for("192.0.2.1".parse().unwrap()), BareNewline::Normalize);
    }
}

/// The queue admission limits (`sluice_queue_high_water`, `queue_minfree`)
/// of a configuration, for `MAIL` and for the `/health` endpoint.
pub fn admission(c: &Config) -> sluice_queue::Admission {
    let hw = high_water(c.string("sluice_queue_high_water")).unwrap_or_default();
    sluice_queue::Admission { max_messages: hw.0, max_bytes: hw.1, min_free: c.size("queue_minfree") }
}
