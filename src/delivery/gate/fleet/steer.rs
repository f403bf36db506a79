//! The fleet's adaptive limit: one limit per backend for the whole fleet,
//! moved by the latency and failure feedback of every host, so six hosts
//! find the same best pace as one.
//!
//! Every host's finish script adds its delivery's sample (latency, the
//! fleet's deliveries in flight, when it started in Redis time) to the
//! backend's sample list. One host per backend holds the **limit owner**
//! lease (`sluice_fleet_lease_time`) and runs the project's own pure
//! limiter ([`AdaptiveLimit`], the single host's, unchanged) over those
//! samples every [`STEER_EVERY`], writing the limit whenever it moves
//! (a try that a descent chains starts in the same step, not a step
//! later: [`AdaptiveLimit::chain_now`]).
//! Every host's admission script reads it (at most the configured limit;
//! `initial_destination_concurrency` while none is written). When the
//! owner dies or loses Redis, its lease runs out and the next host to ask
//! takes over within the lease time, starting from the limit last written.
//! The fleet breaker closing restarts the limit at the initial
//! concurrency, or at the level the owner's limiter last settled at when
//! that is lower, as the single host's does (the owner sends that level
//! with each step; the finish script writes the restart; the owner
//! follows).
//!
//! Why one owner and not every host steering by the fleet's samples: the
//! limiter is a perturb-and-observe loop that moves the level and then
//! measures it, so two of them would move one level at once and each would
//! read the other's moves as the server's answer.
//!
//! While Redis is unreachable nobody steers: each host's local gate runs
//! its own limiter within its share (`share.rs`).
//!
//! Owns the owner's loop and the mapping from fleet samples to the
//! limiter's. Never enforces the limit (admission does, inside Redis) and
//! never delays a delivery: it runs beside them.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::FleetGate;
use super::scripts::{FleetSample, Steer};
use crate::clock;
use crate::delivery::gate::concurrency::{self, AdaptiveLimit, Change};
use crate::delivery::gate::pace;

/// How often the limit owner takes the samples and steers. Not a setting:
/// it costs one Redis call per adaptive backend on one host, ten a second;
/// a limiter round lasts at least one delivery's latency, so steering
/// more often would only see empty lists; and it bounds the error when a
/// sample's start is moved onto this host's clock (`started_at`).
pub const STEER_EVERY: Duration = Duration::from_millis(100);

/// One host's side of a backend's limit: the limiter while it owns it.
#[derive(Debug)]
struct Owner {
    /// This host's owner-lease member.
    member: String,
    limiter: Option<AdaptiveLimit>,
    policy: Option<concurrency::Policy>,
    /// A limit computed but not written (the write failed).
    pending: Option<u32>,
}

/// Runs while the gate lives: asks for (or keeps) the owner lease; while
/// it holds it, steers the fleet's limit.
pub(super) async fn steer(gate: Weak<FleetGate>, member: String) {
    let mut owner = Owner { member, limiter: None, policy: None, pending: None };
    loop {
        let nap = {
            let Some(g) = gate.upgrade() else { return };
            let nap = step(&g, &mut owner).await;
            g.steering.store(owner.limiter.is_some(), std::sync::atomic::Ordering::Release);
            nap
        };
        tokio::time::sleep(nap).await;
    }
}

/// One call to the steer script: `write` (0: none) is written, samples are
/// taken when `take`.
async fn call(g: &FleetGate, owner: &Owner, write: u32, take: bool) -> Option<Steer> {
    let lease_ms = g.fleet.settings().lease_time.as_millis() as u64;
    let mut inv = g.fleet.scripts.steer.key(&g.keys.owner);
    inv.key(&g.keys.samples).key(&g.keys.limit).key(&g.keys.breaker);
    inv.arg(&owner.member).arg(lease_ms).arg(write).arg(u8::from(take));
    inv.arg(owner.limiter.as_ref().and_then(AdaptiveLimit::settled).unwrap_or(0));
    let reply: Steer = g.fleet.call("steer", &inv).await.ok()?;
    g.set_shared_limit(reply.limit);
    Some(reply)
}

