//! SMTP replies: the one type both the inbound server and the delivery
//! client speak, and the one place a queue error becomes an SMTP reply.
//!
//! Also the one filter for text that came from outside ([`printable`]):
//! what a client, a backend, a policy server or DNS says may hold control
//! characters, and none of them may reach a reply, a log line, `mailq` or a
//! header. A [`Reply`] filters its lines when it is built, so no reply with
//! a CR or LF in its text can exist, whoever made it.

use std::borrow::Cow;
use std::fmt;

/// What replaces a character [`printable`] refuses in log lines, `mailq`,
/// `queue show` and headers sluice writes (Postfix's `printable(text, '?')`).
pub const IN_TEXT: char = '?';

/// What replaces a character [`printable`] refuses in reply text (Postfix's
/// `smtpd_expansion_filter` uses `_`).
pub const IN_REPLIES: char = '_';

/// Whether `c` may be shown as it is: printable ASCII, and characters
/// beyond ASCII (SMTPUTF8 addresses and replies) that are neither controls
/// nor invisible characters that make a line read as something else.
pub fn is_printable(c: char) -> bool {
    match c {
        ' '..='~' => true,
        // C0 controls (CR, LF, ESC, BEL, NUL, TAB ...) and DEL.
        _ if c.is_ascii() => false,
        // C1 controls: some terminals take U+009B as the start of an
        // escape sequence, as ESC [.
        _ if c.is_control() => false,
        // Zero-width characters, bidirectional overrides and isolates,
        // line and paragraph separators, the byte order mark and the
        // interlinear annotation marks: invisible, they can hide or
        // reorder what a log line or a mailq row says.
        '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' => false,
        _ => true,
    }
}

/// The one filter for text from outside, used everywhere such text is
/// shown or sent: every character [`is_printable`] refuses becomes
/// `replacement` ([`IN_TEXT`] or [`IN_REPLIES`]). Borrows when there is
/// nothing to replace, which is nearly always.
pub fn printable(text: &str, replacement: char) -> Cow<'_, str> {
    if text.chars().all(is_printable) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().map(|c| if is_printable(c) { c } else { replacement }).collect())
    }
}

/// [`printable`] for bytes that may not be UTF-8 (a command line, a
/// header): invalid sequences become U+FFFD first.
pub fn printable_bytes(bytes: &[u8], replacement: char) -> String {
    printable(&String::from_utf8_lossy(bytes), replacement).into_owned()
}

/// An SMTP reply: a three-digit code, an RFC 3463 enhanced status code, and
/// one or more lines of text.
///
/// The text is filtered when the reply is built ([`printable`] with
/// [`IN_REPLIES`]): a line never holds a CR, an LF or another control
/// character, whatever text it was built from (a `header_checks` `$1`, a
/// policy server's answer, a DNS TXT record, a backend's reply), so a
/// reply is one clean wire line per text line and cannot be split.
///
/// Every reply sluice sends carries an enhanced status code
/// (`ENHANCEDSTATUSCODES` is always advertised); replies parsed from a peer
/// may lack one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<Status>,
    lines: Vec<String>,
}

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Status {
    /// `5.Y.Z` as `4.Y.Z` (see [`Reply::softened`]); others unchanged.
    pub fn softened(self) -> Status {
        if self.0 == 5 { Status(4, self.1, self.2) } else { self }
    }

    /// Parses `2.0.0`-style text.
    pub fn parse(s: &str) -> Option<Status> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let subject: u16 = it.next()?.parse().ok()?;
        let detail: u16 = it.next()?.parse().ok()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(Status(class, subject, detail))
    }
}

/// The class of a reply as the delivery layer acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx (and 3xx where a continuation is expected).
    Positive,
    /// 4xx: try again later.
    Transient,
    /// 5xx: give up on it.
    Permanent,
}

impl Reply {
    /// A reply with one line of text.
    pub fn new(code: u16, status: Status, text: impl Into<String>) -> Reply {
        Reply { code, status: Some(status), lines: vec![clean(text.into())] }
    }

