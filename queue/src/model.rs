//! What the queue stores, in the words of mail: queue IDs, envelopes,
//! recipients and their delivery state, and the per-backend state the
//! delivery gate asks the queue to keep across restarts.
//!
//! This module owns no byte layout (that is `keys.rs` and `codec.rs`) and
//! never touches RocksDB.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A queue ID: a 64-bit count of microseconds since the Unix epoch at which
/// the message was started, made unique and strictly increasing by the
/// issuing [`IdGen`](crate::IdGen).
///
/// Printed in Postfix's long-queue-ID alphabet (base 52, no vowels): six
/// digits of seconds then four of microseconds, so IDs sort by time both as
/// numbers and as text, and tools that recognise Postfix queue IDs in logs
/// recognise these.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u64);

/// Postfix's long queue ID digits: `0-9`, then consonants upper then lower
/// case. Ascending in ASCII, so fixed-width text sorts like the number.
const ALPHABET: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";
const SECS_DIGITS: usize = 6;
const MICROS_DIGITS: usize = 4;

impl QueueId {
    /// The ID for a raw microsecond value (used by the codec and tests).
    pub const fn from_micros(micros: u64) -> Self {
        QueueId(micros)
    }

    /// Microseconds since the Unix epoch when the message was started.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Unix time in whole seconds of the message's start.
    pub const fn unix_secs(self) -> u64 {
        self.0 / 1_000_000
    }
}

fn push_base52(out: &mut String, mut v: u64, digits: usize) {
    let mut buf = [0u8; 12];
    for slot in buf[..digits].iter_mut().rev() {
        *slot = ALPHABET[(v % 52) as usize];
        v /= 52;
    }
    out.extend(buf[..digits].iter().map(|&b| b as char));
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(SECS_DIGITS + MICROS_DIGITS);
        push_base52(&mut s, self.0 / 1_000_000, SECS_DIGITS);
        push_base52(&mut s, self.0 % 1_000_000, MICROS_DIGITS);
        f.write_str(&s)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// The text was not a queue ID this queue issues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue ID: {0:?}")]
pub struct BadQueueId(pub String);

impl FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadQueueId(s.to_owned());
        if s.len() != SECS_DIGITS + MICROS_DIGITS {
            return Err(bad());
        }
        let digit = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u64);
        let mut secs = 0u64;
        for &c in &s.as_bytes()[..SECS_DIGITS] {
            secs = secs * 52 + digit(c).ok_or_else(bad)?;
        }
        let mut micros = 0u64;
        for &c in &s.as_bytes()[SECS_DIGITS..] {
            micros = micros * 52 + digit(c).ok_or_else(bad)?;
        }
        if micros >= 1_000_000 {
            return Err(bad());
        }
        secs.checked_mul(1_000_000).and_then(|v| v.checked_add(micros)).map(QueueId).ok_or_else(bad)
    }
}

/// Milliseconds since the Unix epoch. The queue stores wall-clock times in
/// this one unit; callers take "now" from their clock and pass it in, so the
/// queue itself never reads the clock (tests control time).
pub type UnixMillis = u64;

/// `BODY=` from RFC 6152 / RFC 3030.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No BODY parameter was given.
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// `RET=` from RFC 3461.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DsnRet {
    #[default]
    Unspecified,
    Full,
    Headers,
}

/// `NOTIFY=` from RFC 3461 as a set of flags; `NEVER` is its own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// NOTIFY was given at all (RFC 3461 defaults differ when absent).
    pub specified: bool,
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// Who handed us the message: enough for the `Received:` header, logs and
/// `sluice queue show`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The client's address, `None` for locally generated mail (bounces).
    pub addr: Option<IpAddr>,
    /// The reverse DNS name, or `unknown`.
    pub name: String,
    /// The `HELO`/`EHLO` argument.
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `LOCAL`, ... as in the Received header.
    pub protocol: String,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptState {
    /// Not yet attempted, or due again.
    Pending,
    /// Accepted by the next hop; final.
    Delivered { at: UnixMillis, reply: String },
    /// Temporarily failed; retry at the message's next due time.
    Deferred { reply: String },
    /// Permanently failed (5xx, or expired); final. `notified` is set once
    /// the bounce for it has been queued.
    Bounced { at: UnixMillis, reply: String, notified: bool },
}

impl RcptState {
    /// Delivered or bounced: nothing more will be tried for this recipient.
    pub fn is_final(&self) -> bool {
        matches!(self, RcptState::Delivered { .. } | RcptState::Bounced { .. })
    }
}

/// One envelope recipient with its RFC 3461 parameters and delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in `RCPT TO` (without angle brackets).
    pub address: String,
    /// `ORCPT=` as given (`addr-type;xtext`), if any. For a recipient
    /// that virtual alias expansion produced without a client `ORCPT`, the
    /// original recipient as `rfc822;address`, as Postfix's cleanup sets
    /// it, so DSNs carry `Original-Recipient:`.
    pub orcpt: Option<String>,
    /// The address the client named in `RCPT TO` when this recipient is
    /// the result of virtual alias expansion (Postfix's `orig_rcpt`, logged
    /// as `orig_to=`); `None` when it is the address itself.
    pub original: Option<String>,
    pub notify: Notify,
    pub state: RcptState,
    /// Delivery attempts that reached a verdict from the next hop (time spent
    /// waiting on a rate limit or an open breaker does not count).
    pub attempts: u32,
}

