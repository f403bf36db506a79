//! Next-hop resolution for delivery: turning a next hop into an ordered
//! list of addresses to try ([`targets`]). `[host]:port` and
//! `inet:host:port` never look up MX, a bare domain does (falling back to
//! its address records when it has no MX, as RFC 5321 section 5.1 says).
//! Never connects.
//!
//! The lookups themselves are [`crate::resolver`]'s, shared with the inbound
//! server.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::resolver::{DnsError, Resolver};

use crate::config::NextHop;

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
    /// The host part without the port: `name[addr]` (Postfix's "host X said").
    pub fn host(&self) -> String {
        match self {
            Target::Inet { name, addr } => format!("{name}[{}]", addr.ip()),
            Target::Unix(_) => self.to_string(),
        }
    }
}

/// The addresses to try for a next hop, best first: MX by preference (then
/// each exchange's addresses), or the host's own addresses, at most `limit`
/// of them (`<transport>_mx_address_limit`; `None`: all). IP literals
/// (`[192.0.2.1]`, `[IPv6:...]`) need no lookup.
pub async fn targets(
    resolver: &dyn Resolver,
    nexthop: &NextHop,
    limit: Option<usize>,
) -> Result<Vec<Target>, DnsError> {
    let limit = limit.unwrap_or(usize::MAX);
    match nexthop {
        NextHop::Unix(path) => Ok(vec![Target::Unix(path.clone())]),
        NextHop::Host { host, port } => host_targets(resolver, host, *port, limit).await,
        NextHop::Mx { domain, port } => {
            if literal(domain).is_some() {
                return host_targets(resolver, domain, *port, limit).await;
            }
            match resolver.mx(domain).await {
                Ok(mut mxs) => {
                    mxs.sort_by_key(|(pref, _)| *pref);
                    let mut out = Vec::new();
                    let mut last_err = None;
                    for (_, host) in mxs {
                        match host_targets(resolver, &host, *port, limit).await {
                            Ok(t) => out.extend(t),
                            Err(e) => last_err = Some(e),
                        }
                        if out.len() >= limit {
                            break;
                        }
                    }
                    out.truncate(limit);
                    match (out.is_empty(), last_err) {
                        (true, Some(e)) => Err(e),
                        _ => Ok(out),
                    }
                }
                // No MX: the domain's own address records (RFC 5321 5.1).
                Err(DnsError::NotFound { .. }) => host_targets(resolver, domain, *port, limit).await,
                Err(e) => Err(e),
            }
        }
    }
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
        assert!(e.is_permanent(), "{e}");
        let e =
            targets(&r, &NextHop::Mx { domain: "broken.test".into(), port: 25 }, Some(5)).await.unwrap_err();
        assert!(!e.is_permanent(), "{e}");
    }

    #[test]
    fn ip_literals_in_brackets_and_ipv6_tags() {
        assert_eq!(literal("[127.0.0.1]"), Some(ip(1)));
        assert_eq!(literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal("mx.test"), None);
    }
}
