//! What milters may change, as plain data: the message's header section as
//! a list of fields (with Postfix's header-index rules), the envelope
//! (sender, recipients and their DSN parameters), and the normalisation of
//! a replacement body's line ends.
//!
//! Owns the meaning of every edit request; never does I/O. The header
//! section lives in memory (it is bounded by `header_size_limit`) and is
//! written in front of the body only when the message is committed, so an
//! edit never rewrites stored bytes; a replaced body is streamed through
//! [`BodyLines`] into storage by the caller.

use sluice_queue::{DsnRet, Envelope, Notify, Recipient};
use tracing::warn;

/// One header field: `name:value`, where `value` is everything after the
/// colon as it is stored (leading white space and folded continuation
/// lines, joined by CRLF, included; the final CRLF excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// sluice's own `Received:` header: milters do not see it, and it is
    /// not counted when a milter changes a header by name and index
    /// (Postfix hides its own header for Sendmail compatibility).
    pub hidden: bool,
}

impl Field {
    /// True when the field's name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &[u8]) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value as a milter sees it: continuation lines joined by a bare
    /// LF (as Sendmail sends them) and, unless the milter asked for the
    /// leading space (`SMFIP_HDR_LEADSPC`), without the one space after
    /// the colon.
    pub fn milter_value(&self, leading_space: bool) -> Vec<u8> {
        let v = if leading_space {
            &self.value[..]
        } else {
            self.value.strip_prefix(b" ").unwrap_or(&self.value)
        };
        let mut out = Vec::with_capacity(v.len());
        let mut i = 0;
        while i < v.len() {
            if v[i] == b'\r' && v.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(v[i]);
            i += 1;
        }
        out
    }
}

/// The header section of a message being received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderSection {
    fields: Vec<Field>,
}

impl HeaderSection {
    /// Parses header lines (each ending in CRLF, without the empty line
    /// that ends the section). A line that is neither a header nor a
    /// continuation is kept as a field without a name so that nothing the
    /// client sent is lost; milters do not see it.
    pub fn parse(head: &[u8]) -> HeaderSection {
        let mut fields: Vec<Field> = Vec::new();
        for line in head.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n")).unwrap_or(line);
            if matches!(line.first(), Some(b' ' | b'\t'))
                && let Some(last) = fields.last_mut()
            {
                last.value.extend_from_slice(b"\r\n");
                last.value.extend_from_slice(line);
                continue;
            }
            match header_name_len(line) {
                Some(n) => fields.push(Field {
                    name: line[..n].to_vec(),
                    value: line[n + 1..].to_vec(),
                    hidden: false,
                }),
                None => fields.push(Field { name: Vec::new(), value: line.to_vec(), hidden: true }),
            }
        }
        HeaderSection { fields }
    }

    /// Puts a header (`Name: value` text, one line or folded with CRLF)
    /// at the top, hidden from milters: sluice's `Received:`.
    pub fn prepend_own(&mut self, text: &str) {
        let mut own = HeaderSection::parse(text.as_bytes()).fields;
        own.iter_mut().for_each(|f| f.hidden = true);
        self.fields.splice(0..0, own);
    }

    /// Puts headers (`Name: value` lines) at the top, visible to milters:
    /// the `PREPEND` results of restrictions.
    pub fn prepend_visible(&mut self, text: &str) {
        let own = HeaderSection::parse(text.as_bytes()).fields;
        self.fields.splice(0..0, own);
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The fields milters see, in order.
    pub fn visible(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| !f.hidden)
    }

    /// The section as stored: each field as `name:value` CRLF. The empty
    /// line after it is the caller's (it belongs to how the message was
    /// sent).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fields.iter().map(|f| f.name.len() + f.value.len() + 3).sum());
        for f in &self.fields {
            out.extend_from_slice(&f.name);
            if !f.name.is_empty() {
                out.push(b':');
            }
            out.extend_from_slice(&f.value);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// `SMFIR_ADDHEADER`: appends a field.
    pub fn add(&mut self, name: &[u8], value: Vec<u8>) {
        self.fields.push(Field { name: name.to_vec(), value, hidden: false });
    }

    /// `SMFIR_INSHEADER`: inserts a field before the `index`-th field (0:
    /// at the very top, before sluice's own `Received:`; 1: after it), or
    /// appends it when there are fewer fields: Postfix's rule, where
    /// inserts count every header as delivered.
    pub fn insert(&mut self, index: u32, name: &[u8], value: Vec<u8>) {
        let at = (index as usize).min(self.fields.len());
        self.fields.insert(at, Field { name: name.to_vec(), value, hidden: false });
    }

    /// `SMFIR_CHGHEADER`: changes the `index`-th field called `name` (1 is
    /// the first; 0 is taken as 1, as Sendmail does), counting only the
    /// fields milters see. An empty value deletes it. When there is no
    /// such field, a non-empty value is appended (Postfix) and an empty one
    /// does nothing.
    pub fn change(&mut self, index: u32, name: &[u8], value: Vec<u8>) {
        let index = index.max(1) as usize;
        let found = self.fields.iter().enumerate().filter(|(_, f)| !f.hidden && f.is(name)).nth(index - 1);
        match (found.map(|(i, _)| i), value.is_empty()) {
            (Some(i), true) => {
                self.fields.remove(i);
            }
            (Some(i), false) => {
                self.fields[i].name = name.to_vec();
                self.fields[i].value = value;
            }
            (None, true) => {}
            (None, false) => self.add(name, value),
        }
    }
}

