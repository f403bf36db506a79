//! The remote end of a session and its name, found the way Postfix's smtpd
//! finds it before the greeting: the reverse (PTR) name of the client
//! address, then a forward lookup of that name, which must list the address.
//! Only a name that passes both is the client's `name`; otherwise the client
//! is `unknown`, and the outcome of each step ([`Naming`]) is kept for
//! `reject_unknown_client_hostname` and
//! `reject_unknown_reverse_client_hostname`.
//!
//! The two lookups share one deadline (`sluice_peername_lookup_timeout`),
//! so a dead name server delays a greeting by at most that much; a lookup
//! cut off by it counts as a temporary failure, like SERVFAIL. Uses the
//! daemon's shared [`Resolver`]; never talks SMTP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tracing::warn;

use super::naming::{Client, Listing, NameStatus, Naming, UNKNOWN, valid_hostname};
use crate::clock;
use crate::resolver::{DnsError, Family, Resolver};

/// The remote end of a session.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: IpAddr,
    /// The client's TCP port (0 when unknown).
    pub port: u16,
    /// The address the client connected to, when known (the milters'
    /// `{daemon_addr}`).
    pub local: Option<SocketAddr>,
    /// Forward-confirmed reverse name, or `unknown`: the name in logs,
    /// `Received:` and restrictions.
    pub name: String,
    /// The reverse name even when it does not forward-confirm, or `unknown`.
    pub reverse_name: String,
    /// How the lookups ended.
    pub naming: Naming,
    /// The DNS block- and allowlists that list the client, with their answers.
    pub dnsbl: Vec<(String, Listing)>,
}

impl Peer {
    /// A peer known by its socket address only: `unknown`, as with
    /// `smtpd_peername_lookup = no` until [`Peer::look_up_name`] runs.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr: addr.ip(),
            port: addr.port(),
            local: None,
            name: UNKNOWN.to_owned(),
            reverse_name: UNKNOWN.to_owned(),
            naming: Naming::NOT_LOOKED_UP,
            dnsbl: Vec::new(),
        }
    }

    /// The client as restrictions see it.
    pub fn client(&self) -> Client<'_> {
        Client {
            addr: self.addr,
            name: &self.name,
            reverse_name: &self.reverse_name,
            naming: self.naming,
            dnsbl: &self.dnsbl,
        }
    }

    /// Looks up and forward-confirms the client's name within `timeout`.
    pub async fn look_up_name(&mut self, resolver: &dyn Resolver, timeout: Duration) {
        let deadline = clock::instant() + timeout;
        // A v4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; its
        // names are those of a.b.c.d.
        let addr = self.addr.to_canonical();

        let reverse = match tokio::time::timeout_at(deadline, resolver.ptr(addr)).await {
            Ok(Ok(names)) => match names.into_iter().find(|n| valid_hostname(n)) {
                Some(n) => Ok(n),
                None => {
                    warn!("{addr}: PTR record has no valid host name");
                    Err(NameStatus::Perm)
                }
            },
            Ok(Err(e)) => Err(status_of(&e)),
            Err(_elapsed) => Err(NameStatus::Temp),
        };
        let reverse_name = match reverse {
            Ok(n) => n,
            Err(status) => {
                self.naming = Naming { name: status, reverse: status };
                return;
            }
        };

        let name = match tokio::time::timeout_at(deadline, resolver.ips_of(&reverse_name, Family::of(addr)))
            .await
        {
            Ok(Ok(ips)) if ips.iter().any(|ip| ip.to_canonical() == addr) => Ok(()),
            Ok(Ok(_)) => {
                warn!("hostname {reverse_name} does not resolve to address {addr}");
                Err(NameStatus::Forged)
            }
            Ok(Err(e)) => {
                // Postfix's words (getaddrinfo's messages), so log watchers
                // keep matching them.
                let (why, status) = match e {
                    DnsError::NotFound { .. } => ("Name or service not known", NameStatus::Forged),
                    DnsError::Temporary { .. } => ("Temporary failure in name resolution", NameStatus::Temp),
                };
                warn!("hostname {reverse_name} does not resolve to address {addr}: {why}");
                Err(status)
            }
            Err(_elapsed) => {
                warn!(
                    "hostname {reverse_name} does not resolve to address {addr}: Temporary failure in name resolution"
                );
                Err(NameStatus::Temp)
            }
        };
        self.naming = Naming {
            name: match name {
                Ok(()) => NameStatus::Ok,
                Err(s) => s,
            },
            reverse: NameStatus::Ok,
        };
        if name.is_ok() {
            self.name = reverse_name.clone();
        }
        self.reverse_name = reverse_name;
    }
}

