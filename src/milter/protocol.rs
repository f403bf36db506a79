//! The Sendmail milter wire protocol, version 6 (libmilter's `mfdef.h`, as
//! Postfix's `milter8` speaks it): command and reply codes, the option
//! negotiation bits, and the encoding of the packets sluice sends and the
//! decoding of those it reads.
//!
//! Owns bytes only: a packet is a 4-byte big-endian length (counting the
//! code byte), a one-byte code and its data; strings are NUL-terminated.
//! No I/O, no timeouts and no policy here (`conn.rs` reads and writes,
//! `client.rs` decides what a reply means at each stage), so every packet
//! shape is unit-tested without a socket.

use thiserror::Error;

// Commands from the MTA to the filter (SMFIC_*).
pub const SMFIC_ABORT: u8 = b'A';
pub const SMFIC_BODY: u8 = b'B';
pub const SMFIC_CONNECT: u8 = b'C';
pub const SMFIC_MACRO: u8 = b'D';
pub const SMFIC_BODYEOB: u8 = b'E';
pub const SMFIC_HELO: u8 = b'H';
pub const SMFIC_HEADER: u8 = b'L';
pub const SMFIC_MAIL: u8 = b'M';
pub const SMFIC_EOH: u8 = b'N';
pub const SMFIC_OPTNEG: u8 = b'O';
pub const SMFIC_QUIT: u8 = b'Q';
pub const SMFIC_RCPT: u8 = b'R';
pub const SMFIC_DATA: u8 = b'T';
pub const SMFIC_UNKNOWN: u8 = b'U';

// Replies from the filter (SMFIR_*).
pub const SMFIR_ADDRCPT: u8 = b'+';
pub const SMFIR_DELRCPT: u8 = b'-';
pub const SMFIR_ADDRCPT_PAR: u8 = b'2';
pub const SMFIR_SHUTDOWN: u8 = b'4';
pub const SMFIR_ACCEPT: u8 = b'a';
pub const SMFIR_REPLBODY: u8 = b'b';
pub const SMFIR_CONTINUE: u8 = b'c';
pub const SMFIR_DISCARD: u8 = b'd';
pub const SMFIR_CHGFROM: u8 = b'e';
pub const SMFIR_CONN_FAIL: u8 = b'f';
pub const SMFIR_ADDHEADER: u8 = b'h';
pub const SMFIR_INSHEADER: u8 = b'i';
pub const SMFIR_SETSYMLIST: u8 = b'l';
pub const SMFIR_CHGHEADER: u8 = b'm';
pub const SMFIR_PROGRESS: u8 = b'p';
pub const SMFIR_QUARANTINE: u8 = b'q';
pub const SMFIR_REJECT: u8 = b'r';
pub const SMFIR_SKIP: u8 = b's';
pub const SMFIR_TEMPFAIL: u8 = b't';
pub const SMFIR_REPLYCODE: u8 = b'y';

// Actions a filter may ask for (SMFIF_*), offered in the negotiation.
pub const SMFIF_ADDHDRS: u32 = 1 << 0;
pub const SMFIF_CHGBODY: u32 = 1 << 1;
pub const SMFIF_ADDRCPT: u32 = 1 << 2;
pub const SMFIF_DELRCPT: u32 = 1 << 3;
pub const SMFIF_CHGHDRS: u32 = 1 << 4;
pub const SMFIF_QUARANTINE: u32 = 1 << 5;
pub const SMFIF_CHGFROM: u32 = 1 << 6;
pub const SMFIF_ADDRCPT_PAR: u32 = 1 << 7;
pub const SMFIF_SETSYMLIST: u32 = 1 << 8;
/// Every action sluice carries out: all of version 6's.
pub const ALL_ACTIONS: u32 = SMFIF_ADDHDRS
    | SMFIF_CHGBODY
    | SMFIF_ADDRCPT
    | SMFIF_DELRCPT
    | SMFIF_CHGHDRS
    | SMFIF_QUARANTINE
    | SMFIF_CHGFROM
    | SMFIF_ADDRCPT_PAR
    | SMFIF_SETSYMLIST;

