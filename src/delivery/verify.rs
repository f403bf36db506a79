//! Recipient address verification (`reject_unverified_recipient`), the
//! delivery side: [`AddressVerifier`] answers the SMTP server's
//! [`Verifier`] calls from the queue's verification cache, or by probing
//! the recipient's own backend, found by the same routing delivery uses
//! (`transport_maps`, `relay_transport`, ...), through that backend's gate
//! (`dispatch/probe.rs`).
//!
//! As Postfix's verify(8): answers are believed for
//! `address_verify_positive_expire_time` (deliverable) or
//! `address_verify_negative_expire_time` (undeliverable, when
//! `address_verify_negative_cache` is on); past the refresh time the
//! cached answer is still given and a probe refreshes it in the
//! background. A temporary answer (4xx, a broken conversation, a busy
//! backend) is never cached and never replaces a cached answer. The client
//! waits at most `address_verify_poll_count` × `address_verify_poll_delay`
//! for a recipient (for all of an alias's targets together, probed one
//! after the other); a probe still running then goes on and caches its answer
//! for the client's next try (Postfix's "address verification in
//! progress"). One probe per address at a time: concurrent sessions asking
//! about the same address share it.
//!
//! The expiry policy is pure ([`Lifetimes::judge`], time passed in); the
//! cache's size is bounded by sweeps (`address_verify_cache_cleanup_interval`,
//! and whenever `sluice_address_verify_cache_limit` answers were written
//! since the last). Never decides a reply: the SMTP server's policy does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sluice_queue::{UnixMillis, VerifyRecord};

use super::client::ProbeAnswer;
use super::context::{Context, lock};
use super::dispatch::{Busy, Probed};
use super::registry::Registry;
use super::{BackendId, Handle};
use crate::clock;
use crate::config::{Config, Protocol, Route};
use crate::metric;
use crate::reply::Status;
use crate::verify::{Verdict, Verifier};

/// How long answers are believed (`address_verify_*_time`), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub positive_expire: u64,
    pub positive_refresh: u64,
    pub negative_expire: u64,
    pub negative_refresh: u64,
    /// `address_verify_negative_cache`.
    pub negative_cache: bool,
}

/// What a cached answer is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it.
    Fresh,
    /// Use it, and refresh it in the background.
    Refresh,
    /// Too old (or a negative answer while negative caching is off): probe.
    Expired,
}

impl Lifetimes {
    /// From the configuration in force.
    pub fn from_config(c: &Config) -> Lifetimes {
        let ms = |name: &str| u64::try_from(c.time(name).as_millis()).unwrap_or(u64::MAX);
        Lifetimes {
            positive_expire: ms("address_verify_positive_expire_time"),
            positive_refresh: ms("address_verify_positive_refresh_time"),
            negative_expire: ms("address_verify_negative_expire_time"),
            negative_refresh: ms("address_verify_negative_refresh_time"),
            negative_cache: c.bool("address_verify_negative_cache"),
        }
    }

    /// What `record` is worth at `now`.
    pub fn judge(&self, record: &VerifyRecord, now: UnixMillis) -> Freshness {
        let age = now.saturating_sub(record.probed);
        let (expire, refresh) = if record.deliverable {
            (self.positive_expire, self.positive_refresh)
        } else if self.negative_cache {
            (self.negative_expire, self.negative_refresh)
        } else {
            return Freshness::Expired;
        };
        if age >= expire {
            Freshness::Expired
        } else if age >= refresh {
            Freshness::Refresh
        } else {
            Freshness::Fresh
        }
    }
}

/// A probe under way, shared by every session asking about its address.
type Pending = Shared<BoxFuture<'static, Verdict>>;

/// The verifier delivery hands the SMTP server (see the module docs).
#[derive(Debug, Clone)]
pub struct AddressVerifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<Registry>,
    ctx: Arc<Context>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Answers written since the last sweep.
    written: AtomicUsize,
}

