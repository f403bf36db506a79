//! The column families and the byte layout of every key: the only file that
//! knows how a key is spelled on disk.
//!
//! Numbers are big-endian `u64`s so that RocksDB's bytewise order is numeric
//! order: `envelopes` iterate in queue-ID (= start time) order and
//! `schedule` iterates in due-time order, ties broken by queue ID. Values are
//! `codec.rs`'s business; this file never encodes or decodes one.

use crate::model::{QueueId, UnixMillis};

/// One RocksDB column family. The names are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    /// `id ‖ chunk_no (u32 BE)` → body chunk bytes (blob files for big ones).
    Bodies,
    /// `id` → encoded envelope record (`codec::Record`).
    Envelopes,
    /// `due_ms ‖ id` → empty. Held and in-flight messages have no entry.
    Schedule,
    /// `id` → the due time it was claimed at (encoded by `codec`).
    Inflight,
    /// `id` → empty: a body staged in chunks whose commit has not happened.
    Drafts,
    /// Queue-wide records: the counters and `backend/<name>` records.
    Meta,
    /// `table ‖ 0 ‖ original key` → the undecodable value and the reason.
    Quarantine,
}

impl Table {
    /// Every table, in the order they are created.
    pub(crate) const ALL: [Table; 7] = [
        Table::Bodies,
        Table::Envelopes,
        Table::Schedule,
        Table::Inflight,
        Table::Drafts,
        Table::Meta,
        Table::Quarantine,
    ];

    /// The column family name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Table::Bodies => "bodies",
            Table::Envelopes => "envelopes",
            Table::Schedule => "schedule",
            Table::Inflight => "inflight",
            Table::Drafts => "drafts",
            Table::Meta => "meta",
            Table::Quarantine => "quarantine",
        }
    }
}

/// Length of a queue-ID key (`envelopes`, `inflight`, `drafts`).
pub(crate) const ID_KEY_LEN: usize = 8;
/// Length of a `schedule` key.
pub(crate) const SCHEDULE_KEY_LEN: usize = 16;

/// The key of a message in `envelopes`, `inflight` and `drafts`.
pub(crate) fn id_key(id: QueueId) -> [u8; ID_KEY_LEN] {
    id.as_micros().to_be_bytes()
}

/// The queue ID of an `envelopes`/`inflight`/`drafts` key; `None` if the key
/// does not have the layout (a foreign or damaged key).
pub(crate) fn parse_id_key(key: &[u8]) -> Option<QueueId> {
    let raw: [u8; ID_KEY_LEN] = key.try_into().ok()?;
    Some(QueueId::from_micros(u64::from_be_bytes(raw)))
}

/// The key of body chunk `n` of message `id`.
pub(crate) fn chunk_key(id: QueueId, n: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.as_micros().to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

/// `[start, end)` covering every possible chunk of `id` (for a range delete
/// of a draft whose chunk count is unknown).
pub(crate) fn chunk_range(id: QueueId) -> ([u8; 12], [u8; 12]) {
    let start = chunk_key(id, 0);
    // IDs are microseconds since 1970 and never near u64::MAX; saturate
    // anyway so the range is never inverted.
    let end = match id.as_micros().checked_add(1) {
        Some(next) => chunk_key(QueueId::from_micros(next), 0),
        None => [0xff; 12],
    };
    (start, end)
}

/// The key of a message in `schedule`.
pub(crate) fn schedule_key(due: UnixMillis, id: QueueId) -> [u8; SCHEDULE_KEY_LEN] {
    let mut k = [0u8; SCHEDULE_KEY_LEN];
    k[..8].copy_from_slice(&due.to_be_bytes());
    k[8..].copy_from_slice(&id.as_micros().to_be_bytes());
    k
}

/// Due time and queue ID of a `schedule` key.
pub(crate) fn parse_schedule_key(key: &[u8]) -> Option<(UnixMillis, QueueId)> {
    if key.len() != SCHEDULE_KEY_LEN {
        return None;
    }
    let due = u64::from_be_bytes(key[..8].try_into().ok()?);
    let id = u64::from_be_bytes(key[8..].try_into().ok()?);
    Some((due, QueueId::from_micros(id)))
}

/// Exclusive upper bound of the schedule entries due at or before `now`;
/// `None` when every entry is (now = `u64::MAX`).
pub(crate) fn schedule_upper(now: UnixMillis) -> Option<[u8; SCHEDULE_KEY_LEN]> {
    now.checked_add(1).map(|next| schedule_key(next, QueueId::from_micros(0)))
}

/// The smallest key strictly greater than `key` in bytewise order: `key ‖ 0`.
/// Used to move a scan's lower bound past a key already consumed.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// `meta` key of the queue-wide counters record.
pub(crate) const COUNTERS_KEY: &[u8] = b"counters";

/// `meta` prefix of backend records; `BACKEND_END` is its exclusive end
/// (`'/' + 1 == '0'`).
pub(crate) const BACKEND_PREFIX: &[u8] = b"backend/";
pub(crate) const BACKEND_END: &[u8] = b"backend0";

/// `meta` key of a backend's record.
pub(crate) fn backend_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(BACKEND_PREFIX.len() + name.len());
    k.extend_from_slice(BACKEND_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The backend name of a `meta` key under `BACKEND_PREFIX`.
pub(crate) fn parse_backend_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(BACKEND_PREFIX)?).ok()
}