// Protocol steps (SMFIP_*): events a filter does not want, replies it will
// not send, and a few extensions.
pub const SMFIP_NOCONNECT: u32 = 1 << 0;
pub const SMFIP_NOHELO: u32 = 1 << 1;
pub const SMFIP_NOMAIL: u32 = 1 << 2;
pub const SMFIP_NORCPT: u32 = 1 << 3;
pub const SMFIP_NOBODY: u32 = 1 << 4;
pub const SMFIP_NOHDRS: u32 = 1 << 5;
pub const SMFIP_NOEOH: u32 = 1 << 6;
pub const SMFIP_NR_HDR: u32 = 1 << 7;
pub const SMFIP_NOUNKNOWN: u32 = 1 << 8;
pub const SMFIP_NODATA: u32 = 1 << 9;
pub const SMFIP_SKIP: u32 = 1 << 10;
pub const SMFIP_RCPT_REJ: u32 = 1 << 11;
pub const SMFIP_NR_CONN: u32 = 1 << 12;
pub const SMFIP_NR_HELO: u32 = 1 << 13;
pub const SMFIP_NR_MAIL: u32 = 1 << 14;
pub const SMFIP_NR_RCPT: u32 = 1 << 15;
pub const SMFIP_NR_DATA: u32 = 1 << 16;
pub const SMFIP_NR_UNKN: u32 = 1 << 17;
pub const SMFIP_NR_EOH: u32 = 1 << 18;
pub const SMFIP_NR_BODY: u32 = 1 << 19;
pub const SMFIP_HDR_LEADSPC: u32 = 1 << 20;

/// The events a filter can ask not to receive.
pub const NOSEND_MASK: u32 = SMFIP_NOCONNECT
    | SMFIP_NOHELO
    | SMFIP_NOMAIL
    | SMFIP_NORCPT
    | SMFIP_NOBODY
    | SMFIP_NOHDRS
    | SMFIP_NOEOH
    | SMFIP_NOUNKNOWN
    | SMFIP_NODATA;
/// The events a filter can ask not to answer.
pub const NOREPLY_MASK: u32 = SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_HDR
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY;

/// The protocol steps a version defines: sluice announces only these, and
/// never sends an event a filter's (older) version does not know.
pub fn version_steps(version: u32) -> u32 {
    let v2 = SMFIP_NOCONNECT
        | SMFIP_NOHELO
        | SMFIP_NOMAIL
        | SMFIP_NORCPT
        | SMFIP_NOBODY
        | SMFIP_NOHDRS
        | SMFIP_NOEOH;
    match version {
        0 | 1 => 0,
        2 => v2,
        3 => v2 | SMFIP_NOUNKNOWN,
        4 | 5 => v2 | SMFIP_NOUNKNOWN | SMFIP_NODATA,
        _ => {
            v2 | SMFIP_NOUNKNOWN
                | SMFIP_NODATA
                | SMFIP_SKIP
                | SMFIP_RCPT_REJ
                | NOREPLY_MASK
                | SMFIP_HDR_LEADSPC
        }
    }
}

/// Macro stages in the negotiation's macro lists (SMFIM_*).
pub const SMFIM_CONNECT: u32 = 0;
pub const SMFIM_HELO: u32 = 1;
pub const SMFIM_ENVFROM: u32 = 2;
pub const SMFIM_ENVRCPT: u32 = 3;
pub const SMFIM_DATA: u32 = 4;
pub const SMFIM_EOM: u32 = 5;
pub const SMFIM_EOH: u32 = 6;

/// Body content goes out in chunks of at most this many bytes (libmilter's
/// `MILTER_CHUNK_SIZE`; larger ones are refused by some filters).
pub const BODY_CHUNK: usize = 65_535;

/// The largest reply packet read whole. Replies are short (a header, an
/// address, a reply text); a replacement body can be any size and is read
/// in pieces instead (see [`Header::is_body`]), so a filter that sends
/// nonsense lengths costs at most this much memory.
pub const MAX_PACKET: usize = 1 << 20;

/// The address family in a CONNECT event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
    Unix,
    Unknown,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::Inet => b'4',
            Family::Inet6 => b'6',
            Family::Unix => b'L',
            Family::Unknown => b'U',
        }
    }
}