    /// A reply with several lines (sent as `code-` continuation lines).
    pub fn multiline(code: u16, status: Option<Status>, lines: Vec<String>) -> Reply {
        let lines =
            if lines.is_empty() { vec![String::new()] } else { lines.into_iter().map(clean).collect() };
        Reply { code, status, lines }
    }

    /// The reply with a permanent failure made temporary (`5xx X.Y.Z`
    /// becomes `4xx 4.Y.Z`): Postfix's `soft_bounce` safety net, which
    /// keeps mail that would be refused or bounced retryable. Other replies
    /// are returned as they are.
    pub fn softened(&self) -> Reply {
        let mut r = self.clone();
        if r.code / 100 == 5 {
            r.code -= 100;
            r.status = r.status.map(Status::softened);
        }
        r
    }

    /// The reply without its enhanced status code (for a client that was
    /// not offered ENHANCEDSTATUSCODES).
    pub fn without_status(&self) -> Reply {
        Reply { status: None, ..self.clone() }
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if the reply has one.
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// The text lines, without code or status.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// How the reply is to be acted on.
    pub fn class(&self) -> Class {
        match self.code / 100 {
            2 | 3 => Class::Positive,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }

    /// The status to report for this reply (DSN `dsn=` field): the enhanced
    /// code if present, otherwise `class.0.0`.
    pub fn dsn(&self) -> Status {
        self.status.unwrap_or(Status((self.code / 100) as u8, 0, 0))
    }

    /// The reply as one line of text, as logs and `queue show` print it:
    /// `451 4.3.0 text text`.
    pub fn to_one_line(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(st) = self.status {
            s.push(' ');
            s.push_str(&st.to_string());
        }
        for l in &self.lines {
            if !l.is_empty() {
                s.push(' ');
                s.push_str(l);
            }
        }
        s
    }

    /// Wire form: each line `code-status text\r\n`, the last with `code `.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(st) = self.status {
                out.extend_from_slice(st.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Builds a reply from a peer's code and text lines (as parsed by
    /// smtp-proto), taking the enhanced status code off the first line when
    /// present and consistent with the code's class.
    pub fn from_peer(code: u16, text_lines: Vec<String>) -> Reply {
        let mut status = None;
        let mut lines = text_lines;
        if let Some(first) = lines.first() {
            let (head, rest) = first.split_once(' ').unwrap_or((first.as_str(), ""));
            if let Some(st) = Status::parse(head)
                && u16::from(st.0) == code / 100
            {
                status = Some(st);
                let rest = rest.to_owned();
                lines[0] = rest;
                for l in lines.iter_mut().skip(1) {
                    if let Some(r) = l.strip_prefix(&format!("{st} ")) {
                        *l = r.to_owned();
                    }
                }
            }
        }
        Reply::multiline(code, status, lines)
    }
}

/// A reply line as it may be sent: see [`Reply`].
fn clean(line: String) -> String {
    match printable(&line, IN_REPLIES) {
        Cow::Borrowed(_) => line,
        Cow::Owned(clean) => clean,
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_one_line())
    }
}

/// The one place a queue error becomes an SMTP reply (STYLE.md rule 8).
impl From<&sluice_queue::Error> for Reply {
    fn from(e: &sluice_queue::Error) -> Reply {
        use sluice_queue::Error as E;
        match e {
            // A full file system or failing writes: the client keeps the
            // message and tries later, when the queue has recovered.
            E::Full { .. } | E::DiskLow { .. } | E::NoSpace(_) | E::Unwritable(_) => {
                Reply::new(452, Status(4, 3, 1), "Insufficient system storage")
            }
            _ => Reply::new(451, Status(4, 3, 0), "Error: queue file write error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_of_multiline_reply_uses_dash_then_space() {
        let r = Reply::multiline(250, None, vec!["mx.example".into(), "PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(r.to_wire(), b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn wire_form_carries_enhanced_status() {
        let r = Reply::new(550, Status(5, 1, 1), "User unknown");
        assert_eq!(r.to_wire(), b"550 5.1.1 User unknown\r\n");
        assert_eq!(r.to_one_line(), "550 5.1.1 User unknown");
    }

    #[test]
    fn peer_reply_status_is_split_off_when_class_matches() {
        let r = Reply::from_peer(452, vec!["4.2.2 Mailbox full".into()]);
        assert_eq!(r.status(), Some(Status(4, 2, 2)));
        assert_eq!(r.lines(), ["Mailbox full"]);
        assert_eq!(r.class(), Class::Transient);
        let r = Reply::from_peer(250, vec!["5.0.0 odd".into()]);
        assert_eq!(r.status(), None);
        assert_eq!(r.dsn(), Status(2, 0, 0));
    }

    #[test]
    fn queue_full_is_452_and_storage_error_is_451() {
        let full = sluice_queue::Error::Full { messages: 1, bytes: 2 };
        assert_eq!(Reply::from(&full).to_one_line(), "452 4.3.1 Insufficient system storage");
        for e in [
            sluice_queue::Error::NoSpace("IO error: No space left on device".into()),
            sluice_queue::Error::Unwritable("IO error: No space left on device".into()),
        ] {
            assert_eq!(Reply::from(&e).to_one_line(), "452 4.3.1 Insufficient system storage");
        }
        let io = sluice_queue::Error::Storage("boom".into());
        assert_eq!(Reply::from(&io).code(), 451);
        assert_eq!(Reply::from(&io).status(), Some(Status(4, 3, 0)));
    }
    #[test]
    fn no_reply_text_can_hold_a_line_break_or_a_control() {
        let r = Reply::new(550, Status(5, 7, 1), "bad\r\n250 2.0.0 Ok: queued\rx\ny\u{1b}]0;t\u{7}");
        assert_eq!(r.lines(), ["bad__250 2.0.0 Ok: queued_x_y_]0;t_"]);
        assert_eq!(r.to_wire().iter().filter(|&&b| b == b'\n' || b == b'\r').count(), 2);
        let r = Reply::from_peer(452, vec!["4.2.2 full\r".into(), "again\u{9b}31m\u{202e}".into()]);
        assert_eq!(r.lines(), ["full_", "again_31m_"]);
        assert_eq!(r.to_wire(), b"452-4.2.2 full_\r\n452 4.2.2 again_31m_\r\n");
        // SMTPUTF8 text stays as it is.
        assert_eq!(Reply::new(550, Status(5, 1, 1), "<pelé@exämple.test>").lines(), ["<pelé@exämple.test>"]);
    }

    #[test]
    fn the_filter_keeps_printable_text_and_replaces_the_rest() {
        assert!(matches!(printable("user@example.test ok", IN_TEXT), Cow::Borrowed(_)));
        assert_eq!(printable("a\tb\0c\u{7f}d", IN_TEXT), "a?b?c?d");
        assert_eq!(printable("用户@例子.测试", IN_TEXT), "用户@例子.测试");
        assert_eq!(printable("x\u{200b}y\u{2028}z\u{feff}", IN_TEXT), "x?y?z?");
        assert_eq!(printable_bytes(b"a\xffb\x1b", IN_TEXT), "a\u{fffd}b?");
    }

    #[test]
    fn softened_makes_permanent_failures_temporary_only() {
        let r = Reply::multiline(554, Some(Status(5, 7, 1)), vec!["a".into(), "b".into()]);
        assert_eq!(r.softened(), Reply::multiline(454, Some(Status(4, 7, 1)), vec!["a".into(), "b".into()]));
        assert_eq!(Reply::new(550, Status(5, 1, 1), "x").softened().to_one_line(), "450 4.1.1 x");
        let kept = [Reply::new(450, Status(4, 2, 2), "x"), Reply::new(250, Status(2, 0, 0), "Ok")];
        for r in kept {
            assert_eq!(r.softened(), r);
        }
    }
}
