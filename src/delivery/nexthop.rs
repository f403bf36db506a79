//! Next-hop resolution for delivery: turning a next hop into an ordered
//! list of addresses to try ([`targets`]), and deciding, before anything
//! connects, which of them delivery may use ([`Reach`]). `[host]:port` and
//! `inet:host:port` never look up MX, a bare domain does (falling back to
//! its address records when it has no MX, as RFC 5321 section 5.1 says).
//! Never connects.
//!
//! Two rules keep delivery from being aimed where it must not go:
//! - **Mail that loops back to this host** ([`Myself`]): a target that is
//!   one of this host's own SMTP listeners (or a `proxy_interfaces`
//!   address) is this host. As Postfix does, an MX list is cut before the
//!   first such host; when nothing is left and this host was the best MX,
//!   the mail bounces (`5.4.6 mail for example.org loops back to
//!   myself`), when better MX hosts exist but have no address it defers
//!   (`4.4.4 unable to find primary relay for example.org`); a next hop
//!   that is this host by address loops too. Unlike Postfix, which
//!   compares addresses only, and only on port 25, sluice compares the
//!   address and the port, so a mailbox server on this machine's other
//!   ports is never mistaken for it.
//! - **Internal networks** (`sluice_mx_forbidden_networks` minus its
//!   `_exceptions`): when the next hop is the recipient's domain (a
//!   bounce to a sender's domain, mail from `mynetworks` to the
//!   internet), its addresses are chosen by whoever controls that domain,
//!   so addresses in those networks are ignored as if they did not exist
//!   (as Exim's `ignore_target_hosts` does); with none left the mail
//!   bounces (`5.4.4`). Next hops the administrator configured
//!   (transport_maps, a transport's own, `relayhost`) are trusted as
//!   configured.
//!
//! The lookups themselves are [`crate::resolver`]'s, shared with the inbound
//! server. At most [`MAX_MX_HOSTS`] MX hosts are looked at, however many a
//! domain lists.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::resolver::{DnsError, Resolver};

use crate::config::NextHop;
use crate::reply::Status;

/// MX hosts of one domain whose addresses are looked up, best first: the
/// bound on the lookups one delivery may cost (Postfix looks all of them
/// up, then keeps `smtp_mx_address_limit` addresses).
pub const MAX_MX_HOSTS: usize = 20;

/// This host as delivery must recognise it: the addresses its SMTP
/// listeners are bound to (a wildcard listener stands for every address of
/// the machine on its port), and the `proxy_interfaces` addresses, which
/// reach it through a proxy or NAT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Myself {
    /// Listening socket addresses (wildcards already expanded).
    pub listening: Vec<SocketAddr>,
    /// Ports of those listeners, for proxy addresses.
    pub ports: Vec<u16>,
    /// `proxy_interfaces` addresses.
    pub proxies: Vec<IpAddr>,
}

impl Myself {
    /// This host from its bound listeners, `machine` (the addresses of its
    /// network interfaces, for wildcard listeners) and `proxies`.
    pub fn new(bound: &[SocketAddr], machine: &[IpAddr], proxies: &[IpAddr]) -> Myself {
        let mut listening = Vec::new();
        let mut ports = Vec::new();
        for a in bound {
            ports.push(a.port());
            if a.ip().is_unspecified() {
                listening.extend(machine.iter().map(|ip| SocketAddr::new(*ip, a.port())));
                // 0.0.0.0 and :: themselves reach this host too.
                listening.push(*a);
            } else {
                listening.push(*a);
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Myself { listening, ports, proxies: proxies.to_vec() }
    }

    /// True when connecting to `addr` would reach this host.
    pub fn is(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.listening.iter().any(|l| l.port() == addr.port() && l.ip().to_canonical() == ip)
            || (self.proxies.iter().any(|p| p.to_canonical() == ip)
                && (addr.port() == 25 || self.ports.contains(&addr.port())))
    }
}

/// What a next hop may resolve to: this host (a loop) never, and, for a
/// next hop that is the recipient's domain, no forbidden address.
pub struct Reach<'a> {
    pub myself: &'a Myself,
    /// Addresses delivery must not connect to; `None` for a configured
    /// next hop.
    pub forbidden: Option<&'a (dyn Fn(IpAddr) -> bool + Sync)>,
}

impl fmt::Debug for Reach<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reach")
            .field("myself", self.myself)
            .field("checked", &self.forbidden.is_some())
            .finish()
    }
}