/// The length of a header line's field name (up to the colon), or None
/// when the line is not a header: RFC 5322 field names are printable ASCII
/// without the colon; white space before the colon is tolerated as Postfix
/// does (`Subject : x`).
fn header_name_len(line: &[u8]) -> Option<usize> {
    let colon = memchr::memchr(b':', line)?;
    let name = &line[..colon];
    let trimmed = name.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map(|p| p + 1)?;
    name[..trimmed].iter().all(|b| (33..=126).contains(b)).then_some(colon)
}

/// A header name as a milter sent it, if it may be stored: printable ASCII
/// without a colon, at most 998 bytes.
pub fn valid_header_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= 998 && name.iter().all(|b| (33..=126).contains(b) && *b != b':')
}

/// A header value from a milter as it is stored: a leading space is added
/// unless the milter sends its own (`SMFIP_HDR_LEADSPC`), line breaks
/// become CRLF, and every continuation line starts with white space (a tab
/// is put in front of one that does not), so a milter's value can never
/// turn into a header line of its own. NULs and lone CRs are dropped.
pub fn stored_header_value(value: &[u8], leading_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    if !leading_space {
        out.push(b' ');
    }
    let trimmed_end = value.iter().rposition(|b| !matches!(b, b'\r' | b'\n')).map_or(0, |p| p + 1);
    let mut line_start = false;
    for &b in &value[..trimmed_end] {
        match b {
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
                continue;
            }
            b'\r' | 0 => continue,
            _ => {}
        }
        if line_start && !matches!(b, b' ' | b'\t') {
            out.push(b'\t');
        }
        line_start = false;
        out.push(b);
    }
    out
}

/// An address as a milter sends it (`<user@example>` or bare), without
/// its angle brackets and surrounding white space.
pub fn bare_address(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = s.trim();
    s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s).trim().to_owned()
}

/// `SMFIR_CHGFROM`: the new sender, with `RET=` and `ENVID=` taken from
/// its ESMTP arguments (the ones stored with the sender, as in Postfix);
/// others are logged and ignored.
pub fn change_sender(envelope: &mut Envelope, id: &str, address: &[u8], args: &[u8]) {
    envelope.sender = bare_address(address);
    for arg in String::from_utf8_lossy(args).split_ascii_whitespace() {
        let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
        match key.to_ascii_uppercase().as_str() {
            "RET" if value.eq_ignore_ascii_case("FULL") => envelope.ret = DsnRet::Full,
            "RET" if value.eq_ignore_ascii_case("HDRS") => envelope.ret = DsnRet::Headers,
            "ENVID" if !value.is_empty() => envelope.envid = Some(value.to_owned()),
            _ => {
                warn!(target: "cleanup", "{id}: ignoring bad ESMTP parameter \"{arg}\" in SMFI_CHGFROM request")
            }
        }
    }
}