/// Asks each DNS blocklist in `domains` about `addr`, all at once and
/// within `timeout`, and returns the answers of those that list it. A
/// blocklist that fails or stays silent lists nothing, as in Postfix: a
/// broken blocklist must not stop mail. Answers in 127.255.255.0/24 are the
/// blocklist refusing the query (a public resolver, a quota), logged so the
/// administrator sees the blocklist is not working.
pub async fn dnsbl_listings(
    resolver: &dyn Resolver,
    addr: IpAddr,
    domains: &[String],
    timeout: Duration,
) -> Vec<(String, Listing)> {
    let addr = addr.to_canonical();
    let deadline = clock::instant() + timeout;
    let asks = domains.iter().map(|domain| async move {
        let name = format!("{}.{domain}", reversed(addr));
        listing(resolver, &name, &addr.to_string(), domain, deadline).await.map(|a| (domain.clone(), a))
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// Asks the domain blocklist `list` about `domain` (the query
/// `<domain>.<list>`, for the `reject_rhsbl_*` restrictions) within
/// `timeout`: its answers, none when it does not list the name, fails or
/// is late.
pub async fn rhsbl_listing(resolver: &dyn Resolver, domain: &str, list: &str, timeout: Duration) -> Listing {
    let name = super::policy::Question::listing_key(domain, list);
    listing(resolver, &name, domain, list, clock::instant() + timeout).await.unwrap_or_default()
}

/// The answers of the blocklist `list` for the query `name` about
/// `subject` (for logs), or `None` when it does not list it, fails or has
/// not answered by `deadline`. An answer that may be a listing brings the
/// list's TXT record along (by the same deadline) as the reason.
async fn listing(
    resolver: &dyn Resolver,
    name: &str,
    subject: &str,
    list: &str,
    deadline: tokio::time::Instant,
) -> Option<Listing> {
    match tokio::time::timeout_at(deadline, resolver.ips_of(name, Family::V4)).await {
        Ok(Ok(ips)) => {
            let answers: Vec<Ipv4Addr> = ips
                .into_iter()
                .filter_map(|ip| match ip.to_canonical() {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if let Some(a) = answers.iter().find(|a| a.octets()[..3] == [127, 255, 255]) {
                warn!("{subject}: DNS blocklist {list} refused the query (answer {a}); it blocks nothing");
            }
            let reason = if answers.iter().any(|a| a.octets()[..3] != [127, 255, 255]) {
                match tokio::time::timeout_at(deadline, resolver.txt(name)).await {
                    Ok(Ok(texts)) => Some(reply_safe(&texts.join("; "))),
                    _ => None,
                }
            } else {
                None
            };
            Some(Listing { answers, reason })
        }
        Ok(Err(DnsError::NotFound { .. })) => None,
        Ok(Err(e)) => {
            warn!("{subject}: DNS blocklist {list}: {e}");
            None
        }
        Err(_elapsed) => {
            warn!("{subject}: DNS blocklist {list} did not answer in time");
            None
        }
    }
}

/// Text from DNS made fit for an SMTP reply line, as Postfix's
/// smtpd_expansion_filter does: printable ASCII and spaces kept, anything
/// else (CR, LF, controls, 8-bit) becomes `_`; cut at 200 characters. The
/// reply filters its text again ([`crate::reply::printable`]); this one
/// is stricter (ASCII only) because a blocklist's text has no business
/// being anything else.
fn reply_safe(text: &str) -> String {
    let ascii = |c: char| if c.is_ascii() { c } else { crate::reply::IN_REPLIES };
    let cut: String = text.chars().take(200).map(ascii).collect();
    crate::reply::printable(&cut, crate::reply::IN_REPLIES).into_owned()
}

/// The DNS blocklist form of an address: `4.3.2.1` for 1.2.3.4, reversed
/// nibbles for IPv6.
fn reversed(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let hex: Vec<String> = a
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
                .collect();
            hex.join(".")
        }
    }
}

impl fmt::Display for Peer {
    /// Postfix's `name[addr]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.name, self.addr)
    }
}

fn status_of(e: &DnsError) -> NameStatus {
    if e.is_permanent() { NameStatus::Perm } else { NameStatus::Temp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::StaticResolver;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn peer(addr: &str) -> Peer {
        Peer::new(SocketAddr::new(addr.parse().unwrap(), 2525))
    }

    async fn named(r: &StaticResolver, addr: &str) -> Peer {
        let mut p = peer(addr);
        p.look_up_name(r, TIMEOUT).await;
        p
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocklist_names_reverse_octets_and_nibbles() {
        assert_eq!(reversed(ip("192.0.2.1")), "1.2.0.192");
        assert_eq!(
            reversed(ip("2001:db8::1")),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    #[tokio::test]
    async fn blocklists_are_asked_by_canonical_address_and_only_listings_kept() {
        let r = StaticResolver::new()
            .with_ip("1.2.0.192.bl.example", ip("127.0.0.2"))
            .with_ip("1.2.0.192.bl.example", ip("2001:db8::2"))
            .with_failure("1.2.0.192.broken.example");
        let domains = ["bl.example", "clean.example", "broken.example"].map(String::from);
        let got = dnsbl_listings(&r, ip("::ffff:192.0.2.1"), &domains, TIMEOUT).await;
        let listed = Listing { answers: vec![Ipv4Addr::new(127, 0, 0, 2)], reason: None };
        assert_eq!(got, vec![("bl.example".to_owned(), listed)]);
        assert!(dnsbl_listings(&r, ip("192.0.2.9"), &domains, TIMEOUT).await.is_empty());
    }

    #[tokio::test]
    async fn a_name_that_lists_the_address_is_confirmed() {
        let r = StaticResolver::new()
            .with_ptr(ip("192.0.2.1"), "mail.example")
            .with_ip("mail.example", ip("192.0.2.9"))
            .with_ip("mail.example", ip("192.0.2.1"));
        let p = named(&r, "192.0.2.1").await;
        assert_eq!(p.to_string(), "mail.example[192.0.2.1]");
        assert_eq!(p.naming, Naming { name: NameStatus::Ok, reverse: NameStatus::Ok });
        // The same from an IPv4-mapped address on a dual-stack socket.
        let p = named(&r, "::ffff:192.0.2.1").await;
        assert_eq!(p.name, "mail.example");
    }

    #[tokio::test]
    async fn a_name_that_does_not_list_the_address_is_forged() {
        let r = StaticResolver::new()
            .with_ptr(ip("192.0.2.1"), "liar.example")
            .with_ip("liar.example", ip("192.0.2.99"))
            .with_ptr(ip("192.0.2.2"), "gone.example")
            .with_ptr(ip("2001:db8::1"), "v4only.example")
            .with_ip("v4only.example", ip("192.0.2.1"));
        for addr in ["192.0.2.1", "192.0.2.2", "2001:db8::1"] {
            let p = named(&r, addr).await;
            assert_eq!(p.name, UNKNOWN, "{addr}");
            assert_eq!(p.naming, Naming { name: NameStatus::Forged, reverse: NameStatus::Ok }, "{addr}");
            assert_ne!(p.reverse_name, UNKNOWN);
        }
    }

    #[tokio::test]
    async fn missing_or_bogus_ptr_is_permanent_and_servfail_temporary() {
        let r = StaticResolver::new()
            .with_ptr(ip("192.0.2.3"), "192.0.2.3")
            .with_failure("192.0.2.4")
            .with_ptr(ip("192.0.2.5"), "flaky.example")
            .with_failure("flaky.example");
        let perm = Naming { name: NameStatus::Perm, reverse: NameStatus::Perm };
        assert_eq!(named(&r, "192.0.2.2").await.naming, perm, "no PTR");
        assert_eq!(named(&r, "192.0.2.3").await.naming, perm, "numeric PTR");
        let p = named(&r, "192.0.2.4").await;
        assert_eq!(
            (p.name.as_str(), p.naming),
            (UNKNOWN, Naming { name: NameStatus::Temp, reverse: NameStatus::Temp })
        );
        let p = named(&r, "192.0.2.5").await;
        assert_eq!(
            (p.name.as_str(), p.naming),
            (UNKNOWN, Naming { name: NameStatus::Temp, reverse: NameStatus::Ok })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_name_server_costs_one_timeout_and_leaves_the_client_unknown() {
        let r = StaticResolver::new()
            .with_silence("192.0.2.6")
            .with_ptr(ip("192.0.2.7"), "slow.example")
            .with_silence("slow.example");
        let p = named(&r, "192.0.2.6").await;
        assert_eq!(
            (p.name.as_str(), p.naming.name, p.naming.reverse),
            (UNKNOWN, NameStatus::Temp, NameStatus::Temp)
        );
        let p = named(&r, "192.0.2.7").await;
        assert_eq!(
            (p.name.as_str(), p.naming.name, p.naming.reverse),
            (UNKNOWN, NameStatus::Temp, NameStatus::Ok)
        );
    }

    #[test]
    fn host_name_syntax() {
        for ok in ["mail.example", "a", "x-1.example", "_dmarc.example", "1.2.3.example"] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in
            ["", "192.0.2.1", "123", "-a.example", "a-.example", "a..example", "a b.example", &"a".repeat(64)]
        {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