/// Why a next hop gave nothing to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// This host is the best MX of the destination, or its address.
    #[error("mail for {0} loops back to myself")]
    Loop(String),
    /// This host is a backup MX and the better ones have no address.
    #[error("unable to find primary relay for {0}")]
    NoPrimary(String),
    /// Every address is in `sluice_mx_forbidden_networks`.
    #[error("mail for {name}: every address found ({addrs}) is in sluice_mx_forbidden_networks")]
    Forbidden { name: String, addrs: String },
}

impl TargetError {
    /// The status the recipients get; a class of 5 bounces them.
    pub fn status(&self) -> Status {
        match self {
            TargetError::Dns(e) if e.is_permanent() => Status(5, 4, 4),
            TargetError::Dns(_) => Status(4, 4, 3),
            TargetError::Loop(_) => Status(5, 4, 6),
            TargetError::NoPrimary(_) => Status(4, 4, 4),
            TargetError::Forbidden { .. } => Status(5, 4, 4),
        }
    }

    /// True when the backend itself may be at fault (a DNS failure);
    /// loops and forbidden addresses are this host's own decisions and do
    /// not count against the backend's breaker.
    pub fn is_backend_trouble(&self) -> bool {
        matches!(self, TargetError::Dns(_))
    }
}

/// One place to connect to, with the name it was found under (for
/// `relay=name[addr]:port` in logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Inet { name: String, addr: SocketAddr },
    Unix(PathBuf),
}

impl fmt::Display for Target {
    /// Postfix's form: `mbx1.example[192.0.2.1]:24`, `[/run/lmtp]` for a
    /// unix socket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Inet { name, addr } => write!(f, "{name}[{}]:{}", addr.ip(), addr.port()),
            Target::Unix(p) => {
                write!(f, "{}[{}]", p.file_name().and_then(|n| n.to_str()).unwrap_or("unix"), p.display())
            }
        }
    }
}

impl Target {
    /// The address, for an internet target.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Target::Inet { addr, .. } => Some(addr.ip()),
            Target::Unix(_) => None,
        }
    }

    /// True when this target is this host.
    fn is_self(&self, myself: &Myself) -> bool {
        matches!(self, Target::Inet { addr, .. } if myself.is(*addr))
    }

    /// The name the target was found under (an MX host's, a next hop's,
    /// an address as text), or the socket's path.
    pub fn name(&self) -> &str {
        match self {
            Target::Inet { name, .. } => name,
            Target::Unix(p) => p.to_str().unwrap_or("unix"),
        }
    }

    /// The host part without the port: `name[addr]` (Postfix's "host X said").
    pub fn host(&self) -> String {
        match self {
            Target::Inet { name, addr } => format!("{name}[{}]", addr.ip()),
            Target::Unix(_) => self.to_string(),
        }
    }
}

/// A next hop's name as errors and TLS name it: the domain or host,
/// without brackets or port; a socket's path.
pub fn hop_name(nexthop: &NextHop) -> String {
    match nexthop {
        NextHop::Host { host, .. } => host.clone(),
        NextHop::Mx { domain, .. } => domain.clone(),
        NextHop::Unix(p) => p.display().to_string(),
    }
}