/// `SMFIR_ADDRCPT` / `SMFIR_ADDRCPT_PAR`: a new recipient, with `NOTIFY=`
/// and `ORCPT=` from its ESMTP arguments; others are logged and ignored.
/// A recipient already present is not added twice.
pub fn add_recipient(envelope: &mut Envelope, id: &str, address: &[u8], args: &[u8]) {
    let mut rcpt = Recipient::new(bare_address(address));
    for arg in String::from_utf8_lossy(args).split_ascii_whitespace() {
        let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => match parse_notify(value) {
                Some(n) => rcpt.notify = n,
                None => warn!(target: "cleanup", "{id}: ignoring bad NOTIFY parameter \"{arg}\" from milter"),
            },
            "ORCPT" if value.contains(';') => rcpt.orcpt = Some(value.to_owned()),
            _ => {
                warn!(target: "cleanup", "{id}: cleanup_add_rcpt: ignoring ESMTP argument from milter: \"{arg}\"")
            }
        }
    }
    if !envelope.recipients.iter().any(|r| r.address.eq_ignore_ascii_case(&rcpt.address)) {
        envelope.recipients.push(rcpt);
    }
}

/// `SMFIR_DELRCPT`: removes every recipient with that address (case
/// ignored); returns how many.
pub fn delete_recipient(envelope: &mut Envelope, address: &[u8]) -> usize {
    let addr = bare_address(address);
    let before = envelope.recipients.len();
    envelope.recipients.retain(|r| !r.address.eq_ignore_ascii_case(&addr));
    before - envelope.recipients.len()
}

/// RFC 3461 `NOTIFY=NEVER` or a comma list of SUCCESS, FAILURE, DELAY.
fn parse_notify(value: &str) -> Option<Notify> {
    let mut n = Notify { specified: true, ..Notify::default() };
    for word in value.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "NEVER" => n.never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    (!n.never || !(n.success || n.failure || n.delay)).then_some(n)
}

/// Normalises a replacement body as it streams in: every line ends in
/// CRLF (a lone LF or lone CR becomes CRLF: what sluice stores is relayed
/// to servers whose handling of bare line ends is not ours to guess), and
/// a last line without a line end gets one. Holds back at most one CR.
#[derive(Debug, Default)]
pub struct BodyLines {
    pending_cr: bool,
    at_line_start: bool,
    any: bool,
}

impl BodyLines {
    pub fn new() -> BodyLines {
        BodyLines { pending_cr: false, at_line_start: true, any: false }
    }

