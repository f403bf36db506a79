//! Typed delivery settings: the scheduler's ([`Settings`]) and one
//! backend's ([`BackendSettings`]), built from a [`Config`] in one place so
//! the rest of `delivery` never reads parameters by name, and unit tests
//! build them directly; [`LiveSettings`] keeps them in step with the
//! configuration in force across reloads.
//!
//! Owns the mapping from Postfix parameter names to meaning. Never opens
//! sockets or the queue.
//!
//! Parameters read (all must be in the config crate's table):
//! `minimal_backoff_time`, `maximal_backoff_time`, `maximal_queue_lifetime`,
//! `bounce_queue_lifetime`, `delay_warning_time`,
//! `initial_destination_concurrency`, `myhostname`; and per transport through
//! `transport_param`: `destination_recipient_limit`,
//! `destination_concurrency_limit`, `destination_rate_delay`,
//! `destination_concurrency_failed_cohort_limit`, `connect_timeout`,
//! `helo_timeout`, `mail_timeout`, `rcpt_timeout`, `data_init_timeout`,
//! `data_xfer_timeout`, `data_done_timeout`, `quit_timeout`, `rset_timeout`,
//! `connection_cache_time_limit`, `connection_reuse_time_limit`,
//! `mx_address_limit`, `sluice_rate_limit`, `sluice_rate_burst`, `sluice_latency_target`,
//! `sluice_adaptive_concurrency`, `sluice_concurrency_probe_share`,
//! `sluice_breaker_failure_threshold`, `sluice_breaker_cooldown`,
//! `sluice_breaker_max_cooldown`, `sluice_breaker_probe_interval`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::client::tls;
use crate::config::{Config, Protocol};

/// Scheduler-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `minimal_backoff_time`: the first retry delay after a deferral.
    pub minimal_backoff: Duration,
    /// `maximal_backoff_time`: the retry delay never grows past this.
    pub maximal_backoff: Duration,
    /// `maximal_queue_lifetime`: a deferred recipient older than this bounces.
    pub maximal_queue_lifetime: Duration,
    /// `bounce_queue_lifetime`: the same for sluice's own notifications.
    pub bounce_queue_lifetime: Duration,
    /// `soft_bounce`: a permanent failure defers instead, and nothing
    /// expires.
    pub soft_bounce: bool,
    /// `delay_warning_time`: send one delay notice after this long (`None`:
    /// never, Postfix's default `0h`).
    pub delay_warning: Option<Duration>,
    /// `qmgr_message_active_limit`: messages held in memory at once (claimed
    /// from the queue and not yet recorded). The rest stays on disk.
    pub active_limit: usize,
    /// Messages claimed from the queue per call (bounded by `active_limit`).
    pub claim_batch: usize,
    /// Jobs one backend may hold in memory waiting for its gate (a quarter
    /// of the window); more mail for it is postponed (left on disk, looked at
    /// again within seconds) rather than crowding out mail for other
    /// backends.
    pub backend_queue_limit: usize,
    /// `bounce_size_limit`: the largest message a `RET=FULL` failure report
    /// returns whole.
    pub bounce_size_limit: usize,
    /// `myhostname`: our name in `LHLO`/`EHLO` and in bounces.
    pub myhostname: String,
    /// How long in-flight deliveries may run on after shutdown is asked for
    /// before they are abandoned (their messages are then due at restart).
    pub shutdown_grace: Duration,
    /// A backend with nothing to do (no mail waiting, nothing in flight,
    /// not paused) for this long is dropped from memory, and its stored
    /// record with it: what its gate learned no longer matters.
    pub backend_idle_expiry: Duration,
    /// Backends kept in memory before idle ones are dropped sooner (after
    /// `crowded_idle_expiry`, keeping their records), and the most records
    /// the queue keeps: destinations are chosen by senders (a bounce goes
    /// to the sender's domain), so their number must not grow with them.
    pub max_backends: usize,
    /// How soon an idle backend is dropped while there are more than
    /// `max_backends`.
    pub crowded_idle_expiry: Duration,
}

