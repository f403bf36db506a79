//! The answer cache of one directory table: what a key was found to be
//! (a result, or "not found"), kept for the positive or the negative
//! lifetime (`sluice_table_cache_positive_lifetime`,
//! `sluice_table_cache_negative_lifetime`), at most
//! `sluice_table_cache_size` keys.
//!
//! Pure: the caller passes `now`. Failures are never cached: a lookup that
//! failed is asked again next time (never an unknown user accepted or a
//! real one refused because of an old error). When full, the oldest
//! entries make room (first in, first out): cheap, and the working set of
//! an MX (the recipients mail arrives for) refills quickly.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Lifetimes and size of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachePolicy {
    pub positive: Duration,
    pub negative: Duration,
    pub size: usize,
}

#[derive(Debug)]
struct Entry {
    value: Option<String>,
    expires: Instant,
    /// Insertion number, to tell the live entry from an older one of the
    /// same key still in `order`.
    seq: u64,
}

/// Key → answer, with expiry.
#[derive(Debug)]
pub(crate) struct Cache {
    policy: CachePolicy,
    entries: HashMap<String, Entry>,
    order: VecDeque<(String, u64)>,
    seq: u64,
}

impl Cache {
    pub fn new(policy: CachePolicy) -> Cache {
        Cache { policy, entries: HashMap::new(), order: VecDeque::new(), seq: 0 }
    }

    /// The cached answer for `key` at `now`: `Some(answer)` when known and
    /// fresh (`answer` is `None` for "not found").
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Option<String>> {
        match self.entries.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` for `key` from `now`, unless its lifetime is zero.
    pub fn put(&mut self, key: &str, value: Option<String>, now: Instant) {
        let life = if value.is_some() { self.policy.positive } else { self.policy.negative };
        if life.is_zero() || self.policy.size == 0 {
            return;
        }
        while self.entries.len() >= self.policy.size {
            let Some((old, seq)) = self.order.pop_front() else { break };
            if self.entries.get(&old).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&old);
            }
        }
        self.seq += 1;
        self.entries.insert(key.to_owned(), Entry { value, expires: now + life, seq: self.seq });
        self.order.push_back((key.to_owned(), self.seq));
        // Entries replaced or expired leave stale marks behind; drop them
        // before they outnumber the live ones.
        if self.order.len() > 2 * self.policy.size.max(16) {
            let entries = &self.entries;
            self.order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// How many answers are held (live or not yet noticed to be stale).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(size: usize) -> CachePolicy {
        CachePolicy { positive: Duration::from_secs(60), negative: Duration::from_secs(10), size }
    }

    #[test]
    fn positive_and_negative_answers_have_their_own_lifetimes() {
        let t0 = crate::clock::instant();
        let mut c = Cache::new(policy(10));
        c.put("joe@example.com", Some("ok".into()), t0);
        c.put("nobody@example.com", None, t0);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(c.get("joe@example.com", later), Some(Some("ok".into())));
        assert_eq!(c.get("nobody@example.com", later), None, "the negative answer expired");
        assert_eq!(c.get("joe@example.com", t0 + Duration::from_secs(61)), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_cache_drops_its_oldest_entries() {
        let t0 = crate::clock::instant();
        let mut c = Cache::new(policy(2));
        c.put("a", Some("1".into()), t0);
        c.put("b", Some("2".into()), t0);
        c.put("a", Some("3".into()), t0);
        c.put("c", Some("4".into()), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", t0), Some(Some("3".into())), "the refreshed entry stays");
        assert_eq!(c.get("b", t0), None);
        assert_eq!(c.get("c", t0), Some(Some("4".into())));
    }

    #[test]
    fn zero_lifetimes_or_size_turn_caching_off() {
        let t0 = crate::clock::instant();
        let mut c =
            Cache::new(CachePolicy { positive: Duration::ZERO, negative: Duration::from_secs(1), size: 5 });
        c.put("a", Some("1".into()), t0);
        c.put("b", None, t0);
        assert_eq!(c.get("a", t0), None);
        assert_eq!(c.get("b", t0), Some(None));
        let mut c = Cache::new(policy(0));
        c.put("a", Some("1".into()), t0);
        assert_eq!(c.get("a", t0), None);
    }
}