    /// Appends the normalised form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    out.push(b);
                    self.at_line_start = false;
                }
            }
            self.any = true;
        }
    }

    /// The end of the replacement: a pending CR or an unfinished last line
    /// gets its CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || (self.any && !self.at_line_start) {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.at_line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> HeaderSection {
        let mut h = HeaderSection::parse(
            b"From: a@example\r\nSubject: hello\r\n world\r\nX-Tag: one\r\nX-Tag: two\r\nReceived: from elsewhere\r\n",
        );
        h.prepend_own("Received: from client by mx\r\n\tfor <b@example>; now\r\n");
        h
    }

    fn text(h: &HeaderSection) -> String {
        String::from_utf8(h.to_bytes()).unwrap()
    }

    #[test]
    fn parse_and_write_back_is_byte_exact() {
        let raw = b"From: a@example\r\nSubject : folded\r\n\tline\r\n";
        let h = HeaderSection::parse(raw);
        assert_eq!(h.to_bytes(), raw.to_vec());
        assert_eq!(h.fields()[1].name, b"Subject ".to_vec());
        assert_eq!(h.fields()[1].milter_value(false), b"folded\n\tline".to_vec());
    }

    #[test]
    fn own_received_is_hidden_and_first() {
        let h = section();
        assert!(h.fields()[0].hidden);
        assert_eq!(h.visible().count(), 5);
        assert!(text(&h).starts_with("Received: from client by mx\r\n\tfor <b@example>; now\r\nFrom:"));
    }

    #[test]
    fn change_counts_by_name_without_our_received() {
        let mut h = section();
        // Received #1 is the client's, not ours.
        h.change(1, b"Received", b" rewritten".to_vec());
        assert!(text(&h).contains("Received: from client by mx"));
        assert!(text(&h).ends_with("Received: rewritten\r\n"));
        h.change(2, b"x-tag", b" TWO".to_vec());
        assert!(text(&h).contains("X-Tag: one\r\nx-tag: TWO\r\n"));
        // Index 0 is taken as 1.
        h.change(0, b"X-Tag", Vec::new());
        assert!(!text(&h).contains("X-Tag: one"));
        // Missing: a value is appended, an empty one ignored.
        h.change(3, b"X-New", b" v".to_vec());
        h.change(1, b"X-Gone", Vec::new());
        assert!(text(&h).ends_with("X-New: v\r\n"));
        assert!(!text(&h).contains("X-Gone"));
    }

    #[test]
    fn insert_counts_every_header_and_add_appends() {
        let mut h = section();
        h.insert(0, b"X-Top", b" 0".to_vec());
        assert!(text(&h).starts_with("X-Top: 0\r\nReceived: from client by mx"));
        h.insert(2, b"X-Second", b" 2".to_vec());
        assert!(text(&h).contains("\tfor <b@example>; now\r\nX-Second: 2\r\nFrom:"));
        h.insert(99, b"X-Last", b" z".to_vec());
        h.add(b"X-Added", b" a".to_vec());
        assert!(text(&h).ends_with("X-Last: z\r\nX-Added: a\r\n"));
    }

    #[test]
    fn milter_values_cannot_inject_header_lines() {
        assert_eq!(stored_header_value(b"yes", false), b" yes".to_vec());
        assert_eq!(stored_header_value(b" yes", true), b" yes".to_vec());
        assert_eq!(stored_header_value(b"a\n\tb\nEvil: x\r\n", false), b" a\r\n\tb\r\n\tEvil: x".to_vec());
        assert_eq!(stored_header_value(b"a\rb\0c", false), b" abc".to_vec());
        assert!(valid_header_name(b"X-Spam-Flag"));
        assert!(!valid_header_name(b"Bad Name"));
        assert!(!valid_header_name(b"Bad:Name"));
        assert!(!valid_header_name(b""));
    }

    #[test]
    fn a_non_header_line_survives_unseen() {
        let h = HeaderSection::parse(b"From: a\r\nnot a header\r\n");
        assert_eq!(h.visible().count(), 1);
        assert_eq!(h.to_bytes(), b"From: a\r\nnot a header\r\n".to_vec());
    }

    #[test]
    fn envelope_edits() {
        let mut e = Envelope { sender: "a@x".into(), ..Envelope::default() };
        e.recipients.push(Recipient::new("b@y"));
        change_sender(&mut e, "ID", b"<new@x>", b"RET=HDRS ENVID=abc SIZE=1");
        assert_eq!((e.sender.as_str(), e.ret, e.envid.as_deref()), ("new@x", DsnRet::Headers, Some("abc")));
        add_recipient(&mut e, "ID", b"<c@y>", b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c@y");
        add_recipient(&mut e, "ID", b"B@Y", b"");
        assert_eq!(e.recipients.len(), 2);
        assert!(e.recipients[1].notify.success && e.recipients[1].notify.delay);
        assert_eq!(e.recipients[1].orcpt.as_deref(), Some("rfc822;c@y"));
        assert_eq!(delete_recipient(&mut e, b"<B@y>"), 1);
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(parse_notify("NEVER,SUCCESS"), None);
    }

    #[test]
    fn replacement_bodies_get_crlf_everywhere() {
        let mut out = Vec::new();
        let mut n = BodyLines::new();
        n.feed(b"a\nb\r", &mut out);
        n.feed(b"\nc\rd", &mut out);
        n.finish(&mut out);
        assert_eq!(out, b"a\r\nb\r\nc\r\nd\r\n".to_vec());
        let mut out = Vec::new();
        let mut n = BodyLines::new();
        n.feed(b"done\r\n", &mut out);
        n.finish(&mut out);
        assert_eq!(out, b"done\r\n".to_vec());
        let mut out = Vec::new();
        BodyLines::new().finish(&mut out);
        assert!(out.is_empty());
    }
}
