//! What a milter decided, as the SMTP session acts on it: [`Action`], the
//! replies Postfix gives for each milter decision, the replies
//! `milter_default_action` stands for, and the checking and cleaning of a
//! milter's own reply text (`SMFIR_REPLYCODE`).
//!
//! Owns reply texts and their sanitising; never talks to a milter.

use crate::config::MilterDefault;
use crate::reply::{Reply, Status};

/// A milter decision the session must act on. "Carry on" is the absence
/// of one (`Option<Action>`), as Postfix's milter functions return a null
/// reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse the command, recipient or message with this 4xx/5xx reply.
    Reply(Reply),
    /// Accept the message (or recipient) and drop it: Postfix's "D".
    Discard,
    /// Accept the message but put it on hold, for this reason: Postfix's
    /// "H" (quarantine). Not final: the other milters still run.
    Hold(String),
    /// Answer 421 and close the connection: Postfix's "S".
    Shutdown,
}

impl Action {
    /// The reply sent to the client for a refusal (`Reply`, `Shutdown`);
    /// None for the decisions that accept.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Action::Reply(r) => Some(r.clone()),
            Action::Shutdown => Some(Reply::new(421, Status(4, 7, 0), "Server closing connection")),
            Action::Discard | Action::Hold(_) => None,
        }
    }
}

/// The decision `milter_default_action` stands for when a milter cannot be
/// reached, times out or breaks the protocol (Postfix's
/// `milter8_comm_error`).
pub fn on_failure(default: MilterDefault) -> Option<Action> {
    match default {
        MilterDefault::Accept => None,
        MilterDefault::Reject => Some(Action::Reply(Reply::new(550, Status(5, 5, 0), "Service unavailable"))),
        MilterDefault::Tempfail => {
            Some(Action::Reply(Reply::new(451, Status(4, 7, 1), "Service unavailable - try again later")))
        }
        MilterDefault::Quarantine => Some(Action::Hold("default_action".into())),
        MilterDefault::Shutdown => Some(Action::Shutdown),
    }
}

/// The decision when a milter sends something sluice must not carry out
/// (a malformed reply, a bad header edit): Postfix's
/// `milter8_conf_error`, a configuration problem rather than an outage.
pub fn on_misconfiguration(default: MilterDefault) -> Option<Action> {
    match default {
        MilterDefault::Accept => None,
        MilterDefault::Quarantine => Some(Action::Hold("default_action".into())),
        MilterDefault::Shutdown => Some(Action::Shutdown),
        MilterDefault::Reject | MilterDefault::Tempfail => Some(Action::Reply(Reply::new(
            451,
            Status(4, 3, 5),
            "Server configuration problem - try again later",
        ))),
    }
}

/// `SMFIR_REJECT`: Postfix's fixed text.
pub fn rejected() -> Action {
    Action::Reply(Reply::new(550, Status(5, 7, 1), "Command rejected"))
}

/// `SMFIR_TEMPFAIL`: Postfix's fixed text.
pub fn tempfailed() -> Action {
    Action::Reply(Reply::new(451, Status(4, 7, 1), "Service unavailable - try again later"))
}

/// The longest text sluice keeps of one reply line from a milter (the
/// SMTP limit for a reply line is 512 octets with its code and CRLF).
const MAX_TEXT: usize = 480;

/// The most lines kept of a milter's multi-line reply.
const MAX_LINES: usize = 20;

/// Checks and cleans a milter's `SMFIR_REPLYCODE` text. It must be one
/// or more lines `ddd-text` ... `ddd text`, separated by CRLF, each with a
/// 4xx or 5xx code (and an enhanced status, when present, of the same
/// class), as Postfix requires; anything else is None and counts as a
/// misbehaving milter. Of what passes, each line becomes one clean reply
/// line: `%%` is `%` and a lone `%` is dropped (Sendmail used the text as
/// a format string), bytes outside printable ASCII become `_`, overlong
/// text is cut, and every line gets the first line's code, so the client
/// can never see a forged extra reply or a control character.
pub fn parse_reply_code(raw: &[u8]) -> Option<Reply> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() || raw.contains(&0) {
        return None;
    }
    let mut code = None;
    let mut texts = Vec::new();
    let mut lines = raw.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        // Every line but the last ends in CRLF; the last has no line end.
        let line = if last {
            if line.ends_with(b"\r") {
                return None;
            }
            line
        } else {
            line.strip_suffix(b"\r")?
        };
        if line.len() < 4 || !matches!(line[0], b'4' | b'5') || !line[1..3].iter().all(u8::is_ascii_digit) {
            return None;
        }
        if line[3] != if last { b' ' } else { b'-' } {
            return None;
        }
        if line.len() > 4 && line[4].is_ascii_digit() && line[4] != line[0] {
            return None;
        }
        let this: u16 = std::str::from_utf8(&line[..3]).ok()?.parse().ok()?;
        code.get_or_insert(this);
        texts.push(clean_text(&line[4..]));
    }
    texts.truncate(MAX_LINES);
    Some(Reply::from_peer(code?, texts))
}