impl AddressVerifier {
    /// The verifier over the backends of a running delivery, for the SMTP
    /// server; sweeps the cache now and every
    /// `address_verify_cache_cleanup_interval` until shutdown. Each call
    /// makes one with its own sweeper: the daemon makes one.
    pub fn start(handle: &Handle) -> Arc<dyn Verifier> {
        let (registry, ctx) = handle.parts();
        Arc::new(AddressVerifier::new(registry, ctx))
    }

    fn new(registry: Arc<Registry>, ctx: Arc<Context>) -> AddressVerifier {
        let inner = Arc::new(Inner {
            registry,
            ctx,
            pending: Mutex::new(HashMap::new()),
            written: AtomicUsize::new(0),
        });
        let sweeper = Arc::clone(&inner);
        tokio::spawn(async move {
            sweeper.sweep().await;
            loop {
                // 0 turns the periodic cleanup off, as in Postfix (the
                // writes still trigger one past the limit); the interval is
                // read again each hour then, so a reload that sets one
                // takes effect.
                let every = sweeper.ctx.settings.config().time("address_verify_cache_cleanup_interval");
                let nap = if every.is_zero() { Duration::from_secs(3600) } else { every };
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = sweeper.ctx.token.cancelled() => return,
                }
                if !every.is_zero() {
                    sweeper.sweep().await;
                }
            }
        });
        AddressVerifier { inner }
    }
}

impl Verifier for AddressVerifier {
    fn verify<'a>(&'a self, addresses: &'a [String]) -> BoxFuture<'a, Verdict> {
        Box::pin(self.inner.verify_all(addresses))
    }
}

impl Inner {
    /// Each address in turn (one probe at a time: an alias's targets often
    /// share a backend, which must not get them all at once), within one
    /// poll window for all of them.
    async fn verify_all(self: &Arc<Self>, addresses: &[String]) -> Verdict {
        let config = self.ctx.settings.config();
        let wait = config.time("address_verify_poll_delay")
            * u32::try_from(config.int("address_verify_poll_count")).unwrap_or(1).max(1);
        let deadline = clock::instant() + wait;
        for address in addresses {
            let verdict = self.verify(address, deadline).await;
            if verdict != Verdict::Deliverable {
                return verdict;
            }
        }
        Verdict::Deliverable
    }

