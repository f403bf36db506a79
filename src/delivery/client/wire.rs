//! What goes on the wire to a backend, for LMTP and SMTP alike: commands
//! in strict RFC 5321 syntax, the message body dot-stuffed with CRLF line
//! ends, and the capabilities read from an `LHLO`/`EHLO` reply. (Replies
//! themselves are read by `reader.rs`.)
//!
//! What goes out is unambiguous whatever was stored: every CR and every LF
//! of the body leaves as part of a CRLF, so no server can find a line end,
//! or an end of data, where another would not (a stored `\r.\r\n` or
//! `\n.\n` is sent as `\r\n..\r\n` and `\r\n..\r\n`). That holds for
//! every message: BINARYMIME content, which is stored as sent, and mail
//! from `mynetworks`, which `smtpd_forbid_bare_newline_exclusions` lets in
//! unnormalized.
//!
//! Pure functions and a streaming dot-stuffer; no I/O.

use sluice_queue::{BodyType, DsnRet, Notify};

use crate::reply::Reply;

/// What a server offered in its `LHLO`/`EHLO` reply (nothing after `HELO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    pub eightbitmime: bool,
    pub enhanced_status: bool,
    pub starttls: bool,
    /// `SIZE` limit; 0 when none was announced.
    pub size: u64,
}

impl Caps {
    /// Reads the capabilities from a `250` reply to `LHLO`/`EHLO`: one
    /// keyword per line after the first (the server's name), matched
    /// without regard to case; unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "DSN" => caps.dsn = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "8BITMIME" => caps.eightbitmime = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status = true,
                "STARTTLS" => caps.starttls = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).unwrap_or(0),
                _ => {}
            }
        }
        caps
    }
}

/// True when an address or parameter can be put on a command line: no
/// control characters, no angle brackets that would end the path early.
pub fn safe_address(addr: &str) -> bool {
    !addr.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'<' || b == b'>')
}

/// True for RFC 3461 xtext as stored (ENVID, ORCPT): printable ASCII
/// without spaces or `=`.
pub fn safe_xtext(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'=')
}

/// Parameters of `MAIL FROM`, each sent only when the server offers the
/// extension it belongs to.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailParams<'a> {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: DsnRet,
    pub envid: Option<&'a str>,
}

