//! Versioned value encoding of what the queue stores: the envelope record,
//! backend records, address verification records, the counters record, in-flight entries and quarantined
//! records.
//!
//! Every value starts with a version byte so a later release can read what
//! this one wrote. Integers are LEB128 varints (queue values are mostly
//! small numbers), strings and byte strings are length-prefixed. Decoding is
//! strict (unknown tags, unknown flag bits, invalid UTF-8 and trailing bytes
//! are errors) so that damage is detected rather than half-read, and it never
//! panics or over-allocates on arbitrary bytes: every length is checked
//! against what is left of the input before anything is allocated.
//!
//! This file owns no keys (`keys.rs`) and never touches RocksDB.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{
    BackendRecord, BodyType, BreakerPosition, ClientInfo, DsnRet, Envelope, Notify, RcptState, Recipient,
    UnixMillis, VerifyRecord,
};

/// Why a stored value could not be decoded. Shown in logs and kept with the
/// quarantined record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("varint overflows 64 bits at byte {0}")]
    Overflow(usize),
    #[error("non-canonical varint at byte {0}")]
    NonCanonical(usize),
    #[error("invalid {field} tag {tag}")]
    Tag { field: &'static str, tag: u8 },
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("{0} out of range")]
    Range(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A v2 envelope none of whose recipients has an original address:
    /// this codec writes v1 for it, so the value was not written by it.
    #[error("v2 envelope without an original recipient")]
    NeedlessV2,
    /// A v2 backend record without a flag set: this codec writes v1 for it.
    #[error("v2 backend record without a flag")]
    NeedlessV2Backend,
}

/// The first format version: recipients without an original address.
/// Still written for envelopes that have none (most mail), so an older
/// release can read them after a downgrade, and always read.
const V1: u8 = 1;
/// V1 plus, per recipient after its ORCPT, the original recipient of a
/// virtual alias expansion (optional string). Written only when some
/// recipient has one.
/// For a backend record: V1 plus a flags byte at the end (bit 0: the pause
/// is this host's own). Written only when a flag is set; a release that
/// reads only v1 quarantines such a record at start (the pause is lost on
/// a downgrade, no mail is).
const V2: u8 = 2;
/// Backend record flag: the pause is this host's own (`--local`).
const PAUSED_HERE: u8 = 1;

/// What `envelopes` stores for one message: the envelope plus where it sits
/// in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub envelope: Envelope,
    /// The due time of its schedule entry when scheduled; when in flight,
    /// the due time it was claimed at (its `schedule` key is found from this
    /// field, so it is rewritten whenever the schedule entry moves). Not
    /// meaningful while held.
    pub due: UnixMillis,
    /// Number of body chunks under `bodies`, so removing a message issues
    /// point deletes of exactly its chunks rather than a range tombstone per
    /// message (range tombstones pile up in a delete-heavy memtable and every
    /// read has to consider them).
    pub chunks: u32,
}

// ---------------------------------------------------------------- writer

struct Writer(Vec<u8>);

impl Writer {
    fn new(version: u8, capacity: usize) -> Self {
        let mut v = Vec::with_capacity(capacity);
        v.push(version);
        Writer(v)
    }

    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    fn opt_varint(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.varint(v);
            }
        }
    }
}

// ---------------------------------------------------------------- reader

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    version: u8,
}