/// A packet sluice sends.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// Opens the negotiation: our version, the actions we allow, the steps
    /// we offer.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    /// Macro values for the event `stage` (its command code) that follows.
    Macro {
        stage: u8,
        pairs: &'a [(String, String)],
    },
    Connect {
        hostname: &'a str,
        family: Family,
        port: u16,
        address: &'a str,
    },
    Helo(&'a str),
    /// `<address>` then the ESMTP parameters, each as its own string.
    Mail(&'a [String]),
    Rcpt(&'a [String]),
    Data,
    Header {
        name: &'a [u8],
        value: &'a [u8],
    },
    EndOfHeaders,
    Body(&'a [u8]),
    EndOfBody,
    Abort,
    Quit,
    Unknown(&'a str),
}

impl Command<'_> {
    /// The command code.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => SMFIC_OPTNEG,
            Command::Macro { .. } => SMFIC_MACRO,
            Command::Connect { .. } => SMFIC_CONNECT,
            Command::Helo(_) => SMFIC_HELO,
            Command::Mail(_) => SMFIC_MAIL,
            Command::Rcpt(_) => SMFIC_RCPT,
            Command::Data => SMFIC_DATA,
            Command::Header { .. } => SMFIC_HEADER,
            Command::EndOfHeaders => SMFIC_EOH,
            Command::Body(_) => SMFIC_BODY,
            Command::EndOfBody => SMFIC_BODYEOB,
            Command::Abort => SMFIC_ABORT,
            Command::Quit => SMFIC_QUIT,
            Command::Unknown(_) => SMFIC_UNKNOWN,
        }
    }

    /// Appends the whole packet (length, code, data) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, self.code()]);
        match *self {
            Command::OptNeg { version, actions, steps } => {
                for v in [version, actions, steps] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Command::Macro { stage, pairs } => {
                out.push(stage);
                for (name, value) in pairs {
                    cstr(out, name.as_bytes());
                    cstr(out, value.as_bytes());
                }
            }
            Command::Connect { hostname, family, port, address } => {
                cstr(out, hostname.as_bytes());
                out.push(family.code());
                if family != Family::Unknown {
                    out.extend_from_slice(&port.to_be_bytes());
                    cstr(out, address.as_bytes());
                }
            }
            Command::Helo(name) => cstr(out, name.as_bytes()),
            Command::Mail(args) | Command::Rcpt(args) => args.iter().for_each(|a| cstr(out, a.as_bytes())),
            Command::Header { name, value } => {
                cstr(out, name);
                cstr(out, value);
            }
            Command::Body(bytes) => out.extend_from_slice(bytes),
            Command::Unknown(line) => cstr(out, line.as_bytes()),
            Command::Data | Command::EndOfHeaders | Command::EndOfBody | Command::Abort | Command::Quit => {}
        }
        // The length counts the code byte and the data. Bodies are sent in
        // chunks far below 4 GiB, so this cannot overflow.
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Appends `s` as a C string. A NUL inside would end the string early on
/// the filter's side and shift every field after it, so it becomes `?`.
fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().map(|&b| if b == 0 { b'?' } else { b }));
    out.push(0);
}

/// A reply packet's length and code, read before its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub code: u8,
    /// Data bytes after the code.
    pub len: usize,
}

impl Header {
    /// Reads the five header bytes. A zero length (no code byte) is a
    /// protocol error; so is a length past [`MAX_PACKET`] unless the packet
    /// is a body replacement, which the caller reads in pieces.
    pub fn parse(bytes: [u8; 5]) -> Result<Header, ProtocolError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len == 0 {
            return Err(ProtocolError::BadLength(0));
        }
        let h = Header { code: bytes[4], len: len - 1 };
        if !h.is_body() && h.len > MAX_PACKET {
            return Err(ProtocolError::TooLong(h.len));
        }
        Ok(h)
    }

    /// True for `SMFIR_REPLBODY`, whose data is streamed, not held.
    pub fn is_body(&self) -> bool {
        self.code == SMFIR_REPLBODY
    }
}

/// A reply from a filter (everything but a body replacement's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The negotiation's answer, with the macro lists the filter wants per
    /// stage (`SMFIM_*`, space-separated names).
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
        macros: Vec<(u32, String)>,
    },
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    Shutdown,
    ConnFail,
    Skip,
    Progress,
    /// `SMFIR_REPLYCODE`: an SMTP reply text as the filter wrote it.
    ReplyCode(Vec<u8>),
    Quarantine(Vec<u8>),
    AddHeader {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    InsertHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    ChangeHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    ChangeFrom {
        address: Vec<u8>,
        args: Vec<u8>,
    },
    AddRcpt {
        address: Vec<u8>,
        args: Vec<u8>,
    },
    DelRcpt(Vec<u8>),
}