impl Recipient {
    /// A new pending recipient with no DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            orcpt: None,
            original: None,
            notify: Notify::default(),
            state: RcptState::Pending,
            attempts: 0,
        }
    }
}

/// Everything about a message except its body. `Default` is an empty
/// envelope from the null sender, for building one field by field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The reverse path; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// When the message was accepted.
    pub arrival: UnixMillis,
    /// Body size in bytes as stored (after dot-unstuffing, with our
    /// `Received:` header).
    pub size: u64,
    pub client: ClientInfo,
    /// `SIZE=` declared by the client, if any.
    pub declared_size: Option<u64>,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub ret: DsnRet,
    /// `ENVID=` (xtext as received).
    pub envid: Option<String>,
    /// Held by the administrator (`queue hold`): no schedule entry exists
    /// while held.
    pub held: bool,
    /// Set once a delay warning (`delay_warning_time`) has been sent.
    pub delay_warned: bool,
    /// Set on bounces and delay notices that sluice itself generated, so a
    /// failed notification is never itself answered with one.
    pub is_notification: bool,
}

impl Envelope {
    /// Recipients not yet final (pending or deferred).
    pub fn pending(&self) -> usize {
        self.recipients.iter().filter(|r| !r.state.is_final()).count()
    }

    /// True when every recipient is final: the message is done and leaves
    /// the queue. (An envelope without recipients is done too.)
    pub fn is_done(&self) -> bool {
        self.recipients.iter().all(|r| r.state.is_final())
    }

    /// Applies one attempt's outcome for recipient `idx` at `now`; returns
    /// false (and changes nothing) when there is no such recipient.
    ///
    /// The transitions: a final recipient stays as it is (a duplicate or late
    /// result never un-delivers or un-bounces anyone); `Delivered` and
    /// `Bounced` are final and count an attempt; `Deferred` keeps the
    /// recipient pending with the last reply and counts an attempt;
    /// `Postponed` changes nothing (only the message's due time moves);
    /// `Waiting` makes the recipient deferred with its reason but counts no
    /// attempt.
    pub fn apply(&mut self, idx: usize, outcome: &Outcome, now: UnixMillis) -> bool {
        let Some(r) = self.recipients.get_mut(idx) else { return false };
        if r.state.is_final() {
            return true;
        }
        let state = match outcome {
            Outcome::Postponed => return true,
            Outcome::Waiting { reply } => {
                r.state = RcptState::Deferred { reply: reply.clone() };
                return true;
            }
            Outcome::Delivered { reply } => RcptState::Delivered { at: now, reply: reply.clone() },
            Outcome::Bounced { reply } => {
                RcptState::Bounced { at: now, reply: reply.clone(), notified: false }
            }
            Outcome::Deferred { reply } => RcptState::Deferred { reply: reply.clone() },
        };
        r.state = state;
        r.attempts = r.attempts.saturating_add(1);
        true
    }
}

/// What the delivery layer learned about one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        reply: String,
    },
    Deferred {
        reply: String,
    },
    Bounced {
        reply: String,
    },
    /// Not attempted (the backend is busy, sluice is stopping): the state
    /// and attempt count are unchanged; only the due time moves.
    Postponed,
    /// Not attempted, held back for a reason the administrator should see
    /// (an open circuit breaker, a paused backend): the recipient shows as
    /// deferred with `reply` as its reason, as `mailq` shows Postfix's
    /// "delivery temporarily suspended"; the attempt count is unchanged.
    Waiting {
        reply: String,
    },
}

/// A cached answer of an address verification probe
/// (`reject_unverified_recipient`): what the recipient's own mailbox
/// server said of the address, and when. How long it is believed is the
/// caller's policy (`address_verify_*`); the queue only keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRecord {
    /// True when the server accepted the address (`2xx` to `RCPT TO`).
    pub deliverable: bool,
    /// When the probe that gave this answer ended.
    pub probed: UnixMillis,
    /// The server's reply, as logs and the refusal show it.
    pub text: String,
}

/// Circuit-breaker position as the queue stores it; the semantics live in
/// the delivery gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerPosition {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// Per-backend state that must survive a restart: the breaker (so a
/// restarted MX host does not hammer a sick server it had already backed off
/// from) and an administrator's pause.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendRecord {
    pub breaker: BreakerPosition,
    /// Consecutive failed probes; grows the cool-down.
    pub failed_probes: u32,
    /// When the breaker opened, if open.
    pub opened_at: Option<UnixMillis>,
    /// Next half-open probe time, if open.
    pub probe_at: Option<UnixMillis>,
    /// Paused by `sluice backend pause` until then (`u64::MAX`: until resumed).
    pub paused_until: Option<UnixMillis>,
    /// The pause is this host's own (`--local` in fleet mode), apart from
    /// the fleet's: the fleet's resumes do not end it.
    pub paused_here: bool,
    /// Last error seen from the backend, for `sluice backend list`.
    pub last_error: Option<String>,
}

