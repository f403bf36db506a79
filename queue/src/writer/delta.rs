//! [`Delta`]: what one change does to the queue-wide counters, which the
//! writer adds up over a group and writes in the same batch.

use crate::codec::Counters;
use crate::model::Envelope;

/// What a change does to the queue-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub messages: i64,
    pub bytes: i64,
    pub held: i64,
    pub recipients_pending: i64,
    pub quarantined: i64,
    /// A committed queue ID (the counters keep the largest).
    pub max_id: u64,
}

impl Delta {
    /// What one message with this envelope contributes to the counters.
    pub(crate) fn footprint(e: &Envelope) -> Delta {
        Delta {
            messages: 1,
            bytes: i64::try_from(e.size).unwrap_or(i64::MAX),
            held: i64::from(e.held),
            recipients_pending: i64::try_from(e.pending()).unwrap_or(i64::MAX),
            quarantined: 0,
            max_id: 0,
        }
    }

    /// The change from `before` to `after` (either may be absent).
    pub(crate) fn between(before: Option<&Envelope>, after: Option<&Envelope>) -> Delta {
        let b = before.map(Delta::footprint).unwrap_or_default();
        let a = after.map(Delta::footprint).unwrap_or_default();
        Delta {
            messages: a.messages - b.messages,
            bytes: a.bytes.saturating_sub(b.bytes),
            held: a.held - b.held,
            recipients_pending: a.recipients_pending - b.recipients_pending,
            quarantined: 0,
            max_id: 0,
        }
    }

    pub(crate) fn add(&mut self, o: Delta) {
        self.messages += o.messages;
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.held += o.held;
        self.recipients_pending += o.recipients_pending;
        self.quarantined += o.quarantined;
        self.max_id = self.max_id.max(o.max_id);
    }

    pub(crate) fn apply(&self, c: &mut Counters) {
        // Saturating: a quarantined record's size is unknowable, so the
        // counters may drift by it; they must never wrap.
        c.messages = c.messages.saturating_add_signed(self.messages);
        c.bytes = c.bytes.saturating_add_signed(self.bytes);
        c.held = c.held.saturating_add_signed(self.held);
        c.recipients_pending = c.recipients_pending.saturating_add_signed(self.recipients_pending);
        c.quarantined = c.quarantined.saturating_add_signed(self.quarantined);
        c.max_id = c.max_id.max(self.max_id);
    }
}