impl Default for Settings {
    /// Postfix's defaults.
    fn default() -> Self {
        Settings {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            maximal_queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_queue_lifetime: Duration::from_secs(5 * 86400),
            soft_bounce: false,
            delay_warning: None,
            active_limit: 20_000,
            claim_batch: 256,
            backend_queue_limit: 5_000,
            bounce_size_limit: 50_000,
            myhostname: "localhost".into(),
            shutdown_grace: Duration::from_secs(30),
            backend_idle_expiry: Duration::from_secs(600),
            max_backends: 10_000,
            crowded_idle_expiry: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Reads the scheduler's settings from a loaded configuration.
    pub fn from_config(config: &Config) -> Settings {
        let active_limit = usize::try_from(config.int("qmgr_message_active_limit")).unwrap_or(1).max(1);
        let warn = config.time("delay_warning_time");
        Settings {
            minimal_backoff: config.time("minimal_backoff_time"),
            maximal_backoff: config.time("maximal_backoff_time"),
            maximal_queue_lifetime: config.time("maximal_queue_lifetime"),
            bounce_queue_lifetime: config.time("bounce_queue_lifetime"),
            soft_bounce: config.bool("soft_bounce"),
            delay_warning: (!warn.is_zero()).then_some(warn),
            active_limit,
            claim_batch: active_limit.clamp(1, 256),
            backend_queue_limit: (active_limit / 4).max(1),
            bounce_size_limit: usize::try_from(config.int("bounce_size_limit")).unwrap_or(0),
            myhostname: config.string("myhostname").to_owned(),
            shutdown_grace: config.time("sluice_shutdown_grace"),
            ..Settings::default()
        }
    }
}

/// A message rate: `count` deliveries per `per`, with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
    /// Deliveries that may start back to back after an idle spell.
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h` (`sluice_rate_limit`); empty or `0`
    /// means no limit (`Ok(None)`). A burst of 0 means the rate's count.
    pub fn parse(text: &str, burst: u32) -> Result<Option<Rate>, String> {
        let text = text.trim();
        if text.is_empty() || text == "0" {
            return Ok(None);
        }
        let (n, unit) =
            text.split_once('/').ok_or_else(|| format!("rate {text:?} is not N/s, N/m or N/h"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("rate {text:?}: bad count"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            u => return Err(format!("rate {text:?}: unknown unit {u:?}")),
        };
        let Some(count) = NonZeroU32::new(n) else { return Ok(None) };
        let burst = NonZeroU32::new(burst).unwrap_or(count);
        Ok(Some(Rate { count, per, burst }))
    }

    /// Deliveries per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }
}

pub use super::client::Timeouts;

/// Settings of one backend (transport + next hop), from its transport's
/// parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSettings {
    pub protocol: Protocol,
    /// `<transport>_destination_recipient_limit`: recipients per delivery.
    pub recipient_limit: usize,
    /// `initial_destination_concurrency`: where the adaptive limit starts,
    /// and where it restarts after the breaker closes.
    pub initial_concurrency: u32,
    /// `<transport>_destination_concurrency_limit`, capped by master.cf
    /// `maxproc`, and forced to 1 by a non-zero `destination_rate_delay` (as
    /// Postfix does).
    pub concurrency_limit: u32,
    /// `<transport>_sluice_rate_limit` (with `sluice_rate_burst`).
    pub rate: Option<Rate>,
    /// `<transport>_destination_rate_delay`: the pause between two delivery
    /// starts to this backend.
    pub rate_delay: Duration,
    /// `<transport>_sluice_latency_target`: a smoothed delivery latency above
    /// this shrinks the concurrency limit whatever the best latency was.
    pub latency_target: Duration,
    /// `<transport>_sluice_adaptive_concurrency`: steer the limit by the
    /// latency gradient (`false`: always `concurrency_limit`).
    pub adaptive: bool,
    /// `<transport>_sluice_concurrency_probe_share` as a fraction: the most
    /// of the time the limit spends trying a neighbouring level.
    pub probe_share: f64,
    /// `<transport>_sluice_breaker_failure_threshold`: consecutive connection
    /// failures, timeouts or `421`s that open the breaker.
    pub failure_threshold: u32,
    /// `<transport>_destination_concurrency_failed_cohort_limit`: multiplies
    /// the failure threshold (Postfix's default of 1 leaves it as it is).
    pub failed_cohort_limit: u32,
    /// `<transport>_sluice_breaker_cooldown`: the first open period.
    pub cooldown: Duration,
    /// `<transport>_sluice_breaker_max_cooldown`: the cool-down doubles per
    /// failed probe up to this.
    pub max_cooldown: Duration,
    /// `<transport>_sluice_breaker_probe_interval`: how often an open
    /// breaker probes a backend it could not connect to or be greeted by.
    pub probe_interval: Duration,
    pub timeouts: Timeouts,
    /// `<transport>_tls_*` (`lmtp_tls_*`, `smtp_tls_*`): STARTTLS to the
    /// backend.
    pub tls: Arc<tls::Policy>,
    /// `<transport>_connection_cache_time_limit`: how long an idle
    /// connection is kept for the next message.
    pub idle_time: Duration,
    /// `<transport>_connection_reuse_time_limit`: a connection older than
    /// this is not reused.
    pub reuse_time: Duration,
    /// `<transport>_mx_address_limit`: addresses of the next hop tried per
    /// delivery (`None`: all).
    pub address_limit: Option<usize>,
    /// Our name in `LHLO`/`EHLO`.
    pub helo_name: String,
}

impl BackendSettings {
    /// Defaults for a protocol (Postfix's values; sluice's own where Postfix
    /// has none). Tests start from here and change fields.
    pub fn new(protocol: Protocol) -> BackendSettings {
        BackendSettings {
            protocol,
            recipient_limit: 50,
            initial_concurrency: 5,
            concurrency_limit: 20,
            rate: None,
            rate_delay: Duration::ZERO,
            latency_target: Duration::from_secs(2),
            adaptive: true,
            probe_share: 0.05,
            failure_threshold: 5,
            failed_cohort_limit: 1,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            timeouts: Timeouts::default(),
            tls: Arc::new(tls::Policy::none()),
            idle_time: Duration::from_secs(2),
            reuse_time: Duration::from_secs(300),
            address_limit: Some(5),
            helo_name: "localhost".into(),
        }
    }

    /// Reads a transport's settings through the configuration's typed
    /// per-transport accessors (`<transport>_X`, else `default_X`, else
    /// `lmtp_X`/`smtp_X`, else `X`), type-checked when the configuration
    /// was loaded.
    pub fn from_config(config: &Config, transport: &str, protocol: Protocol) -> BackendSettings {
        let int = |suffix: &str| config.transport_int(transport, suffix);
        let time = |suffix: &str| config.transport_time(transport, suffix);
        let count = |suffix: &str, min: u32| u32::try_from(int(suffix)).unwrap_or(u32::MAX).max(min);

        let mut concurrency_limit = count("destination_concurrency_limit", 1);
        if let Some(maxproc) =
            config.transports().iter().find(|t| t.name == transport).and_then(|t| t.maxproc)
            && maxproc > 0
        {
            concurrency_limit = concurrency_limit.min(maxproc);
        }
        let rate_delay = time("destination_rate_delay");
        if !rate_delay.is_zero() {
            // Postfix: "with a non-zero delay, the concurrency is one".
            concurrency_limit = 1;
        }
        let rate = config.transport_rate(transport, "sluice_rate_limit").and_then(|r| {
            let count = NonZeroU32::new(r.count)?;
            let burst = NonZeroU32::new(count_or_zero(int("sluice_rate_burst"))).unwrap_or(count);
            Some(Rate { count, per: r.per, burst })
        });
        let cooldown = time("sluice_breaker_cooldown");
        let adaptive = {
            let cfg = config.transport_config(transport);
            cfg.bool(&cfg.transport_param_name(transport, "sluice_adaptive_concurrency"))
        };
        // A percentage; more than half the time away from the level held
        // would make the level meaningless.
        let probe_share = int("sluice_concurrency_probe_share").clamp(1, 50) as f64 / 100.0;
        let connect = time("connect_timeout");
        BackendSettings {
            protocol,
            recipient_limit: count("destination_recipient_limit", 1) as usize,
            initial_concurrency: count("initial_destination_concurrency", 1).min(concurrency_limit),
            concurrency_limit,
            rate,
            rate_delay,
            latency_target: time("sluice_latency_target"),
            adaptive,
            probe_share,
            failure_threshold: count("sluice_breaker_failure_threshold", 1),
            failed_cohort_limit: count("destination_concurrency_failed_cohort_limit", 1),
            cooldown,
            max_cooldown: time("sluice_breaker_max_cooldown").max(cooldown),
            // Zero would probe in a tight loop: at least 100 ms apart.
            probe_interval: time("sluice_breaker_probe_interval").max(Duration::from_millis(100)),
            timeouts: Timeouts {
                // 0 means the system's limit in Postfix; a silent peer must not
                // hold a slot for minutes, so sluice uses 30 s then.
                connect: if connect.is_zero() { Duration::from_secs(30) } else { connect },
                helo: time("helo_timeout"),
                mail: time("mail_timeout"),
                rcpt: time("rcpt_timeout"),
                data_init: time("data_init_timeout"),
                data_xfer: time("data_xfer_timeout"),
                data_done: time("data_done_timeout"),
                rset: time("rset_timeout"),
                quit: time("quit_timeout"),
            },
            tls: Arc::new(tls::Policy::from_config(config, transport)),
            idle_time: time("connection_cache_time_limit"),
            reuse_time: time("connection_reuse_time_limit"),
            address_limit: usize::try_from(int("mx_address_limit")).ok().filter(|n| *n > 0),
            helo_name: config.transport_param(transport, "helo_name").to_owned(),
        }
    }
}

fn count_or_zero(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// In-memory limits that have no configuration parameter (the window
/// itself is `qmgr_message_active_limit`); `None` keeps the default. Tests
/// and benches shrink them to reach the overflow paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Deliveries one backend may hold in memory (default a quarter of the
    /// active limit).
    pub backend_queue_limit: Option<usize>,
    /// [`Settings::backend_idle_expiry`] (default 10 minutes).
    pub backend_idle_expiry: Option<Duration>,
    /// [`Settings::max_backends`] (default 10,000).
    pub max_backends: Option<usize>,
    /// [`Settings::crowded_idle_expiry`] (default 30 s).
    pub crowded_idle_expiry: Option<Duration>,
}

impl Tuning {
    fn apply(&self, mut s: Settings) -> Settings {
        if let Some(n) = self.backend_queue_limit {
            s.backend_queue_limit = n.max(1);
        }
        if let Some(d) = self.backend_idle_expiry {
            s.backend_idle_expiry = d;
        }
        if let Some(n) = self.max_backends {
            s.max_backends = n.max(1);
        }
        if let Some(d) = self.crowded_idle_expiry {
            s.crowded_idle_expiry = d;
        }
        s
    }
}

/// The settings of the configuration in force: derived once per
/// configuration (a reload swaps the configuration; the next call derives
/// again), with each transport's [`BackendSettings`] cached beside them.
pub struct LiveSettings {
    config: Arc<ArcSwap<Config>>,
    tuning: Tuning,
    derived: Mutex<Derived>,
}

/// Settings derived from one configuration.
#[derive(Debug)]
struct Derived {
    from: Arc<Config>,
    settings: Arc<Settings>,
    transports: HashMap<String, Arc<BackendSettings>>,
}

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSettings").field("tuning", &self.tuning).finish_non_exhaustive()
    }
}

impl LiveSettings {
    /// Settings that follow `config`, with `tuning` applied.
    pub fn new(config: Arc<ArcSwap<Config>>, tuning: Tuning) -> LiveSettings {
        let cfg = config.load_full();
        let settings = Arc::new(tuning.apply(Settings::from_config(&cfg)));
        LiveSettings {
            config,
            tuning,
            derived: Mutex::new(Derived { from: cfg, settings, transports: HashMap::new() }),
        }
    }

    fn derived(&self) -> MutexGuard<'_, Derived> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The settings of the configuration in force, re-derived after a reload.
    pub fn current(&self) -> Arc<Settings> {
        let config = self.config.load_full();
        let mut d = self.derived();
        if !Arc::ptr_eq(&d.from, &config) {
            *d = Derived {
                settings: Arc::new(self.tuning.apply(Settings::from_config(&config))),
                from: config,
                transports: HashMap::new(),
            };
        }
        Arc::clone(&d.settings)
    }

    /// A transport's settings under `config` (derived once per
    /// configuration and transport).
    pub fn backend(&self, config: &Arc<Config>, transport: &str, protocol: Protocol) -> Arc<BackendSettings> {
        let mut d = self.derived();
        if !Arc::ptr_eq(&d.from, config) {
            *d = Derived {
                settings: Arc::new(self.tuning.apply(Settings::from_config(config))),
                from: Arc::clone(config),
                transports: HashMap::new(),
            };
        }
        if let Some(s) = d.transports.get(transport) {
            return Arc::clone(s);
        }
        let s = Arc::new(BackendSettings::from_config(config, transport, protocol));
        d.transports.insert(transport.to_owned(), Arc::clone(&s));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_minute_hour() {
        let r = Rate::parse("100/s", 10).unwrap().unwrap();
        assert_eq!((r.count.get(), r.per, r.burst.get()), (100, Duration::from_secs(1), 10));
        let r = Rate::parse("30/m", 0).unwrap().unwrap();
        assert_eq!((r.count.get(), r.per, r.burst.get()), (30, Duration::from_secs(60), 30));
        assert!((r.per_second() - 0.5).abs() < 1e-9);
        assert_eq!(Rate::parse("", 1), Ok(None));
        assert_eq!(Rate::parse("0/s", 1), Ok(None));
        assert!(Rate::parse("fast", 1).is_err());
        assert!(Rate::parse("5/fortnight", 1).is_err());
    }

    fn load(main_cf: &str, master_cf: &str) -> std::sync::Arc<Config> {
        let dir = std::env::temp_dir();
        match Config::from_texts(&dir, main_cf, master_cf) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    const MASTER: &str = "lmtp unix - - n - - lmtp\nmbx unix - - n - 3 lmtp\nslow unix - - n - - lmtp\n";

    #[test]
    fn transport_settings_follow_postfix_names_and_overrides() {
        let cf = load(
            "myhostname = mx.example.test\n\
             mbx_destination_concurrency_limit = 7\n\
             mbx_destination_recipient_limit = 10\n\
             mbx_sluice_rate_limit = 30/m\n\
             mbx_sluice_breaker_cooldown = 500ms\n\
             mbx_sluice_adaptive_concurrency = no\n\
             mbx_sluice_concurrency_probe_share = 80\n\
             mbx_sluice_breaker_probe_interval = 2s\n\
             lmtp_lhlo_timeout = 5s\n\
             lmtp_connection_reuse_time_limit = 60s\n\
             lmtp_mx_address_limit = 2\n\
             slow_destination_rate_delay = 2s\n",
            // Client parameters per service come from master.cf, as in Postfix.
            &MASTER.replace(
                "mbx unix - - n - 3 lmtp\n",
                "mbx unix - - n - 3 lmtp\n  -o lmtp_connection_cache_time_limit=7s\n  -o lmtp_mx_address_limit=0\n",
            ),
        );
        let mbx = BackendSettings::from_config(&cf, "mbx", Protocol::Lmtp);
        assert_eq!(mbx.concurrency_limit, 3, "master.cf maxproc caps the concurrency limit");
        assert_eq!(mbx.recipient_limit, 10);
        assert_eq!(
            mbx.rate.map(|r| (r.count.get(), r.per, r.burst.get())),
            Some((30, Duration::from_secs(60), 30))
        );
        assert_eq!(mbx.cooldown, Duration::from_millis(500));
        assert!(!mbx.adaptive);
        assert_eq!(mbx.probe_share, 0.5, "at most half the time");
        assert_eq!(mbx.probe_interval, Duration::from_secs(2));
        assert_eq!(mbx.timeouts.helo, Duration::from_secs(5), "lmtp_lhlo_timeout is the LMTP helo timeout");
        assert_eq!(
            mbx.timeouts.connect,
            Duration::from_secs(30),
            "lmtp_connect_timeout = 0 is taken as 30 s"
        );
        assert_eq!(mbx.helo_name, "mx.example.test");
        assert_eq!(mbx.initial_concurrency, 3, "never above the limit");
        assert_eq!((mbx.idle_time, mbx.reuse_time), (Duration::from_secs(7), Duration::from_secs(60)));
        assert_eq!(mbx.address_limit, None, "0 means every address");

        let slow = BackendSettings::from_config(&cf, "slow", Protocol::Lmtp);
        assert_eq!(slow.rate_delay, Duration::from_secs(2));
        assert_eq!(slow.concurrency_limit, 1, "a rate delay means one delivery at a time");

        let lmtp = BackendSettings::from_config(&cf, "lmtp", Protocol::Lmtp);
        assert_eq!((lmtp.concurrency_limit, lmtp.recipient_limit, lmtp.rate), (20, 50, None));
        assert_eq!(lmtp.failure_threshold, 5);
        assert_eq!(lmtp.latency_target, Duration::from_secs(2));
        assert!(lmtp.adaptive);
        assert_eq!(lmtp.probe_share, 0.05);
        assert_eq!((lmtp.idle_time, lmtp.address_limit), (Duration::from_secs(2), Some(2)));
        let smtp = BackendSettings::from_config(&cf, "smtp", Protocol::Smtp);
        assert_eq!(smtp.tls.level, tls::Level::May, "sluice's default: opportunistic STARTTLS");
        assert_eq!(lmtp.tls.level, tls::Level::None);
        assert_eq!(
            smtp,
            BackendSettings {
                helo_name: "mx.example.test".into(),
                tls: Arc::new(tls::Policy::from_config(&cf, "smtp")),
                ..BackendSettings::new(Protocol::Smtp)
            }
        );
    }

    #[test]
    fn scheduler_settings_read_the_queue_parameters() {
        let cf = load(
            "minimal_backoff_time = 60s\nmaximal_queue_lifetime = 2d\ndelay_warning_time = 4h\n",
            MASTER,
        );
        let s = Settings::from_config(&cf);
        assert_eq!(s.minimal_backoff, Duration::from_secs(60));
        assert_eq!(s.maximal_backoff, Duration::from_secs(4000));
        assert_eq!(s.maximal_queue_lifetime, Duration::from_secs(2 * 86400));
        assert_eq!(s.delay_warning, Some(Duration::from_secs(4 * 3600)));
        let d = Settings::from_config(&load("", MASTER));
        assert_eq!(d.delay_warning, None, "Postfix's default 0h: no warnings");
    }

    #[test]
    fn the_in_memory_window_is_qmgr_message_active_limit() {
        let d = Settings::from_config(&load("", MASTER));
        assert_eq!((d.active_limit, d.claim_batch, d.backend_queue_limit), (20_000, 256, 5_000));
        let s = Settings::from_config(&load("qmgr_message_active_limit = 100\n", MASTER));
        assert_eq!((s.active_limit, s.claim_batch, s.backend_queue_limit), (100, 100, 25));
    }
}
