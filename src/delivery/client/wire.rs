//! What goes on the wire, both directions, for LMTP and SMTP alike:
//! commands in strict RFC 5321 syntax, the message body dot-stuffed with
//! CRLF line ends, and peer replies turned into [`Reply`]s (parsed by
//! `smtp-proto`).
//!
//! Pure functions and a streaming dot-stuffer; no I/O.

use sluice_queue::{BodyType, DsnRet, Notify};
use smtp_proto::Response;

use crate::reply::{Reply, Status};

/// What a server offered in its `LHLO`/`EHLO` reply (nothing after `HELO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    pub eightbitmime: bool,
    pub enhanced_status: bool,
    /// `SIZE` limit; 0 when none was announced.
    pub size: u64,
}

impl Caps {
    /// Reads the capabilities from a raw `250-` reply.
    pub fn from_ehlo(raw: &[u8]) -> Caps {
        match smtp_proto::EhloResponse::parse(&mut raw.iter()) {
            Ok(r) => {
                let has = |bit: u32| r.capabilities & bit != 0;
                Caps {
                    pipelining: has(smtp_proto::EXT_PIPELINING),
                    dsn: has(smtp_proto::EXT_DSN),
                    smtputf8: has(smtp_proto::EXT_SMTP_UTF8),
                    eightbitmime: has(smtp_proto::EXT_8BIT_MIME),
                    enhanced_status: has(smtp_proto::EXT_ENHANCED_STATUS_CODES),
                    size: if has(smtp_proto::EXT_SIZE) { r.size as u64 } else { 0 },
                }
            }
            Err(_) => Caps::default(),
        }
    }
}

/// Turns a reply parsed by smtp-proto into ours. smtp-proto has already
/// taken the enhanced status code off each line; it is kept when its class
/// agrees with the reply code.
pub fn to_reply(r: Response<String>) -> Reply {
    let [a, b, c] = r.esc;
    let lines: Vec<String> = r.message.split('\n').map(|l| l.trim_end_matches('\r').to_owned()).collect();
    let status = (a != 0 && u16::from(a) == r.code / 100).then_some(Status(a, u16::from(b), u16::from(c)));
    Reply::multiline(r.code, status, lines)
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
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer { at_line_start: true, prev_cr: false, empty: true }
    }
}

impl DotStuffer {
    /// Appends the stuffed form of `chunk` to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        for &b in chunk {
            self.empty = false;
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && !self.prev_cr {
                // A bare LF in the stored body is written as a line end.
                out.push(b'\r');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.prev_cr = b == b'\r';
        }
    }

    /// Appends the end-of-data marker, first ending the last line if the body
    /// did not.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty && !self.at_line_start {
            if self.prev_cr {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
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

/// True when the message really needs SMTPUTF8: the client asked for it and
/// an address or a header is not ASCII. (Postfix delivers an
/// SMTPUTF8-flagged but all-ASCII message to a server without SMTPUTF8.)
pub fn needs_smtputf8(requested: bool, sender: &str, rcpts: &[&str], body: &[u8]) -> bool {
    requested
        && (!sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()) || !header_section(body).is_ascii())
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

    #[test]
    fn bare_lf_becomes_crlf_and_an_unterminated_last_line_is_ended() {
        assert_eq!(stuff(&[b"a\nb\n.c"]), b"a\r\nb\r\n..c\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r\nb\r"]), b"a\r\nb\r\n.\r\n");
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
    fn ehlo_capabilities_are_read_with_smtp_proto() {
        let raw = b"250-mbx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";
        let c = Caps::from_ehlo(raw);
        assert_eq!(
            c,
            Caps {
                pipelining: true,
                dsn: true,
                smtputf8: true,
                eightbitmime: true,
                enhanced_status: true,
                size: 10_240_000
            }
        );
        assert_eq!(Caps::from_ehlo(b"250 mbx.test\r\n"), Caps::default());
    }

    #[test]
    fn replies_keep_their_enhanced_status() {
        let mut rx = smtp_proto::response::parser::ResponseReceiver::default();
        let r = rx.parse(&mut b"452-4.2.2 Mailbox full\r\n452 4.2.2 try later\r\n".iter()).unwrap();
        let r = to_reply(r);
        assert_eq!(r.code(), 452);
        assert_eq!(r.status(), Some(Status(4, 2, 2)));
        assert_eq!(r.to_one_line(), "452 4.2.2 Mailbox full try later");
    }

    #[test]
    fn smtputf8_is_needed_only_for_non_ascii_addresses_or_headers() {
        assert!(!needs_smtputf8(true, "a@b", &["c@d"], b"Subject: hi\r\n\r\nbody \xc3\xa9\r\n"));
        assert!(needs_smtputf8(true, "a@b", &["\u{e9}@d"], b"Subject: hi\r\n\r\n"));
        assert!(needs_smtputf8(true, "a@b", &["c@d"], "Subject: h\u{e9}\r\n\r\n".as_bytes()));
        assert!(!needs_smtputf8(false, "a@b", &["\u{e9}@d"], b""));
    }
}
