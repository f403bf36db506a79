//! Value syntax shared by every parameter: booleans, integers, Postfix time
//! values, sizes, lists split on commas and/or white space (with Postfix's
//! `{ ... }` grouping), rates, listen addresses and service ports.
//!
//! Owns only the parsing of one expanded value; errors are plain messages
//! the loader attaches to a file, line and parameter. Never reads files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A rate limit: at most `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "?",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `yes` or `no` (any case), as Postfix's boolean parameters.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("bad boolean value \"{s}\" (expected yes or no)")),
    }
}

/// A decimal integer.
pub(crate) fn parse_int(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad numerical value \"{s}\""));
    }
    t.parse().map_err(|_| format!("numerical value out of range \"{s}\""))
}

/// A byte count: a non-negative decimal integer (Postfix takes no unit).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad size value \"{s}\" (expected a number of bytes)"));
    }
    t.parse().map_err(|_| format!("size value out of range \"{s}\""))
}

/// A Postfix time value: a number with an optional unit `s`, `m`, `h`, `d`
/// or `w`; a bare number is in `default_unit`. `allow_ms` also accepts
/// `ms` (sluice's own latency parameters; Postfix has no sub-second unit).
pub(crate) fn parse_time(s: &str, default_unit: char, allow_ms: bool) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        let units = if allow_ms { "ms, s, m, h, d or w" } else { "s, m, h, d or w" };
        format!("bad time value \"{s}\" (expected a number with an optional unit {units})")
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit = if unit.is_empty() { default_unit.to_string() } else { unit.to_owned() };
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad);
    match unit.as_str() {
        "ms" if allow_ms => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        "w" => secs(7 * 86400),
        _ => Err(bad()),
    }
}

/// Splits a list on commas and/or white space, keeping `{ ... }` groups
/// intact (so `inline:{ a=1, b=2 }` is one element), as Postfix's
/// `mystrtokq()`. Braces are kept; see [`unbrace`].
pub(crate) fn split_list(s: &str) -> Result<Vec<String>, String> {
    split_grouped(s, |c| c == ',' || c.is_whitespace())
}

/// Splits `s` at the characters `sep` accepts outside `{ ... }` groups,
/// dropping empty pieces; braces are kept in the pieces.
pub(crate) fn split_grouped(s: &str, sep: impl Fn(char) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                if depth == 0 {
                    return Err(format!("unbalanced '}}' in \"{s}\""));
                }
                depth -= 1;
                cur.push(c);
            }
            c if depth == 0 && sep(c) => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '{{' in \"{s}\""));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// A list element written as `{ text }` stands for `text` (Postfix's
/// `extpar()`): the braces let it contain white space and commas.
pub(crate) fn unbrace(s: &str) -> &str {
    match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner.trim(),
        None => s,
    }
}

/// `0` (no limit) or `N/s`, `N/m`, `N/h`.
pub(crate) fn parse_rate(s: &str) -> Result<Option<Rate>, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(None);
    }
    let bad = || format!("bad rate \"{s}\" (expected 0 for no limit, or N/s, N/m, N/h)");
    let (n, unit) = t.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Ok(None);
    }
    Ok(Some(Rate { count, per }))
}

/// A TCP port: a number, or one of the service names sluice knows (a small
/// built-in table instead of /etc/services, so a configuration means the
/// same on every host).
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    let t = s.trim();
    if let Ok(p) = t.parse::<u16>()
        && p != 0
    {
        return Ok(p);
    }
    match t {
        "smtp" => Ok(25),
        "lmtp" => Ok(24),
        "submission" => Ok(587),
        "submissions" | "smtps" | "urd" => Ok(465),
        _ => Err(format!(
            "bad port \"{s}\" (expected a number or one of smtp, lmtp, submission, submissions, smtps)"
        )),
    }
}

/// Splits `host:port`, `[host]:port` or `port` into host (None when absent,
/// brackets removed) and port text. The bracketed form is needed for IPv6.
pub(crate) fn split_host_port(s: &str) -> Result<(Option<&str>, &str), String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("missing ']' in \"{s}\""))?;
        let port = after.strip_prefix(':').ok_or_else(|| format!("missing ':port' after ']' in \"{s}\""))?;
        return Ok((Some(host), port));
    }
    match t.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err(format!("IPv6 addresses must be written in brackets: \"[address]:port\", not \"{s}\""))
        }
        Some((host, port)) => Ok((if host.is_empty() { None } else { Some(host) }, port)),
        None => Ok((None, t)),
    }
}

/// An IP literal, allowing the `ipv6:` prefix Postfix accepts inside brackets.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    let t = s.trim();
    let t = t.strip_prefix("ipv6:").or_else(|| t.strip_prefix("IPv6:")).unwrap_or(t);
    t.parse().ok()
}