/// `MAIL FROM:<sender> ...\r\n`.
pub fn mail_from(sender: &str, p: &MailParams<'_>, caps: &Caps) -> Vec<u8> {
    let mut s = format!("MAIL FROM:<{sender}>");
    if caps.size > 0
        && let Some(n) = p.size
    {
        s.push_str(&format!(" SIZE={n}"));
    }
    if caps.eightbitmime {
        match p.body {
            BodyType::EightBitMime | BodyType::BinaryMime => s.push_str(" BODY=8BITMIME"),
            BodyType::SevenBit => s.push_str(" BODY=7BIT"),
            BodyType::Unspecified => {}
        }
    }
    if p.smtputf8 && caps.smtputf8 {
        s.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match p.ret {
            DsnRet::Full => s.push_str(" RET=FULL"),
            DsnRet::Headers => s.push_str(" RET=HDRS"),
            DsnRet::Unspecified => {}
        }
        if let Some(envid) = p.envid.filter(|e| safe_xtext(e)) {
            s.push_str(&format!(" ENVID={envid}"));
        }
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// `RCPT TO:<addr> ...\r\n`, with `NOTIFY`/`ORCPT` when the server offers DSN.
pub fn rcpt_to(addr: &str, notify: &Notify, orcpt: Option<&str>, caps: &Caps) -> Vec<u8> {
    let mut s = format!("RCPT TO:<{addr}>");
    if caps.dsn {
        if notify.specified {
            if notify.never {
                s.push_str(" NOTIFY=NEVER");
            } else {
                let mut v = Vec::new();
                if notify.success {
                    v.push("SUCCESS");
                }
                if notify.failure {
                    v.push("FAILURE");
                }
                if notify.delay {
                    v.push("DELAY");
                }
                if !v.is_empty() {
                    s.push_str(&format!(" NOTIFY={}", v.join(",")));
                }
            }
        }
        if let Some(o) = orcpt.filter(|o| o.contains(';') && !o.bytes().any(|b| b <= 0x20 || b == 0x7f)) {
            s.push_str(&format!(" ORCPT={o}"));
        }
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Dot-stuffs a body on its way out (RFC 5321 4.5.2) and makes every line
/// end in CRLF, chunk by chunk, so a large message is never copied whole.
///
/// A bare LF is sent as CRLF, and so is a bare CR (a CR not followed by
/// LF): a server that takes either alone for a line end (many do) then
/// sees the same lines as one that does not, and a dot after it is
/// stuffed. This changes the bytes of such a message, as Postfix's
/// `smtpd_forbid_bare_newline = normalize` does on the way in; the
/// alternative, refusing to send it, would bounce mail that was accepted.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last byte written was a CR whose LF is not written yet.
    pending_cr: bool,
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer { at_line_start: true, pending_cr: false, empty: true }
    }
}

impl DotStuffer {
    /// Appends the stuffed form of `chunk` to `out`.
    ///
    /// Runs of bytes up to the next CR or LF are copied whole (found with
    /// `memchr`): a byte at a time, stuffing cost about 35 instructions per
    /// byte, a sixth of the daemon's user-space work per 4 KiB message
    /// (benches/README.md, "CPU per message").
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            self.empty = false;
            if self.pending_cr {
                // Whatever follows a CR, the CR ends a line: an LF here is
                // its own, anything else gets one first.
                out.push(b'\n');
                self.pending_cr = false;
                self.at_line_start = true;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            if self.at_line_start && first == b'.' {
                // The stuffed dot; the line's own is copied with its run.
                out.push(b'.');
            }
            let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            out.extend_from_slice(&rest[..end]);
            if end > 0 {
                self.at_line_start = false;
            }
            match rest.get(end) {
                Some(b'\r') => {
                    out.push(b'\r');
                    self.pending_cr = true;
                }
                Some(_) => {
                    // A bare LF is written as a line end.
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                None => {}
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }

    /// Appends the end-of-data marker, first ending the last line if the body
    /// did not.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr {
            out.push(b'\n');
        } else if !self.empty && !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The header section of a message: everything up to the first empty line
/// (or all of it when there is none).
pub fn header_section(body: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < body.len() {
        let line_end = body[i..].iter().position(|&b| b == b'\n').map(|p| i + p + 1).unwrap_or(body.len());
        let line = &body[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            return &body[..i];
        }
        i = line_end;
    }
    body
}

/// Whether a header section is all ASCII, found chunk by chunk: feed the
/// body's chunks until [`HeaderScan::feed`] gives an answer (a non-ASCII
/// byte, or the empty line that ends the headers), or take
/// [`HeaderScan::finish`] at the end of a body without one.
#[derive(Debug)]
pub struct HeaderScan {
    /// The bytes of the current line so far are nothing but `\r`.
    blank_so_far: bool,
}

impl Default for HeaderScan {
    fn default() -> Self {
        HeaderScan { blank_so_far: true }
    }
}

impl HeaderScan {
    /// `Some(ascii)` once known.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<bool> {
        for &b in chunk {
            if b == b'\n' {
                if self.blank_so_far {
                    return Some(true);
                }
                self.blank_so_far = true;
            } else if !b.is_ascii() {
                return Some(false);
            } else if b != b'\r' {
                self.blank_so_far = false;
            }
        }
        None
    }

    /// The answer for a body that ended within its headers.
    pub fn finish(self) -> bool {
        true
    }
}

/// True when the message really needs SMTPUTF8: the client asked for it and
/// an address or a header is not ASCII. (Postfix delivers an
/// SMTPUTF8-flagged but all-ASCII message to a server without SMTPUTF8.)
pub fn needs_smtputf8(requested: bool, sender: &str, rcpts: &[&str], body: &[u8]) -> bool {
    requested
        && (!sender.is_ascii()
            || rcpts.iter().any(|r| !r.is_ascii())
            || !HeaderScan::default().feed(body).unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn leading_dots_are_doubled_and_the_end_marker_added() {
        assert_eq!(stuff(&[b"a\r\n.b\r\n..c\r\nd.e\r\n"]), b"a\r\n..b\r\n...c\r\nd.e\r\n.\r\n");
        assert_eq!(stuff(&[b".\r\n"]), b"..\r\n.\r\n");
        assert_eq!(stuff(&[b""]), b".\r\n");
    }

    #[test]
    fn stuffing_is_the_same_whatever_the_chunking() {
        let body = b"x\r\n.y\r\n.\r\nz\r\n..\r\n";
        let whole = stuff(&[body]);
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(stuff(&[a, b]), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(stuff(&bytewise), whole);
    }

    /// The byte-at-a-time stuffer the run-copying one replaced: the
    /// reference it must agree with.
    fn stuff_bytewise(body: &[u8]) -> Vec<u8> {
        let (mut at_line_start, mut pending_cr, mut out) = (true, false, Vec::new());
        for &b in body {
            if pending_cr {
                out.push(b'\n');
                pending_cr = false;
                at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    out.push(b'\r');
                    pending_cr = true;
                    continue;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    at_line_start = true;
                    continue;
                }
                b'.' if at_line_start => out.push(b'.'),
                _ => {}
            }
            out.push(b);
            at_line_start = false;
        }
        if pending_cr {
            out.push(b'\n');
        } else if !body.is_empty() && !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn run_copying_agrees_with_bytewise_stuffing_on_every_short_body() {
        // Every body of up to 6 bytes over the bytes that matter, whole and
        // split at every point.
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = bodies
                .iter()
                .filter(|b| b.len() == bodies.last().map_or(0, Vec::len))
                .flat_map(|b| alphabet.iter().map(move |&c| [b.as_slice(), &[c]].concat()))
                .collect();
            bodies.extend(longer);
        }
        for body in &bodies {
            let want = stuff_bytewise(body);
            assert_eq!(stuff(&[body]), want, "{body:?}");
            for split in 0..=body.len() {
                let (a, b) = body.split_at(split);
                assert_eq!(stuff(&[a, b]), want, "{body:?} split at {split}");
            }
        }
    }

    #[test]
    fn bare_lf_becomes_crlf_and_an_unterminated_last_line_is_ended() {
        assert_eq!(stuff(&[b"a\nb\n.c"]), b"a\r\nb\r\n..c\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r\nb\r"]), b"a\r\nb\r\n.\r\n");
    }

    #[test]
    fn bare_cr_becomes_crlf_so_no_dot_line_hides_behind_it() {
        // The smuggling shapes: a dot line after a bare CR or a bare LF.
        assert_eq!(stuff(&[b"a\r.\r\nMAIL FROM:<x>\r\n"]), b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n");
        assert_eq!(stuff(&[b"a\n.\nb\r\n"]), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r", b".\r", b"\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(stuff(&[b"\r\r\n"]), b"\r\n\r\n.\r\n");
    }

    /// The body as a server that splits lines at any CR, LF or CRLF reads
    /// it: its lines, and where it finds the end of data.
    fn lenient_lines(wire: &[u8]) -> (Vec<Vec<u8>>, Option<usize>) {
        let mut lines = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < wire.len() {
            match wire[i] {
                b'\r' | b'\n' => {
                    if wire[i] == b'\r' && wire.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    if cur == b"." {
                        return (lines, Some(i + 1));
                    }
                    lines.push(std::mem::take(&mut cur));
                }
                b => cur.push(b),
            }
            i += 1;
        }
        (lines, None)
    }

    proptest::proptest! {
        /// Whatever is stored, what goes out has only CRLF line ends, and a
        /// server that takes any CR or LF for a line end finds the end of
        /// data exactly where a strict one does: at the very end.
        #[test]
        fn no_stored_bytes_make_an_ambiguous_body(
            body in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b'\r'), proptest::strategy::Just(b'\n'),
                proptest::strategy::Just(b'.'), proptest::prelude::any::<u8>()
            ], 0..200),
            split in 0usize..200,
        ) {
            let (a, b) = body.split_at(split.min(body.len()));
            let wire = stuff(&[a, b]);
            for (i, &c) in wire.iter().enumerate() {
                if c == b'\r' {
                    proptest::prop_assert_eq!(wire.get(i + 1), Some(&b'\n'));
                }
                if c == b'\n' {
                    proptest::prop_assert!(i > 0 && wire[i - 1] == b'\r');
                }
            }
            let (_, end) = lenient_lines(&wire);
            proptest::prop_assert_eq!(end, Some(wire.len()));
            proptest::prop_assert!(wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n");
        }
    }

    #[test]
    fn commands_use_strict_syntax_and_only_offered_parameters() {
        let none = Caps::default();
        let all = Caps {
            pipelining: true,
            dsn: true,
            smtputf8: true,
            eightbitmime: true,
            enhanced_status: true,
            starttls: false,
            size: 1000,
        };
        let p = MailParams {
            size: Some(42),
            body: BodyType::EightBitMime,
            smtputf8: true,
            ret: DsnRet::Headers,
            envid: Some("QQ+2Bid"),
        };
        assert_eq!(mail_from("a@b.test", &p, &none), b"MAIL FROM:<a@b.test>\r\n");
        assert_eq!(
            String::from_utf8(mail_from("a@b.test", &p, &all)).unwrap(),
            "MAIL FROM:<a@b.test> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bid\r\n"
        );
        assert_eq!(mail_from("", &MailParams::default(), &all), b"MAIL FROM:<>\r\n");
        let n = Notify { specified: true, never: false, success: true, failure: true, delay: false };
        assert_eq!(rcpt_to("u@d.test", &n, Some("rfc822;u@d.test"), &none), b"RCPT TO:<u@d.test>\r\n");
        assert_eq!(
            String::from_utf8(rcpt_to("u@d.test", &n, Some("rfc822;u@d.test"), &all)).unwrap(),
            "RCPT TO:<u@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@d.test\r\n"
        );
        let never = Notify { specified: true, never: true, ..Notify::default() };
        assert_eq!(rcpt_to("u@d.test", &never, None, &all), b"RCPT TO:<u@d.test> NOTIFY=NEVER\r\n");
        assert!(!safe_address("a@b\r\nRSET"));
        assert!(!safe_address("a>@b"));
        assert!(safe_address("\"a b\"@c.test"));
    }

    #[test]
    fn ehlo_capabilities_are_read_from_the_reply_lines() {
        let lines = [
            "mbx.test",
            "PIPELINING",
            "SIZE 10240000",
            "8bitmime",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "STARTTLS",
            "AUTH PLAIN",
        ];
        let reply = Reply::multiline(250, None, lines.iter().map(|s| s.to_string()).collect());
        let c = Caps::from_ehlo(&reply);
        assert_eq!(
            c,
            Caps {
                pipelining: true,
                dsn: true,
                smtputf8: true,
                eightbitmime: true,
                enhanced_status: true,
                starttls: true,
                size: 10_240_000
            }
        );
        assert_eq!(
            Caps::from_ehlo(&Reply::multiline(250, None, vec!["mbx.test PIPELINING".into()])),
            Caps::default()
        );
    }

    #[test]
    fn smtputf8_is_needed_only_for_non_ascii_addresses_or_headers() {
        assert!(!needs_smtputf8(true, "a@b", &["c@d"], b"Subject: hi\r\n\r\nbody \xc3\xa9\r\n"));
        assert!(needs_smtputf8(true, "a@b", &["\u{e9}@d"], b"Subject: hi\r\n\r\n"));
        assert!(needs_smtputf8(true, "a@b", &["c@d"], "Subject: h\u{e9}\r\n\r\n".as_bytes()));
        assert!(!needs_smtputf8(false, "a@b", &["\u{e9}@d"], b""));
        // The scan gives the same answer however the body is cut.
        let body = "Subject: hi\r\nX: caf\u{e9}\r\n\r\nbody".as_bytes();
        for cut in 0..body.len() {
            let mut scan = HeaderScan::default();
            let answer = scan.feed(&body[..cut]).or_else(|| scan.feed(&body[cut..]));
            assert_eq!(answer, Some(false), "cut at {cut}");
        }
        let mut scan = HeaderScan::default();
        assert_eq!(scan.feed(b"Subject: a\r\n\r"), None);
        assert_eq!(scan.feed(b"\n\xc3\xa9"), Some(true));
    }
}