impl Response {
    /// Decodes the data of a packet with code `code`. Extra bytes after the
    /// last field, a missing NUL or a short number are errors, as in
    /// Postfix: a filter that is out of step is not guessed at.
    pub fn decode(code: u8, data: &[u8]) -> Result<Response, ProtocolError> {
        let mut r = Reader { data, pos: 0 };
        let no_data =
            |resp: Response| if data.is_empty() { Ok(resp) } else { Err(ProtocolError::Trailing(code)) };
        let resp = match code {
            SMFIC_OPTNEG => {
                let version = r.u32()?;
                let actions = r.u32()?;
                let steps = r.u32()?;
                let mut macros = Vec::new();
                while !r.done() {
                    let stage = r.u32()?;
                    let names = String::from_utf8_lossy(r.cstr()?).into_owned();
                    macros.push((stage, names));
                }
                return Ok(Response::OptNeg { version, actions, steps, macros });
            }
            SMFIR_CONTINUE => return no_data(Response::Continue),
            SMFIR_ACCEPT => return no_data(Response::Accept),
            SMFIR_REJECT => return no_data(Response::Reject),
            SMFIR_TEMPFAIL => return no_data(Response::Tempfail),
            SMFIR_DISCARD => return no_data(Response::Discard),
            SMFIR_SHUTDOWN => return no_data(Response::Shutdown),
            SMFIR_CONN_FAIL => return no_data(Response::ConnFail),
            SMFIR_SKIP => return no_data(Response::Skip),
            SMFIR_PROGRESS => return no_data(Response::Progress),
            // Both are text the filter may or may not NUL-terminate.
            SMFIR_REPLYCODE => return Ok(Response::ReplyCode(strip_nul(data).to_vec())),
            SMFIR_QUARANTINE => return Ok(Response::Quarantine(strip_nul(data).to_vec())),
            SMFIR_ADDHEADER => {
                let name = r.cstr()?.to_vec();
                Response::AddHeader { name, value: r.cstr()?.to_vec() }
            }
            SMFIR_INSHEADER | SMFIR_CHGHEADER => {
                let index = r.u32()?;
                let name = r.cstr()?.to_vec();
                let value = r.cstr()?.to_vec();
                if code == SMFIR_INSHEADER {
                    Response::InsertHeader { index, name, value }
                } else {
                    Response::ChangeHeader { index, name, value }
                }
            }
            SMFIR_CHGFROM | SMFIR_ADDRCPT_PAR => {
                let address = r.cstr()?.to_vec();
                let args = if r.done() { Vec::new() } else { r.cstr()?.to_vec() };
                if code == SMFIR_CHGFROM {
                    Response::ChangeFrom { address, args }
                } else {
                    Response::AddRcpt { address, args }
                }
            }
            SMFIR_ADDRCPT => Response::AddRcpt { address: r.cstr()?.to_vec(), args: Vec::new() },
            SMFIR_DELRCPT => Response::DelRcpt(r.cstr()?.to_vec()),
            other => return Err(ProtocolError::Unknown(other)),
        };
        if r.done() { Ok(resp) } else { Err(ProtocolError::Trailing(code)) }
    }
}

fn strip_nul(data: &[u8]) -> &[u8] {
    data.strip_suffix(&[0]).unwrap_or(data)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.data.get(self.pos..self.pos + 4).ok_or(ProtocolError::Short("number"))?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let nul = memchr::memchr(0, rest).ok_or(ProtocolError::Short("string"))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }
}