/// A listen address (`sluice_metrics_listen`): empty for off, else
/// `address:port`, `[ipv6]:port` or `localhost:port`.
pub(crate) fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let (host, port) = split_host_port(t)?;
    let port = parse_port(port)?;
    let ip = match host {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => {
            parse_ip(h).ok_or_else(|| format!("bad listen address \"{s}\" (expected an IP address)"))?
        }
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// DNS servers (`sluice_dns_servers`): addresses separated by commas or
/// white space, each `address`, `address:port` or `[ipv6]:port` (port 53
/// when none is given). Empty: the system's resolver configuration. Checked
/// at load, so a loaded value's error can only be a bug: callers take it as
/// empty.
pub fn parse_name_servers(s: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in s.split([',', ' ', '\t', '\n']).filter(|i| !i.is_empty()) {
        // A bare address (IPv6 included) has no port.
        if let Some(ip) = parse_ip(item) {
            out.push(SocketAddr::new(ip, 53));
            continue;
        }
        let bad =
            || format!("bad name server \"{item}\" (expected an IP address, address:port or [ipv6]:port)");
        let (host, port) = split_host_port(item)?;
        let ip = host.and_then(parse_ip).ok_or_else(bad)?;
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        out.push(SocketAddr::new(ip, port));
    }
    Ok(out)
}

/// Fleet mode's Redis URLs (`sluice_fleet_redis`): each `redis://` or
/// `rediss://` (TLS), an optional `user:password@`, a host name or IP
/// (`[ipv6]`), an optional port (1–65535; 6379 when none) and an optional
/// database number (`/0`). Checked at load so a typo is a configuration
/// error naming the line, not a fleet that silently runs on its local
/// share. Returns the URLs.
pub fn parse_redis_urls(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for url in split_list(s)? {
        let bad = |why: &str| format!("bad Redis URL \"{url}\": {why}");
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| bad("expected redis:// or rediss://"))?;
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        if !(db.is_empty() || db.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad("the path must be a database number"));
        }
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if hostport.starts_with('[') || hostport.contains(':') {
            let (h, p) = split_host_port(hostport).map_err(|e| bad(&e))?;
            (h.unwrap_or(""), Some(p))
        } else {
            (hostport, None)
        };
        let host_ok = parse_ip(host).is_some()
            || (!host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }));
        if !host_ok {
            return Err(bad("missing or malformed host"));
        }
        if let Some(p) = port
            && p.parse::<u16>().ok().filter(|p| *p > 0).is_none()
        {
            return Err(bad("the port must be 1 to 65535"));
        }
        out.push(url);
    }
    Ok(out)
}

/// True when a Redis URL that [`parse_redis_urls`] accepted gives a port.
pub fn redis_url_has_port(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
        None => hostport.contains(':'),
    }
}

/// The unspecified addresses for "listen everywhere".
pub(crate) const ANY_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub(crate) const ANY_V6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The TLS protocol versions a `smtpd_tls_protocols` or
/// `smtpd_tls_mandatory_protocols` value leaves on, among the two the TLS
/// library speaks (SSLv2 to TLSv1.1 are never offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsProtocols {
    pub tls12: bool,
    pub tls13: bool,
}

