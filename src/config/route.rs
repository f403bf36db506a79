//! Transport resolution as transport(5) and trivial-rewrite do it: a
//! `transport_maps` result `transport:nexthop` (empty fields keep what
//! would have been used without the entry; a transport with an empty next
//! hop goes to the recipient domain), else `relay_transport` for
//! relay_domains and `default_transport` otherwise, with `relayhost` as the
//! next hop when the transport names none.
//!
//! Owns next-hop syntax and the decision. Never resolves names in DNS:
//! [`NextHop::Mx`] tells delivery to look up MX records.

use std::path::Path;

use super::values::{parse_port, split_host_port};
use super::{Config, Known, LookupError, NextHop, Protocol, Route, TableError};

/// What a transport name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    Deliver(Protocol),
    Error,
    Discard,
}

/// A transport sluice can route to: from master.cf or built in.
#[derive(Debug, Clone)]
pub(crate) struct TransportInfo {
    pub name: String,
    pub kind: TransportKind,
}

/// Splits `transport:nexthop` at the first colon; no colon is a transport
/// with an empty next hop.
pub(crate) fn split_result(s: &str) -> (&str, &str) {
    match s.split_once(':') {
        Some((t, n)) => (t.trim(), n.trim()),
        None => (s.trim(), ""),
    }
}

/// Parses a next hop for `protocol`: `[host]`, `[host]:port`,
/// `inet:host:port`, `host`, `host:port`, `unix:/path`. For SMTP a host
/// without brackets is an MX lookup; LMTP never looks up MX. Relative unix
/// paths are under `queue_dir`, where Postfix's daemons run.
pub(crate) fn parse_nexthop(
    s: &str,
    protocol: Protocol,
    smtp_port: u16,
    lmtp_port: u16,
    queue_dir: &Path,
) -> Result<NextHop, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty next hop".into());
    }
    if t.contains(|c: char| c == ',' || c.is_whitespace()) {
        return Err(format!("\"{t}\": a list of next hops is not supported; give one destination"));
    }
    if let Some(path) = t.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        let p = Path::new(path);
        return Ok(NextHop::Unix(if p.is_absolute() { p.to_path_buf() } else { queue_dir.join(p) }));
    }
    let (inet, t) = match t.strip_prefix("inet:") {
        Some(r) => (true, r),
        None => (false, t),
    };
    let default_port = match protocol {
        Protocol::Smtp => smtp_port,
        Protocol::Lmtp => lmtp_port,
    };
    let bracketed = t.starts_with('[');
    let (host, port) = if bracketed {
        if t.ends_with(']') {
            (Some(&t[1..t.len() - 1]), None)
        } else {
            let (h, p) = split_host_port(t)?;
            (h, Some(p))
        }
    } else {
        match t.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!("\"{t}\": write an IPv6 address in brackets, [address]:port"));
            }
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(t), None),
        }
    };
    let host = host.unwrap_or_default();
    let host = host.strip_prefix("ipv6:").or_else(|| host.strip_prefix("IPv6:")).unwrap_or(host);
    if host.is_empty() {
        return Err(format!("\"{s}\": missing host"));
    }
    let port = match port {
        Some(p) => parse_port(p)?,
        None => default_port,
    };
    if !bracketed && host.parse::<std::net::IpAddr>().is_ok() && protocol == Protocol::Smtp && !inet {
        return Err(format!("\"{t}\": an IP address must be written in brackets, [{host}]"));
    }
    if bracketed || inet || protocol == Protocol::Lmtp {
        Ok(NextHop::Host { host: host.to_owned(), port })
    } else {
        Ok(NextHop::Mx { domain: host.to_ascii_lowercase(), port })
    }
}

