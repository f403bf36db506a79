//! The record encodings round-trip, refuse what they cannot read, and
//! read what earlier versions wrote.

use super::*;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z0-9.@+-]{0,30}"]
}

fn state() -> impl Strategy<Value = RcptState> {
    prop_oneof![
        Just(RcptState::Pending),
        (any::<u64>(), text()).prop_map(|(at, reply)| RcptState::Delivered { at, reply }),
        text().prop_map(|reply| RcptState::Deferred { reply }),
        (any::<u64>(), text(), any::<bool>()).prop_map(|(at, reply, notified)| RcptState::Bounced {
            at,
            reply,
            notified
        }),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<[bool; 5]>(),
        state(),
        any::<u32>(),
    )
        .prop_map(|(address, orcpt, original, n, state, attempts)| Recipient {
            address,
            orcpt,
            original,
            notify: Notify { specified: n[0], never: n[1], success: n[2], failure: n[3], delay: n[4] },
            state,
            attempts,
        })
}

fn addr() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
        any::<[u8; 16]>().prop_map(|o| Some(IpAddr::from(o))),
    ]
}

/// Any envelope the model allows.
pub(crate) fn envelope() -> impl Strategy<Value = Envelope> {
    (
        (text(), proptest::collection::vec(recipient(), 0..6), any::<u64>(), any::<u64>()),
        (addr(), text(), text(), text()),
        (
            proptest::option::of(any::<u64>()),
            0u8..4,
            0u8..3,
            any::<[bool; 4]>(),
            proptest::option::of(text()),
        ),
    )
        .prop_map(|((sender, recipients, arrival, size), (addr, name, helo, protocol), rest)| {
            let (declared_size, body, ret, flags, envid) = rest;
            Envelope {
                sender,
                recipients,
                arrival,
                size,
                client: ClientInfo { addr, name, helo, protocol },
                declared_size,
                body_type: [
                    BodyType::Unspecified,
                    BodyType::SevenBit,
                    BodyType::EightBitMime,
                    BodyType::BinaryMime,
                ][body as usize],
                smtputf8: flags[0],
                ret: [DsnRet::Unspecified, DsnRet::Full, DsnRet::Headers][ret as usize],
                envid,
                held: flags[1],
                delay_warned: flags[2],
                is_notification: flags[3],
            }
        })
}

fn backend() -> impl Strategy<Value = BackendRecord> {
    (
        0u8..3,
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(b, failed_probes, opened_at, probe_at, paused_until, last_error, paused_here)| {
            BackendRecord {
                breaker: [BreakerPosition::Closed, BreakerPosition::Open, BreakerPosition::HalfOpen]
                    [b as usize],
                failed_probes,
                opened_at,
                probe_at,
                paused_until,
                last_error,
                paused_here,
            }
        })
}