/// The addresses to try for a next hop, best first: MX by preference (then
/// each exchange's addresses), or the host's own addresses, checked
/// against `reach` (see the module documentation), at most `limit` of them
/// (`<transport>_mx_address_limit`; `None`: all). IP literals
/// (`[192.0.2.1]`, `[IPv6:...]`) need no lookup.
pub async fn targets(
    resolver: &dyn Resolver,
    nexthop: &NextHop,
    limit: Option<usize>,
    reach: &Reach<'_>,
) -> Result<Vec<Target>, TargetError> {
    let limit = limit.unwrap_or(usize::MAX);
    let (name, mut found) = match nexthop {
        NextHop::Unix(path) => return Ok(vec![Target::Unix(path.clone())]),
        NextHop::Host { host, port } => {
            let t = host_targets(resolver, host, *port, limit).await?;
            if t.iter().any(|t| t.is_self(reach.myself)) {
                return Err(TargetError::Loop(host.clone()));
            }
            (host.clone(), t)
        }
        NextHop::Mx { domain, port } if literal(domain).is_some() => {
            let t = host_targets(resolver, domain, *port, limit).await?;
            if t.iter().any(|t| t.is_self(reach.myself)) {
                return Err(TargetError::Loop(domain.clone()));
            }
            (domain.clone(), t)
        }
        NextHop::Mx { domain, port } => match resolver.mx(domain).await {
            Ok(mut mxs) => {
                mxs.sort_by_key(|(pref, _)| *pref);
                mxs.truncate(MAX_MX_HOSTS);
                let best = mxs.first().map(|(p, _)| *p);
                // Each host's addresses with its preference, best first.
                let mut out: Vec<(u16, Target)> = Vec::new();
                let mut last_err = None;
                for (pref, host) in mxs {
                    match host_targets(resolver, &host, *port, limit).await {
                        Ok(t) => out.extend(t.into_iter().map(|t| (pref, t))),
                        Err(e) => last_err = Some(e),
                    }
                }
                // Cut the list before this host, as Postfix does: mail
                // for a domain this host is MX for goes only to better MX
                // hosts.
                if let Some(self_pref) = out.iter().find(|(_, t)| t.is_self(reach.myself)).map(|(p, _)| *p) {
                    out.retain(|(p, _)| *p < self_pref);
                    if out.is_empty() {
                        return Err(if best == Some(self_pref) {
                            TargetError::Loop(domain.clone())
                        } else {
                            TargetError::NoPrimary(domain.clone())
                        });
                    }
                }
                match (out.is_empty(), last_err) {
                    (true, Some(e)) => return Err(e.into()),
                    _ => (domain.clone(), out.into_iter().map(|(_, t)| t).collect()),
                }
            }
            // No MX: the domain's own address records (RFC 5321 5.1).
            Err(DnsError::NotFound { .. }) => {
                let t = host_targets(resolver, domain, *port, limit).await?;
                if t.iter().any(|t| t.is_self(reach.myself)) {
                    return Err(TargetError::Loop(domain.clone()));
                }
                (domain.clone(), t)
            }
            Err(e) => return Err(e.into()),
        },
    };
    if let Some(forbidden) = reach.forbidden {
        let before: Vec<String> = found.iter().filter_map(Target::ip).map(|ip| ip.to_string()).collect();
        found.retain(|t| t.ip().is_none_or(|ip| !forbidden(ip)));
        if found.is_empty() && !before.is_empty() {
            return Err(TargetError::Forbidden { name, addrs: before.join(", ") });
        }
    }
    found.truncate(limit);
    Ok(found)
}

/// An IP literal: `127.0.0.1`, `[127.0.0.1]`, `::1`, `[IPv6:::1]`.
fn literal(host: &str) -> Option<IpAddr> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let h = h.strip_prefix("IPv6:").or_else(|| h.strip_prefix("ipv6:")).unwrap_or(h);
    h.parse().ok()
}