/// `meta` prefix of the address verification cache (`verify/<address>`);
/// `VERIFY_END` is its exclusive end (`'/' + 1 == '0'`).
pub(crate) const VERIFY_PREFIX: &[u8] = b"verify/";
pub(crate) const VERIFY_END: &[u8] = b"verify0";

/// `meta` key of an address's verification record.
pub(crate) fn verify_key(address: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(VERIFY_PREFIX.len() + address.len());
    k.extend_from_slice(VERIFY_PREFIX);
    k.extend_from_slice(address.as_bytes());
    k
}

/// `quarantine` key for a record of `table` stored under `key`: the table
/// name, a zero byte, then the original key, so quarantined records of one
/// table sort together and the original key can be recovered.
pub(crate) fn quarantine_key(table: Table, key: &[u8]) -> Vec<u8> {
    let name = table.name().as_bytes();
    let mut k = Vec::with_capacity(name.len() + 1 + key.len());
    k.extend_from_slice(name);
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// Table name and original key of a `quarantine` key.
pub(crate) fn parse_quarantine_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let zero = key.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&key[..zero]).ok()?;
    Some((name, &key[zero + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn schedule_keys_sort_by_due_then_id(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let ka = schedule_key(a.0, QueueId::from_micros(a.1));
            let kb = schedule_key(b.0, QueueId::from_micros(b.1));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(parse_schedule_key(&ka), Some((a.0, QueueId::from_micros(a.1))));
        }

        #[test]
        fn id_keys_sort_numerically(a in any::<u64>(), b in any::<u64>()) {
            let (ia, ib) = (QueueId::from_micros(a), QueueId::from_micros(b));
            prop_assert_eq!(id_key(ia).cmp(&id_key(ib)), a.cmp(&b));
            prop_assert_eq!(parse_id_key(&id_key(ia)), Some(ia));
        }

        #[test]
        fn chunk_range_covers_exactly_one_message(id in 0u64..u64::MAX - 1, n in any::<u32>()) {
            let (lo, hi) = chunk_range(QueueId::from_micros(id));
            let k = chunk_key(QueueId::from_micros(id), n);
            prop_assert!(lo <= k && k < hi);
            prop_assert!(chunk_key(QueueId::from_micros(id + 1), 0) >= hi);
        }
    }

    #[test]
    fn due_entries_fall_below_the_upper_bound() {
        let up = schedule_upper(100).unwrap();
        assert!(schedule_key(100, QueueId::from_micros(u64::MAX)) < up);
        assert!(schedule_key(101, QueueId::from_micros(0)) >= up);
        assert_eq!(schedule_upper(u64::MAX), None);
    }

    #[test]
    fn successor_is_the_next_key() {
        let k = schedule_key(5, QueueId::from_micros(7));
        let s = successor(&k);
        assert!(s.as_slice() > k.as_slice());
        assert!(s.as_slice() < schedule_key(5, QueueId::from_micros(8)).as_slice());
    }

    #[test]
    fn quarantine_and_backend_keys_round_trip() {
        let q = quarantine_key(Table::Envelopes, &id_key(QueueId::from_micros(9)));
        assert_eq!(parse_quarantine_key(&q), Some(("envelopes", &id_key(QueueId::from_micros(9))[..])));
        assert_eq!(parse_backend_key(&backend_key("lmtp:mbox1")), Some("lmtp:mbox1"));
        assert!(backend_key("zzz").as_slice() < BACKEND_END);
        assert!(verify_key("~~~@~~~").as_slice() < VERIFY_END);
        assert!(verify_key("").as_slice() >= VERIFY_PREFIX);
    }
}
