//! Sender authentication settings as plain typed values, built once per
//! configuration load from the `sluice_auth_*`, `sluice_spf_*`,
//! `sluice_dmarc_*` and `sluice_arc_*` parameters, so checks and policy
//! never read configuration and tests build settings directly.
//!
//! Owns the mapping from parameter names to fields and nothing else: no
//! DNS, no I/O. Values were type-checked when the configuration loaded, so
//! building settings cannot fail.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::Config;

/// Which checks run (`sluice_auth_checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checks {
    pub spf: bool,
    pub dkim: bool,
    pub arc: bool,
    pub dmarc: bool,
}

impl Checks {
    /// Every check.
    pub const ALL: Checks = Checks { spf: true, dkim: true, arc: true, dmarc: true };

    /// From `sluice_auth_checks`' words (unknown words were refused at load).
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Checks {
        let has = |w: &str| words.iter().any(|x| x.as_ref().eq_ignore_ascii_case(w));
        Checks { spf: has("spf"), dkim: has("dkim"), arc: has("arc"), dmarc: has("dmarc") }
    }

    /// True when a check runs at the end of the message.
    pub fn at_end_of_data(&self) -> bool {
        self.dkim || self.arc || self.dmarc
    }

    /// True when any check runs.
    pub fn any(&self) -> bool {
        self.spf || self.at_end_of_data()
    }
}

/// What a failing result does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accepted and delivered; the header records the result.
    Mark,
    /// Accepted and kept on hold in the queue until an administrator
    /// releases it.
    Hold,
    /// Refused with a 5xx reply.
    Reject,
}

impl Action {
    fn parse(word: &str) -> Action {
        match word.trim().to_ascii_lowercase().as_str() {
            "reject" => Action::Reject,
            "hold" => Action::Hold,
            _ => Action::Mark,
        }
    }
}

/// What a temporary error in a check a decision depends on does
/// (`sluice_auth_temperror_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempAction {
    /// Accept; the header says temperror.
    Mark,
    /// `451 4.7.1`: the client retries later.
    Defer,
}

/// Clients whose mail is not checked (`sluice_auth_exempt_clients`).
#[derive(Clone)]
pub enum Exempt {
    /// Literal networks.
    List(Vec<IpNet>),
    /// The network-list parameter of a loaded configuration (with its
    /// tables, negations and files).
    Param { config: Arc<Config>, name: &'static str },
}

impl Exempt {
    /// True when `addr` is exempt (an IPv4-mapped IPv6 address matches as
    /// its IPv4 form).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Exempt::List(nets) => {
                let addr = addr.to_canonical();
                nets.iter().any(|n| n.contains(&addr))
            }
            Exempt::Param { config, name } => config.matches_client(name, addr),
        }
    }
}

impl std::fmt::Debug for Exempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exempt::List(nets) => f.debug_tuple("List").field(nets).finish(),
            Exempt::Param { name, .. } => write!(f, "Param({name})"),
        }
    }
}

/// Everything the checks and the policy need, typed.
///
/// `Default` is sluice's defaults: every check, the header, authserv-id
/// `localhost`, no exempt client, 5 s, enforcement of DMARC p=reject only.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sluice_auth_checks`.
    pub checks: Checks,
    /// `sluice_auth_header`: add the Authentication-Results header.
    pub header: bool,
    /// `sluice_authserv_id`.
    pub authserv_id: String,
    /// `sluice_auth_exempt_clients`.
    pub exempt: Exempt,
    /// `sluice_auth_timeout`: per stage (MAIL FROM; end of message).
    pub timeout: Duration,
    /// `sluice_spf_fail_policy`: Mark or Reject (never Hold: the decision
    /// is taken at RCPT TO, before there is a message to hold).
    pub spf_fail: Action,
    /// `sluice_dmarc_reject_policy`.
    pub dmarc_reject: Action,
    /// `sluice_dmarc_quarantine_policy`.
    pub dmarc_quarantine: Action,
    /// `sluice_auth_temperror_policy`.
    pub temperror: TempAction,
    /// `sluice_arc_trusted_sealers`, lower case.
    pub trusted_sealers: Vec<String>,
    /// `header_size_limit`: how much of the header section is kept for
    /// the DKIM and ARC checks (see `verify.rs` for what happens past it).
    pub header_limit: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            checks: Checks::ALL,
            header: true,
            authserv_id: "localhost".to_owned(),
            exempt: Exempt::List(Vec::new()),
            timeout: Duration::from_secs(5),
            spf_fail: Action::Mark,
            dmarc_reject: Action::Reject,
            dmarc_quarantine: Action::Mark,
            temperror: TempAction::Mark,
            trusted_sealers: Vec::new(),
            header_limit: 102_400,
        }
    }
}

impl Settings {
    /// Builds settings from a loaded configuration (a listener's, with its
    /// `-o` overrides).
    pub fn from_config(config: &Arc<Config>) -> Settings {
        let c = config.as_ref();
        let spf_fail = match Action::parse(c.string("sluice_spf_fail_policy")) {
            Action::Reject => Action::Reject,
            _ => Action::Mark,
        };
        Settings {
            checks: Checks::from_words(&c.list("sluice_auth_checks")),
            header: c.bool("sluice_auth_header"),
            authserv_id: c.string("sluice_authserv_id").trim().to_owned(),
            exempt: Exempt::Param { config: Arc::clone(config), name: "sluice_auth_exempt_clients" },
            timeout: c.time("sluice_auth_timeout"),
            spf_fail,
            dmarc_reject: Action::parse(c.string("sluice_dmarc_reject_policy")),
            dmarc_quarantine: Action::parse(c.string("sluice_dmarc_quarantine_policy")),
            temperror: match c.string("sluice_auth_temperror_policy").trim() {
                "defer" => TempAction::Defer,
                _ => TempAction::Mark,
            },
            trusted_sealers: c
                .list("sluice_arc_trusted_sealers")
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            header_limit: usize::try_from(c.int("header_size_limit")).unwrap_or(0).max(1024),
        }
    }

    /// True when mail from `client` is checked (and its forged
    /// Authentication-Results headers removed).
    pub fn applies_to(&self, client: IpAddr) -> bool {
        !self.exempt.contains(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_come_from_words_in_any_case() {
        assert_eq!(
            Checks::from_words(&["SPF", "dmarc"]),
            Checks { spf: true, dmarc: true, ..Checks::default() }
        );
        assert!(!Checks::from_words::<&str>(&[]).any());
        assert!(Checks::from_words(&["arc"]).at_end_of_data());
        assert!(!Checks::from_words(&["spf"]).at_end_of_data());
    }

    #[test]
    fn exempt_networks_match_mapped_addresses() {
        let e = Exempt::List(vec!["192.0.2.0/24".parse().unwrap()]);
        assert!(e.contains("192.0.2.7".parse().unwrap()));
        assert!(e.contains("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!e.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn configuration_defaults_are_the_documented_ones() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = Config::from_texts(dir.path(), "myhostname = mx.example\n", "").unwrap();
        let s = Settings::from_config(&loaded.config);
        assert_eq!(s.checks, Checks::ALL);
        assert!(s.header);
        assert_eq!(s.authserv_id, "mx.example");
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(
            (s.spf_fail, s.dmarc_reject, s.dmarc_quarantine),
            (Action::Mark, Action::Reject, Action::Mark)
        );
        assert_eq!(s.temperror, TempAction::Mark);
        assert!(s.trusted_sealers.is_empty());
    }
}