    /// One address, waiting for a probe until `deadline`.
    async fn verify(self: &Arc<Self>, address: &str, deadline: tokio::time::Instant) -> Verdict {
        let config = self.ctx.settings.config();
        let lifetimes = Lifetimes::from_config(&config);
        // Addresses are compared as lookup tables compare them.
        let key = address.to_ascii_lowercase();
        let cached = match self.ctx.queue.verify_get(&key).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("address verification cache: read failed: {e}");
                None
            }
        };
        let now = clock::unix_millis();
        if let Some(rec) = cached {
            let freshness = lifetimes.judge(&rec, now);
            if freshness != Freshness::Expired {
                let refresh = freshness == Freshness::Refresh;
                let result = if refresh { "refresh" } else { "hit" };
                metrics::counter!(metric::VERIFY_CACHE, "result" => result).increment(1);
                if refresh {
                    // Started and left to run: the client has its answer.
                    drop(self.probe_shared(&key, address));
                }
                return if rec.deliverable { Verdict::Deliverable } else { Verdict::Undeliverable(rec.text) };
            }
        }
        metrics::counter!(metric::VERIFY_CACHE, "result" => "miss").increment(1);
        match tokio::time::timeout_at(deadline, self.probe_shared(&key, address)).await {
            Ok(v) => v,
            Err(_) => {
                metrics::counter!(metric::VERIFY_TEMPFAILS, "reason" => "timeout").increment(1);
                Verdict::Tempfail("Address verification in progress".into())
            }
        }
    }

    /// The probe of `address` under way, or a new one. It runs as its own
    /// task, so it finishes (and caches its answer) even when the session
    /// that started it stops waiting.
    fn probe_shared(self: &Arc<Self>, key: &str, address: &str) -> Pending {
        let mut pending = lock(&self.pending);
        if let Some(p) = pending.get(key) {
            return p.clone();
        }
        let me = Arc::clone(self);
        let (k, a) = (key.to_owned(), address.to_owned());
        let fut = async move {
            let token = me.ctx.token.clone();
            let v = tokio::select! {
                v = me.probe(&k, &a) => v,
                _ = token.cancelled() => Verdict::Tempfail("mail system is stopping".into()),
            };
            lock(&me.pending).remove(&k);
            v
        }
        .boxed()
        .shared();
        pending.insert(key.to_owned(), fut.clone());
        tokio::spawn(fut.clone());
        fut
    }

    /// One probe of `address` through its backend; caches a lasting answer.
    async fn probe(&self, key: &str, address: &str) -> Verdict {
        let config = self.ctx.settings.config();
        let (id, relay_name) = match config.route_async(address).await {
            Ok(Route::Deliver { transport, protocol, nexthop, by_domain }) => {
                let id = BackendId { transport, protocol, nexthop, by_domain };
                let name = id.to_string();
                (id, name)
            }
            // Mail for it would bounce with this text, or be dropped.
            Ok(Route::Error { text }) => return Verdict::Undeliverable(text),
            Ok(Route::Discard { .. }) => return Verdict::Deliverable,
            Err(e) => {
                metrics::counter!(metric::VERIFY_TEMPFAILS, "reason" => "route").increment(1);
                return Verdict::Tempfail(format!("transport map lookup failure: {e}"));
            }
        };
        let settings = self.ctx.settings.backend(&config, &id.transport, id.protocol);
        let backend = self.registry.backend(&id, settings);
        let sender = probe_sender(&config);
        let slot_wait = config.time("sluice_address_verify_slot_wait");
        let started = clock::instant();
        let Probed { answer, relay } = match backend.probe(&sender, address, slot_wait).await {
            Ok(p) => p,
            Err(Busy(why)) => {
                metrics::counter!(metric::VERIFY_PROBES, "backend" => relay_name, "result" => "busy")
                    .increment(1);
                metrics::counter!(metric::VERIFY_TEMPFAILS, "reason" => "busy").increment(1);
                tracing::info!("NOQUEUE: address verification of <{address}> not attempted: {why}");
                return Verdict::Tempfail(why);
            }
        };
        let (status, text, verdict, store) = match answer {
            ProbeAnswer::Accepted(text) => ("deliverable", text, Verdict::Deliverable, Some(true)),
            ProbeAnswer::Refused(text) => {
                let store = config.bool("address_verify_negative_cache").then_some(false);
                ("undeliverable", text.clone(), Verdict::Undeliverable(text), store)
            }
            ProbeAnswer::Deferred(text) | ProbeAnswer::Broken(text) => {
                ("deferred", text.clone(), Verdict::Unverified(text), None)
            }
        };
        metrics::counter!(metric::VERIFY_PROBES, "backend" => relay_name, "result" => status).increment(1);
        log_probe(id.protocol, address, &relay, started.elapsed(), status, &text);
        if let Some(deliverable) = store {
            let rec = VerifyRecord { deliverable, probed: clock::unix_millis(), text };
            if let Err(e) = self.ctx.queue.verify_put(key, &rec).await {
                tracing::warn!("address verification cache: write failed: {e}");
            }
            let limit =
                usize::try_from(config.int("sluice_address_verify_cache_limit")).unwrap_or(usize::MAX);
            if self.written.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                self.sweep().await;
            }
        }
        verdict
    }

    /// Removes expired answers, then the oldest past the limit.
    async fn sweep(&self) {
        self.written.store(0, Ordering::Relaxed);
        let config = self.ctx.settings.config();
        let lifetimes = Lifetimes::from_config(&config);
        let limit = usize::try_from(config.int("sluice_address_verify_cache_limit")).unwrap_or(usize::MAX);
        let now = clock::unix_millis();
        let keep = move |r: &VerifyRecord| lifetimes.judge(r, now) != Freshness::Expired;
        match self.ctx.queue.verify_sweep(keep, limit).await {
            Ok(s) if s.removed > 0 => {
                tracing::info!("address verification cache: {} kept, {} removed", s.kept, s.removed)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("address verification cache: cleanup failed: {e}"),
        }
    }
}