proptest! {
    #[test]
    fn record_round_trips(envelope in envelope(), due in any::<u64>(), chunks in any::<u32>()) {
        let rec = Record { envelope, due, chunks };
        let bytes = encode_record(&rec);
        prop_assert_eq!(decode_record(&bytes), Ok(rec));
    }

    #[test]
    fn backend_round_trips(b in backend()) {
        prop_assert_eq!(decode_backend(&encode_backend(&b)), Ok(b));
    }

    #[test]
    fn counters_round_trip(v in any::<[u64; 6]>()) {
        let c = Counters {
            messages: v[0], bytes: v[1], held: v[2], recipients_pending: v[3], quarantined: v[4], max_id: v[5],
        };
        prop_assert_eq!(decode_counters(&encode_counters(&c)), Ok(c));
    }

    #[test]
    fn small_values_round_trip(due in any::<u64>(), reason in text(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(decode_due(&encode_due(due)), Ok(due));
        prop_assert_eq!(decode_quarantine(&encode_quarantine(&reason, &raw)), Ok((reason, raw)));
    }

    /// Arbitrary bytes never panic any decoder (the result is almost
    /// always an error; whatever decodes must re-encode to the same bytes,
    /// so a decoder can never silently misread a value).
    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(r) = decode_record(&bytes) {
            prop_assert_eq!(encode_record(&r), bytes.clone());
        }
        if let Ok(b) = decode_backend(&bytes) {
            prop_assert_eq!(encode_backend(&b), bytes.clone());
        }
        if let Ok(c) = decode_counters(&bytes) {
            prop_assert_eq!(encode_counters(&c), bytes.clone());
        }
        let _ = decode_due(&bytes);
        let _ = decode_quarantine(&bytes);
    }

    /// Flipping, cutting or extending a valid record is detected or
    /// decodes to something that re-encodes identically; never a panic.
    #[test]
    fn damaged_records_never_panic(
        envelope in envelope(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode_record(&Record { envelope, due: 1, chunks: 1 });
        let mut flipped = bytes.clone();
        let i = pos.index(flipped.len());
        flipped[i] = byte;
        if let Ok(r) = decode_record(&flipped) {
            prop_assert_eq!(encode_record(&r), flipped);
        }
        let cut = cut.index(bytes.len());
        prop_assert!(decode_record(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(decode_record(&longer), Err(DecodeError::Trailing(1)));
    }
}

#[test]
fn version_byte_is_checked() {
    assert_eq!(decode_record(&[]), Err(DecodeError::Empty));
    assert_eq!(decode_record(&[3, 0]), Err(DecodeError::Version(3)));
    assert_eq!(decode_backend(&[3, 0]), Err(DecodeError::Version(3)));
    assert_eq!(decode_counters(&[0]), Err(DecodeError::Version(0)));
}

#[test]
fn forged_lengths_are_rejected_without_allocating() {
    // version, due, chunks, arrival, size, then a sender "length" of 2^63.
    let mut v = vec![V1, 0, 0, 0, 0];
    v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(matches!(decode_record(&v), Err(DecodeError::Truncated(_))));
    // A recipient count far beyond what the bytes could hold.
    let v = vec![V1, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03];
    assert_eq!(decode_record(&v), Err(DecodeError::Range("recipient count")));
    // An eleven-byte varint.
    let v = [V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(decode_due(&v), Err(DecodeError::Overflow(1)));
}

#[test]
fn varint_edges_round_trip() {
    for v in [0, 1, 127, 128, 255, 16_383, 16_384, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
        assert_eq!(decode_due(&encode_due(v)), Ok(v));
    }
}

/// A v1 envelope as an earlier release wrote it (bytes fixed here, not
/// produced by today's encoder) still decodes, its recipients without an
/// original address; and it re-encodes to the same bytes, so a release
/// that never expands an alias keeps writing what older ones read.
#[test]
fn v1_envelope_written_before_originals_decodes() {
    #[rustfmt::skip]
    let v1: Vec<u8> = vec![
        V1, 5, 1, 10, 20,           // due, chunks, arrival, size
        3, b'a', b'@', b'b',        // sender
        1,                          // one recipient
        3, b'c', b'@', b'd',        // address
        1, 3, b'r', b';', b'x',     // ORCPT
        NOTIFY_SPECIFIED | NOTIFY_FAILURE, 2, 0, // notify, attempts, pending
        4, 127, 0, 0, 1,            // client address
        1, b'n', 1, b'h', 4, b'E', b'S', b'M', b'T', // name, helo, protocol
        0, 0, 0, 0, 0,              // size, body, ret, flags, envid
    ];
    let r = decode_record(&v1).expect("v1 decodes");
    let rc = &r.envelope.recipients[0];
    assert_eq!(rc.address, "c@d");
    assert_eq!(rc.orcpt.as_deref(), Some("r;x"));
    assert_eq!(rc.original, None);
    assert!(rc.notify.failure && rc.notify.specified && !rc.notify.success);
    assert_eq!((rc.attempts, r.due, r.chunks, r.envelope.sender.as_str()), (2, 5, 1, "a@b"));
    assert_eq!(encode_record(&r), v1);
}

/// An expanded recipient keeps its original address through the codec,
/// written as v2; a v2 value with no original anywhere is refused.
#[test]
fn original_recipient_round_trips_as_v2() {
    let mut e = Envelope { sender: "s@x".into(), ..Envelope::default() };
    let mut a = Recipient::new("target@example.test");
    a.original = Some("alias@example.test".into());
    a.orcpt = Some("rfc822;alias@example.test".into());
    e.recipients = vec![Recipient::new("plain@example.test"), a];
    let rec = Record { envelope: e, due: 7, chunks: 2 };
    let bytes = encode_record(&rec);
    assert_eq!(bytes[0], V2);
    assert_eq!(decode_record(&bytes), Ok(rec.clone()));
    let mut plain = rec;
    plain.envelope.recipients[1].original = None;
    let mut forged = encode_record(&plain);
    assert_eq!(forged[0], V1);
    forged[0] = V2;
    // The same bytes under v2 grow an original field per recipient; a
    // truncation or a needless v2 is refused, never misread.
    assert!(decode_record(&forged).is_err());
}

#[test]
fn a_backend_record_is_v1_unless_a_flag_is_set() {
    let plain = BackendRecord { paused_until: Some(7), ..BackendRecord::default() };
    let bytes = encode_backend(&plain);
    assert_eq!(bytes[0], V1, "readable by a release without the flags");
    let here = BackendRecord { paused_here: true, ..plain.clone() };
    let mut v2 = encode_backend(&here);
    assert_eq!((v2[0], *v2.last().unwrap()), (V2, 1));
    assert_eq!(decode_backend(&v2), Ok(here));
    // A v2 record with no flag, or an unknown one, was not written here.
    *v2.last_mut().unwrap() = 0;
    assert_eq!(decode_backend(&v2), Err(DecodeError::NeedlessV2Backend));
    *v2.last_mut().unwrap() = 3;
    assert_eq!(decode_backend(&v2), Err(DecodeError::Tag { field: "backend flags", tag: 3 }));
}
