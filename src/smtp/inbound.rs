//! [`Inbound`]: what the sessions of one listener share — the queue handle,
//! the current settings (swapped on reload; a session keeps the settings
//! it started with), the resolver for client names, the sender
//! authentication checks over the same resolver, and the per-client
//! limits that apply before a session starts: concurrent sessions on the
//! listener (a semaphore permit is taken before `accept`, so excess
//! clients wait in the kernel's backlog), concurrent sessions per client
//! (`smtpd_client_connection_count_limit`), and connection and message
//! rates per client (`smtpd_client_connection_rate_limit`,
//! `smtpd_client_message_rate_limit` over `anvil_rate_time_unit`, with
//! `governor` keyed limiters). A client is its network of
//! `smtpd_client_ipv4_prefix_length` / `smtpd_client_ipv6_prefix_length`
//! bits, as in Postfix 3.8: one IPv6 end site holds more addresses than
//! any limit, so counting single IPv6 addresses would limit nothing.
//!
//! Also the listener's stress ([`Stress`]): as Postfix's master does, a
//! listener that reaches its session limit starts new sessions with its
//! settings under stress (shorter timeouts, fewer errors allowed) for a
//! while, so the clients that hold slots without sending mail give them
//! up sooner.
//!
//! And the listener's milters with their breakers, and the recipient
//! verifier delivery provides (`reject_unverified_recipient`).
//!
//! Below the session and the accept loop, which both hold it; never parses
//! SMTP and never accepts connections itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use sluice_queue::Queue;
use tokio::sync::Semaphore;

use super::settings::Settings;
use crate::auth::Authenticator;
use crate::milter::{Milter, Registry};
use crate::resolver::Resolver;
use crate::verify::Verifier;

/// What a listener's sessions share. Create one per listener with
/// [`Inbound::new`]; [`Inbound::reload`] applies new settings to new
/// connections.
#[derive(Debug)]
pub struct Inbound {
    queue: Queue,
    settings: ArcSwap<Settings>,
    sessions: Arc<Semaphore>,
    /// Permits the semaphore was sized for (changes on reload).
    session_limit: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, u32>>,
    rates: ArcSwap<Rates>,
    /// Looks up client names; `None` leaves every client `unknown`.
    resolver: Option<Arc<dyn Resolver>>,
    stress: Mutex<Stress>,
    /// The breakers of the milters, shared with the other listeners.
    registry: Arc<Registry>,
    /// The settings' `smtpd_milters` with their breakers.
    milters: ArcSwap<Vec<Arc<Milter>>>,
    /// Runs the sender authentication checks; `None` runs none (forged
    /// Authentication-Results headers are still removed).
    authenticator: Option<Authenticator>,
    /// Verifies recipients for `reject_unverified_recipient` (delivery's,
    /// set by the daemon once delivery runs); unset, such recipients get
    /// the tempfail action.
    verifier: OnceLock<Arc<dyn Verifier>>,
}

/// The rate limiters built from one set of settings.
#[derive(Debug, Default)]
struct Rates {
    connections: Option<ClientRate>,
    messages: Option<ClientRate>,
}

impl Rates {
    fn new(s: &Settings) -> Rates {
        Rates {
            connections: ClientRate::new(
                s.client_connection_rate_limit,
                s.rate_time_unit,
                DefaultClock::default(),
            ),
            messages: ClientRate::new(s.client_message_rate_limit, s.rate_time_unit, DefaultClock::default()),
        }
    }
}

impl Inbound {
    /// Shared state for one listener writing into `queue`, without name
    /// lookups: every client is `unknown` (as with
    /// `smtpd_peername_lookup = no`).
    pub fn new(queue: Queue, settings: Settings) -> Arc<Inbound> {
        Inbound::build(queue, settings, None, Arc::default(), None)
    }