/// One step; returns how long to wait before the next.
async fn step(g: &FleetGate, owner: &mut Owner) -> Duration {
    let s = g.configured();
    let settings = g.fleet.settings();
    // Hosts that do not own the limit only ask whether the owner is still
    // there, often enough to take over well within the lease time.
    let idle = settings.heartbeat.min(settings.lease_time / 3).max(STEER_EVERY);
    if !s.adaptive || !g.fleet.is_shared() {
        owner.limiter = None;
        return idle;
    }
    let write = owner.pending.take().unwrap_or(0);
    let Some(reply) = call(g, owner, write, true).await else {
        // Redis is gone (or slow): whoever answers it next steers.
        owner.pending = (write > 0).then_some(write);
        owner.limiter = None;
        return idle;
    };
    if !reply.owner {
        if owner.limiter.take().is_some() {
            tracing::info!("backend {}: fleet: another host steers the concurrency limit now", g.name);
        }
        return idle;
    }
    let tick = clock::instant();
    let policy = pace(&s);
    let limiter = owner.limiter.get_or_insert_with(|| {
        let mut l = AdaptiveLimit::new(policy);
        if let Some(c) = reply.limit {
            l.reset(c);
        }
        tracing::info!(
            "backend {}: fleet: this host steers the fleet's concurrency limit (now {})",
            g.name,
            l.current()
        );
        l
    });
    let mut change = None;
    if owner.policy.is_some_and(|p| p != policy) {
        change = limiter.reconfigure(policy);
    }
    owner.policy = Some(policy);
    match reply.limit {
        // The breaker closed (the finish script restarted the limit), or
        // an earlier owner's last word: follow it.
        Some(c) if c != limiter.current() && write == 0 => change = limiter.reset(c).or(change),
        None => owner.pending = Some(limiter.current()),
        _ => {}
    }
    for c in owner_step(limiter, &reply.samples, reply.now, tick) {
        log(g, limiter, &c);
        change = Some(c);
    }
    let current = limiter.current();
    if change.is_some() || owner.pending.is_some() {
        // Written at once: the limiter's next round counts only deliveries
        // started under the new limit.
        owner.pending = None;
        if call(g, owner, current, false).await.is_none() {
            owner.pending = Some(current);
        }
    }
    STEER_EVERY
}

/// One steering step of the limit owner's limiter: the samples the step
/// took (their starts in Redis ms, Redis's clock reading `now_ms` at
/// `tick`), then the try a descent chained, started now rather than at
/// the next step's samples, a step of deliveries later. The changes, in
/// order. (The limiter's simulation of steps does as this does.)
fn owner_step(
    limiter: &mut AdaptiveLimit,
    samples: &[FleetSample],
    now_ms: u64,
    tick: Instant,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for smp in samples {
        let c = if smp.overload {
            limiter.on_overload(tick)
        } else {
            let started = started_at(tick, now_ms, smp.started);
            limiter.on_sample(
                concurrency::Sample { latency: smp.latency, in_flight: smp.in_flight, started },
                tick,
            )
        };
        changes.extend(c);
    }
    changes.extend(limiter.chain_now(tick));
    changes
}

fn log(g: &FleetGate, limiter: &AdaptiveLimit, c: &Change) {
    let evidence = crate::delivery::gate::log::evidence(limiter);
    let (name, from, to, why) = (&g.name, c.from, c.to, c.reason.as_str());
    if c.reason.is_news() {
        tracing::info!("backend {name}: fleet concurrency {from} -> {to} ({why}){evidence}");
    } else {
        tracing::debug!("backend {name}: fleet concurrency {from} -> {to} ({why}){evidence}");
    }
}

/// A sample's start (Redis ms) on this host's clock, given that Redis's
/// `now_ms` is this host's `tick` (one step's error at most: 100 ms).
fn started_at(tick: Instant, now_ms: u64, started_ms: u64) -> Instant {
    let age = Duration::from_millis(now_ms.saturating_sub(started_ms));
    tick.checked_sub(age).unwrap_or(tick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::gate::concurrency::Reason;

    #[test]
    fn a_sample_started_in_redis_time_maps_onto_this_hosts_clock() {
        let tick = clock::instant();
        assert_eq!(started_at(tick, 10_000, 9_750), tick - Duration::from_millis(250));
        // A start "after" Redis's now (clock skew between calls) is now.
        assert_eq!(started_at(tick, 10_000, 10_050), tick);
    }

    #[test]
    fn a_descent_that_pays_starts_its_next_try_in_the_same_step() {
        // The round that moves home to 4 ends with the last sample of a
        // step: the next try (halving, the gradient being retrograde)
        // starts in that step, not a step of deliveries later.
        let policy = concurrency::Policy {
            initial: 5,
            max: 20,
            target: Duration::from_secs(5),
            probe_share: 0.05,
            adaptive: true,
        };
        let mut l = AdaptiveLimit::new(policy);
        let t0 = clock::instant();
        // Redis's clock reads 10,000 ms at `t0`.
        let step = |l: &mut AdaptiveLimit, samples: &[FleetSample], at: u64| {
            owner_step(l, samples, 10_000 + at, t0 + Duration::from_millis(at))
        };
        let sample = |started: u64, latency: u64, in_flight: u32| FleetSample {
            started: 10_000 + started,
            latency: Duration::from_millis(latency),
            in_flight,
            overload: false,
        };
        let change = |from, to, reason| Change { from, to, reason };
        // The first wave, then a round at 5 (started after it ended).
        let mut first = vec![sample(0, 260, 5); 5];
        first.extend([sample(270, 260, 5); 8]);
        assert_eq!(step(&mut l, &first, 600), [change(5, 4, Reason::TryDown)]);
        let at_four = [sample(610, 200, 4); 8];
        assert_eq!(
            step(&mut l, &at_four, 900),
            [change(5, 4, Reason::Descend), change(4, 2, Reason::TryDown)]
        );
    }
}