async fn host_targets(
    resolver: &dyn Resolver,
    host: &str,
    port: u16,
    limit: usize,
) -> Result<Vec<Target>, DnsError> {
    if let Some(ip) = literal(host) {
        return Ok(vec![Target::Inet { name: ip.to_string(), addr: SocketAddr::new(ip, port) }]);
    }
    let mut ips = resolver.ips(host).await?;
    ips.truncate(limit);
    Ok(ips
        .into_iter()
        .map(|ip| Target::Inet { name: host.to_owned(), addr: SocketAddr::new(ip, port) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::StaticResolver;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// No listener of ours anywhere, nothing forbidden.
    fn open() -> Reach<'static> {
        Reach { myself: &NOBODY, forbidden: None }
    }
    static NOBODY: Myself = Myself { listening: Vec::new(), ports: Vec::new(), proxies: Vec::new() };

    async fn targets(
        r: &dyn Resolver,
        hop: &NextHop,
        limit: Option<usize>,
    ) -> Result<Vec<Target>, TargetError> {
        super::targets(r, hop, limit, &open()).await
    }

    #[tokio::test]
    async fn bracketed_host_is_not_looked_up_as_mx() {
        let r = StaticResolver::new().with_mx("mbx.test", 10, "other.test").with_ip("mbx.test", ip(5));
        let t = targets(&r, &NextHop::Host { host: "mbx.test".into(), port: 24 }, Some(5)).await.unwrap();
        assert_eq!(t, vec![Target::Inet { name: "mbx.test".into(), addr: SocketAddr::new(ip(5), 24) }]);
        assert_eq!(t[0].to_string(), "mbx.test[127.0.0.5]:24");
        let t = targets(&r, &NextHop::Host { host: "127.0.0.9".into(), port: 2525 }, Some(5)).await.unwrap();
        assert_eq!(t[0].to_string(), "127.0.0.9[127.0.0.9]:2525");
    }

    #[tokio::test]
    async fn domain_uses_mx_by_preference_then_falls_back_to_its_address() {
        let r = StaticResolver::new()
            .with_mx("example.test", 20, "mx2.example.test")
            .with_mx("example.test", 10, "mx1.example.test")
            .with_ip("mx1.example.test", ip(1))
            .with_ip("mx2.example.test", ip(2))
            .with_ip("nomx.test", ip(3));
        let t = targets(&r, &NextHop::Mx { domain: "example.test".into(), port: 25 }, Some(5)).await.unwrap();
        let names: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["mx1.example.test[127.0.0.1]:25", "mx2.example.test[127.0.0.2]:25"]);
        let t = targets(&r, &NextHop::Mx { domain: "nomx.test".into(), port: 25 }, Some(5)).await.unwrap();
        assert_eq!(t[0].to_string(), "nomx.test[127.0.0.3]:25");
    }

    #[tokio::test]
    async fn mx_address_limit_caps_the_addresses_tried() {
        let mut r = StaticResolver::new();
        for (pref, host) in [(10, "a.test"), (20, "b.test"), (30, "c.test")] {
            r = r.with_mx("many.test", pref, host);
            for n in 0..2 {
                r = r.with_ip(host, ip(pref as u8 + n));
            }
        }
        let hop = NextHop::Mx { domain: "many.test".into(), port: 25 };
        let t = targets(&r, &hop, Some(3)).await.unwrap();
        let names: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["a.test[127.0.0.10]:25", "a.test[127.0.0.11]:25", "b.test[127.0.0.20]:25"]);
        assert_eq!(targets(&r, &hop, None).await.unwrap().len(), 6);
        let host = NextHop::Host { host: "c.test".into(), port: 24 };
        assert_eq!(targets(&r, &host, Some(1)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn missing_and_failing_names_are_told_apart() {
        let r = StaticResolver::new().with_failure("broken.test");
        let e =
            targets(&r, &NextHop::Mx { domain: "nowhere.test".into(), port: 25 }, Some(5)).await.unwrap_err();
        assert_eq!(e.status().0, 5, "{e}");
        let e =
            targets(&r, &NextHop::Mx { domain: "broken.test".into(), port: 25 }, Some(5)).await.unwrap_err();
        assert_eq!(e.status().0, 4, "{e}");
    }

    #[test]
    fn ip_literals_in_brackets_and_ipv6_tags() {
        assert_eq!(literal("[127.0.0.1]"), Some(ip(1)));
        assert_eq!(literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal("mx.test"), None);
    }

    fn sock(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(ip(last), port)
    }

    #[tokio::test]
    async fn an_mx_list_is_cut_before_this_host_and_a_best_mx_loops() {
        let me = Myself::new(&[sock(1, 2525)], &[], &[]);
        let reach = Reach { myself: &me, forbidden: None };
        let r = StaticResolver::new()
            .with_mx("backup.test", 10, "primary.test")
            .with_mx("backup.test", 20, "me.test")
            .with_mx("backup.test", 30, "other.test")
            .with_ip("primary.test", ip(5))
            .with_ip("me.test", ip(1))
            .with_ip("other.test", ip(6))
            .with_mx("mine.test", 10, "me.test")
            .with_mx("mine.test", 20, "other.test")
            .with_mx("orphan.test", 10, "gone.test")
            .with_mx("orphan.test", 20, "me.test");
        let hop = |d: &str| NextHop::Mx { domain: d.into(), port: 2525 };
        let t = super::targets(&r, &hop("backup.test"), None, &reach).await.unwrap();
        let names: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["primary.test[127.0.0.5]:2525"], "only MX hosts better than this one");
        let e = super::targets(&r, &hop("mine.test"), None, &reach).await.unwrap_err();
        assert_eq!(e, TargetError::Loop("mine.test".into()));
        assert_eq!(
            (e.status(), e.to_string().as_str()),
            (Status(5, 4, 6), "mail for mine.test loops back to myself")
        );
        let e = super::targets(&r, &hop("orphan.test"), None, &reach).await.unwrap_err();
        assert_eq!(e.status(), Status(4, 4, 4), "{e}");
        // The same address on another port is another server.
        let other_port = NextHop::Host { host: "127.0.0.1".into(), port: 24 };
        assert!(super::targets(&r, &other_port, None, &reach).await.is_ok());
        let same = NextHop::Host { host: "127.0.0.1".into(), port: 2525 };
        assert!(matches!(super::targets(&r, &same, None, &reach).await, Err(TargetError::Loop(_))));
    }

    #[test]
    fn a_wildcard_listener_is_every_address_of_the_machine_and_proxies_count_as_this_host() {
        let any: SocketAddr = "0.0.0.0:25".parse().unwrap();
        let me = Myself::new(&[any], &[ip(1), "::1".parse().unwrap()], &["127.0.0.77".parse().unwrap()]);
        assert!(me.is(sock(1, 25)));
        assert!(me.is("[::1]:25".parse().unwrap()));
        assert!(me.is("[::ffff:127.0.0.1]:25".parse().unwrap()), "a mapped address is its IPv4 form");
        assert!(!me.is(sock(1, 26)));
        assert!(me.is(sock(77, 25)), "a proxy_interfaces address on port 25");
        assert!(!me.is(sock(77, 2600)));
    }

    #[tokio::test]
    async fn forbidden_addresses_of_a_domain_are_ignored_and_none_left_bounces() {
        let r = StaticResolver::new()
            .with_mx("mixed.test", 10, "inside.test")
            .with_mx("mixed.test", 20, "outside.test")
            .with_ip("inside.test", ip(9))
            .with_ip("outside.test", ip(10))
            .with_mx("evil.test", 10, "inside.test");
        let forbid_9 = |a: IpAddr| a == ip(9);
        let reach = Reach { myself: &NOBODY, forbidden: Some(&forbid_9) };
        let hop = |d: &str| NextHop::Mx { domain: d.into(), port: 25 };
        let t = super::targets(&r, &hop("mixed.test"), None, &reach).await.unwrap();
        assert_eq!(t.iter().map(|t| t.to_string()).collect::<Vec<_>>(), ["outside.test[127.0.0.10]:25"]);
        let e = super::targets(&r, &hop("evil.test"), None, &reach).await.unwrap_err();
        assert_eq!(e.status(), Status(5, 4, 4));
        assert!(e.to_string().contains("127.0.0.9"), "{e}");
        let literal = NextHop::Host { host: "127.0.0.9".into(), port: 25 };
        assert!(matches!(
            super::targets(&r, &literal, None, &reach).await,
            Err(TargetError::Forbidden { .. })
        ));
        // Configured next hops are not checked.
        assert!(super::targets(&r, &literal, None, &open()).await.is_ok());
    }
}
