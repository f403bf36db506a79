//! Removes incoming `Authentication-Results:` fields that claim sluice's
//! authserv-id (RFC 8601 section 5): only results sluice itself added may
//! carry that name downstream, or a sender could write its own
//! `dkim=pass` for the mailbox server's filters to believe.
//!
//! A streaming filter over the message bytes on their way to the queue:
//! every byte passes unchanged except the fields removed, and it holds at
//! most one field (up to a bound) while deciding. A field longer than the
//! bound is decided on its start, which is where the authserv-id is, so
//! padding a forged field does not get it through.
//!
//! Owns that decision only; the checks themselves see the message as
//! received (`verify.rs`), forged fields included, as a signature over
//! them was made over them.

use super::fields::{self, Event, Fields};

/// The filter for one message.
#[derive(Debug)]
pub struct Strip {
    fields: Fields,
    authserv_id: String,
    /// The field being passed on in pieces is being dropped.
    dropping: bool,
    removed: usize,
}

impl Strip {
    /// A filter removing fields that claim `authserv_id`, deciding on at
    /// most `max` bytes of a field.
    pub fn new(authserv_id: &str, max: usize) -> Strip {
        Strip { fields: Fields::new(max), authserv_id: authserv_id.to_owned(), dropping: false, removed: 0 }
    }

    /// Passes `input` on to `out`, without the forged fields it completes.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Strip { fields, authserv_id, dropping, removed } = self;
        fields.feed(input, &mut |e| pass(e, authserv_id, dropping, removed, out));
    }

    /// The message ended: what is still held goes out (or not).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let Strip { fields, authserv_id, dropping, removed } = self;
        fields.finish(&mut |e| pass(e, authserv_id, dropping, removed, out));
    }

    /// True once the header section has passed: from here on every byte
    /// goes through unchanged, and a caller may skip the filter.
    pub fn in_body(&self) -> bool {
        self.fields.in_body()
    }

    /// How many fields were removed.
    pub fn removed(&self) -> usize {
        self.removed
    }
}

fn pass(e: Event<'_>, id: &str, dropping: &mut bool, removed: &mut usize, out: &mut Vec<u8>) {
    match e {
        Event::Field { bytes, complete } => {
            if claims(bytes, id) {
                *removed += 1;
                *dropping = !complete;
            } else {
                out.extend_from_slice(bytes);
                *dropping = false;
            }
        }
        Event::More { bytes, complete } => {
            if !*dropping {
                out.extend_from_slice(bytes);
            }
            if complete {
                *dropping = false;
            }
        }
        Event::EndOfHeaders(bytes) | Event::Body(bytes) => out.extend_from_slice(bytes),
    }
}

/// True when `field` (or its start) is an `Authentication-Results:` field
/// whose authserv-id is `id`, compared case-insensitively (it is a domain
/// name in practice).
pub fn claims(field: &[u8], id: &str) -> bool {
    match fields::name(field) {
        Some(n) if n.eq_ignore_ascii_case(b"Authentication-Results") => {}
        _ => return false,
    }
    let colon = memchr::memchr(b':', field).unwrap_or(0);
    authserv_id(&field[colon + 1..]).is_some_and(|found| found.eq_ignore_ascii_case(id.as_bytes()))
}

/// The authserv-id at the start of an `Authentication-Results:` value:
/// after white space, folding and comments, the token or quoted string up
/// to white space, `;` or a comment (RFC 8601 2.2).
fn authserv_id(value: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    // Skip CFWS: blanks, line folds and (nested) comments.
    loop {
        while i < value.len() && value[i].is_ascii_whitespace() {
            i += 1;
        }
        if value.get(i) != Some(&b'(') {
            break;
        }
        let mut depth = 0usize;
        while i < value.len() {
            match value[i] {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    let rest = value.get(i..)?;
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let mut id = Vec::new();
        let mut bytes = quoted.iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'"' => return Some(id),
                b'\\' => id.push(*bytes.next()?),
                _ => id.push(b),
            }
        }
        return None;
    }
    let end =
        rest.iter().position(|b| b.is_ascii_whitespace() || *b == b';' || *b == b'(').unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(msg: &[u8], chunk: usize, max: usize) -> (String, usize) {
        let mut s = Strip::new("mx.example.net", max);
        let mut out = Vec::new();
        for c in msg.chunks(chunk) {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        (String::from_utf8(out).unwrap(), s.removed())
    }

    #[test]
    fn forged_results_go_and_everything_else_stays() {
        let msg = b"Authentication-Results: MX.Example.Net; dkim=pass\r\n\
            Received: from a\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            authentication-results:  (a comment)\r\n mx.example.net;\r\n\tdmarc=pass\r\n\
            Authentication-Results: \"mx.example.net\" 1; none\r\n\
            Subject: Authentication-Results: mx.example.net\r\n\
            \r\n\
            Authentication-Results: mx.example.net; in the body\r\n";
        for chunk in [1, 5, msg.len()] {
            let (out, removed) = run(msg, chunk, 1000);
            assert_eq!(removed, 3, "chunks of {chunk}");
            assert_eq!(
                out,
                "Received: from a\r\n\
                 Authentication-Results: other.example; spf=pass\r\n\
                 Subject: Authentication-Results: mx.example.net\r\n\
                 \r\n\
                 Authentication-Results: mx.example.net; in the body\r\n"
            );
        }
    }

    #[test]
    fn a_padded_forgery_is_decided_on_its_start() {
        let mut msg = b"Authentication-Results: mx.example.net; dkim=pass (".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 5000));
        msg.extend_from_slice(b")\r\nSubject: hi\r\n\r\nbody");
        let (out, removed) = run(&msg, 100, 256);
        assert_eq!((out.as_str(), removed), ("Subject: hi\r\n\r\nbody", 1));
        // A long field that is not forged passes whole.
        let mut other = b"X-Long: ".to_vec();
        other.extend(std::iter::repeat_n(b'y', 5000));
        other.extend_from_slice(b"\r\n\r\nbody");
        assert_eq!(run(&other, 100, 256), (String::from_utf8(other.clone()).unwrap(), 0));
    }

    #[test]
    fn authserv_ids_are_read_past_comments_and_quotes() {
        assert_eq!(authserv_id(b" (c (nested)) id.example; x").as_deref(), Some(&b"id.example"[..]));
        assert_eq!(authserv_id(b"\"q\\\"d\"; x").as_deref(), Some(&b"q\"d"[..]));
        assert_eq!(authserv_id(b"   ").as_deref(), None);
        assert!(!claims(b"Authentication-Results: mx.example.net.evil; x", "mx.example.net"));
    }
}
