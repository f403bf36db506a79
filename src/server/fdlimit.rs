//! The daemon's file-descriptor budget, checked once at start: what the
//! configured connection limits can hold open at the same time (every
//! session of every smtpd listener, every delivery connection of every
//! transport, and a reserve for RocksDB's files, the listeners, the log,
//! the admin socket and DNS) against `RLIMIT_NOFILE`. A soft limit below
//! that is raised to the hard limit; when even the hard limit is too low
//! the daemon warns, naming the parameters to lower or `LimitNOFILE` to
//! raise, and starts anyway (as Postfix does with a short limit): the
//! accept loop backs off on `EMFILE` instead of spinning, so running short
//! refuses connections, it loses no mail.
//!
//! The budget is plain arithmetic over the configuration ([`Budget::of`]);
//! only [`check`] touches the process limits. Never changes the hard limit
//! (only root may raise it, and the unit file is where it is set).

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tracing::{info, warn};

use crate::config::Config;

/// Descriptors kept aside for everything that is not a connection: RocksDB
/// (its write-ahead log, manifest and table files; a million 4 KiB messages
/// make a few dozen 64 MiB tables, and compaction opens new ones before it
/// drops the old), the listening sockets, the log file, the admin and
/// metrics sockets, DNS queries in flight and the standard streams.
pub const RESERVE: u64 = 512;

/// What the configured limits can hold open, part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Each part and its count, named as the administrator configures it
    /// (`service smtp: 100 sessions (default_process_limit)`).
    pub parts: Vec<(String, u64)>,
}

impl Budget {
    /// The budget of `config`: one descriptor per session of each smtpd
    /// listener (its master.cf `maxproc`, or `default_process_limit`; one
    /// more per session for each of its `smtpd_milters`, which hold a
    /// connection per session), one per delivery connection of each
    /// transport (its `maxproc`, or `default_process_limit`), and
    /// [`RESERVE`].
    pub fn of(config: &Config) -> Budget {
        let mut parts = Vec::new();
        for svc in config.smtpd_services() {
            let (sessions, from) = match svc.maxproc.filter(|&n| n > 0) {
                Some(n) => (u64::from(n), "master.cf maxproc".to_owned()),
                None => (
                    svc.config.int("default_process_limit").max(1) as u64,
                    "default_process_limit".to_owned(),
                ),
            };
            let listeners = svc.addrs.len().max(1) as u64;
            let milters =
                svc.config.string("smtpd_milters").split([',', ' ', '\t']).filter(|m| !m.is_empty()).count()
                    as u64;
            let per_session = 1 + milters;
            let why = if milters > 0 { format!("{from}, with {milters} smtpd_milters each") } else { from };
            let plural =
                if listeners > 1 { format!(" on each of {listeners} addresses") } else { String::new() };
            parts.push((
                format!("service {}: {sessions} sessions{plural} ({why})", svc.name),
                sessions * listeners * per_session,
            ));
        }
        for t in config.transports() {
            let (n, from) = match t.maxproc.filter(|&n| n > 0) {
                Some(n) => (u64::from(n), "master.cf maxproc"),
                None => (t.config.int("default_process_limit").max(1) as u64, "default_process_limit"),
            };
            parts.push((format!("transport {}: {n} connections ({from})", t.name), n));
        }
        parts.push(("queue, listeners, log and DNS".to_owned(), RESERVE));
        Budget { parts }
    }

    /// The descriptors the whole budget needs.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, n)| n).sum()
    }
}

/// What to do about the limit, decided from the numbers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The soft limit covers the budget.
    Enough,
    /// Raise the soft limit to this (the hard limit, or the budget when
    /// the hard limit is unlimited), which covers the budget.
    Raise(u64),
    /// Raise the soft limit to the hard limit (when it is above the soft
    /// one), and warn: the budget needs more than the hard limit allows.
    Short { raise_to: Option<u64> },
}

/// The plan for a `need` of descriptors under limits `soft` and `hard`
/// (`infinity`: the value that means unlimited).
pub fn plan(soft: u64, hard: u64, need: u64, infinity: u64) -> Plan {
    if soft == infinity || soft >= need {
        return Plan::Enough;
    }
    // RLIMIT_NOFILE cannot be set to RLIM_INFINITY (the kernel caps it at
    // fs.nr_open): with an unlimited hard limit ask for what is needed.
    if hard == infinity {
        return Plan::Raise(need);
    }
    if hard >= need {
        return Plan::Raise(hard);
    }
    Plan::Short { raise_to: (hard > soft).then_some(hard) }
}

/// Checks `RLIMIT_NOFILE` against the budget of `config` at start: raises
/// the soft limit when it is short and logs what it did; warns when the
/// limit stays below the budget. Returns the soft limit in force.
pub fn check(config: &Config) -> u64 {
    let budget = Budget::of(config);
    let need = budget.total();
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let infinity = nix::sys::resource::RLIM_INFINITY;
    let raise = |to: u64| -> u64 {
        match setrlimit(Resource::RLIMIT_NOFILE, to, hard) {
            Ok(()) => {
                info!(target: "master", "file descriptor limit raised from {soft} to {to} (hard limit {hard})");
                to
            }
            Err(e) => {
                warn!(target: "master", "cannot raise the file descriptor limit from {soft} to {to}: {e}");
                soft
            }
        }
    };
    match plan(soft, hard, need, infinity) {
        Plan::Enough => soft,
        Plan::Raise(to) => raise(to),
        Plan::Short { raise_to } => {
            let now = raise_to.map_or(soft, raise);
            let parts: Vec<String> = budget.parts.iter().map(|(what, _)| what.clone()).collect();
            warn!(target: "master",
                "file descriptor limit {now} (hard limit {hard}) is below the {need} the connection limits can open: {}; \
                 raise LimitNOFILE (systemd) or ulimit -n, or lower these limits; past it new connections wait and deliveries are deferred",
                parts.join(", ")
            );
            now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: u64 = u64::MAX;

    #[test]
    fn a_soft_limit_that_covers_the_budget_is_left_alone() {
        assert_eq!(plan(65536, 65536, 1000, INF), Plan::Enough);
        assert_eq!(plan(INF, INF, 1_000_000, INF), Plan::Enough);
    }

    #[test]
    fn a_short_soft_limit_is_raised_to_the_hard_limit() {
        assert_eq!(plan(1024, 524288, 11000, INF), Plan::Raise(524288));
        assert_eq!(plan(1024, INF, 11000, INF), Plan::Raise(11000));
    }

    #[test]
    fn a_short_hard_limit_raises_what_it_can_and_warns() {
        assert_eq!(plan(1024, 4096, 11000, INF), Plan::Short { raise_to: Some(4096) });
        assert_eq!(plan(4096, 4096, 11000, INF), Plan::Short { raise_to: None });
    }
}
