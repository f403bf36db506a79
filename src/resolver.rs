//! Name resolution shared by the inbound server (the client's reverse name)
//! and delivery (MX and address lookups): a small [`Resolver`] trait,
//! implemented over `hickory-resolver` ([`SystemResolver`]) and by a fixed
//! table ([`StaticResolver`], the test double). DNS is the one thing the
//! test suite fakes: with this table, or with a DNS server the tests run
//! on loopback (`tests/common/dns_server.rs`) that a [`SystemResolver`] is
//! pointed at ([`SystemResolver::with_servers`], `sluice_dns_servers`).
//!
//! It lives below `smtp` and `delivery` because both need it and neither
//! may import the other. The daemon builds one [`SystemResolver`] and hands
//! it to both, so they share its cache and its configuration; sender
//! authentication (`crate::auth`) uses the same hickory resolver directly,
//! because its library can take no other.
//!
//! Owns the lookups only: what an answer means (next-hop targets, a
//! forward-confirmed client name) is decided by the callers. Never connects
//! anywhere but the configured name servers, and puts no deadline of its
//! own on a lookup beyond the resolver's: callers that must answer a client
//! in time bound the lookup themselves.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;

/// Why a lookup failed, in the two kinds callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist or has no records of the type: permanent
    /// (the mail bounces, `5.4.4`; a client name stays `unknown`).
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

/// An address family, for lookups that must match a client's address
/// (forward confirmation asks for A or AAAA, never "whichever comes first").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

impl Family {
    /// The family of `addr` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(addr: IpAddr) -> Family {
        match addr.to_canonical() {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn rtype(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        }
    }
}

/// The lookups sluice needs.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// MX records of `domain` as (preference, exchange host), any order.
    /// `NotFound` when the domain exists without MX records or does not exist.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>>;
    /// A and AAAA records of `host`.
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// The records of one family only: A or AAAA of `host`.
    fn ips_of<'a>(&'a self, host: &'a str, family: Family) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// PTR records of `addr`: its reverse names, without the trailing dot.
    /// `NotFound` when the address has none.
    fn ptr<'a>(&'a self, addr: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
    /// TXT records of `name`, each record's strings joined (the reason a
    /// DNS blocklist gives for a listing).
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

/// `hickory-resolver` with the system's configuration (`/etc/resolv.conf`)
/// or with name servers of the configuration's choosing
/// (`sluice_dns_servers`). Cheap to clone: clones share one resolver and
/// its cache.
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
    /// Reads the system configuration (`/etc/resolv.conf`).
    pub fn new() -> Result<SystemResolver, SetupError> {
        let r = hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| SetupError(e.to_string()))?
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(SystemResolver { inner: Arc::new(r) })
    }

    /// Asks `servers` (UDP, then TCP for answers that do not fit), with
    /// the same options as the system configuration's defaults; an empty
    /// list means the system configuration ([`SystemResolver::new`]).
    /// This is how the daemon is pointed at a local caching resolver on
    /// another port, and how tests point it at their DNS server.
    pub fn with_servers(servers: &[SocketAddr]) -> Result<SystemResolver, SetupError> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        if servers.is_empty() {
            return SystemResolver::new();
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
        let r = hickory_resolver::TokioResolver::builder_with_config(config, provider)
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(SystemResolver { inner: Arc::new(r) })
    }

    /// The hickory resolver itself, for a library that can only take one
    /// (`mail-auth` in `crate::auth`): it then shares this resolver's name
    /// servers, options and cache.
    pub fn hickory(&self) -> &hickory_resolver::TokioResolver {
        &self.inner
    }
}

/// The system resolver could not be set up (an unreadable or broken
/// resolver configuration); the text is the resolver library's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

fn classify(e: &hickory_resolver::net::NetError, name: &str, rtype: &'static str) -> DnsError {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NotFound { name: name.to_owned(), rtype }
    } else {
        DnsError::Temporary { name: name.to_owned(), rtype }
    }
}

fn non_empty<T>(v: Vec<T>, name: &str, rtype: &'static str) -> Result<Vec<T>, DnsError> {
    if v.is_empty() { Err(DnsError::NotFound { name: name.to_owned(), rtype }) } else { Ok(v) }
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
            non_empty(out, domain, "MX")
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let lookup = self.inner.lookup_ip(host).await.map_err(|e| classify(&e, host, "A"))?;
            non_empty(lookup.iter().collect(), host, "A")
        })
    }

    fn ips_of<'a>(&'a self, host: &'a str, family: Family) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        use hickory_resolver::proto::rr::RData;
        Box::pin(async move {
            let rtype = family.rtype();
            let lookup = match family {
                Family::V4 => self.inner.ipv4_lookup(host).await,
                Family::V6 => self.inner.ipv6_lookup(host).await,
            }
            .map_err(|e| classify(&e, host, rtype))?;
            let ips = lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            non_empty(ips, host, rtype)
        })
    }

    fn ptr<'a>(&'a self, addr: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let text = addr.to_string();
            let lookup = self.inner.reverse_lookup(addr).await.map_err(|e| classify(&e, &text, "PTR"))?;
            let names = lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::PTR(p) => {
                        Some(p.0.to_utf8().trim_end_matches('.').to_owned())
                    }
                    _ => None,
                })
                .collect();
            non_empty(names, &text, "PTR")
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let lookup = self.inner.txt_lookup(name).await.map_err(|e| classify(&e, name, "TXT"))?;
            let texts = lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::TXT(t) => {
                        let bytes: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                        Some(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    _ => None,
                })
                .collect();
            non_empty(texts, name, "TXT")
        })
    }
}