    /// Shared state for one listener whose sessions look up client names
    /// with `resolver` (the daemon passes the one delivery uses too).
    pub fn with_resolver(queue: Queue, settings: Settings, resolver: Arc<dyn Resolver>) -> Arc<Inbound> {
        Inbound::build(queue, settings, Some(resolver), Arc::default(), None)
    }

    /// As [`Inbound::with_resolver`], with the daemon's shared services:
    /// the milter breakers of `registry` (every listener gets the same
    /// one, so a milter that is down is found out once, whichever listener
    /// meets it) and sender authentication (SPF, DKIM, DMARC, ARC) with
    /// `authenticator`, built over the same resolver.
    pub fn with_services(
        queue: Queue,
        settings: Settings,
        resolver: Arc<dyn Resolver>,
        registry: Arc<Registry>,
        authenticator: Option<Authenticator>,
    ) -> Arc<Inbound> {
        Inbound::build(queue, settings, Some(resolver), registry, authenticator)
    }

    /// As [`Inbound::with_resolver`], and checking senders (SPF, DKIM,
    /// DMARC, ARC) with `authenticator`, without milters.
    pub fn with_authenticator(
        queue: Queue,
        settings: Settings,
        resolver: Arc<dyn Resolver>,
        authenticator: Authenticator,
    ) -> Arc<Inbound> {
        Inbound::build(queue, settings, Some(resolver), Arc::default(), Some(authenticator))
    }

    fn build(
        queue: Queue,
        settings: Settings,
        resolver: Option<Arc<dyn Resolver>>,
        registry: Arc<Registry>,
        authenticator: Option<Authenticator>,
    ) -> Arc<Inbound> {
        let limit = settings.max_sessions.max(1);
        let milters = registry.build(
            &settings.milters.specs,
            settings.milters.failure_threshold,
            settings.milters.cooldown,
        );
        Arc::new(Inbound {
            registry,
            milters: ArcSwap::from_pointee(milters),
            queue,
            rates: ArcSwap::from_pointee(Rates::new(&settings)),
            settings: ArcSwap::from_pointee(settings),
            sessions: Arc::new(Semaphore::new(limit)),
            session_limit: AtomicUsize::new(limit),
            clients: Mutex::new(HashMap::new()),
            resolver,
            stress: Mutex::new(Stress::default()),
            authenticator,
            verifier: OnceLock::new(),
        })
    }

    /// Hands the listener the recipient verifier (once; a second call is
    /// ignored, the first verifier stays).
    pub fn set_verifier(&self, verifier: Arc<dyn Verifier>) {
        let _ = self.verifier.set(verifier);
    }

    /// The recipient verifier, when the daemon gave one.
    pub(crate) fn verifier(&self) -> Option<&Arc<dyn Verifier>> {
        self.verifier.get()
    }

    /// The settings for a session that starts at `now`, just after it took
    /// its slot: the listener's settings under stress when that slot was
    /// the last free one, or was within [`STRESS_PULSE`] (logged as
    /// Postfix's master logs it, once per pulse).
    pub(super) fn session_settings(&self, local: &str, now: Instant) -> Arc<Settings> {
        let settings = self.settings();
        let Some(stressed) = settings.stress.clone() else { return settings };
        let free = self.sessions.available_permits();
        let (under_stress, warn) = self.stress.lock().unwrap_or_else(|e| e.into_inner()).on_start(free, now);
        if warn {
            let (name, limit) = (&settings.service, settings.max_sessions);
            tracing::warn!(target: "master",
                "service \"{name}\" ({local}) has reached its process limit \"{limit}\": new clients may experience noticeable delays"
            );
            tracing::warn!(target: "master",
                "to avoid this condition, increase the process count in master.cf or reduce the service time per client"
            );
            tracing::warn!(target: "master",
                "see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings"
            );
        }
        if under_stress { stressed } else { settings }
    }

    /// The permits for sessions on this listener: the accept loop takes
    /// one before it accepts.
    pub(super) fn sessions(&self) -> &Arc<Semaphore> {
        &self.sessions
    }