/// Postfix's protocol names, oldest first.
const TLS_PROTOCOLS: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// Parses Postfix's TLS protocol syntax: `>=TLSv1.2`, `<=TLSv1.3`,
/// exclusions (`!SSLv2, !SSLv3, !TLSv1`), or (obsolete) the names to
/// include. An unknown name, or a value that leaves neither TLSv1.2 nor
/// TLSv1.3 on, is an error.
pub fn parse_tls_protocols(s: &str) -> Result<TlsProtocols, String> {
    let index = |name: &str| {
        TLS_PROTOCOLS.iter().position(|p| p.eq_ignore_ascii_case(name)).ok_or_else(|| {
            format!("unknown TLS protocol \"{name}\" (expected one of {})", TLS_PROTOCOLS.join(", "))
        })
    };
    let mut on = [true; TLS_PROTOCOLS.len()];
    let mut included: Option<[bool; TLS_PROTOCOLS.len()]> = None;
    for w in split_list(s)? {
        if let Some(name) = w.strip_prefix(">=") {
            let i = index(name)?;
            on[..i].iter_mut().for_each(|p| *p = false);
        } else if let Some(name) = w.strip_prefix("<=") {
            let i = index(name)?;
            on[i + 1..].iter_mut().for_each(|p| *p = false);
        } else if let Some(name) = w.strip_prefix('!') {
            on[index(name)?] = false;
        } else {
            included.get_or_insert([false; TLS_PROTOCOLS.len()])[index(&w)?] = true;
        }
    }
    let allowed = |i: usize| on[i] && included.is_none_or(|inc| inc[i]);
    let p = TlsProtocols { tls12: allowed(4), tls13: allowed(5) };
    if !p.tls12 && !p.tls13 {
        return Err("leaves neither TLSv1.2 nor TLSv1.3, the versions sluice speaks".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_default_to_port_53() {
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
        ];
        assert_eq!(parse_name_servers("127.0.0.1:5353, ::1 192.0.2.1"), Ok(want));
        assert_eq!(parse_name_servers(""), Ok(vec![]));
        assert!(parse_name_servers("ns.example:53").is_err());
        assert!(parse_name_servers("127.0.0.1:0").is_err());
        // A bare IPv6 address is all address: its port needs brackets.
        assert_eq!(parse_name_servers("::1:53"), Ok(vec!["[::1:53]:53".parse().unwrap()]));
    }

    #[test]
    fn time_values_with_units_and_default_unit() {
        assert_eq!(parse_time("300s", 's', false), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("5d", 's', false), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("5", 'd', false), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("2w", 's', false), Ok(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_time("0h", 'h', false), Ok(Duration::ZERO));
        assert!(parse_time("250ms", 's', false).is_err());
        assert_eq!(parse_time("250ms", 's', true), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "1.5h", "ten", "5 d", "-1s", "99999999999999999999s"] {
            assert!(parse_time(bad, 's', false).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_ints_sizes() {
        assert_eq!(parse_bool("YES"), Ok(true));
        assert_eq!(parse_bool("no"), Ok(false));
        assert!(parse_bool("true").is_err());
        assert_eq!(parse_int("-3"), Ok(-3));
        assert!(parse_int("ten").is_err());
        assert!(parse_int("").is_err());
        assert_eq!(parse_size("10240000"), Ok(10240000));
        assert!(parse_size("10M").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn lists_split_on_commas_and_space_keeping_brace_groups() {
        assert_eq!(split_list("a, b,c\td \n e,,").unwrap(), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(
            split_list("hash:/x, inline:{ a=1, { b = two words } }, static:ok").unwrap(),
            vec!["hash:/x", "inline:{ a=1, { b = two words } }", "static:ok"]
        );
        assert_eq!(unbrace("{ reject_rbl_client x.example }"), "reject_rbl_client x.example");
        assert!(split_list("inline:{ a=1").is_err());
        assert!(split_list("a }").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(parse_rate("50/s"), Ok(Some(Rate { count: 50, per: Duration::from_secs(1) })));
        assert_eq!(parse_rate("600/m"), Ok(Some(Rate { count: 600, per: Duration::from_secs(60) })));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/d").is_err());
        assert_eq!(Rate { count: 600, per: Duration::from_secs(60) }.to_string(), "600/m");
    }

    #[test]
    fn ports_and_host_ports() {
        assert_eq!(parse_port("smtp"), Ok(25));
        assert_eq!(parse_port("2525"), Ok(2525));
        assert!(parse_port("0").is_err());
        assert!(parse_port("gopher").is_err());
        assert_eq!(split_host_port("127.0.0.1:2525"), Ok((Some("127.0.0.1"), "2525")));
        assert_eq!(split_host_port("[::1]:2525"), Ok((Some("::1"), "2525")));
        assert_eq!(split_host_port("2525"), Ok((None, "2525")));
        assert!(split_host_port("::1:25").is_err());
        assert_eq!(parse_listen("127.0.0.1:9025"), Ok(Some("127.0.0.1:9025".parse().unwrap())));
        assert_eq!(parse_listen("[::1]:9025"), Ok(Some("[::1]:9025".parse().unwrap())));
        assert_eq!(parse_listen(""), Ok(None));
        assert!(parse_listen("metrics.example:9025").is_err());
    }

    #[test]
    fn tls_protocols_as_postfix_writes_them() {
        let both = TlsProtocols { tls12: true, tls13: true };
        let only13 = TlsProtocols { tls12: false, tls13: true };
        let only12 = TlsProtocols { tls12: true, tls13: false };
        assert_eq!(parse_tls_protocols(">=TLSv1"), Ok(both));
        assert_eq!(parse_tls_protocols("!SSLv2, !SSLv3"), Ok(both));
        assert_eq!(parse_tls_protocols(""), Ok(both));
        assert_eq!(parse_tls_protocols(">=TLSv1.3"), Ok(only13));
        assert_eq!(parse_tls_protocols("!SSLv2 !SSLv3 !TLSv1 !TLSv1.1 !TLSv1.2"), Ok(only13));
        assert_eq!(parse_tls_protocols("<=TLSv1.2"), Ok(only12));
        assert_eq!(parse_tls_protocols("tlsv1.2, TLSv1.1"), Ok(only12), "an inclusion list");
        assert!(parse_tls_protocols("<=TLSv1.1").unwrap_err().contains("neither TLSv1.2 nor TLSv1.3"));
        assert!(parse_tls_protocols("!TLSv1.4").unwrap_err().contains("unknown TLS protocol \"TLSv1.4\""));
    }
}
