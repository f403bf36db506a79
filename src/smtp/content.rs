//! Message content as bytes, with no I/O and no session: the DATA decoder
//! (dot-unstuffing, end-of-data detection, bare CR/LF handling, line
//! length), the header section as it streams in ([`Headers`]: hop count,
//! Message-ID, logical lines for `header_checks`), the body lines
//! `body_checks` look at ([`BodyLines`]), and our `Received:` header.
//!
//! The decoder is a pure byte state machine: bytes in, message bytes out,
//! "done" when the end-of-data line was consumed. It owns no I/O and no
//! buffers beyond the caller's, so memory per session stays bounded however
//! large the message: the message module feeds it what the session has
//! read and streams the output into the queue draft.
//!
//! SMTP smuggling: the only sequence that ends a message is the exact bytes
//! `<CR><LF>.<CR><LF>` (or `.<CR><LF>` as the very first line). A bare LF or
//! bare CR never ends a line that could end the message, in every mode;
//! what the modes change is how such bytes are stored (see [`BareNewline`]).
//!
//! A leaf: imports nothing of the SMTP server but the reply type, so the
//! session's state, the settings and the stages can all use it.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::reply::{Reply, Status};

/// `smtpd_forbid_bare_newline`: what to do with a bare LF (LF not preceded
/// by CR) or a bare CR (CR not followed by LF) in commands and content.
///
/// In every mode the end of data is `<CR><LF>.<CR><LF>` and nothing else.
/// Postfix's `no` also treats a bare LF as a line end, so `\n.\n` ends its
/// DATA: that is the smuggling hole, and sluice never does it.
///
/// sluice treats a bare CR like a bare LF (Postfix only looks at LF): the
/// stored message is relayed to internal servers whose handling of a bare CR
/// we do not control, so `\r.\r` must not reach them as-is either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Keep bare CR and LF as message content, unchanged (still never an
    /// end of data).
    No,
    /// Treat a bare LF or CR as the end of a content line and store it as
    /// CRLF (`yes` is an alias, as in Postfix). The default.
    #[default]
    Normalize,
    /// Reject the command or the message (with
    /// `smtpd_forbid_bare_newline_reject_code`).
    Reject,
}

impl BareNewline {
    /// Parses a `smtpd_forbid_bare_newline` value (case-insensitive).
    pub fn parse(s: &str) -> Option<BareNewline> {
        match s.trim().to_ascii_lowercase().as_str() {
            "no" => Some(BareNewline::No),
            "yes" | "normalize" => Some(BareNewline::Normalize),
            "reject" => Some(BareNewline::Reject),
            _ => None,
        }
    }
}

/// Something in the content that makes the message unacceptable. The rest
/// of the message is still read (to find its end) but no longer stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A bare LF under `smtpd_forbid_bare_newline = reject`.
    BareLf,
    /// A bare CR under `smtpd_forbid_bare_newline = reject`.
    BareCr,
    /// A line longer than 998 octets before its CRLF (RFC 5321 4.5.3.1.6).
    LineTooLong,
    /// More than `message_size_limit` octets.
    TooBig,
    /// Too many `Received:` headers (`hopcount_limit`): a mail loop.
    TooManyHops,
}

impl Violation {
    /// The end-of-data reply for this violation, as Postfix words it where
    /// Postfix has the case. `bare_code` is
    /// `smtpd_forbid_bare_newline_reject_code`.
    pub fn reply(self, bare_code: u16) -> Reply {
        match self {
            Violation::BareLf => Reply::new(bare_code, Status(5, 5, 2), "Error: bare <LF> received"),
            Violation::BareCr => Reply::new(bare_code, Status(5, 5, 2), "Error: bare <CR> received"),
            // RFC 5321 4.5.3.1: "500 Line too long".
            Violation::LineTooLong => Reply::new(500, Status(5, 5, 2), "Error: message line too long"),
            Violation::TooBig => Reply::new(552, Status(5, 3, 4), "Error: message file too big"),
            Violation::TooManyHops => Reply::new(554, Status(5, 4, 0), "Error: too many hops"),
        }
    }
}

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `eod` when the previous line ended with a
    /// genuine CRLF (or this is the first line), so a `.<CR><LF>` here ends
    /// the data.
    LineStart { eod: bool },
    /// Inside a line.
    Text,
    /// Inside a line, after a CR whose successor is not known yet.
    Cr,
    /// A `.` at the start of a line, not yet output.
    Dot { eod: bool },
    /// `.` then CR at the start of a line.
    DotCr { eod: bool },
    /// The end-of-data line has been consumed.
    Done,
}

