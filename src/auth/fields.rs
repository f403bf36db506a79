//! Splits a message into header fields as it streams in, for the two
//! consumers that need whole fields without holding the message: the
//! removal of forged `Authentication-Results:` fields (`strip.rs`) and the
//! header capture of the DKIM/ARC checks (`verify.rs`).
//!
//! A field ends where the next line does not start with a space or a tab
//! (RFC 5322 2.2.3 folding), which is only known once that next line's
//! first byte has arrived; the header section ends at the first empty
//! line. A bare LF counts as a line end here, so a message kept with bare
//! line ends (`smtpd_forbid_bare_newline = no`) splits the way its reader
//! will split it. A field longer than the splitter's `max` is handed on in
//! pieces (its start first), so memory stays bounded by `max` whatever the
//! client sends.
//!
//! Pure bytes in, events out: owns no I/O and never changes a byte.

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The start of a header field, with its line ends; all of it when
    /// `complete`, else its first `max` bytes (the rest follows as `More`).
    Field { bytes: &'a [u8], complete: bool },
    /// More of the field started with an incomplete `Field`; `complete`
    /// on the last piece (which may be empty).
    More { bytes: &'a [u8], complete: bool },
    /// The empty line ending the header section (empty when the message
    /// ended inside it).
    EndOfHeaders(&'a [u8]),
    /// Body bytes, as they come.
    Body(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line of the header section.
    LineStart,
    /// A CR at the start of a line: an empty line if LF follows.
    LineStartCr,
    /// Inside a field's line.
    InLine,
    /// Past the header section.
    Body,
}

/// The streaming splitter.
#[derive(Debug)]
pub struct Fields {
    state: State,
    /// The current field while it is not known to be complete (at most
    /// `max` bytes).
    buf: Vec<u8>,
    /// The current field's start was already handed on (it outgrew `max`).
    streaming: bool,
    max: usize,
}

impl Fields {
    /// A splitter holding at most `max` bytes of one field.
    pub fn new(max: usize) -> Fields {
        Fields { state: State::LineStart, buf: Vec::new(), streaming: false, max: max.max(1) }
    }

    /// True once the header section has ended.
    pub fn in_body(&self) -> bool {
        self.state == State::Body
    }

    /// Feeds message bytes; `on` gets the events they complete.
    pub fn feed(&mut self, mut input: &[u8], on: &mut impl FnMut(Event<'_>)) {
        while !input.is_empty() {
            match self.state {
                State::Body => {
                    on(Event::Body(input));
                    return;
                }
                State::LineStartCr => {
                    if input[0] == b'\n' {
                        self.end_field(on);
                        on(Event::EndOfHeaders(b"\r\n"));
                        input = &input[1..];
                        self.state = State::Body;
                    } else {
                        // A line starting with a bare CR: a (broken) field.
                        self.end_field(on);
                        self.push(b"\r", on);
                        self.state = State::InLine;
                    }
                }
                State::LineStart => match input[0] {
                    b' ' | b'\t' => self.state = State::InLine,
                    b'\n' => {
                        self.end_field(on);
                        on(Event::EndOfHeaders(b"\n"));
                        input = &input[1..];
                        self.state = State::Body;
                    }
                    b'\r' => {
                        input = &input[1..];
                        self.state = State::LineStartCr;
                    }
                    _ => {
                        self.end_field(on);
                        self.state = State::InLine;
                    }
                },
                State::InLine => match memchr::memchr(b'\n', input) {
                    Some(i) => {
                        self.push(&input[..=i], on);
                        input = &input[i + 1..];
                        self.state = State::LineStart;
                    }
                    None => {
                        self.push(input, on);
                        return;
                    }
                },
            }
        }
    }

    /// The message ended: the last field is complete, and the header
    /// section ends here if it had not.
    pub fn finish(&mut self, on: &mut impl FnMut(Event<'_>)) {
        match self.state {
            State::Body => {}
            State::LineStartCr => {
                self.push(b"\r", on);
                self.end_field(on);
                on(Event::EndOfHeaders(b""));
            }
            State::LineStart | State::InLine => {
                self.end_field(on);
                on(Event::EndOfHeaders(b""));
            }
        }
        self.state = State::Body;
    }

    fn push(&mut self, bytes: &[u8], on: &mut impl FnMut(Event<'_>)) {
        if self.streaming {
            on(Event::More { bytes, complete: false });
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= self.max {
            on(Event::Field { bytes: &self.buf, complete: false });
            self.buf.clear();
            self.streaming = true;
        }
    }

    fn end_field(&mut self, on: &mut impl FnMut(Event<'_>)) {
        if self.streaming {
            on(Event::More { bytes: b"", complete: true });
            self.streaming = false;
        } else if !self.buf.is_empty() {
            on(Event::Field { bytes: &self.buf, complete: true });
            self.buf.clear();
        }
    }
}

/// The field name of a field's bytes (before the colon, trailing blanks
/// dropped), if it has one.
pub fn name(field: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', field)?;
    let name = field[..colon].trim_ascii_end();
    (!name.is_empty() && !name.contains(&b'\n')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the splitter says, as text, for chunks of `size` bytes.
    fn split(msg: &[u8], size: usize, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut f = Fields::new(max);
        let mut on = |e: Event<'_>| {
            out.push(match e {
                Event::Field { bytes, complete } => {
                    format!("F{}:{}", complete as u8, String::from_utf8_lossy(bytes))
                }
                Event::More { bytes, complete } => {
                    format!("M{}:{}", complete as u8, String::from_utf8_lossy(bytes))
                }
                Event::EndOfHeaders(b) => format!("E:{}", String::from_utf8_lossy(b)),
                Event::Body(b) => format!("B:{}", String::from_utf8_lossy(b)),
            })
        };
        for chunk in msg.chunks(size) {
            f.feed(chunk, &mut on);
        }
        f.finish(&mut on);
        // Body pieces depend on the chunking; join them.
        let mut joined: Vec<String> = Vec::new();
        for e in out {
            match (joined.last_mut(), e.strip_prefix("B:")) {
                (Some(last), Some(b)) if last.starts_with("B:") => last.push_str(b),
                _ => joined.push(e),
            }
        }
        joined
    }

    const MSG: &[u8] = b"A: 1\r\nB: 2\r\n\tcont\r\nC: 3\r\n\r\nbody\r\nX: not a header\r\n";

    #[test]
    fn fields_end_where_the_next_line_is_not_folded() {
        let want = [
            "F1:A: 1\r\n",
            "F1:B: 2\r\n\tcont\r\n",
            "F1:C: 3\r\n",
            "E:\r\n",
            "B:body\r\nX: not a header\r\n",
        ];
        for size in [1, 2, 3, 7, MSG.len()] {
            assert_eq!(split(MSG, size, 1000), want, "chunks of {size}");
        }
    }

    #[test]
    fn long_fields_come_in_pieces() {
        let got = split(b"Long: abcdefghij\r\n\tklm\r\nB: 2\r\n\r\n", 4, 8);
        assert_eq!(got[0], "F0:Long: ab");
        assert!(got.iter().any(|e| e == "M1:"), "{got:?}");
        assert!(got.contains(&"F1:B: 2\r\n".to_owned()), "{got:?}");
        let joined: String =
            got.iter().take_while(|e| !e.starts_with("F1")).map(|e| e[3..].to_owned()).collect();
        assert_eq!(joined, "Long: abcdefghij\r\n\tklm\r\n");
    }

    #[test]
    fn bare_line_ends_and_unended_headers() {
        assert_eq!(split(b"A: 1\nB: 2\n\nbody", 3, 100), ["F1:A: 1\n", "F1:B: 2\n", "E:\n", "B:body"]);
        assert_eq!(split(b"A: 1\r\nB: 2", 1, 100), ["F1:A: 1\r\n", "F1:B: 2", "E:"]);
        assert_eq!(split(b"\r\nbody", 1, 100), ["E:\r\n", "B:body"]);
        assert_eq!(split(b"", 1, 100), ["E:"]);
    }

    #[test]
    fn names_are_found_before_the_colon() {
        assert_eq!(name(b"Authentication-Results : x"), Some(&b"Authentication-Results"[..]));
        assert_eq!(name(b"no colon here"), None);
        assert_eq!(name(b": empty"), None);
    }
}
