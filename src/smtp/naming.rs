//! How the inbound server names its client: the outcome of the reverse
//! and forward lookups ([`Naming`], [`NameStatus`]), what DNS block- and
//! allowlists said ([`Listing`]), the client as restrictions see it
//! ([`Client`]), and the host-name syntax a PTR or HELO name must have.
//!
//! Plain data, and a leaf: `peer.rs` fills these in at connect, `policy/`
//! reads them, and neither has to import the other.

use std::net::IpAddr;

/// How one step of finding a client's name ended (Postfix's
/// `SMTPD_PEER_CODE_*`), in increasing order of certainty that the client
/// has no usable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameStatus {
    /// Found (and, for the client name, forward-confirmed).
    Ok,
    /// The lookup failed temporarily (SERVFAIL, timeout): ask again later.
    Temp,
    /// There is no such name (no PTR record, an invalid one, or lookups
    /// turned off).
    Perm,
    /// The reverse name does not resolve to the client address.
    Forged,
}

/// What the lookups found out about a client's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming {
    /// The forward-confirmed name (`reject_unknown_client_hostname`).
    pub name: NameStatus,
    /// The reverse name alone (`reject_unknown_reverse_client_hostname`).
    pub reverse: NameStatus,
}

impl Naming {
    /// No lookup was made: no name, for certain (Postfix with
    /// `smtpd_peername_lookup = no`).
    pub const NOT_LOOKED_UP: Naming = Naming { name: NameStatus::Perm, reverse: NameStatus::Perm };
    /// Both lookups succeeded.
    pub const CONFIRMED: Naming = Naming { name: NameStatus::Ok, reverse: NameStatus::Ok };
}

/// The SMTP client as restrictions see it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub addr: IpAddr,
    /// Forward-confirmed reverse name, or `unknown`.
    pub name: &'a str,
    /// The reverse name, confirmed or not, or `unknown`.
    pub reverse_name: &'a str,
    /// How the name lookups ended.
    pub naming: Naming,
    /// The DNS block- and allowlists that answered for this client's
    /// address, with their answers ([`Policy::dnsbl_domains`] were asked at
    /// connect).
    pub dnsbl: &'a [(String, Listing)],
}

/// What a DNS block- or allowlist answered about an address or name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Its address records; none when it does not list the name, or the
    /// lookup failed or was late (a broken blocklist must not stop mail).
    pub answers: Vec<std::net::Ipv4Addr>,
    /// Its TXT record, made safe for a reply: the reason it gives for the
    /// listing (Postfix's `$rbl_reason`), often a link to a removal page.
    pub reason: Option<String>,
}

impl Listing {
    /// True when `bl` reads an answer as listed.
    pub fn by(&self, bl: &crate::config::Dnsbl) -> bool {
        self.answers.iter().any(|a| bl.lists(*a))
    }

    /// `; <reason>` for the reply, as Postfix's default_rbl_reply adds it.
    pub fn reason_suffix(&self) -> String {
        self.reason.as_deref().map(|r| format!("; {r}")).unwrap_or_default()
    }
}

impl Client<'static> {
    /// A client known by its address only (`unknown`, not looked up).
    pub const fn unknown(addr: IpAddr) -> Client<'static> {
        Client { addr, name: "unknown", reverse_name: "unknown", naming: Naming::NOT_LOOKED_UP, dnsbl: &[] }
    }
}

/// What a client is called when its name is not known.
pub const UNKNOWN: &str = "unknown";

/// A host name a PTR record may name: dot-separated labels of letters,
/// digits, `-` and `_`, none empty, longer than 63 or starting or ending
/// with `-`, at most 255 in all, and not all digits (a "name" such as
/// `192.0.2.1` could pass for an address in access tables).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && name.bytes().any(|b| !b.is_ascii_digit() && b != b'.')
}