/// Decodes message content as it arrives.
///
/// For `DATA` (`dot = true`): removes dot-stuffing, finds the end of data,
/// checks line length. For `BDAT` (`dot = false`): the length is given by
/// the command, so only line endings are handled.
///
/// `BODY=BINARYMIME` chunks meet the same line-ending rules as any other
/// content: a bare CR or LF is a line end under `normalize` and refused
/// under `reject`. sluice relays to mailbox servers over paths it does not
/// choose when it accepts the message (DATA, or BDAT to a server without
/// BINARYMIME, or one that parses CRLF lines anyway), so what it stores
/// must mean one thing to all of them; a body with bare CR or LF does not.
/// The price: a binary part carrying raw CR or LF bytes is changed (or,
/// under `reject`, refused) like any other content; `smtpd_forbid_bare_newline
/// = no` stores it as sent.
#[derive(Debug)]
pub struct Decoder {
    mode: BareNewline,
    dot: bool,
    max_line: Option<usize>,
    state: State,
    line_len: usize,
    violation: Option<Violation>,
}

/// The longest content line RFC 5321 allows, without its CRLF.
pub const MAX_LINE: usize = 998;

impl Decoder {
    /// A decoder for `DATA` content.
    pub fn data(mode: BareNewline, max_line: Option<usize>) -> Decoder {
        Decoder {
            mode,
            dot: true,
            max_line,
            state: State::LineStart { eod: true },
            line_len: 0,
            violation: None,
        }
    }

    /// A decoder for `BDAT` chunks of one message, whatever its `BODY=`.
    pub fn bdat(mode: BareNewline) -> Decoder {
        Decoder {
            mode,
            dot: false,
            max_line: None,
            state: State::LineStart { eod: false },
            line_len: 0,
            violation: None,
        }
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Records a violation found outside the decoder (size, hops); the first
    /// one wins.
    pub fn set_violation(&mut self, v: Violation) {
        self.violation.get_or_insert(v);
    }

    /// True once the end-of-data line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, appending message bytes to `out`, and returns how
    /// many input bytes were consumed: all of them, unless the end of data
    /// was reached, in which case the bytes after it (pipelined commands)
    /// are left to the caller. `out` grows by at most twice `input.len()`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return i,
                State::Text => {
                    // Fast path: copy the run up to the next CR or LF.
                    let rest = &input[i..];
                    let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if run > 0 {
                        self.count(run);
                        out.extend_from_slice(&rest[..run]);
                        i += run;
                        continue;
                    }
                    let b = input[i];
                    i += 1;
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_lf(out, false);
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        out.extend_from_slice(b"\r\n");
                        self.new_line(true);
                    } else {
                        // Bare CR; the current byte is handled in the next state.
                        self.bare_cr(out, false);
                    }
                }
                State::LineStart { eod } => {
                    if self.dot && input[i] == b'.' {
                        // Not counted: RFC 5321 4.5.3.1.6 limits a line to
                        // 1000 octets "not counting the leading dot
                        // duplicated for transparency", and this dot is
                        // either that one or the end of data.
                        i += 1;
                        self.state = State::Dot { eod };
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot { eod } => match input[i] {
                    b'\r' => {
                        i += 1;
                        self.state = State::DotCr { eod };
                    }
                    b'\n' => {
                        // "." ended by a bare LF: never the end of data.
                        i += 1;
                        self.bare_lf(out, true);
                    }
                    _ => {
                        // Dot-stuffing: the leading dot goes, the rest of
                        // the line (even another dot) is content.
                        self.state = State::Text;
                    }
                },
                State::DotCr { eod } => {
                    if input[i] == b'\n' {
                        i += 1;
                        if eod {
                            self.state = State::Done;
                            return i;
                        }
                        // A lone dot after a bare line end: content.
                        out.extend_from_slice(b".\r\n");
                        self.new_line(true);
                    } else {
                        self.bare_cr(out, true);
                    }
                }
            }
        }
        i
    }

    /// Ends a `BDAT` message: a CR left pending by the last chunk is bare.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::Cr => self.bare_cr(out, false),
            State::DotCr { .. } => self.bare_cr(out, true),
            State::Dot { .. } => out.push(b'.'),
            _ => {}
        }
    }

    fn count(&mut self, n: usize) {
        self.line_len += n;
        if let Some(max) = self.max_line
            && self.line_len > max
        {
            self.set_violation(Violation::LineTooLong);
        }
    }

    fn new_line(&mut self, crlf: bool) {
        self.line_len = 0;
        self.state = State::LineStart { eod: crlf };
    }

    /// A bare LF was consumed; `dot` when it ended a line holding only a
    /// (not yet output) dot.
    fn bare_lf(&mut self, out: &mut Vec<u8>, dot: bool) {
        self.bare(out, dot, b'\n', Violation::BareLf);
    }

    /// A CR turned out to be bare (the byte after it is not LF and has not
    /// been consumed); `dot` when the CR followed a line-leading dot.
    fn bare_cr(&mut self, out: &mut Vec<u8>, dot: bool) {
        self.bare(out, dot, b'\r', Violation::BareCr);
    }

    /// A bare line-end byte: a line end when normalizing (a pending dot
    /// was the whole line and is kept), else an ordinary byte, after which
    /// a pending dot had other characters on its line, so it was stuffing
    /// and is dropped.
    fn bare(&mut self, out: &mut Vec<u8>, dot: bool, byte: u8, violation: Violation) {
        match self.mode {
            BareNewline::Normalize => {
                if dot {
                    out.push(b'.');
                }
                out.extend_from_slice(b"\r\n");
                self.new_line(false);
            }
            BareNewline::No | BareNewline::Reject => {
                if self.mode == BareNewline::Reject {
                    self.set_violation(violation);
                }
                out.push(byte);
                self.line_len = 0;
                self.state = State::Text;
            }
        }
    }
}