impl Config {
    /// The decision behind [`Config::route`]: transport_maps first, and
    /// relay_domains only when the entry leaves the transport to the
    /// default (so a directory relay_domains is not asked needlessly).
    pub(crate) fn resolve_route(&self, recipient: &str, known: &Known) -> Result<Route, LookupError> {
        let qualified;
        let rcpt = if recipient.contains('@') {
            recipient
        } else {
            qualified = format!("{recipient}@{}", self.string("myorigin"));
            &qualified
        };
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or_default().to_ascii_lowercase();

        let looked_up = self.maps("transport_maps").lookup_address_in(self, "transport_maps", rcpt, known)?;
        let entry = looked_up.as_deref().map(split_result);

        // What would be used without transport_maps.
        let mut source = "default_transport";
        let mut transport = "";
        let mut nexthop: Option<&str> = None;
        if entry.is_none_or(|(t, _)| t.is_empty()) {
            let param = if self.is_relay_domain_in(&domain, known)? {
                "relay_transport"
            } else {
                "default_transport"
            };
            let (t, n) = split_result(self.string(param));
            let relayhost = self.string("relayhost").trim();
            transport = t;
            nexthop = if !n.is_empty() {
                Some(n)
            } else if !relayhost.is_empty() {
                Some(relayhost)
            } else {
                None
            };
            source = param;
        }
        if let Some((t, n)) = entry {
            source = "transport_maps";
            match (t.is_empty(), n.is_empty()) {
                (true, true) => {}
                (true, false) => nexthop = Some(n),
                (false, true) => {
                    transport = t;
                    nexthop = None;
                }
                (false, false) => {
                    transport = t;
                    nexthop = Some(n);
                }
            }
        }
        let fail = |message: String| TableError { table: source.to_owned(), message };
        let info = self.transport_info.iter().find(|i| i.name == transport).ok_or_else(|| {
            fail(format!(
                "transport \"{transport}\" is not defined in master.cf (mail for {rcpt} is deferred)"
            ))
        })?;
        match info.kind {
            TransportKind::Error => Ok(Route::Error { text: nexthop.unwrap_or_default().to_owned() }),
            TransportKind::Discard => Ok(Route::Discard { text: nexthop.unwrap_or_default().to_owned() }),
            TransportKind::Deliver(protocol) => {
                let cfg = self.transport_config(transport);
                let smtp_port = parse_port(cfg.string("smtp_tcp_port")).unwrap_or(25);
                let lmtp_port = parse_port(cfg.string("lmtp_tcp_port")).unwrap_or(24);
                let queue_dir = Path::new(cfg.string("queue_directory"));
                let by_domain = nexthop.is_none();
                let target = nexthop.unwrap_or(&domain);
                let nexthop = parse_nexthop(target, protocol, smtp_port, lmtp_port, queue_dir)
                    .map_err(|m| fail(format!("next hop for {rcpt}: {m}")))?;
                Ok(Route::Deliver { transport: transport.to_owned(), protocol, nexthop, by_domain })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nh(s: &str, p: Protocol) -> Result<NextHop, String> {
        parse_nexthop(s, p, 25, 24, Path::new("/var/spool/sluice"))
    }

    fn host(h: &str, port: u16) -> NextHop {
        NextHop::Host { host: h.into(), port }
    }

    #[test]
    fn next_hop_forms() {
        use Protocol::*;
        assert_eq!(nh("[127.0.0.1]:24240", Lmtp), Ok(host("127.0.0.1", 24240)));
        assert_eq!(nh("inet:127.0.0.1:24240", Lmtp), Ok(host("127.0.0.1", 24240)));
        assert_eq!(nh("inet:mbx1.example:lmtp", Lmtp), Ok(host("mbx1.example", 24)));
        assert_eq!(nh("mbx1.example", Lmtp), Ok(host("mbx1.example", 24)));
        assert_eq!(nh("unix:/run/dovecot/lmtp", Lmtp), Ok(NextHop::Unix("/run/dovecot/lmtp".into())));
        assert_eq!(
            nh("unix:private/dovecot-lmtp", Lmtp),
            Ok(NextHop::Unix("/var/spool/sluice/private/dovecot-lmtp".into()))
        );
        assert_eq!(nh("[mail.isp.example]", Smtp), Ok(host("mail.isp.example", 25)));
        assert_eq!(nh("[mail.isp.example]:587", Smtp), Ok(host("mail.isp.example", 587)));
        assert_eq!(nh("[ipv6:2001:db8::1]:2525", Smtp), Ok(host("2001:db8::1", 2525)));
        assert_eq!(nh("[2001:db8::1]", Smtp), Ok(host("2001:db8::1", 25)));
        assert_eq!(nh("Example.COM", Smtp), Ok(NextHop::Mx { domain: "example.com".into(), port: 25 }));
        assert_eq!(
            nh("example.com:2525", Smtp),
            Ok(NextHop::Mx { domain: "example.com".into(), port: 2525 })
        );
        assert!(nh("a.example, b.example", Smtp).is_err());
        assert!(nh("192.0.2.1", Smtp).is_err(), "bare IP needs brackets for smtp");
        assert!(nh("2001:db8::1:25", Smtp).is_err());
        assert!(nh("[x]:gopher", Smtp).is_err());
        assert!(nh("unix:", Lmtp).is_err());
    }

    #[test]
    fn transport_results_split_at_the_first_colon() {
        assert_eq!(split_result("lmtp:inet:127.0.0.1:24"), ("lmtp", "inet:127.0.0.1:24"));
        assert_eq!(split_result(":[gw.example]"), ("", "[gw.example]"));
        assert_eq!(split_result("relay:"), ("relay", ""));
        assert_eq!(split_result("local"), ("local", ""));
        assert_eq!(split_result("error:5.1.1 no such user"), ("error", "5.1.1 no such user"));
    }
}
