//! Name resolution for delivery: MX and address lookups behind a small
//! [`Resolver`] trait, implemented over `hickory-resolver`
//! ([`SystemResolver`]) and by a fixed table ([`StaticResolver`], the test
//! double: tests have no DNS, and this is the only fake the test suite
//! uses).
//!
//! Owns turning a next hop into an ordered list of addresses to try
//! ([`targets`]): `[host]:port` and `inet:host:port` never look up MX, a
//! bare domain does (falling back to its address records when it has no MX,
//! as RFC 5321 section 5.1 says). Never connects.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::NextHop;

/// Why a lookup failed, in the two kinds delivery acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist or has no records of the type: permanent
    /// (the mail bounces, `5.4.4`).
    #[error("Host or domain name not found. Name service error for name={name} type={rtype}: Host not found")]
    NotFound { name: String, rtype: &'static str },
    /// Timeout, SERVFAIL, no resolver: try again later (`4.4.3`).
    #[error(
        "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again"
    )]
    Temporary { name: String, rtype: &'static str },
}

impl DnsError {
    /// True for an answer that will not change by retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::NotFound { .. })
    }
}

/// The lookups delivery needs.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// MX records of `domain` as (preference, exchange host), any order.
    /// `NotFound` when the domain exists without MX records or does not exist.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>>;
    /// A and AAAA records of `host`.
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
}

/// `hickory-resolver` with the system's configuration (`/etc/resolv.conf`).
#[derive(Clone)]
pub struct SystemResolver {
    inner: Arc<hickory_resolver::TokioResolver>,
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemResolver")
    }
}

impl SystemResolver {
    /// Reads the system configuration.
    pub fn new() -> Result<SystemResolver, String> {
        let r = hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(SystemResolver { inner: Arc::new(r) })
    }
}

fn classify(e: &hickory_resolver::net::NetError, name: &str, rtype: &'static str) -> DnsError {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NotFound { name: name.to_owned(), rtype }
    } else {
        DnsError::Temporary { name: name.to_owned(), rtype }
    }
}

impl Resolver for SystemResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
        Box::pin(async move {
            let lookup = self.inner.mx_lookup(domain).await.map_err(|e| classify(&e, domain, "MX"))?;
            let mut out = Vec::new();
            for rec in lookup.answers() {
                if let hickory_resolver::proto::rr::RData::MX(mx) = &rec.data {
                    let host = mx.exchange.to_utf8();
                    out.push((mx.preference, host.trim_end_matches('.').to_owned()));
                }
            }
            if out.is_empty() {
                return Err(DnsError::NotFound { name: domain.to_owned(), rtype: "MX" });
            }
            Ok(out)
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let lookup = self.inner.lookup_ip(host).await.map_err(|e| classify(&e, host, "A"))?;
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                return Err(DnsError::NotFound { name: host.to_owned(), rtype: "A" });
            }
            Ok(ips)
        })
    }
}