/// One reply line's text made safe to send and to log.
fn clean_text(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() && out.len() < MAX_TEXT {
        let b = text[i];
        i += 1;
        if b == b'%' {
            // `%%` is one `%`; a lone `%` is dropped.
            if text.get(i) == Some(&b'%') {
                i += 1;
                out.push('%');
            }
            continue;
        }
        out.push(if (0x20..0x7f).contains(&b) { char::from(b) } else { '_' });
    }
    out
}

/// A quarantine reason made safe to log and store: printable ASCII, at
/// most 100 characters (Postfix keeps as much).
pub fn hold_reason(raw: &[u8]) -> String {
    let text: String =
        raw.iter().take(100).map(|&b| if (0x20..0x7f).contains(&b) { char::from(b) } else { '_' }).collect();
    if text.is_empty() { "milter triggers HOLD action".into() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_reply_keeps_its_status() {
        let r = parse_reply_code(b"554 5.7.1 Gtube pattern\0").unwrap();
        assert_eq!(r.to_one_line(), "554 5.7.1 Gtube pattern");
        assert_eq!(r.status(), Some(Status(5, 7, 1)));
    }

    #[test]
    fn multi_line_replies_stay_multi_line() {
        let r = parse_reply_code(b"550-5.7.1 first\r\n550 5.7.1 second").unwrap();
        assert_eq!(r.to_wire(), b"550-5.7.1 first\r\n550 5.7.1 second\r\n".to_vec());
        // Lines with other codes are given the first line's code.
        let r = parse_reply_code(b"451-4.7.1 a\r\n452 4.7.1 b").unwrap();
        assert_eq!(r.to_wire(), b"451-4.7.1 a\r\n451 4.7.1 b\r\n".to_vec());
    }

    #[test]
    fn malformed_replies_are_refused() {
        for bad in [
            &b"250 2.0.0 fine"[..],
            b"550",
            b"550-5.7.1 no end",
            b"550 5.7.1 a\r\n550 b",
            b"550 4.7.1 class mismatch",
            b"550 a\nb",
            b"550 a\0b",
            b"",
            b"55x nope",
        ] {
            assert_eq!(parse_reply_code(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn text_is_cleaned_of_controls_and_format_escapes() {
        let r = parse_reply_code(b"550 5.7.1 100%% sure %s \x1b[31mred\xff").unwrap();
        assert_eq!(r.lines(), ["100% sure s _[31mred_"]);
        let long = [b"550 5.7.1 ".as_slice(), &[b'x'; 2000]].concat();
        // The status is split off the cut text.
        assert_eq!(parse_reply_code(&long).unwrap().lines()[0].len(), MAX_TEXT - "5.7.1 ".len());
    }

    #[test]
    fn a_reply_without_enhanced_status_is_taken_as_is() {
        let r = parse_reply_code(b"452 try later").unwrap();
        assert_eq!((r.code(), r.status()), (452, None));
        assert_eq!(r.lines(), ["try later"]);
    }

    #[test]
    fn default_actions_are_postfix_replies() {
        let text = |a: Option<Action>| a.and_then(|a| a.reply()).map(|r| r.to_one_line());
        assert_eq!(on_failure(MilterDefault::Accept), None);
        assert_eq!(
            text(on_failure(MilterDefault::Tempfail)).unwrap(),
            "451 4.7.1 Service unavailable - try again later"
        );
        assert_eq!(text(on_failure(MilterDefault::Reject)).unwrap(), "550 5.5.0 Service unavailable");
        assert_eq!(on_failure(MilterDefault::Quarantine), Some(Action::Hold("default_action".into())));
        assert_eq!(
            text(on_misconfiguration(MilterDefault::Reject)).unwrap(),
            "451 4.3.5 Server configuration problem - try again later"
        );
        assert_eq!(hold_reason(b"spam\r\n"), "spam__");
    }
}