/// A fixed table of MX, address, PTR and TXT records: the test double for DNS.
/// Names are matched case-insensitively; a name or address that is not in
/// the table does not exist.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    mx: HashMap<String, Vec<(u16, String)>>,
    ips: HashMap<String, Vec<IpAddr>>,
    ptr: HashMap<IpAddr, Vec<String>>,
    txt: HashMap<String, Vec<String>>,
    failing: Vec<String>,
    silent: Vec<String>,
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

    /// Adds a PTR record: `addr`'s reverse name is `name`.
    pub fn with_ptr(mut self, addr: IpAddr, name: &str) -> StaticResolver {
        self.ptr.entry(addr).or_default().push(name.to_owned());
        self
    }

    /// Adds a TXT record.
    pub fn with_txt(mut self, name: &str, text: &str) -> StaticResolver {
        self.txt.entry(name.to_ascii_lowercase()).or_default().push(text.to_owned());
        self
    }

    /// Makes every lookup of `name` fail temporarily (a broken DNS server
    /// answering SERVFAIL). An address in text form makes its PTR lookups
    /// fail.
    pub fn with_failure(mut self, name: &str) -> StaticResolver {
        self.failing.push(name.to_ascii_lowercase());
        self
    }

    /// Makes every lookup of `name` (or, for an address in text form, its
    /// PTR lookups) never answer, like a DNS server that drops queries: only
    /// the caller's own deadline ends them.
    pub fn with_silence(mut self, name: &str) -> StaticResolver {
        self.silent.push(name.to_ascii_lowercase());
        self
    }

    /// Fails or stalls as configured for `key`.
    async fn misbehave(&self, key: &str, name: &str, rtype: &'static str) -> Result<(), DnsError> {
        if self.silent.iter().any(|s| s == key) {
            std::future::pending::<()>().await;
        }
        if self.failing.iter().any(|s| s == key) {
            return Err(DnsError::Temporary { name: name.to_owned(), rtype });
        }
        Ok(())
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.ips
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or(DnsError::NotFound { name: host.to_owned(), rtype: "A" })
    }
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
        let key = domain.to_ascii_lowercase();
        Box::pin(async move {
            self.misbehave(&key, domain, "MX").await?;
            self.mx.get(&key).cloned().ok_or(DnsError::NotFound { name: domain.to_owned(), rtype: "MX" })
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let key = host.to_ascii_lowercase();
        Box::pin(async move {
            self.misbehave(&key, host, "A").await?;
            self.addresses(host)
        })
    }

    fn ips_of<'a>(&'a self, host: &'a str, family: Family) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let key = host.to_ascii_lowercase();
        Box::pin(async move {
            self.misbehave(&key, host, family.rtype()).await?;
            let ips: Vec<IpAddr> =
                self.addresses(host)?.into_iter().filter(|ip| Family::of(*ip) == family).collect();
            non_empty(ips, host, family.rtype())
        })
    }

    fn ptr<'a>(&'a self, addr: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        let key = addr.to_string();
        Box::pin(async move {
            self.misbehave(&key, &key, "PTR").await?;
            self.ptr.get(&addr).cloned().ok_or(DnsError::NotFound { name: key.clone(), rtype: "PTR" })
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        let key = name.to_ascii_lowercase();
        Box::pin(async move {
            self.misbehave(&key, name, "TXT").await?;
            self.txt.get(&key).cloned().ok_or(DnsError::NotFound { name: name.to_owned(), rtype: "TXT" })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn static_table_answers_by_family_and_reverse() {
        let r = StaticResolver::new()
            .with_ip("host.test", ip("127.0.0.7"))
            .with_ip("host.test", ip("::1"))
            .with_ptr(ip("127.0.0.7"), "host.test");
        assert_eq!(r.ips_of("HOST.test", Family::V4).await.unwrap(), vec![ip("127.0.0.7")]);
        assert_eq!(r.ips_of("host.test", Family::V6).await.unwrap(), vec![ip("::1")]);
        assert_eq!(r.ptr(ip("127.0.0.7")).await.unwrap(), vec!["host.test".to_owned()]);
        assert!(r.ptr(ip("127.0.0.8")).await.unwrap_err().is_permanent());
        let only4 = StaticResolver::new().with_ip("v4.test", ip("127.0.0.1"));
        assert!(only4.ips_of("v4.test", Family::V6).await.unwrap_err().is_permanent());
    }

    #[tokio::test]
    async fn failures_are_temporary_and_silence_never_answers() {
        let r = StaticResolver::new().with_failure("127.0.0.9").with_silence("127.0.0.10");
        assert!(!r.ptr(ip("127.0.0.9")).await.unwrap_err().is_permanent());
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.ptr(ip("127.0.0.10"))).await;
        assert!(stalled.is_err(), "a silent server never answers");
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(Family::of(ip("::ffff:127.0.0.1")), Family::V4);
        assert_eq!(Family::of(ip("::1")), Family::V6);
    }
}
