//! The mail parked on one backend: queue IDs deferred or postponed because
//! of it, called back when it recovers or its in-memory queue has room.
//! Owns the order they come back in; never touches the queue itself.
//!
//! ## Taking turns between new mail and a backlog
//!
//! During a drain the backend's queue is full and nearly everything
//! claimed is parked, so a message that arrives then would wait behind
//! every message parked before it (seconds to minutes with a large
//! backlog). Postfix's qmgr takes turns between its incoming and deferred
//! queues; here the call-backs take turns between the oldest parked (in
//! parking order) and the newest arrival (the highest queue ID: IDs grow
//! with arrival time). New mail is thus called back within a couple of
//! refills, and the backlog still moves oldest first at half the pace or
//! more, so nothing waits longer than it would in plain parking order
//! behind what was parked before it.

use std::collections::{BTreeSet, VecDeque};

use sluice_queue::QueueId;

/// Parked queue IDs, at most `limit`.
#[derive(Debug)]
pub(super) struct Parked {
    limit: usize,
    /// Parking order. May hold IDs already called back through the newest
    /// lane: they are skipped (and the list compacted when it grows to
    /// twice the limit), which keeps taking the newest O(log n).
    order: VecDeque<QueueId>,
    /// What is parked, by arrival.
    live: BTreeSet<QueueId>,
    /// Whose turn is next: the newest arrival or the oldest parked.
    newest_next: bool,
}

impl Parked {
    pub(super) fn new(limit: usize) -> Parked {
        Parked { limit, order: VecDeque::new(), live: BTreeSet::new(), newest_next: true }
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Parks `id`; false when it is parked already or the list is full.
    pub(super) fn park(&mut self, id: QueueId) -> bool {
        if self.live.len() >= self.limit || !self.live.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() >= 2 * self.limit.max(1) {
            let live = &self.live;
            self.order.retain(|id| live.contains(id));
        }
        true
    }

    /// The message parked first (the probe and the trial delivery).
    pub(super) fn pop_oldest(&mut self) -> Option<QueueId> {
        while let Some(id) = self.order.pop_front() {
            if self.live.remove(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Up to `n`, taking turns between the newest arrival and the oldest
    /// parked (see the module docs); the turn carries over between calls.
    pub(super) fn take(&mut self, n: usize) -> Vec<QueueId> {
        let mut ids = Vec::with_capacity(n.min(self.live.len()));
        while ids.len() < n {
            let id = if self.newest_next { self.live.pop_last() } else { self.pop_oldest() };
            let Some(id) = id else { break };
            self.newest_next = !self.newest_next;
            ids.push(id);
        }
        ids
    }

    /// Everything, in parking order (the backend recovered).
    pub(super) fn drain(&mut self) -> Vec<QueueId> {
        let live = &mut self.live;
        let ids = self.order.drain(..).filter(|id| live.remove(id)).collect();
        live.clear();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> QueueId {
        QueueId::from_micros(n)
    }

    #[test]
    fn takes_turns_between_the_newest_arrival_and_the_oldest_parked() {
        let mut p = Parked::new(100);
        // A backlog parked in arrival order, then a retry of an old message
        // and a new arrival.
        for n in 10..20 {
            assert!(p.park(id(n)));
        }
        assert!(p.park(id(5)));
        assert!(p.park(id(30)));
        assert!(!p.park(id(30)), "parked once only");
        assert_eq!(p.take(3), [id(30), id(10), id(19)]);
        // The turn carries over: the oldest parked is next.
        assert_eq!(p.take(1), [id(11)]);
        assert_eq!(p.len(), 8);
        assert_eq!(p.drain(), [12, 13, 14, 15, 16, 17, 18, 5].map(id));
        assert!(p.is_empty());
    }

    #[test]
    fn stays_within_its_limit_and_skips_what_was_taken() {
        let mut p = Parked::new(4);
        for n in 0..6 {
            p.park(id(n));
        }
        assert_eq!(p.len(), 4, "the limit holds");
        for round in 0..20 {
            let got = p.take(2);
            assert_eq!(got.len(), 2, "round {round}");
            assert!(p.park(got[0]) && p.park(got[1]), "taken ones can be parked again");
            assert!(p.order.len() < 8, "the order list is compacted");
        }
        assert_eq!(p.len(), 4);
        let mut all = p.drain();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3].map(id));
        assert_eq!(p.pop_oldest(), None);
    }
}