    /// The resolver for client names, if the listener has one.
    pub(crate) fn resolver(&self) -> Option<&Arc<dyn Resolver>> {
        self.resolver.as_ref()
    }

    /// The sender authentication checks, if the listener runs them.
    pub(crate) fn authenticator(&self) -> Option<&Authenticator> {
        self.authenticator.as_ref()
    }

    /// Applies new settings (SIGHUP) to connections accepted from now on;
    /// running sessions keep theirs. Rate limiter state restarts only when
    /// a rate setting changed.
    pub fn reload(&self, settings: Settings) {
        let old = self.settings.load();
        if old.client_connection_rate_limit != settings.client_connection_rate_limit
            || old.client_message_rate_limit != settings.client_message_rate_limit
            || old.rate_time_unit != settings.rate_time_unit
        {
            self.rates.store(Arc::new(Rates::new(&settings)));
        }
        let want = settings.max_sessions.max(1);
        let had = self.session_limit.swap(want, Ordering::SeqCst);
        if want > had {
            self.sessions.add_permits(want - had);
        } else if had > want {
            // Permits held by running sessions are taken back as they end.
            let sem = Arc::clone(&self.sessions);
            let n = (had - want) as u32;
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(n).await {
                    p.forget();
                }
            });
        }
        let milters = self.registry.build(
            &settings.milters.specs,
            settings.milters.failure_threshold,
            settings.milters.cooldown,
        );
        self.milters.store(Arc::new(milters));
        self.settings.store(Arc::new(settings));
    }

    /// The milters new sessions ask (`smtpd_milters`), with their breakers.
    pub(crate) fn milters(&self) -> Arc<Vec<Arc<Milter>>> {
        self.milters.load_full()
    }

    /// The settings new sessions get.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The queue sessions write into.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Counts a `MAIL` from `addr` against `smtpd_client_message_rate_limit`;
    /// false when over the limit.
    pub(crate) fn message_allowed(&self, addr: IpAddr, settings: &Settings) -> bool {
        if settings.is_limit_exempt(addr) {
            return true;
        }
        self.rates.load().messages.as_ref().is_none_or(|r| r.check(settings.client_key(addr)))
    }

    /// Admits a new connection from `addr` against the per-client limits,
    /// or returns the reply that refuses it.
    pub(super) fn admit(
        self: &Arc<Self>,
        addr: IpAddr,
        settings: &Settings,
    ) -> Result<Option<ClientSlot>, Refusal> {
        if settings.is_limit_exempt(addr) {
            return Ok(None);
        }
        let key = settings.client_key(addr);
        if let Some(rate) = &self.rates.load().connections
            && !rate.check(key)
        {
            return Err(Refusal::Rate { addr });
        }
        let limit = settings.client_connection_count_limit;
        if limit == 0 {
            return Ok(None);
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let n = clients.entry(key).or_insert(0);
        if *n >= limit {
            return Err(Refusal::Concurrency { count: *n + 1, addr });
        }
        *n += 1;
        Ok(Some(ClientSlot { inbound: Arc::clone(self), key }))
    }
}

/// Why a connection was refused before its session started; the text is
/// Postfix's warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// Over `smtpd_client_connection_rate_limit`.
    #[error("Connection rate limit exceeded from {addr}")]
    Rate { addr: IpAddr },
    /// Over `smtpd_client_connection_count_limit`, counting this one.
    #[error("Connection concurrency limit exceeded: {count} from {addr}")]
    Concurrency { count: u32, addr: IpAddr },
}