/// Collects the header section of a message (bounded by
/// `header_size_limit`) so the hop count can be checked with `mail-parser`.
#[derive(Debug)]
pub struct Headers {
    buf: Vec<u8>,
    limit: usize,
    complete: bool,
    /// What `mail-parser` found in `buf`, parsed once when first asked for
    /// (the hop count, then the Message-ID for the log: a parse is about
    /// as costly as the rest of the session's commands together) and
    /// forgotten when `buf` grows.
    parsed: Option<Parsed>,
}

/// The fields taken from one parse of the header section.
#[derive(Debug)]
struct Parsed {
    received: usize,
    message_id: Option<String>,
}

impl Headers {
    /// A collector keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Headers {
        Headers { buf: Vec::new(), limit, complete: false, parsed: None }
    }

    /// Feeds decoded message bytes; returns true once the header section is
    /// complete (blank line seen or the limit reached), after which further
    /// bytes are ignored.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.complete {
            return true;
        }
        self.parsed = None;
        let start = self.buf.len().saturating_sub(3);
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(pos) = memchr::memmem::find(&self.buf[start..], b"\r\n\r\n") {
            self.buf.truncate(start + pos + 4);
            self.complete = true;
        } else if self.buf.starts_with(b"\r\n") || self.buf.len() >= self.limit {
            self.complete = true;
        }
        self.complete
    }

    /// True once the header section has been seen whole (or the limit hit).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// How many bytes from the start of the message are its header section
    /// when that is stored apart from the body (for milters): through the
    /// empty line that ends it; when it did not end within the limit (or
    /// the message ended first), through its last complete line; 2 for a
    /// message that starts with the empty line.
    pub fn head_len(&self) -> usize {
        if self.buf.starts_with(b"\r\n") {
            return 2;
        }
        if self.complete && self.buf.ends_with(b"\r\n\r\n") {
            return self.buf.len();
        }
        memchr::memrchr(b'\n', &self.buf).map_or(0, |p| p + 1)
    }

    /// The `Message-ID:` header's identifier (without angle brackets), for
    /// the `message-id=<...>` log line.
    pub fn message_id(&mut self) -> Option<String> {
        self.parsed().message_id.clone()
    }

    fn parsed(&mut self) -> &Parsed {
        self.parsed.get_or_insert_with(|| {
            let parser = mail_parser::MessageParser::new();
            match parser.parse_headers(&self.buf) {
                Some(m) => Parsed {
                    received: m
                        .headers()
                        .iter()
                        .filter(|h| matches!(h.name, mail_parser::HeaderName::Received))
                        .count(),
                    message_id: m.message_id().map(str::to_owned),
                },
                None => Parsed { received: 0, message_id: None },
            }
        })
    }

    /// The header section's logical lines as header_checks sees them: a
    /// header with its continuation lines joined by `\n` (CRs dropped).
    pub fn logical_lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let mut out: Vec<String> = Vec::new();
        for line in text.split("\r\n") {
            if line.is_empty() {
                break;
            }
            match out.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => {
                    last.push('\n');
                    last.push_str(line);
                }
                _ => out.push(line.to_owned()),
            }
        }
        out
    }

    /// How many `Received:` headers the message carries.
    pub fn received_count(&mut self) -> usize {
        self.parsed().received
    }
}