/// `address_verify_sender`: `<>` (or empty) is the null sender; an
/// address without a domain gets `@$myorigin`, as Postfix qualifies it.
fn probe_sender(c: &Config) -> String {
    let s = c.string("address_verify_sender").trim();
    if s.is_empty() || s == "<>" {
        return String::new();
    }
    if s.contains('@') { s.to_owned() } else { format!("{s}@{}", c.string("myorigin")) }
}

/// The probe's line, as Postfix's delivery agents log verify probes:
/// `NOQUEUE: to=<a@b>, relay=..., delay=0.01, dsn=5.1.1,
/// status=undeliverable (host ... said: ...)` (a probe has no queue file).
fn log_probe(protocol: Protocol, address: &str, relay: &str, took: Duration, status: &str, text: &str) {
    let default = match status {
        "deliverable" => Status(2, 0, 0),
        "undeliverable" => Status(5, 0, 0),
        _ => Status(4, 0, 0),
    };
    // The server's enhanced code, in the class of the outcome.
    let dsn = text.split_whitespace().filter_map(Status::parse).find(|s| s.0 == default.0).unwrap_or(default);
    let line = format!(
        "NOQUEUE: to=<{address}>, relay={relay}, delay={:.2}, dsn={dsn}, status={status} ({text})",
        took.as_secs_f64()
    );
    match protocol {
        Protocol::Lmtp => tracing::info!(target: "lmtp", "{line}"),
        Protocol::Smtp => tracing::info!(target: "smtp", "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn lifetimes(negative_cache: bool) -> Lifetimes {
        Lifetimes {
            positive_expire: 31 * DAY,
            positive_refresh: 7 * DAY,
            negative_expire: 3 * DAY,
            negative_refresh: 3 * 3_600_000,
            negative_cache,
        }
    }

    fn rec(deliverable: bool, probed: u64) -> VerifyRecord {
        VerifyRecord { deliverable, probed, text: String::new() }
    }

    #[test]
    fn answers_are_fresh_then_refreshed_then_expired_as_postfix_times_them() {
        let l = lifetimes(true);
        let t0 = 1_000 * DAY;
        assert_eq!(l.judge(&rec(true, t0), t0 + DAY), Freshness::Fresh);
        assert_eq!(l.judge(&rec(true, t0), t0 + 7 * DAY), Freshness::Refresh);
        assert_eq!(l.judge(&rec(true, t0), t0 + 31 * DAY), Freshness::Expired);
        assert_eq!(l.judge(&rec(false, t0), t0 + 3_600_000), Freshness::Fresh);
        assert_eq!(l.judge(&rec(false, t0), t0 + 4 * 3_600_000), Freshness::Refresh);
        assert_eq!(l.judge(&rec(false, t0), t0 + 3 * DAY), Freshness::Expired);
        // A clock that stepped back makes an answer younger, not invalid.
        assert_eq!(l.judge(&rec(true, t0), t0 - DAY), Freshness::Fresh);
    }

    #[test]
    fn negative_answers_are_not_believed_without_the_negative_cache() {
        let l = lifetimes(false);
        assert_eq!(l.judge(&rec(false, 10), 11), Freshness::Expired);
        assert_eq!(l.judge(&rec(true, 10), 11), Freshness::Fresh);
    }
}