/// One counted session of a client; the count drops with it.
#[derive(Debug)]
pub(super) struct ClientSlot {
    inbound: Arc<Inbound>,
    /// The client's network (see [`Settings::client_key`]).
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.inbound.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = clients.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

/// How long a listener stays under stress after a session took its last
/// free slot: Postfix's master keeps `stress=yes` for 1000 s after the
/// process limit was last reached (its "stress pulse stretcher"), so the
/// configuration does not flap with every session that ends.
pub(super) const STRESS_PULSE: Duration = Duration::from_secs(1000);

/// A listener's stress, as plain data with time passed in.
#[derive(Debug, Default)]
pub(super) struct Stress {
    /// Under stress until then.
    until: Option<Instant>,
    /// When the process-limit warning was last logged.
    warned: Option<Instant>,
}

impl Stress {
    /// A session starts at `now`, leaving `free` slots: whether it runs
    /// under stress, and whether the limit warning is due (once per pulse).
    pub(super) fn on_start(&mut self, free: usize, now: Instant) -> (bool, bool) {
        let mut warn = false;
        if free == 0 {
            self.until = Some(now + STRESS_PULSE);
            if self.warned.is_none_or(|w| now >= w + STRESS_PULSE) {
                self.warned = Some(now);
                warn = true;
            }
        }
        (self.until.is_some_and(|until| now < until), warn)
    }
}

/// A per-client-address rate: at most `limit` events per `unit`, with
/// bursts up to `limit` (GCRA, as governor implements it).
pub(crate) struct ClientRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    checks: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for ClientRate<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRate").field("clients", &self.limiter.len()).finish()
    }
}

impl<C: Clock> ClientRate<C> {
    /// `None` when `limit` is 0 (no limit).
    pub(crate) fn new(limit: u32, unit: Duration, clock: C) -> Option<ClientRate<C>> {
        let burst = NonZeroU32::new(limit)?;
        let quota = Quota::with_period(unit.max(Duration::from_millis(1)) / limit)?.allow_burst(burst);
        Some(ClientRate { limiter: RateLimiter::hashmap_with_clock(quota, clock), checks: AtomicU64::new(0) })
    }

    /// Counts one event; false when over the limit.
    pub(crate) fn check(&self, addr: IpAddr) -> bool {
        // Forget idle clients now and then so the table stays bounded by
        // the clients of the last time unit.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&addr).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn client_rate_allows_limit_per_unit_per_address() {
        let clock = FakeRelativeClock::default();
        let rate = ClientRate::new(3, Duration::from_secs(60), clock.clone()).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(rate.check(a) && rate.check(a) && rate.check(a));
        assert!(!rate.check(a));
        // Another client has its own budget.
        assert!(rate.check(b));
        // One event's worth of time later, one more is allowed.
        clock.advance(Duration::from_secs(20));
        assert!(rate.check(a));
        assert!(!rate.check(a));
        // A whole unit later, a full burst again.
        clock.advance(Duration::from_secs(60));
        assert!(rate.check(a) && rate.check(a) && rate.check(a));
    }

    #[test]
    fn the_last_free_slot_starts_a_stress_pulse_and_one_warning() {
        let mut s = Stress::default();
        let t0 = crate::clock::instant();
        assert_eq!(s.on_start(3, t0), (false, false));
        assert_eq!(s.on_start(0, t0), (true, true), "the last slot: stress, warned");
        assert_eq!(s.on_start(2, t0 + Duration::from_secs(10)), (true, false), "slots freed: still stressed");
        assert_eq!(s.on_start(0, t0 + Duration::from_secs(20)), (true, false), "warned once per pulse");
        // The pulse runs from the last time the limit was reached.
        assert_eq!(s.on_start(5, t0 + Duration::from_secs(1019)), (true, false));
        assert_eq!(s.on_start(5, t0 + Duration::from_secs(1020)), (false, false));
        assert_eq!(s.on_start(0, t0 + Duration::from_secs(1020)), (true, true));
    }

    #[test]
    fn zero_means_no_rate_limit() {
        assert!(ClientRate::new(0, Duration::from_secs(60), FakeRelativeClock::default()).is_none());
    }
}
