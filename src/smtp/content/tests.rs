//! The decoder against the smuggling shapes and byte-at-a-time input
//! (proptest), the header section, body lines and `Received:`.

use super::*;
use proptest::prelude::*;

/// Decodes `input` in one go; returns (message, consumed, done, violation).
fn run(mode: BareNewline, input: &[u8]) -> (Vec<u8>, usize, bool, Option<Violation>) {
    let mut d = Decoder::data(mode, Some(MAX_LINE));
    let mut out = Vec::new();
    let n = d.decode(input, &mut out);
    (out, n, d.is_done(), d.violation())
}

/// Decodes `input` one byte at a time, which must give the same result.
fn run_bytewise(mode: BareNewline, input: &[u8]) -> (Vec<u8>, usize, bool, Option<Violation>) {
    let mut d = Decoder::data(mode, Some(MAX_LINE));
    let mut out = Vec::new();
    let mut n = 0;
    for b in input {
        if d.is_done() {
            break;
        }
        n += d.decode(std::slice::from_ref(b), &mut out);
    }
    (out, n, d.is_done(), d.violation())
}

const MODES: [BareNewline; 3] = [BareNewline::No, BareNewline::Normalize, BareNewline::Reject];

#[test]
fn end_of_data_is_crlf_dot_crlf_and_leaves_pipelined_bytes() {
    let input = b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    for mode in MODES {
        let (out, n, done, v) = run(mode, input);
        assert!(done);
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(v, None);
    }
}

#[test]
fn empty_message_ends_at_first_line() {
    let (out, n, done, _) = run(BareNewline::Normalize, b".\r\nNOOP\r\n");
    assert!(done);
    assert!(out.is_empty());
    assert_eq!(n, 3);
}

#[test]
fn dot_stuffing_is_removed_from_every_line_start() {
    let (out, _, done, _) = run(BareNewline::Normalize, b"..a\r\n.\x2e\r\n...\r\nx.y\r\n.\r\n");
    assert!(done);
    assert_eq!(out, b".a\r\n.\r\n..\r\nx.y\r\n");
}