/// A fixed table of MX and address records: the test double for DNS.
/// Names are matched case-insensitively; a name that is not in the table
/// does not exist.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    mx: HashMap<String, Vec<(u16, String)>>,
    ips: HashMap<String, Vec<IpAddr>>,
    failing: Vec<String>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds an MX record.
    pub fn with_mx(mut self, domain: &str, preference: u16, host: &str) -> StaticResolver {
        self.mx.entry(domain.to_ascii_lowercase()).or_default().push((preference, host.to_owned()));
        self
    }

    /// Adds an address record.
    pub fn with_ip(mut self, host: &str, ip: IpAddr) -> StaticResolver {
        self.ips.entry(host.to_ascii_lowercase()).or_default().push(ip);
        self
    }

    /// Makes every lookup of `name` fail temporarily (a broken DNS server).
    pub fn with_failure(mut self, name: &str) -> StaticResolver {
        self.failing.push(name.to_ascii_lowercase());
        self
    }
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
        let key = domain.to_ascii_lowercase();
        Box::pin(async move {
            if self.failing.contains(&key) {
                return Err(DnsError::Temporary { name: domain.to_owned(), rtype: "MX" });
            }
            self.mx.get(&key).cloned().ok_or(DnsError::NotFound { name: domain.to_owned(), rtype: "MX" })
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let key = host.to_ascii_lowercase();
        Box::pin(async move {
            if self.failing.contains(&key) {
                return Err(DnsError::Temporary { name: host.to_owned(), rtype: "A" });
            }
            self.ips.get(&key).cloned().ok_or(DnsError::NotFound { name: host.to_owned(), rtype: "A" })
        })
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
    /// The host part without the port: `name[addr]` (Postfix's "host X said").
    pub fn host(&self) -> String {
        match self {
            Target::Inet { name, addr } => format!("{name}[{}]", addr.ip()),
            Target::Unix(_) => self.to_string(),
        }
    }
}

/// How many addresses of a next hop are tried per delivery (Postfix's
/// `smtp_mx_address_limit` default is 5).
pub const ADDRESS_LIMIT: usize = 5;

/// The addresses to try for a next hop, best first: MX by preference (then
/// each exchange's addresses), or the host's own addresses. IP literals
/// (`[192.0.2.1]`, `[IPv6:...]`) need no lookup.
pub async fn targets(resolver: &dyn Resolver, nexthop: &NextHop) -> Result<Vec<Target>, DnsError> {
    match nexthop {
        NextHop::Unix(path) => Ok(vec![Target::Unix(path.clone())]),
        NextHop::Host { host, port } => host_targets(resolver, host, *port).await,
        NextHop::Mx { domain, port } => {
            if literal(domain).is_some() {
                return host_targets(resolver, domain, *port).await;
            }
            match resolver.mx(domain).await {
                Ok(mut mxs) => {
                    mxs.sort_by_key(|(pref, _)| *pref);
                    let mut out = Vec::new();
                    let mut last_err = None;
                    for (_, host) in mxs {
                        match host_targets(resolver, &host, *port).await {
                            Ok(t) => out.extend(t),
                            Err(e) => last_err = Some(e),
                        }
                        if out.len() >= ADDRESS_LIMIT {
                            break;
                        }
                    }
                    out.truncate(ADDRESS_LIMIT);
                    match (out.is_empty(), last_err) {
                        (true, Some(e)) => Err(e),
                        _ => Ok(out),
                    }
                }
                // No MX: the domain's own address records (RFC 5321 5.1).
                Err(DnsError::NotFound { .. }) => host_targets(resolver, domain, *port).await,
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

async fn host_targets(resolver: &dyn Resolver, host: &str, port: u16) -> Result<Vec<Target>, DnsError> {
    if let Some(ip) = literal(host) {
        return Ok(vec![Target::Inet { name: ip.to_string(), addr: SocketAddr::new(ip, port) }]);
    }
    let mut ips = resolver.ips(host).await?;
    ips.truncate(ADDRESS_LIMIT);
    Ok(ips
        .into_iter()
        .map(|ip| Target::Inet { name: host.to_owned(), addr: SocketAddr::new(ip, port) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[tokio::test]
    async fn bracketed_host_is_not_looked_up_as_mx() {
        let r = StaticResolver::new().with_mx("mbx.test", 10, "other.test").with_ip("mbx.test", ip(5));
        let t = targets(&r, &NextHop::Host { host: "mbx.test".into(), port: 24 }).await.unwrap();
        assert_eq!(t, vec![Target::Inet { name: "mbx.test".into(), addr: SocketAddr::new(ip(5), 24) }]);
        assert_eq!(t[0].to_string(), "mbx.test[127.0.0.5]:24");
        let t = targets(&r, &NextHop::Host { host: "127.0.0.9".into(), port: 2525 }).await.unwrap();
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
        let t = targets(&r, &NextHop::Mx { domain: "example.test".into(), port: 25 }).await.unwrap();
        let names: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["mx1.example.test[127.0.0.1]:25", "mx2.example.test[127.0.0.2]:25"]);
        let t = targets(&r, &NextHop::Mx { domain: "nomx.test".into(), port: 25 }).await.unwrap();
        assert_eq!(t[0].to_string(), "nomx.test[127.0.0.3]:25");
    }

    #[tokio::test]
    async fn missing_and_failing_names_are_told_apart() {
        let r = StaticResolver::new().with_failure("broken.test");
        let e = targets(&r, &NextHop::Mx { domain: "nowhere.test".into(), port: 25 }).await.unwrap_err();
        assert!(e.is_permanent(), "{e}");
        let e = targets(&r, &NextHop::Mx { domain: "broken.test".into(), port: 25 }).await.unwrap_err();
        assert!(!e.is_permanent(), "{e}");
    }

    #[test]
    fn ip_literals_in_brackets_and_ipv6_tags() {
        assert_eq!(literal("[127.0.0.1]"), Some(ip(1)));
        assert_eq!(literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal("mx.test"), None);
    }
}
