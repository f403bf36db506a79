//! What the local gate inside a fleet gate is set to: pure functions of a
//! backend's configured (fleet-wide) settings.
//!
//! - **Shared** (Redis answers): the fleet's scripts hold the limit, the
//!   rate and the breaker, so the local gate keeps only what is this
//!   host's own: its concurrency slots (within the fleet limit), the
//!   latency it sees, the parked mail. Its rate is off, its limit is fixed
//!   at the fleet's current limit (steered in Redis, `steer.rs`; the
//!   ceiling when the limit is fixed) and its breaker can never open (the
//!   fleet's breaker decides for every host). Held at the fleet's limit
//!   rather than the ceiling so that a host does not ask Redis for slots
//!   the fleet does not have: every admission past the fleet's limit is a
//!   round trip answered "no slot". Not at a fair share of it: a host with
//!   the fleet's whole backlog must be able to use every slot the others
//!   leave free (Redis still holds the fleet to its limit).
//! - **Local share** (Redis unreachable): the local gate runs alone with
//!   this host's share of each limit, the fleet's divided by the hosts
//!   alive when Redis was last seen (at least one slot), and its own
//!   breaker. Shares add up to the fleet's limit (a little more when there
//!   are more hosts than slots: each host keeps one).
//!
//! Owns these two mappings and the rate's GCRA parameters. Never holds
//! state.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::delivery::settings::{BackendSettings, Rate};

/// One host's share of a fleet-wide count: at least 1.
pub fn share(total: u32, hosts: u32) -> u32 {
    (total / hosts.max(1)).max(1)
}

/// The local gate's settings while the fleet is shared and its limit is
/// `fleet_limit` (the adaptive limit last read from Redis; `None`: none
/// read yet, or a fixed limit).
pub fn shared(s: &BackendSettings, fleet_limit: Option<u32>) -> BackendSettings {
    let mut l = s.clone();
    if s.adaptive {
        let start = s.initial_concurrency.clamp(1, s.concurrency_limit.max(1));
        l.concurrency_limit = fleet_limit.unwrap_or(start).clamp(1, s.concurrency_limit.max(1));
    }
    l.rate = None;
    l.rate_delay = Duration::ZERO;
    l.failure_threshold = u32::MAX;
    // The fleet's limit is steered in Redis (`steer.rs`); locally only its
    // ceiling holds.
    l.adaptive = false;
    l
}

/// The local gate's settings on its share among `hosts`.
pub fn local_share(s: &BackendSettings, hosts: u32) -> BackendSettings {
    let hosts = hosts.max(1);
    let mut l = s.clone();
    l.concurrency_limit = share(s.concurrency_limit, hosts);
    l.initial_concurrency = s.initial_concurrency.min(l.concurrency_limit);
    // N per T across the fleet is N per (T × hosts) for each host.
    l.rate = s.rate.map(|r| Rate {
        count: r.count,
        per: r.per.saturating_mul(hosts),
        burst: NonZeroU32::new(r.burst.get() / hosts).unwrap_or(NonZeroU32::MIN),
    });
    l.rate_delay = s.rate_delay.saturating_mul(hosts);
    l
}

/// The fleet rate as GCRA parameters in milliseconds: the emission
/// interval (one start per interval on average; `0`: no rate) and the
/// tolerance (how far ahead of schedule a start may be: the burst).
/// `destination_rate_delay` is a rate with no burst; the stricter wins.
pub fn gcra(s: &BackendSettings) -> (u64, u64) {
    let (mut interval, mut tolerance) = match s.rate {
        Some(r) => {
            // Rounded up: the fleet never goes faster than configured.
            let i = (r.per.as_millis() as u64).div_ceil(u64::from(r.count.get())).max(1);
            (i, i * u64::from(r.burst.get() - 1))
        }
        None => (0, 0),
    };
    let delay = s.rate_delay.as_millis() as u64;
    if delay > interval {
        interval = delay;
        tolerance = 0;
    }
    (interval, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    fn settings(limit: u32, rate: &str) -> BackendSettings {
        let mut s = BackendSettings::new(Protocol::Lmtp);
        s.concurrency_limit = limit;
        s.rate = Rate::parse(rate, 0).unwrap();
        s
    }

    #[test]
    fn shares_add_up_to_the_fleet_limit_and_never_fall_to_zero() {
        assert_eq!(share(8, 3), 2);
        assert_eq!(share(8, 1), 8);
        assert_eq!(share(2, 6), 1);
        assert_eq!(share(8, 0), 8);
        let l = local_share(&settings(9, "30/s"), 3);
        assert_eq!(l.concurrency_limit, 3);
        assert!((l.rate.unwrap().per_second() - 10.0).abs() < 1e-9);
        assert_eq!(l.rate.unwrap().burst.get(), 10);
    }

    #[test]
    fn the_shared_local_gate_leaves_rate_and_breaker_to_the_fleet() {
        let mut s = settings(9, "30/s");
        s.adaptive = false;
        let l = shared(&s, Some(3));
        assert_eq!(l.concurrency_limit, 9);
        assert_eq!(l.rate, None);
        assert_eq!(l.failure_threshold, u32::MAX);
    }

    #[test]
    fn the_shared_local_gate_holds_the_fleets_adaptive_limit() {
        let mut s = settings(20, "");
        s.adaptive = true;
        s.initial_concurrency = 5;
        // None read yet: where the fleet's limit starts.
        assert_eq!(shared(&s, None).concurrency_limit, 5);
        assert_eq!(shared(&s, Some(3)).concurrency_limit, 3);
        // Never above the ceiling, never zero.
        assert_eq!(shared(&s, Some(40)).concurrency_limit, 20);
        assert_eq!(shared(&s, Some(0)).concurrency_limit, 1);
        assert!(!shared(&s, Some(3)).adaptive);
        // A fixed limit is the fleet's limit as configured.
        s.adaptive = false;
        assert_eq!(shared(&s, Some(3)).concurrency_limit, 20);
    }

    #[test]
    fn gcra_parameters_follow_the_rate_and_the_stricter_delay() {
        assert_eq!(gcra(&settings(9, "")), (0, 0));
        assert_eq!(gcra(&settings(9, "10/s")), (100, 900));
        assert_eq!(gcra(&settings(9, "3/s")), (334, 668));
        let mut s = settings(1, "10/s");
        s.rate_delay = Duration::from_secs(1);
        assert_eq!(gcra(&s), (1000, 0));
    }
}