/// A message as the scheduler receives it from [`Queue::claim_due`](crate::Queue::claim_due).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: QueueId,
    pub envelope: Envelope,
    /// The due time it was claimed at.
    pub due: UnixMillis,
}

/// Which messages `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only held (`Some(true)`) or only not held (`Some(false)`).
    pub held: Option<bool>,
    /// Only messages with a recipient in this domain (case-insensitive).
    pub rcpt_domain: Option<String>,
    /// Only messages with at least one deferred recipient.
    pub deferred_only: bool,
    /// Start after this ID (paging).
    pub after: Option<QueueId>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Queue-wide counters, kept current by the writer so reading them is cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub held: u64,
    /// Recipients not yet final.
    pub recipients_pending: u64,
    /// Age of the oldest message, from its arrival.
    pub oldest_arrival: Option<UnixMillis>,
    /// Records found corrupt and moved aside (see `Queue::quarantined`).
    pub quarantined: u64,
}

/// What the queue's database holds in memory, from RocksDB's own counters
/// (see [`Queue::memory`](crate::Queue::memory)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Memtables of every table, active and awaiting flush, in bytes.
    pub memtables: u64,
    /// The part of `memtables` that is message bodies.
    pub body_memtables: u64,
}

/// A record found undecodable and moved to the quarantine (see
/// [`Queue::quarantined`](crate::Queue::quarantined)). Its original bytes
/// are kept there untouched; a quarantined message's body chunks stay in
/// place under its queue ID so it can be rebuilt by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The table it came from (`envelopes`, `meta`, ...).
    pub table: String,
    /// Its key there: the queue ID for messages, else the key as text.
    pub key: String,
    /// Why it could not be read.
    pub reason: String,
    /// Size of the original value in bytes.
    pub size: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            "[a-z ]{0,8}".prop_map(|reply| Outcome::Delivered { reply }),
            "[a-z ]{0,8}".prop_map(|reply| Outcome::Deferred { reply }),
            "[a-z ]{0,8}".prop_map(|reply| Outcome::Bounced { reply }),
            Just(Outcome::Postponed),
            "[a-z ]{0,8}".prop_map(|reply| Outcome::Waiting { reply }),
        ]
    }

    fn envelope(n: usize) -> Envelope {
        Envelope {
            recipients: (0..n).map(|i| Recipient::new(format!("r{i}@example.net"))).collect(),
            ..Envelope::default()
        }
    }

    proptest! {
        /// Every sequence of results obeys the transition rules, checked
        /// step by step against the state before it.
        #[test]
        fn recipient_state_transitions(
            n in 0usize..5,
            steps in proptest::collection::vec((0usize..6, outcome(), any::<u64>()), 0..40),
        ) {
            let mut env = envelope(n);
            for (idx, o, now) in steps {
                let before = env.clone();
                let applied = env.apply(idx, &o, now);
                prop_assert_eq!(applied, idx < n);
                if !applied {
                    prop_assert_eq!(&env, &before);
                    continue;
                }
                let (b, a) = (&before.recipients[idx], &env.recipients[idx]);
                // Only the addressed recipient changes.
                for (i, (x, y)) in before.recipients.iter().zip(&env.recipients).enumerate() {
                    if i != idx {
                        prop_assert_eq!(x, y);
                    }
                }
                if b.state.is_final() || o == Outcome::Postponed {
                    prop_assert_eq!(a, b);
                    continue;
                }
                if let Outcome::Waiting { reply } = &o {
                    prop_assert_eq!(a.attempts, b.attempts);
                    prop_assert_eq!(&a.state, &RcptState::Deferred { reply: reply.clone() });
                    continue;
                }
                prop_assert_eq!(a.attempts, b.attempts + 1);
                match (&o, &a.state) {
                    (Outcome::Delivered { reply }, RcptState::Delivered { at, reply: r }) => {
                        prop_assert_eq!((at, r), (&now, reply));
                    }
                    (Outcome::Bounced { reply }, RcptState::Bounced { at, reply: r, notified }) => {
                        prop_assert_eq!((at, r, notified), (&now, reply, &false));
                    }
                    (Outcome::Deferred { reply }, RcptState::Deferred { reply: r }) => prop_assert_eq!(r, reply),
                    (o, s) => prop_assert!(false, "{o:?} led to {s:?}"),
                }
                prop_assert!(env.pending() <= before.pending());
                prop_assert_eq!(env.is_done(), env.pending() == 0);
            }
        }
    }

    #[test]
    fn queue_ids_print_in_postfix_long_form_and_sort_as_text() {
        let a = QueueId::from_micros(1_700_000_000_123_456);
        let b = QueueId::from_micros(1_700_000_000_123_457);
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(sa.len(), 10);
        assert!(sa < sb);
        assert_eq!(sa.parse::<QueueId>(), Ok(a));
        assert!("AAAAAAAAAA".parse::<QueueId>().is_err(), "vowels are not in the alphabet");
        assert!("short".parse::<QueueId>().is_err());
    }
}
