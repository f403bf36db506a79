//! The reply reader against well-formed, malformed and hostile input, and a
//! property test: whatever bytes arrive, in whatever pieces, the reader
//! keeps a bounded amount and gives the same answer.

use proptest::prelude::*;

use super::*;

/// Feeds `input` in pieces of `step` bytes; the replies read and the error
/// that ended it, if any.
fn read_all(input: &[u8], step: usize) -> (Vec<Reply>, Option<ReplyError>) {
    let mut r = ReplyReader::new();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in input.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            let (used, res) = r.feed(&pending);
            pending.drain(..used);
            assert_bounded(&r);
            match res {
                Ok(Some(reply)) => {
                    out.push(reply);
                    r = ReplyReader::new();
                }
                Ok(None) => {
                    assert!(pending.is_empty(), "without a reply, all input is consumed");
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
            if pending.is_empty() {
                break;
            }
        }
    }
    (out, None)
}

fn assert_bounded(r: &ReplyReader) {
    assert!(r.line.len() <= MAX_LINE + 4, "partial line {} bytes", r.line.len());
    assert!(r.lines.len() <= MAX_LINES, "{} lines kept", r.lines.len());
    assert!(r.lines.iter().all(|(_, t)| t.len() <= 3 * MAX_LINE), "a kept line is bounded");
}

#[test]
fn single_and_multiline_replies_with_enhanced_codes() {
    let (r, e) =
        read_all(b"250-mbx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n452 4.2.2 Mailbox full\r\n", 1000);
    assert_eq!(e, None);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].code(), 250);
    assert_eq!(r[0].lines(), ["mbx.test", "PIPELINING", "SIZE 1000"]);
    assert_eq!(r[1].status(), Some(Status(4, 2, 2)));
    assert_eq!(r[1].to_one_line(), "452 4.2.2 Mailbox full");
    let (r, _) = read_all(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n", 3);
    assert_eq!(r[0].to_one_line(), "550 5.1.1 no such user");
    // A status whose class disagrees with the code is text.
    let (r, _) = read_all(b"250 5.0.0 odd\r\n", 7);
    assert_eq!((r[0].status(), r[0].to_one_line().as_str()), (None, "250 5.0.0 odd"));
    // Bare code, LF-only line ends.
    let (r, _) = read_all(b"220\n", 1);
    assert_eq!(r[0].code(), 220);
}

#[test]
fn what_follows_a_reply_is_left_for_the_next() {
    let mut r = ReplyReader::new();
    let input = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go";
    let (used, res) = r.feed(input);
    assert_eq!(used, 14);
    assert_eq!(res.unwrap().unwrap().code(), 250);
}

#[test]
fn an_endless_continuation_is_refused_after_the_line_limit() {
    let flood = b"220-\r\n".repeat(10_000);
    let (r, e) = read_all(&flood, 4096);
    assert!(r.is_empty());
    assert_eq!(e, Some(ReplyError::TooManyLines));
}

#[test]
fn an_endless_line_is_refused_after_the_byte_limit() {
    let mut flood = b"220 ".to_vec();
    flood.extend(std::iter::repeat_n(b'x', 1 << 20));
    let (_, e) = read_all(&flood, 8192);
    assert_eq!(e, Some(ReplyError::TooLong));
    // A long line within the reply limit is kept in part.
    let mut long = b"250 ".to_vec();
    long.extend(std::iter::repeat_n(b'y', 10_000));
    long.extend_from_slice(b"\r\n");
    let (r, e) = read_all(&long, 100);
    assert_eq!(e, None);
    assert_eq!(r[0].lines()[0].len(), MAX_LINE);
}

#[test]
fn garbage_is_malformed_and_named_printably() {
    let (_, e) = read_all(b"HTTP/1.1 400 Bad\r\n", 64);
    assert_eq!(e, Some(ReplyError::Malformed("HTTP/1.1 400 Bad".into())));
    let (_, e) = read_all(b"250x\r\n", 64);
    assert!(matches!(e, Some(ReplyError::Malformed(_))));
    let (_, e) = read_all(b"\x1b]0;x\x07\r\n", 64);
    assert_eq!(e, Some(ReplyError::Malformed("?]0;x?".into())));
    let (_, e) = read_all(b"199 nope\r\n", 64);
    assert!(matches!(e, Some(ReplyError::Malformed(_))));
}

#[test]
fn a_bare_cr_never_splits_a_reply_line() {
    let (r, _) = read_all(b"550 5.7.1 a\rb\r\n", 64);
    assert_eq!(r[0].lines(), ["a b"]);
}

/// Lines an adversarial server might send: valid and invalid codes,
/// continuations, long runs, bare CRs, NULs.
fn hostile_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"220-\r\n".to_vec()),
        Just(b"250-PIPELINING\r\n".to_vec()),
        Just(b"250 ok\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        (1usize..5000).prop_map(|n| {
            let mut v = b"250-".to_vec();
            v.extend(std::iter::repeat_n(b'a', n));
            v.extend_from_slice(b"\r\n");
            v
        }),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever arrives, and however it is cut: the reader never keeps
    /// more than its bounds, every reply is within them, and the answer
    /// does not depend on the cutting.
    #[test]
    fn any_input_costs_bounded_memory_and_reads_the_same_in_any_pieces(
        lines in proptest::collection::vec(hostile_line(), 0..400),
        step in 1usize..9000,
    ) {
        let input: Vec<u8> = lines.concat();
        let (whole, e1) = read_all(&input, input.len().max(1));
        let (cut, e2) = read_all(&input, step);
        prop_assert_eq!(&whole, &cut);
        prop_assert_eq!(e1, e2);
        for r in &whole {
            prop_assert!(r.lines().len() <= MAX_LINES);
            prop_assert!(r.lines().iter().all(|l| l.len() <= 3 * MAX_LINE));
            prop_assert!((200..600).contains(&r.code()));
        }
    }

    /// A flood of continuation lines, whatever their text, ends in an error
    /// once past the limits, never in an ever-growing reply.
    #[test]
    fn a_flood_of_continuations_always_ends(text in "[ -~]{0,3000}", n in (MAX_LINES + 1)..(MAX_LINES * 3)) {
        let input = format!("220-{text}\r\n").repeat(n);
        let (replies, e) = read_all(input.as_bytes(), 1500);
        prop_assert!(replies.is_empty());
        prop_assert!(matches!(e, Some(ReplyError::TooManyLines | ReplyError::TooLong)));
    }
}