/// What the `Received:` header records about the session.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_name: &'a str,
    pub client_addr: IpAddr,
    pub myhostname: &'a str,
    pub mail_name: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, ...
    pub protocol: &'a str,
    /// TLS version and cipher suite, when the session is encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    pub queue_id: &'a str,
    /// The recipient, named only when there is exactly one (as Postfix).
    pub for_rcpt: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// The `Received:` header sluice prepends, in Postfix's layout, folded with
/// tabs and ending in CRLF.
pub fn received_header(t: &Trace<'_>) -> String {
    use crate::reply::{IN_TEXT, printable};
    let mut h = String::with_capacity(256);
    // What the client chose (HELO name, recipient) was checked when it was
    // given; filtered again here, as no control may ever reach a header.
    let helo = printable(if t.helo.is_empty() { "unknown" } else { t.helo }, IN_TEXT);
    let addr = match t.client_addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    let _ = write!(h, "Received: from {helo} ({} [{addr}])\r\n", t.client_name);
    if let Some((version, cipher)) = t.tls {
        let _ =
            write!(h, "\t(using {version} with cipher {cipher})\r\n\t(No client certificate requested)\r\n");
    }
    let _ = write!(h, "\tby {} ({}) with {} id {}", t.myhostname, t.mail_name, t.protocol, t.queue_id);
    match t.for_rcpt.map(|r| printable(r, IN_TEXT)) {
        Some(r) => {
            let _ = write!(h, "\r\n\tfor <{r}>; {}\r\n", rfc5322_date(t.unix_secs));
        }
        None => {
            let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(t.unix_secs));
        }
    }
    h
}

/// An RFC 5322 date in UTC: `Tue, 1 Jan 2030 10:00:00 +0000 (UTC)`.
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000 (UTC)",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The body lines `body_checks` look at: every line after the header
/// section (the first empty line), as the client sent it (no MIME
/// decoding), within the first `limit` body bytes. A line longer than
/// `max_line` is seen in pieces of that size, as Postfix stores it.
#[derive(Debug)]
pub struct BodyLines {
    in_headers: bool,
    /// The header line or body line read so far (a header line only to
    /// find the empty one; at most `max_line` bytes of either).
    line: Vec<u8>,
    /// Body bytes inspected so far.
    seen: usize,
    limit: usize,
    max_line: usize,
}

impl BodyLines {
    pub fn new(limit: usize, max_line: usize) -> BodyLines {
        BodyLines { in_headers: true, line: Vec::new(), seen: 0, limit, max_line: max_line.max(1) }
    }

    /// Feeds decoded message bytes (CRLF line ends); `check` gets each
    /// complete body line without its CRLF and returns false to stop
    /// looking.
    pub fn feed(&mut self, bytes: &[u8], check: &mut impl FnMut(&str) -> bool) {
        for &b in bytes {
            if !self.in_headers && self.seen >= self.limit {
                return;
            }
            if !self.in_headers {
                self.seen += 1;
            }
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                if self.in_headers {
                    self.in_headers = !self.line.is_empty();
                    self.line.clear();
                } else if !self.emit(check) {
                    self.seen = self.limit;
                    return;
                }
                continue;
            }
            if self.line.len() >= self.max_line {
                // The piece is full: headers need only their start, body
                // pieces are checked as lines.
                if self.in_headers {
                    continue;
                }
                if !self.emit(check) {
                    self.seen = self.limit;
                    return;
                }
            }
            self.line.push(b);
        }
    }

    /// The message ended: the last line, if it had no line end.
    pub fn finish(&mut self, check: &mut impl FnMut(&str) -> bool) {
        if !self.in_headers && !self.line.is_empty() && self.seen <= self.limit {
            self.emit(check);
        }
    }

    fn emit(&mut self, check: &mut impl FnMut(&str) -> bool) -> bool {
        let go_on = check(&String::from_utf8_lossy(&self.line));
        self.line.clear();
        go_on
    }
}

#[cfg(test)]
mod tests;
