//! The reply reader: turns the bytes a backend sends into [`Reply`]s, one
//! (possibly multi-line) reply at a time, and bounds what one reply may
//! cost whatever the peer sends.
//!
//! A backend is a peer like any other: a next hop chosen by a sender's MX
//! (a bounce) is chosen by whoever controls that domain. A server that
//! answers `220-` forever, or one endless line, must cost a bounded amount
//! of memory and end the conversation with a clear reason (the recipients
//! are deferred), never grow the daemon until it dies. So a reply is
//! refused past [`MAX_LINES`] lines or [`MAX_BYTES`] bytes, and a line
//! longer than [`MAX_LINE`] keeps only its first [`MAX_LINE`] bytes of
//! text (the rest still counts against [`MAX_BYTES`]). Postfix stops
//! storing reply text past `line_length_limit` but reads on; sluice also
//! stops reading, because a reply of a hundred lines is already far past
//! what any server sends (an `EHLO` reply has about twenty).
//!
//! Pure: no I/O. The connection feeds it what it read and keeps what it
//! did not consume (the start of the next, pipelined reply).

use crate::reply::{Reply, Status};

/// The most lines one reply may have.
pub const MAX_LINES: usize = 100;
/// The most bytes one reply may have, line ends included.
pub const MAX_BYTES: usize = 64 * 1024;
/// The most bytes of one line kept (RFC 5321 allows 512; Postfix reads
/// replies in pieces of `line_length_limit`, 2048).
pub const MAX_LINE: usize = 2048;

/// Why a reply could not be read: the connection is no longer usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply has more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("reply is longer than {MAX_BYTES} bytes")]
    TooLong,
    /// The text is a sample of what was sent, printable ASCII only.
    #[error("malformed reply line \"{0}\"")]
    Malformed(String),
}

/// A reply being read. Feed it bytes with [`ReplyReader::feed`] until it
/// returns a reply; it keeps at most one line (bounded) of its own.
#[derive(Debug, Default)]
pub struct ReplyReader {
    /// The current line so far (at most [`MAX_LINE`] + 4 bytes kept).
    line: Vec<u8>,
    /// Bytes of the current line dropped past the limit.
    dropped: bool,
    /// Bytes of this reply so far, line ends included.
    bytes: usize,
    /// Complete lines: code, and text with the enhanced status kept.
    lines: Vec<(u16, String)>,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Feeds `input`. Returns how many bytes were consumed and, when they
    /// completed a reply, the reply (the rest of `input` is the next one's).
    /// Without a reply all of `input` was consumed. After an error the
    /// reader (and the connection) must not be used again.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Result<Option<Reply>, ReplyError>) {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let (piece, end) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], Some(i + 1)),
                None => (rest, None),
            };
            let took = end.unwrap_or(piece.len());
            used += took;
            self.bytes += took;
            if self.bytes > MAX_BYTES {
                return (used, Err(ReplyError::TooLong));
            }
            let room = (MAX_LINE + 4).saturating_sub(self.line.len());
            if piece.len() > room {
                self.dropped = true;
            }
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            if end.is_none() {
                break;
            }
            let line = std::mem::take(&mut self.line);
            self.dropped = false;
            match self.complete_line(&line) {
                Err(e) => return (used, Err(e)),
                Ok(true) => return (used, Ok(Some(self.finish()))),
                Ok(false) => {}
            }
        }
        (used, Ok(None))
    }

    /// Takes one whole line (without its LF); true when it was the last of
    /// the reply.
    fn complete_line(&mut self, raw: &[u8]) -> Result<bool, ReplyError> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let code = reply_code(raw).ok_or_else(|| ReplyError::Malformed(sample(raw)))?;
        let last = match raw.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::Malformed(sample(raw))),
        };
        if self.lines.len() >= MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let text = raw.get(4..).unwrap_or_default();
        let text = &text[..text.len().min(MAX_LINE)];
        // A bare CR inside a line is not a line end: it is shown as a space
        // so the text stays one line in logs and reports.
        let text = String::from_utf8_lossy(text).replace('\r', " ");
        self.lines.push((code, text));
        Ok(last)
    }

    /// The reply the lines make: the last line's code (as Postfix takes
    /// it), and the enhanced status code of the first line when its class
    /// agrees with the code, taken off every line that carries it.
    fn finish(&mut self) -> Reply {
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        let code = lines.last().map(|(c, _)| *c).unwrap_or(0);
        let status = lines
            .first()
            .and_then(|(_, t)| t.split(' ').next().and_then(Status::parse))
            .filter(|s| u16::from(s.0) == code / 100);
        let texts = lines
            .into_iter()
            .map(|(_, t)| match status {
                Some(s) => {
                    let prefix = s.to_string();
                    match t.strip_prefix(prefix.as_str()) {
                        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                            rest.strip_prefix(' ').unwrap_or(rest).to_owned()
                        }
                        _ => t,
                    }
                }
                None => t,
            })
            .collect();
        Reply::multiline(code, status, texts)
    }
}

/// The three-digit code at the start of a line: 2xx to 5xx.
fn reply_code(line: &[u8]) -> Option<u16> {
    match line.get(..3)? {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// The start of a bad line, printable ASCII only, for the error text.
fn sample(line: &[u8]) -> String {
    line.iter().take(40).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }).collect()
}

#[cfg(test)]
mod tests;