#[test]
fn smuggling_sequences_never_end_the_message() {
    // Each attempt is followed by a would-be second transaction; only the
    // final CRLF.CRLF ends the data.
    let attempts: [&[u8]; 8] =
        [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\r\r\n"];
    for attempt in attempts {
        for mode in MODES {
            let mut input = b"Subject: a\r\n\r\nfirst".to_vec();
            input.extend_from_slice(attempt);
            input.extend_from_slice(
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
            );
            for (out, n, done, v) in [run(mode, &input), run_bytewise(mode, &input)] {
                assert!(done, "{attempt:?} {mode:?}");
                assert_eq!(&input[n..], b"QUIT\r\n", "{attempt:?} {mode:?}");
                let text = String::from_utf8_lossy(&out);
                assert!(text.contains("MAIL FROM:<evil@x>"), "{attempt:?} {mode:?}: {text:?}");
                assert!(text.ends_with("smuggled\r\n"), "{attempt:?} {mode:?}: {text:?}");
                if mode == BareNewline::Reject {
                    assert!(matches!(v, Some(Violation::BareLf | Violation::BareCr)), "{attempt:?}");
                }
            }
        }
    }
}

#[test]
fn normalize_turns_bare_lf_and_cr_into_crlf() {
    let (out, _, done, v) = run(BareNewline::Normalize, b"a\nb\rc\r\n\n.\n..d\n.\r\n.\r\n");
    assert!(done);
    assert_eq!(v, None);
    // "\n.\n" is a line holding a dot (content); "\n..d" is unstuffed; the
    // ".\r\n" after a bare LF is content too; only the last one ends.
    assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n.\r\n.d\r\n.\r\n");
}

#[test]
fn no_keeps_bare_line_ends_as_content() {
    let (out, _, done, v) = run(BareNewline::No, b"a\nb\rc\r\n.x\n\r.\r\n.\r\n");
    assert!(done);
    assert_eq!(v, None);
    assert_eq!(out, b"a\nb\rc\r\nx\n\r.\r\n");
    // Without the final CRLF.CRLF the message is not over.
    let (_, n, done, _) = run(BareNewline::No, b"a\n.\nb\r.\r");
    assert!(!done);
    assert_eq!(n, 8);
}

#[test]
fn reject_flags_bare_lf_and_bare_cr() {
    assert_eq!(run(BareNewline::Reject, b"a\nb\r\n.\r\n").3, Some(Violation::BareLf));
    assert_eq!(run(BareNewline::Reject, b"a\rb\r\n.\r\n").3, Some(Violation::BareCr));
    assert_eq!(run(BareNewline::Reject, b"a\r\nb\r\n.\r\n").3, None);
}

#[test]
fn crlf_split_across_reads_is_one_line_end() {
    let mut d = Decoder::data(BareNewline::Normalize, Some(MAX_LINE));
    let mut out = Vec::new();
    assert_eq!(d.decode(b"abc\r", &mut out), 4);
    assert_eq!(d.decode(b"\n.", &mut out), 2);
    assert_eq!(d.decode(b"\r", &mut out), 1);
    assert!(!d.is_done());
    assert_eq!(d.decode(b"\nrest", &mut out), 1);
    assert!(d.is_done());
    assert_eq!(out, b"abc\r\n");
}

#[test]
fn lines_of_998_octets_pass_and_999_do_not() {
    let mut ok = vec![b'x'; 998];
    ok.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(run(BareNewline::Normalize, &ok).3, None);
    // The dot added for transparency does not count (RFC 5321 4.5.3.1.6):
    // 998 dots are 999 octets on the wire and pass, 999 dots do not.
    let mut stuffed = vec![b'.'; 999];
    stuffed.extend_from_slice(b"\r\n.\r\n");
    let (out, _, done, v) = run(BareNewline::Normalize, &stuffed);
    assert!(done);
    assert_eq!((out.len(), v), (998 + 2, None));
    let mut stuffed = vec![b'.'; 1000];
    stuffed.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(run(BareNewline::Normalize, &stuffed).3, Some(Violation::LineTooLong));
    let mut long = vec![b'x'; 999];
    long.extend_from_slice(b"\r\n.\r\n");
    let (_, _, done, v) = run(BareNewline::Normalize, &long);
    assert!(done);
    assert_eq!(v, Some(Violation::LineTooLong));
}

#[test]
fn bdat_decoder_has_no_end_marker_and_no_dot_handling() {
    let mut d = Decoder::bdat(BareNewline::Normalize);
    let mut out = Vec::new();
    let input = b"..a\r\n.\r\nb\nc\r";
    assert_eq!(d.decode(input, &mut out), input.len());
    assert!(!d.is_done());
    d.finish(&mut out);
    assert_eq!(out, b"..a\r\n.\r\nb\r\nc\r\n");

    // The same for every BODY= type (BINARYMIME included): bare CR and LF
    // are line ends under normalize, refused under reject, kept under no.
    let mut out = Vec::new();
    let mut d = Decoder::bdat(BareNewline::Normalize);
    d.decode(b"\n\r\0.\r\n\r", &mut out);
    d.finish(&mut out);
    assert_eq!(out, b"\r\n\r\n\0.\r\n\r\n");
    let mut d = Decoder::bdat(BareNewline::Reject);
    d.decode(b"a\rb", &mut Vec::new());
    assert_eq!(d.violation(), Some(Violation::BareCr));
    let mut out = Vec::new();
    let mut d = Decoder::bdat(BareNewline::No);
    d.decode(b"\n\r\0.\r\n\r", &mut out);
    d.finish(&mut out);
    assert_eq!(out, b"\n\r\0.\r\n\r");
}

#[test]
fn headers_count_received_lines() {
    let mut h = Headers::new(1024);
    assert!(!h.feed(b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\nReceived: from c"));
    assert!(h.feed(b" by d; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\nReceived: not a header\r\n"));
    assert_eq!(h.received_count(), 2);
}

/// Both answers come from one parse of what was fed so far: asked before
/// the header section is complete, then again after more of it arrived,
/// they describe the longer section.
#[test]
fn headers_answer_from_what_was_fed_last() {
    let mut h = Headers::new(1024);
    h.feed(b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubj");
    assert_eq!(h.received_count(), 1);
    assert_eq!(h.message_id(), None);
    h.feed(b"ect: x\r\nMessage-ID: <m.2@client.test>\r\nReceived: from c by d; Mon, 1 Jan 2024 00:00:00 +0000\r\n");
    assert_eq!(h.message_id().as_deref(), Some("m.2@client.test"));
    assert_eq!(h.received_count(), 2);
}

#[test]
fn headers_give_the_message_id_for_the_log() {
    let mut h = Headers::new(1024);
    h.feed(b"Subject: x\r\nMessage-ID: <abc.1@client.test>\r\n\r\nbody\r\n");
    assert_eq!(h.message_id().as_deref(), Some("abc.1@client.test"));
    let mut none = Headers::new(1024);
    none.feed(b"Subject: x\r\n\r\n");
    assert_eq!(none.message_id(), None);
}

#[test]
fn received_header_has_postfix_layout() {
    let t = Trace {
        helo: "client.example",
        client_name: "unknown",
        client_addr: "192.0.2.1".parse().unwrap(),
        myhostname: "mx.example",
        mail_name: "sluice",
        protocol: "ESMTPS",
        tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
        queue_id: "ABCDEF1234",
        for_rcpt: Some("u@example.org"),
        unix_secs: 1_704_067_200,
    };
    assert_eq!(
        received_header(&t),
        "Received: from client.example (unknown [192.0.2.1])\r\n\
         \t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\
         \t(No client certificate requested)\r\n\
         \tby mx.example (sluice) with ESMTPS id ABCDEF1234\r\n\
         \tfor <u@example.org>; Mon, 1 Jan 2024 00:00:00 +0000 (UTC)\r\n"
    );
}

#[test]
fn dates_are_right_across_leap_years() {
    assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)");
    assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000 (UTC)");
    // 2100 is not a leap year.
    assert_eq!(rfc5322_date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 +0000 (UTC)");
    assert_eq!(rfc5322_date(4_107_542_400), "Mon, 1 Mar 2100 00:00:00 +0000 (UTC)");
    assert_eq!(rfc5322_date(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 +0000 (UTC)");
}

/// Dot-stuffs CRLF-terminated lines the way an SMTP client does.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

proptest! {
    /// Whatever the message, stuffing then decoding gives it back byte for
    /// byte, however the wire bytes are split into reads.
    #[test]
    fn stuffed_crlf_messages_round_trip(
        lines in proptest::collection::vec("[ -~]{0,40}", 0..20),
        cuts in proptest::collection::vec(0usize..400, 0..6),
    ) {
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        let wire = stuff(&body);
        let mut d = Decoder::data(BareNewline::Normalize, Some(MAX_LINE));
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
        cuts.sort();
        let mut pos = 0;
        for c in cuts.into_iter().chain([wire.len()]) {
            if c > pos {
                pos += d.decode(&wire[pos..c], &mut out);
            }
        }
        prop_assert!(d.is_done());
        prop_assert_eq!(pos, wire.len());
        prop_assert_eq!(out, body);
    }

    /// Arbitrary bytes in any split: same output as in one piece, and the
    /// end is only ever right after CRLF.CRLF (or a leading .CRLF).
    #[test]
    fn arbitrary_input_is_split_invariant(
        input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..300),
        mode in prop_oneof![Just(BareNewline::No), Just(BareNewline::Normalize), Just(BareNewline::Reject)],
    ) {
        let whole = run(mode, &input);
        let bytewise = run_bytewise(mode, &input);
        prop_assert_eq!(&whole, &bytewise);
        if whole.2 {
            let consumed = &input[..whole.1];
            prop_assert!(consumed == b".\r\n" || consumed.ends_with(b"\r\n.\r\n"));
        }
    }
}

#[test]
fn body_lines_skip_the_header_section_and_split_long_lines() {
    let mut seen = Vec::new();
    let mut lines = BodyLines::new(1000, 4);
    let mut check = |l: &str| {
        seen.push(l.to_owned());
        true
    };
    lines.feed(b"Subject: x\r\n\tfolded\r\n\r\nab\r\nabcdefg\r", &mut check);
    lines.feed(b"\n\r\nend", &mut check);
    lines.finish(&mut check);
    assert_eq!(seen, ["ab", "abcd", "efg", "", "end"]);

    // The limit counts body bytes; a false from the check stops it.
    let mut seen = Vec::new();
    let mut lines = BodyLines::new(6, 100);
    lines.feed(b"H: 1\r\n\r\none\r\ntwo\r\nthree\r\n", &mut |l: &str| {
        seen.push(l.to_owned());
        true
    });
    assert_eq!(seen, ["one"]);
    let mut n = 0;
    let mut lines = BodyLines::new(100, 100);
    lines.feed(b"\r\na\r\nb\r\n", &mut |_: &str| {
        n += 1;
        false
    });
    assert_eq!(n, 1);
}