/// A packet that breaks the protocol. Postfix treats each as a
/// communication error: the connection is given up and
/// `milter_default_action` applies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("bad packet length: {0}")]
    BadLength(usize),
    #[error("unreasonable packet length: {0} > {MAX_PACKET}")]
    TooLong(usize),
    #[error("packet too short for {0}")]
    Short(&'static str),
    #[error("reply {} was followed by data bytes", char::from(*.0))]
    Trailing(u8),
    #[error("unknown reply code {:?}", char::from(*.0))]
    Unknown(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(cmd: Command<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        cmd.encode(&mut out);
        out
    }

    #[test]
    fn optneg_is_three_big_endian_words() {
        let p = packet(Command::OptNeg { version: 6, actions: ALL_ACTIONS, steps: version_steps(6) });
        assert_eq!(&p[..5], &[0, 0, 0, 13, b'O']);
        assert_eq!(&p[5..9], &6u32.to_be_bytes());
        assert_eq!(&p[9..13], &0x1ffu32.to_be_bytes());
        assert_eq!(&p[13..17], &0x1f_ffffu32.to_be_bytes());
    }

    #[test]
    fn connect_carries_name_family_port_and_address() {
        let p = packet(Command::Connect {
            hostname: "mail.example",
            family: Family::Inet,
            port: 25,
            address: "192.0.2.1",
        });
        let mut want = vec![b'C'];
        want.extend_from_slice(b"mail.example\0");
        want.push(b'4');
        want.extend_from_slice(&[0, 25]);
        want.extend_from_slice(b"192.0.2.1\0");
        assert_eq!(&p[4..], want.as_slice());
        assert_eq!(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize, want.len());
        let unknown =
            packet(Command::Connect { hostname: "x", family: Family::Unknown, port: 0, address: "" });
        assert_eq!(&unknown[4..], b"Cx\0U");
    }

    #[test]
    fn macros_are_name_value_pairs_after_the_stage() {
        let pairs = vec![("i".to_owned(), "4Hx".to_owned()), ("{mail_addr}".to_owned(), "a@b".to_owned())];
        let p = packet(Command::Macro { stage: SMFIC_MAIL, pairs: &pairs });
        assert_eq!(&p[4..], b"DMi\x004Hx\0{mail_addr}\0a@b\0");
    }

    #[test]
    fn a_nul_inside_a_string_cannot_shift_fields() {
        let p = packet(Command::Helo("evil\0name"));
        assert_eq!(&p[4..], b"Hevil?name\0");
        let args = vec!["<a@b>".to_owned(), "SIZE=10".to_owned()];
        assert_eq!(&packet(Command::Mail(&args))[4..], b"M<a@b>\0SIZE=10\0");
    }

    #[test]
    fn header_lengths_are_checked() {
        assert_eq!(Header::parse([0, 0, 0, 1, b'c']), Ok(Header { code: b'c', len: 0 }));
        assert_eq!(Header::parse([0, 0, 0, 0, b'c']), Err(ProtocolError::BadLength(0)));
        assert!(matches!(Header::parse([0x7f, 0, 0, 0, b'h']), Err(ProtocolError::TooLong(_))));
        // A body replacement of any size is read in pieces.
        assert!(Header::parse([0x7f, 0, 0, 0, b'b']).unwrap().is_body());
    }

    #[test]
    fn replies_decode() {
        assert_eq!(Response::decode(b'c', b""), Ok(Response::Continue));
        assert_eq!(Response::decode(b'c', b"x"), Err(ProtocolError::Trailing(b'c')));
        assert_eq!(
            Response::decode(b'y', b"550 5.7.1 no\0"),
            Ok(Response::ReplyCode(b"550 5.7.1 no".to_vec()))
        );
        assert_eq!(
            Response::decode(b'h', b"X-Spam\0yes\0"),
            Ok(Response::AddHeader { name: b"X-Spam".to_vec(), value: b"yes".to_vec() })
        );
        let mut chg = 2u32.to_be_bytes().to_vec();
        chg.extend_from_slice(b"Subject\0\0");
        assert_eq!(
            Response::decode(b'm', &chg),
            Ok(Response::ChangeHeader { index: 2, name: b"Subject".to_vec(), value: Vec::new() })
        );
        assert_eq!(
            Response::decode(b'e', b"<new@x>\0"),
            Ok(Response::ChangeFrom { address: b"<new@x>".to_vec(), args: Vec::new() })
        );
        assert_eq!(
            Response::decode(b'2', b"<r@x>\0NOTIFY=NEVER\0"),
            Ok(Response::AddRcpt { address: b"<r@x>".to_vec(), args: b"NOTIFY=NEVER".to_vec() })
        );
        assert_eq!(Response::decode(b'h', b"X-Spam\0yes"), Err(ProtocolError::Short("string")));
        assert_eq!(Response::decode(b'i', b"\0\0"), Err(ProtocolError::Short("number")));
        assert_eq!(Response::decode(b'Z', b""), Err(ProtocolError::Unknown(b'Z')));
    }

    #[test]
    fn optneg_reply_carries_macro_lists() {
        let mut data = Vec::new();
        for v in [6u32, SMFIF_ADDHDRS, SMFIP_NR_HDR | SMFIP_NOUNKNOWN] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(&SMFIM_ENVFROM.to_be_bytes());
        data.extend_from_slice(b"i {mail_addr}\0");
        assert_eq!(
            Response::decode(b'O', &data),
            Ok(Response::OptNeg {
                version: 6,
                actions: SMFIF_ADDHDRS,
                steps: SMFIP_NR_HDR | SMFIP_NOUNKNOWN,
                macros: vec![(SMFIM_ENVFROM, "i {mail_addr}".to_owned())],
            })
        );
    }

    #[test]
    fn older_versions_define_fewer_steps() {
        assert_eq!(version_steps(2) & SMFIP_NODATA, 0);
        assert_ne!(version_steps(4) & SMFIP_NODATA, 0);
        assert_eq!(version_steps(4) & SMFIP_SKIP, 0);
        assert_ne!(version_steps(6) & SMFIP_NR_BODY, 0);
    }
}