impl<'a> Reader<'a> {
    /// Checks the version byte and positions after it.
    fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        match buf.first() {
            None => Err(DecodeError::Empty),
            Some(&V1) => Ok(Reader { buf, pos: 1, version: V1 }),
            Some(&v) => Err(DecodeError::Version(v)),
        }
    }

    /// As [`Reader::new`] for a record that also has a v2 (an envelope,
    /// a backend record).
    fn envelope(buf: &'a [u8]) -> Result<Self, DecodeError> {
        match buf.first() {
            Some(&V2) => Ok(Reader { buf, pos: 1, version: V2 }),
            _ => Reader::new(buf),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && low > 1 {
                return Err(DecodeError::Overflow(start));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                // One spelling per number: a trailing zero byte would let
                // damaged bytes decode to a value that re-encodes differently.
                if b == 0 && shift > 0 {
                    return Err(DecodeError::NonCanonical(start));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Overflow(start))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Range(field))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.varint()?;
        // Checked against the input before slicing: a forged length can
        // never make us allocate or read past the end.
        if len > self.remaining() as u64 {
            return Err(DecodeError::Truncated(at));
        }
        let len = len as usize;
        let b = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(b)
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::Utf8(field))
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str(field).map(Some),
            tag => Err(DecodeError::Tag { field, tag }),
        }
    }

    fn opt_varint(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.varint().map(Some),
            tag => Err(DecodeError::Tag { field, tag }),
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

// ---------------------------------------------------------------- envelope

const NOTIFY_SPECIFIED: u8 = 1;
const NOTIFY_NEVER: u8 = 2;
const NOTIFY_SUCCESS: u8 = 4;
const NOTIFY_FAILURE: u8 = 8;
const NOTIFY_DELAY: u8 = 16;

const FLAG_SMTPUTF8: u8 = 1;
const FLAG_HELD: u8 = 2;
const FLAG_DELAY_WARNED: u8 = 4;
const FLAG_NOTIFICATION: u8 = 8;

/// Smallest possible encoded recipient (empty address, no ORCPT, flags,
/// attempts, state tag): bounds the recipient count a value can claim.
const MIN_RECIPIENT_LEN: usize = 4;

/// Encodes an envelope record (format v1, or v2 when a recipient has an
/// original address).
///
/// Layout: version, due, chunks, arrival, size, sender, recipients (count,
/// then address, ORCPT, in v2 the original recipient, NOTIFY flags,
/// attempts, state), client (address tag
/// 0/4/6 + octets, name, HELO, protocol), declared SIZE, BODY, RET, flags
/// (SMTPUTF8, held, delay warned, notification), ENVID.
pub(crate) fn encode_record(r: &Record) -> Vec<u8> {
    let e = &r.envelope;
    let version = if e.recipients.iter().any(|r| r.original.is_some()) { V2 } else { V1 };
    let mut w = Writer::new(version, 96 + e.sender.len() + e.recipients.len() * 48);
    w.varint(r.due);
    w.varint(u64::from(r.chunks));
    w.varint(e.arrival);
    w.varint(e.size);
    w.str(&e.sender);
    w.varint(e.recipients.len() as u64);
    for rc in &e.recipients {
        w.str(&rc.address);
        w.opt_str(rc.orcpt.as_deref());
        if version == V2 {
            w.opt_str(rc.original.as_deref());
        }
        let n = &rc.notify;
        let mut f = 0;
        for (set, bit) in [
            (n.specified, NOTIFY_SPECIFIED),
            (n.never, NOTIFY_NEVER),
            (n.success, NOTIFY_SUCCESS),
            (n.failure, NOTIFY_FAILURE),
            (n.delay, NOTIFY_DELAY),
        ] {
            if set {
                f |= bit;
            }
        }
        w.u8(f);
        w.varint(u64::from(rc.attempts));
        match &rc.state {
            RcptState::Pending => w.u8(0),
            RcptState::Delivered { at, reply } => {
                w.u8(1);
                w.varint(*at);
                w.str(reply);
            }
            RcptState::Deferred { reply } => {
                w.u8(2);
                w.str(reply);
            }
            RcptState::Bounced { at, reply, notified } => {
                w.u8(3);
                w.varint(*at);
                w.str(reply);
                w.u8(u8::from(*notified));
            }
        }
    }
    match e.client.addr {
        None => w.u8(0),
        Some(IpAddr::V4(a)) => {
            w.u8(4);
            w.0.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            w.u8(6);
            w.0.extend_from_slice(&a.octets());
        }
    }
    w.str(&e.client.name);
    w.str(&e.client.helo);
    w.str(&e.client.protocol);
    w.opt_varint(e.declared_size);
    w.u8(match e.body_type {
        BodyType::Unspecified => 0,
        BodyType::SevenBit => 1,
        BodyType::EightBitMime => 2,
        BodyType::BinaryMime => 3,
    });
    w.u8(match e.ret {
        DsnRet::Unspecified => 0,
        DsnRet::Full => 1,
        DsnRet::Headers => 2,
    });
    let mut flags = 0;
    for (set, bit) in [
        (e.smtputf8, FLAG_SMTPUTF8),
        (e.held, FLAG_HELD),
        (e.delay_warned, FLAG_DELAY_WARNED),
        (e.is_notification, FLAG_NOTIFICATION),
    ] {
        if set {
            flags |= bit;
        }
    }
    w.u8(flags);
    w.opt_str(e.envid.as_deref());
    w.0
}

/// Decodes an envelope record; never panics.
pub(crate) fn decode_record(buf: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader::envelope(buf)?;
    let due = r.varint()?;
    let chunks = r.u32("chunk count")?;
    let arrival = r.varint()?;
    let size = r.varint()?;
    let sender = r.str("sender")?;
    let n = r.varint()?;
    if n > (r.remaining() / MIN_RECIPIENT_LEN) as u64 {
        return Err(DecodeError::Range("recipient count"));
    }
    let mut recipients = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let address = r.str("recipient")?;
        let orcpt = r.opt_str("orcpt")?;
        let original = if r.version == V2 { r.opt_str("original recipient")? } else { None };
        let f = r.u8()?;
        if f & !(NOTIFY_SPECIFIED | NOTIFY_NEVER | NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY) != 0 {
            return Err(DecodeError::Tag { field: "notify", tag: f });
        }
        let notify = Notify {
            specified: f & NOTIFY_SPECIFIED != 0,
            never: f & NOTIFY_NEVER != 0,
            success: f & NOTIFY_SUCCESS != 0,
            failure: f & NOTIFY_FAILURE != 0,
            delay: f & NOTIFY_DELAY != 0,
        };
        let attempts = r.u32("attempts")?;
        let state = match r.u8()? {
            0 => RcptState::Pending,
            1 => RcptState::Delivered { at: r.varint()?, reply: r.str("reply")? },
            2 => RcptState::Deferred { reply: r.str("reply")? },
            3 => {
                let at = r.varint()?;
                let reply = r.str("reply")?;
                let notified = match r.u8()? {
                    0 => false,
                    1 => true,
                    tag => return Err(DecodeError::Tag { field: "notified", tag }),
                };
                RcptState::Bounced { at, reply, notified }
            }
            tag => return Err(DecodeError::Tag { field: "recipient state", tag }),
        };
        recipients.push(Recipient { address, orcpt, original, notify, state, attempts });
    }
    if r.version == V2 && recipients.iter().all(|rc| rc.original.is_none()) {
        return Err(DecodeError::NeedlessV2);
    }
    let addr = match r.u8()? {
        0 => None,
        4 => {
            let mut o = [0u8; 4];
            for b in &mut o {
                *b = r.u8()?;
            }
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        6 => {
            let mut o = [0u8; 16];
            for b in &mut o {
                *b = r.u8()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        tag => return Err(DecodeError::Tag { field: "client address", tag }),
    };
    let client =
        ClientInfo { addr, name: r.str("client name")?, helo: r.str("helo")?, protocol: r.str("protocol")? };
    let declared_size = r.opt_varint("declared size")?;
    let body_type = match r.u8()? {
        0 => BodyType::Unspecified,
        1 => BodyType::SevenBit,
        2 => BodyType::EightBitMime,
        3 => BodyType::BinaryMime,
        tag => return Err(DecodeError::Tag { field: "body type", tag }),
    };
    let ret = match r.u8()? {
        0 => DsnRet::Unspecified,
        1 => DsnRet::Full,
        2 => DsnRet::Headers,
        tag => return Err(DecodeError::Tag { field: "ret", tag }),
    };
    let flags = r.u8()?;
    if flags & !(FLAG_SMTPUTF8 | FLAG_HELD | FLAG_DELAY_WARNED | FLAG_NOTIFICATION) != 0 {
        return Err(DecodeError::Tag { field: "envelope flags", tag: flags });
    }
    let envid = r.opt_str("envid")?;
    r.finish()?;
    Ok(Record {
        envelope: Envelope {
            sender,
            recipients,
            arrival,
            size,
            client,
            declared_size,
            body_type,
            smtputf8: flags & FLAG_SMTPUTF8 != 0,
            ret,
            envid,
            held: flags & FLAG_HELD != 0,
            delay_warned: flags & FLAG_DELAY_WARNED != 0,
            is_notification: flags & FLAG_NOTIFICATION != 0,
        },
        due,
        chunks,
    })
}

// ---------------------------------------------------------------- backend

/// Encodes a backend record (format v1, or v2 when a flag is set).
pub(crate) fn encode_backend(b: &BackendRecord) -> Vec<u8> {
    let flags = if b.paused_here { PAUSED_HERE } else { 0 };
    let mut w = Writer::new(if flags == 0 { V1 } else { V2 }, 32);
    w.u8(match b.breaker {
        BreakerPosition::Closed => 0,
        BreakerPosition::Open => 1,
        BreakerPosition::HalfOpen => 2,
    });
    w.varint(u64::from(b.failed_probes));
    w.opt_varint(b.opened_at);
    w.opt_varint(b.probe_at);
    w.opt_varint(b.paused_until);
    w.opt_str(b.last_error.as_deref());
    if flags != 0 {
        w.u8(flags);
    }
    w.0
}

/// Decodes a backend record; never panics.
pub(crate) fn decode_backend(buf: &[u8]) -> Result<BackendRecord, DecodeError> {
    let mut r = Reader::envelope(buf)?;
    let breaker = match r.u8()? {
        0 => BreakerPosition::Closed,
        1 => BreakerPosition::Open,
        2 => BreakerPosition::HalfOpen,
        tag => return Err(DecodeError::Tag { field: "breaker", tag }),
    };
    let mut b = BackendRecord {
        breaker,
        failed_probes: r.u32("failed probes")?,
        opened_at: r.opt_varint("opened at")?,
        probe_at: r.opt_varint("probe at")?,
        paused_until: r.opt_varint("paused until")?,
        last_error: r.opt_str("last error")?,
        paused_here: false,
    };
    if r.version == V2 {
        let flags = r.u8()?;
        if flags == 0 {
            return Err(DecodeError::NeedlessV2Backend);
        }
        if flags & !PAUSED_HERE != 0 {
            return Err(DecodeError::Tag { field: "backend flags", tag: flags });
        }
        b.paused_here = flags & PAUSED_HERE != 0;
    }
    r.finish()?;
    Ok(b)
}

// ---------------------------------------------------------------- verify

/// Encodes an address verification record (format v1).
pub(crate) fn encode_verify(v: &VerifyRecord) -> Vec<u8> {
    let mut w = Writer::new(V1, 16 + v.text.len());
    w.u8(u8::from(v.deliverable));
    w.varint(v.probed);
    w.str(&v.text);
    w.0
}

/// Decodes an address verification record; never panics.
pub(crate) fn decode_verify(buf: &[u8]) -> Result<VerifyRecord, DecodeError> {
    let mut r = Reader::new(buf)?;
    let deliverable = match r.u8()? {
        0 => false,
        1 => true,
        tag => return Err(DecodeError::Tag { field: "verify status", tag }),
    };
    let v = VerifyRecord { deliverable, probed: r.varint()?, text: r.str("verify text")? };
    r.finish()?;
    Ok(v)
}

// ---------------------------------------------------------------- counters

/// The queue-wide counters record, rewritten by the writer in every batch
/// that changes it, so it is exactly as current as the data it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    pub messages: u64,
    pub bytes: u64,
    pub held: u64,
    pub recipients_pending: u64,
    pub quarantined: u64,
    /// The largest queue ID ever committed, so IDs never repeat across
    /// restarts even if every message was removed and the clock stepped back.
    pub max_id: u64,
}

/// Encodes the counters record (format v1).
pub(crate) fn encode_counters(c: &Counters) -> Vec<u8> {
    let mut w = Writer::new(V1, 40);
    for v in [c.messages, c.bytes, c.held, c.recipients_pending, c.quarantined, c.max_id] {
        w.varint(v);
    }
    w.0
}

/// Decodes the counters record; never panics.
pub(crate) fn decode_counters(buf: &[u8]) -> Result<Counters, DecodeError> {
    let mut r = Reader::new(buf)?;
    let c = Counters {
        messages: r.varint()?,
        bytes: r.varint()?,
        held: r.varint()?,
        recipients_pending: r.varint()?,
        quarantined: r.varint()?,
        max_id: r.varint()?,
    };
    r.finish()?;
    Ok(c)
}

// ---------------------------------------------------------------- small values

/// Encodes an `inflight` value: the due time the message was claimed at.
pub(crate) fn encode_due(due: UnixMillis) -> Vec<u8> {
    let mut w = Writer::new(V1, 10);
    w.varint(due);
    w.0
}

/// Decodes an `inflight` value; never panics.
pub(crate) fn decode_due(buf: &[u8]) -> Result<UnixMillis, DecodeError> {
    let mut r = Reader::new(buf)?;
    let due = r.varint()?;
    r.finish()?;
    Ok(due)
}

/// Encodes a quarantined record: why, and the original bytes untouched.
pub(crate) fn encode_quarantine(reason: &str, raw: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(V1, reason.len() + raw.len() + 12);
    w.str(reason);
    w.bytes(raw);
    w.0
}

/// Decodes a quarantined record into (reason, original bytes).
pub(crate) fn decode_quarantine(buf: &[u8]) -> Result<(String, Vec<u8>), DecodeError> {
    let mut r = Reader::new(buf)?;
    let reason = r.str("reason")?;
    let raw = r.bytes()?.to_vec();
    r.finish()?;
    Ok((reason, raw))
}

#[cfg(test)]
pub(crate) mod tests;
